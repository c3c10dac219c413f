"""
What an evaluation run depends on: :class:`EvaluationConfig` (every option, recorded in ``results.json``), the default
and sanity attacks, and the data set a config names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from art_purifiers.data import ImageDataset, load_cifar10, load_image_folder
from art_purifiers.evaluation.distributed import World
from art_purifiers.evaluation.specs import AttackSpec, parse_attack

#: The attacks of a default run: floors (random noise, a transfer attack from the surrogate), ART's PGD-BPDA at three
#: budgets, the v2 cascade (APGD-CE, APGD-DLR, Square 5000, convergence check) and APGD-T (9 targets) at the same
#: budgets on the images the earlier attacks left, and the minimum-norm attacks. Robust accuracy per budget is the
#: worst case over all of them.
DEFAULT_ATTACKS = (
    "noise:eps=8/255",
    "transfer:eps=8/255,method=dim,steps=10",
    "pgd:eps=4/255,steps=50",
    "pgd:eps=8/255,steps=50",
    "pgd:eps=16/255,steps=50",
    "cascade:eps=4/255",
    "apgd-t:eps=4/255",
    "cascade:eps=8/255",
    "apgd-t:eps=8/255",
    "cascade:eps=16/255",
    "apgd-t:eps=16/255",
    "cw:steps=100",
    "deepfool",
)
#: Extra attacks the sanity checks need: fewer iterations, and a budget large enough to break any classifier.
SANITY_ATTACKS = ("pgd:eps=8/255,steps=10", "pgd:eps=8/255,steps=20", "pgd:eps=64/255,steps=20")


@dataclass
class EvaluationConfig:
    """
    Everything a run depends on (recorded in ``results.json``).

    :param defences: Defence specs (see :func:`~art_purifiers.evaluation.targets.build_defences`).
    :param attacks: Attack specs (see :func:`~art_purifiers.evaluation.specs.parse_attack`).
    :param classifier: Zoo name, zoo-format weight file, or ``module:attribute``.
    :param dataset: ``cifar10`` or ``imagefolder:PATH``.
    :param data_dir: CIFAR-10 directory (default ``$ART_PURIFIERS_DATA``).
    :param num_images: Clean-correct test images to attack.
    :param draws: Defence draws to average over for randomized defences.
    :param fit_images: Held-out training images for the data-driven steps (table search and learning, learned BPDA).
    :param sanity_checks: Also run :data:`SANITY_ATTACKS` and the checks.
    :param surrogate: The transfer attacks' source model (zoo name, weight file or ``module:attribute``).
    :param eot_cap: Largest EOT k chosen automatically while the gradient consistency reaches 0.9 (10 on a CPU).
    :param consistency_images: Images of the gradient report that measures EOT consistency.
    :param chunk_size: Images per chunk: the unit of saved progress, of seeding and of sharing work among processes.
    :param clean_images: At least this many test images (in the seeded order) are classified, and clean accuracy
        with and without each defence is measured on all the images classified (at least those needed to find
        ``num_images`` correct ones; more when the last step of the search overshoots); 0: the whole split.
    :param extend: Let this run add defences or attacks to a run already in the output directory (each command keeps
        its own provenance); without it that is refused.
    """

    defences: list[str]
    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    classifier: str = "cifar10-reference"
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = False
    image_size: int | None = None
    num_images: int = 500
    draws: int = 5
    seed: int = 0
    batch_size: int = 100
    chunk_size: int = 100
    fit_images: int = 256
    sanity_checks: bool = True
    surrogate: str = "cifar10-surrogate"
    eot_cap: int = 10
    consistency_images: int = 32
    device: str = "auto"
    clean_images: int | None = None
    extend: bool = False
    command: str = ""
    verbose: bool = True

    def attack_specs(self) -> list[AttackSpec]:
        """The attacks asked for, parsed (budgets in [0, 1] units)."""
        return [parse_attack(spec) for spec in self.attacks]


#: Options that may differ between the commands of one output directory: they do not change any figure (``attacks``
#: and ``defences`` are compared on their own).
RESUMABLE_OPTIONS = ("command", "verbose", "defences", "attacks", "extend")


def load_dataset(config: EvaluationConfig, split: str) -> ImageDataset:
    """The evaluation (``test``) or fitting (``train``) split named by the config."""
    if config.dataset == "cifar10":
        return load_cifar10(config.data_dir, split, download=config.download)
    if config.dataset.startswith("imagefolder:"):
        root = Path(config.dataset.partition(":")[2])
        return load_image_folder(root / split if (root / split).is_dir() else root, size=config.image_size)
    raise ValueError(f"dataset must be 'cifar10' or 'imagefolder:PATH', got {config.dataset!r}.")


def differing_options(reference: dict[str, Any], config: dict[str, Any], ignored: tuple[str, ...]) -> list[str]:
    """The options of ``config`` that ``reference`` holds with another value, ``ignored`` aside."""
    return sorted(
        key for key, value in config.items() if key not in ignored and key in reference and reference[key] != value
    )


def check_same_config(config: EvaluationConfig, world: World) -> None:
    """
    :raises ValueError: if the processes of a launch were given different configurations (rank 0's is shown).
    """
    mine = asdict(config)
    first = world.broadcast(mine if world.is_main else None)
    differing = differing_options(first, mine, ("command", "verbose"))
    if differing:
        details = ", ".join(f"{key}: {first.get(key)!r} on rank 0, {mine[key]!r} here" for key in differing)
        raise ValueError(f"Rank {world.rank} was given another configuration than rank 0 ({details}).")
