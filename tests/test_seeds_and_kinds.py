"""Named seeds of an evaluation, and the attack-kind enum with its engine table."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from art_purifiers.evaluation.seeds import RunSeeds, cascade_attack, global_generators
from art_purifiers.evaluation.specs import ATTACK_KINDS, ENGINES, AttackKind, AttackSpec, Engine, parse_attack


def test_the_seeds_of_chunks_draws_and_levels_do_not_collide() -> None:
    seeds = RunSeeds(3)
    chunks = range(0, 10_000, 100)
    draws = [seeds.draw(draw, start) for draw, start in itertools.product(range(30), chunks)]
    art = [seeds.art_chunk(start) for start in chunks]
    cascade = [cascade_attack(seeds.cascade_level(level, start), number)
               for level, start, number in itertools.product(range(3), chunks, range(4))]  # fmt: skip
    for group in (draws, art, cascade):
        assert len(group) == len(set(group))
    # the scoring draws never replay an attack's randomness
    assert not set(draws) & (set(art) | set(cascade))
    # an adaptive attack on a chunk starts from the seed of a cascade's first attack there (a different attack)
    assert [seeds.adaptive_chunk(start) for start in chunks] == [seeds.cascade_level(0, start) for start in chunks]
    assert RunSeeds(3) == seeds and RunSeeds(4).draw(0, 0) != seeds.draw(0, 0)


def test_global_generators_are_seeded_inside_and_restored_after() -> None:
    np.random.seed(123)
    torch.manual_seed(123)
    expected_outside = (np.random.random(), torch.rand(1).item())
    np.random.seed(123)
    torch.manual_seed(123)
    with global_generators(7):
        inside = (np.random.random(), torch.rand(1).item())
    assert (np.random.random(), torch.rand(1).item()) == expected_outside
    with global_generators(7):
        assert (np.random.random(), torch.rand(1).item()) == inside


def test_a_kind_is_its_spec_name() -> None:
    assert [str(kind) for kind in ATTACK_KINDS] == [kind.value for kind in AttackKind]
    for kind in AttackKind:
        assert kind == kind.value and hash(kind) == hash(kind.value) and f"{kind}" == kind.value
        assert f"{kind!r}" == repr(kind.value)
        assert {kind.value: 1}[kind] == 1 and json.loads(json.dumps({"kind": kind}))["kind"] == kind.value
    # a kind read back from a results file (a plain string) builds the same spec
    assert AttackSpec("pgd", 8 / 255).kind is AttackKind.PGD
    assert parse_attack("PGD:eps=8/255").kind is AttackKind.PGD
    with pytest.raises(ValueError, match="Unknown attack 'pgd2'"):
        parse_attack("pgd2:eps=8/255")


def test_every_kind_has_its_engine() -> None:
    adaptive = {"apgd", "apgd-t", "cascade", "original-autoattack", "noise", "transfer"}
    assert set(ENGINES) == set(AttackKind)
    assert {kind.value for kind, engine in ENGINES.items() if engine is Engine.ADAPTIVE} == adaptive
    assert parse_attack("cascade:eps=8/255").engine is Engine.ADAPTIVE
    assert parse_attack("square:eps=8/255").engine is Engine.ART
