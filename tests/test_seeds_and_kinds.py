"""Named seeds of an evaluation, and the attack-kind enum with its engine table."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch

from art_purifiers.evaluation.seeds import RunSeeds, cascade_attack
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


class GlobalNoise(PreprocessorPyTorch):
    """A user's randomized defence that draws from torch's global generator (as ART's own defences may)."""

    randomized = True  # how the suite learns that a user's defence is random (its draws are then scored)

    def __init__(self) -> None:
        super().__init__(device_type="cpu", apply_fit=False, apply_predict=True)

    def forward(self, x: torch.Tensor, y: Any = None) -> tuple[torch.Tensor, Any]:
        return (x + 0.06 * torch.randn_like(x)).clamp(0, 1), y


def test_a_run_seeds_what_user_defences_draw_from_the_global_generators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from art_purifiers.evaluation import evaluate
    from tests.test_evaluation import tiny_config, write_dataset

    monkeypatch.setenv("ART_PURIFIERS_CACHE", str(tmp_path / "cache"))
    write_dataset(tmp_path / "data")
    spec = "tests.test_seeds_and_kinds:GlobalNoise"
    config = tiny_config(f"imagefolder:{tmp_path / 'data'}", defences=[spec], draws=3, num_images=12, chunk_size=4,
                         attacks=["pgd:eps=6/255,steps=2", "apgd:eps=6/255,steps=2"])  # fmt: skip
    figures = []
    for run in ("first", "second"):
        torch.manual_seed(len(run))  # whatever ran before in this process
        entry = evaluate(config, tmp_path / run)["defences"][spec]
        figures.append([entry["clean"]["per_draw"], {label: row["per_draw"] for label, row in entry["rows"].items()}])
    assert figures[0] == figures[1]
    assert len(set(figures[0][0])) > 1 or any(len(set(draws)) > 1 for draws in figures[0][1].values())


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
