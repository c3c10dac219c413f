"""
The adaptive attack suite behind ``art-purifiers evaluate``.

Protocol (Carlini et al. 2019, "On Evaluating Adversarial Robustness"; Tramer et al. 2020): attack the first
``num_images`` test images (in a seeded random order) that the *undefended* classifier gets right, with every
attack through ART; report accuracy under attack (mean +- std over ``draws`` draws of a randomized defence, with a
Wilson 95% interval), attack success rate and perturbation norms, plus clean accuracy, image quality of purified
images, the defence's randomness, throughput and the sanity checks of :mod:`art_purifiers.evaluation.sanity`.

Runs are resumable: every attack works through the images in chunks of ``chunk_size``, and each chunk's examples
and per-image results go to ``output/state`` as soon as it is done (``results.json`` after every attack); running the
same command again continues where it stopped. Everything random is seeded per chunk, and every batch lies within
one chunk, so a chunk's results do not depend on which process ran it: under ``torchrun`` the processes share the
chunks (:mod:`art_purifiers.evaluation.distributed`), and a run may resume with another number of processes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from art_purifiers.evaluation import sanity
from art_purifiers.evaluation.config import (  # noqa: F401 - also importable from here, as before the split
    DEFAULT_ATTACKS,
    RESUMABLE_OPTIONS,
    SANITY_ATTACKS,
    EvaluationConfig,
    load_dataset,
)
from art_purifiers.evaluation.context import (  # noqa: F401 - also importable from here, as before the split
    RunContext,
    fit_image_indices,
    select_clean_correct,
)
from art_purifiers.evaluation.defended import DefenceUnderTest
from art_purifiers.evaluation.distributed import World, init_world
from art_purifiers.evaluation.engines import ENGINES
from art_purifiers.evaluation.output import RunOutput
from art_purifiers.evaluation.results import DefenceResult
from art_purifiers.evaluation.specs import AttackSpec, Engine
from art_purifiers.evaluation.targets import check_defence_spec


class Suite:
    """
    One evaluation run (see the module docstring); :func:`evaluate` is the entry point. The suite orchestrates: the
    output record (:class:`~.output.RunOutput`) says which attacks run and keeps ``results.json``; the run context
    (:class:`~.context.RunContext`) holds the classifier, images, seeds and chunk store; per defence spec a
    :class:`~.defended.DefenceUnderTest` is attacked by the engine of each attack's kind (:mod:`.engines`).

    :param world: This process's place in a ``torchrun`` launch (a single process by default). Every process runs the
        same steps on its share of the chunks; rank 0 alone writes ``results.json``, merged state and reports.
    :raises ValueError: for an unknown attack or defence spec, or an output directory this run may not continue,
        before anything is loaded or written.
    """

    def __init__(self, config: EvaluationConfig, output: Path, world: World | None = None) -> None:
        self.config = config
        self.world = world if world is not None else World()
        self.output = Path(output)
        config.attack_specs()  # every spec is checked before anything is loaded or written
        for spec in config.defences:
            check_defence_spec(spec)
        self.record = RunOutput(config, self.output, self.world)
        self.context = RunContext(config, self.world, self.output / "state")

    @property
    def attacks(self) -> list[AttackSpec]:
        """Every attack of this output, in run order (the sanity attacks included)."""
        return self.record.recorded

    def run(self) -> dict[str, Any]:
        """Run every defence of the config through every attack; the results (what ``results.json`` holds)."""
        self.context.load(self.attacks)
        self.engines = {engine: runner(self.context) for engine, runner in ENGINES.items()}
        self.record.record_run(self.context.data_record(), self.context.device)
        for spec in self.config.defences:
            self._evaluate_defence(spec)
        self.record.finish()
        return self.record.results.to_json()

    def _evaluate_defence(self, spec: str) -> None:
        """One defence: its clean figures and gradient report, every attack's row, robust accuracy, the checks."""
        entry = self.record.results.defences.setdefault(spec, DefenceResult())
        target = DefenceUnderTest.build(self.context, self.attacks, spec)
        entry.info, entry.randomized = target.info, target.is_random
        if entry.clean is None:
            entry.clean = target.clean_metrics()
            self.record.save()
        if entry.gradients is None:
            entry.gradients = target.gradient_report()
            self.record.save()
        target.gradients = entry.gradients
        for attack in tqdm(self.attacks, desc=f"{spec}: attacks", disable=not self.context.verbose):
            # adaptive rows refresh from their saved state; a finished ART row is kept while its per-image state is
            # there (without it the worst case would silently leave the attack out)
            if attack.label in entry.rows and attack.engine is Engine.ART and target.has_results(attack):
                continue
            row = target.attacked_by(self.engines[attack.engine], attack)
            if row is not None:
                entry.rows[attack.label] = row
                self.record.save()
        if not self.record.writer:  # the headline and the checks are rank 0's to write
            return
        entry.robust = target.robust_by_group()
        entry.sanity = sanity.run_checks(entry, self.attacks, len(self.context.indices))
        for check in entry.sanity:
            if not check.passed:
                print(f"WARNING [{spec}] sanity check failed: {check.name}: {check.detail}", file=sys.stderr)
        self.record.save()


def evaluate(config: EvaluationConfig, output: str | Path) -> dict[str, Any]:
    """
    Run (or resume) an evaluation and write ``output/results.json``, ``results.md``, ``results.csv`` and plots.

    Under ``torchrun`` every process calls this with the same arguments: they join a gloo process group, share the
    chunks of images, and rank 0 writes the outputs and returns the whole results dict (the others return theirs
    without the robust-accuracy summaries and sanity checks).

    :return: The results dict (what ``results.json`` holds; :meth:`.results.Results.from_json` reads it as records).
    """
    world, created = init_world()
    try:
        return Suite(config, Path(output), world).run()
    finally:
        if created:
            torch.distributed.destroy_process_group()
