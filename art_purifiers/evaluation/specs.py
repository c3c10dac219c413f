"""
Text specs of defences and attacks, as the command line takes them: ``name`` or ``name:key=value,key=value``.

Values are Python literals or fractions (``eps=8/255``). Examples::

    none                      jpeg:quality=50          NNFavoredJpeg:table=search
    QuantizeDistort           QuantizeDistort:table=learned,distortion_limit=0.25
    pgd:eps=8/255,steps=50    pgd-eot:eps=8/255,steps=20,k=10    autoattack:eps=8/255    cw    square:eps=8/255
    cascade:eps=8/255         apgd:eps=0.05,norm=RMS,targeted=True,k=30    original-autoattack:eps=4/255
    transfer:eps=8/255,method=dim    noise:eps=8/255
    transfer:eps=8/255,method=mi,source=cifar10-nrp-attacker+cifar10-surrogate

Unknown options are an error (a typo must not silently run the defaults).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from typing import Any

_FRACTION = re.compile(r"^\s*-?\d+(\.\d+)?\s*/\s*\d+(\.\d+)?\s*$")


def parse_value(text: str) -> Any:
    """A literal (number, bool, None, tuple, list), a fraction such as ``8/255`` (as float), or the string itself."""
    if _FRACTION.match(text):
        numerator, denominator = (float(part) for part in text.split("/"))
        if denominator == 0:
            raise ValueError(f"Division by zero in {text!r}.")
        return numerator / denominator
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``name:key=value,...`` into the name and a dict of parsed values."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"Empty spec {spec!r}.")
    name, _, rest = spec.strip().partition(":")
    options: dict[str, Any] = {}
    if rest:
        # split on commas that are outside brackets, so tuples like qf_range=(20,60) survive
        depth, current, parts = 0, "", []
        for char in rest:
            depth += char in "([{" and 1 or 0
            depth -= char in ")]}" and 1 or 0
            if char == "," and depth == 0:
                parts.append(current)
                current = ""
            else:
                current += char
        parts.append(current)
        for part in parts:
            key, equals, value = part.partition("=")
            if not equals or not key.strip():
                raise ValueError(f"Bad option {part!r} in spec {spec!r}; expected key=value.")
            options[key.strip()] = parse_value(value.strip())
    return name.strip(), options


def format_budget(eps: float) -> str:
    """``8/255`` for multiples of 1/255, else a short decimal."""
    fraction = Fraction(eps).limit_denominator(1000)
    if abs(eps * 255 - round(eps * 255)) < 1e-6 and eps > 0:
        return f"{round(eps * 255)}/255"
    if fraction == 0:  # a budget below 1/1000 would read as 0
        return f"{eps:.3g}"
    return f"{float(fraction):.3g}"


def _exact_budget(value: float) -> str:
    """``8/255`` when that fraction is exactly ``value``, else the value's shortest exact decimal."""
    levels = round(value * 255)
    return f"{levels}/255" if isinstance(value, float) and levels > 0 and levels / 255 == value else repr(value)


class AttackKind(str, Enum):
    """
    The kinds of attack spec (``kind:option=value,...``). A member is its spec name: it equals, hashes and formats
    as that string (``repr`` too), so kinds read back from a results file (plain strings) compare and look up
    the same.
    """

    PGD = "pgd"
    PGD_L2 = "pgd-l2"
    PGD_EOT = "pgd-eot"
    PGD_IDENTITY = "pgd-identity"
    AUTOATTACK = "autoattack"
    CW = "cw"
    DEEPFOOL = "deepfool"
    SQUARE = "square"
    TRANSFER = "transfer"
    LEARNED_BPDA = "learned-bpda"
    APGD = "apgd"
    CASCADE = "cascade"
    ORIGINAL_AUTOATTACK = "original-autoattack"
    NOISE = "noise"
    APGD_T = "apgd-t"

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return format(str(self.value), format_spec)

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:  # messages quote the spec name, as the user wrote it
        return repr(str(self.value))


class Engine(Enum):
    """What runs an attack."""

    #: ART's evasion attacks on a ``PyTorchClassifier``, through the defences' BPDA backward.
    ART = "art"
    #: The adaptive engine: our APGD (with EOT), the cascade, the original AutoAttack, the noise and transfer floors.
    ADAPTIVE = "adaptive"


ATTACK_KINDS: tuple[AttackKind, ...] = tuple(AttackKind)
_ADAPTIVE = (AttackKind.APGD, AttackKind.CASCADE, AttackKind.ORIGINAL_AUTOATTACK, AttackKind.NOISE,
             AttackKind.TRANSFER, AttackKind.APGD_T)  # fmt: skip
#: The engine of every kind.
ENGINES: dict[AttackKind, Engine] = {kind: Engine.ADAPTIVE if kind in _ADAPTIVE else Engine.ART for kind in AttackKind}

#: Kinds whose EOT draw count may be chosen from the gradient report (``k=auto``, their default).
AUTOMATIC_EOT = (AttackKind.APGD, AttackKind.CASCADE, AttackKind.APGD_T)

#: Options each kind accepts besides eps, steps (or queries) and k.
KIND_OPTIONS: dict[AttackKind, set[str]] = {
    AttackKind.PGD: {"eps_step", "restarts"},
    AttackKind.PGD_L2: {"eps_step", "restarts"},
    AttackKind.PGD_EOT: {"eps_step", "restarts"},
    AttackKind.PGD_IDENTITY: {"eps_step", "restarts"},
    AttackKind.LEARNED_BPDA: {"eps_step", "restarts"},
    AttackKind.AUTOATTACK: {"queries"},
    AttackKind.CW: {"lr", "binary_search_steps", "initial_const"},
    AttackKind.DEEPFOOL: set(),
    AttackKind.SQUARE: {"restarts"},
    AttackKind.APGD: {"norm", "restarts", "loss", "targeted", "bpda"},
    AttackKind.CASCADE: {"norm", "restarts", "square", "levels"},
    AttackKind.APGD_T: {"norm", "restarts", "targets"},
    AttackKind.ORIGINAL_AUTOATTACK: {"norm", "version"},
    AttackKind.NOISE: {"norm"},
    AttackKind.TRANSFER: {"method", "source"},
}


@dataclass(frozen=True)
class OptionType:
    """
    What an attack option accepts: a description for messages and help, and a check that returns the value in its
    canonical type or raises :class:`ValueError` naming the problem.
    """

    description: str
    convert: Callable[[Any], Any]


def _integer(minimum: int) -> OptionType:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError
        return value

    return OptionType(f"an integer >= {minimum}", convert)


def _positive_number(description: str = "a number > 0") -> OptionType:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError
        return value

    return OptionType(description, convert)


def _choice(*choices: Any) -> OptionType:
    def convert(value: Any) -> Any:
        if isinstance(value, bool) and not all(isinstance(choice, bool) for choice in choices):
            raise ValueError
        if value not in choices:
            raise ValueError
        return value

    return OptionType("one of " + ", ".join(map(str, choices)), convert)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError
    return value


#: Every attack option with what it accepts (the budgets' units are checked by :func:`check_budget`).
OPTION_TYPES: dict[str, OptionType] = {
    "eps": _positive_number("a number > 0 (a fraction such as 8/255, or a decimal)"),
    "steps": _integer(1),
    "queries": _integer(1),
    "k": _integer(1),
    "eps_step": _positive_number("a number > 0 (a fraction such as 1/255, or a decimal)"),
    "restarts": _integer(1),
    "lr": _positive_number(),
    "binary_search_steps": _integer(1),
    "initial_const": _positive_number(),
    "norm": _choice("Linf", "L2", "RMS"),
    "loss": _choice("ce", "dlr"),
    "targeted": _choice(True, False),
    "bpda": _choice("straight_through", "identity", "surrogate"),
    "square": _integer(0),
    "levels": _integer(0),
    "targets": _integer(1),
    "version": _choice("auto", "standard", "rand"),
    "method": _choice("pgd", "mi", "dim"),
    "source": OptionType("a model: zoo name, weight file or module:attribute, A+B for a chain", _text),
}

#: One line per option for ``art-purifiers list``.
OPTION_HELP: dict[str, str] = {
    "eps": "budget (Linf or RMS-L2: at most 1 on [0, 1] images; L2 for pgd-l2)",
    "steps": "iterations (Square and AutoAttack's Square: queries)",
    "queries": "queries of Square (square: the same as steps; autoattack: its Square's)",
    "k": "EOT draws per gradient (randomized defences); auto: chosen from the gradient consistency",
    "eps_step": "step size (default 2.5 * eps / steps)",
    "restarts": "random restarts",
    "lr": "C&W learning rate",
    "binary_search_steps": "C&W binary-search steps of its constant",
    "initial_const": "C&W initial constant",
    "norm": "threat model: Linf, L2, or RMS (L2 per pixel value)",
    "loss": "APGD loss: ce or dlr",
    "targeted": "random target labels",
    "bpda": "the defence's BPDA mode during the attack",
    "square": "queries of the cascade's Square stage (0: none)",
    "levels": "convergence-check levels (each doubles steps and EOT draws)",
    "targets": "target classes of APGD-T",
    "version": "the original AutoAttack's version (auto: standard, or rand for randomized defences)",
    "method": "transfer attack: pgd (APGD-CE), mi (MI-FGSM) or dim (DI-MI-FGSM)",
    "source": "the transfer attack's source model (default: --surrogate)",
}


@dataclass(frozen=True)
class AttackSpec:
    """
    One attack with its budget, resolved to defaults.

    :param kind: The attack's :class:`AttackKind` (or its name).
    :param eps: Budget (Linf, or L2 for ``pgd-l2``; ``None`` for the minimum-norm attacks C&W and DeepFool).
    :param steps: Iterations (PGD family), or queries (Square).
    :param eot: EOT draws k per gradient (1 = plain BPDA; randomized defences only; 0 = chosen from the measured
        gradient consistency, v2 attacks only).
    :param options: Extra options passed on (e.g. ``restarts``).
    """

    kind: AttackKind
    eps: float | None = None
    steps: int = 50
    eot: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", AttackKind(self.kind))  # a plain name (e.g. read from a file) as the kind

    @property
    def engine(self) -> Engine:
        """What runs the attack."""
        return ENGINES[self.kind]

    @property
    def label(self) -> str:
        """The column name in reports: what the attack is, its budget and its cost."""
        budget = f" {format_budget(self.eps)}" if self.eps is not None else ""
        norm, restarts, eot, targeted, bpda = self._label_parts
        binary_search_steps = self.options.get("binary_search_steps", CW_BINARY_SEARCH_STEPS)
        targets = self.options.get("targets", 9)
        names = {
            AttackKind.PGD: f"PGD-BPDA Linf{budget} ({self.steps} steps)",
            AttackKind.PGD_L2: f"PGD-BPDA L2{budget} ({self.steps} steps)",
            AttackKind.PGD_EOT: f"PGD-BPDA+EOT Linf{budget} ({self.steps} steps, k={self.eot})",
            AttackKind.PGD_IDENTITY: f"PGD-BPDA-identity Linf{budget} ({self.steps} steps)",
            AttackKind.AUTOATTACK: f"AutoAttack Linf{budget}" + (f" (EOT k={self.eot})" if self.eot > 1 else ""),
            AttackKind.CW: f"C&W L2 ({binary_search_steps}x{self.steps} steps)",
            AttackKind.DEEPFOOL: f"DeepFool ({self.steps} steps)",
            AttackKind.SQUARE: f"Square Linf{budget} ({self.steps} queries)",
            AttackKind.TRANSFER: f"Transfer PGD Linf{budget} ({self.steps} steps)",
            AttackKind.LEARNED_BPDA: f"Learned-BPDA PGD Linf{budget} ({self.steps} steps)",
            AttackKind.APGD: f"APGD-{str(self.options.get('loss', 'ce')).upper()} {norm}{budget} ({self.steps} steps"
            f"{restarts}, {eot}{targeted}{bpda})",
            AttackKind.CASCADE: f"Cascade {norm}{budget} (APGD-CE/DLR {self.steps} steps{restarts}, {eot}, Square "
            f"{self.options.get('square', 5000)}, x{2 ** int(self.options.get('levels', 1))} check)",
            AttackKind.ORIGINAL_AUTOATTACK: f"AutoAttack original {self.options.get('version', 'auto')} {norm}{budget}",
            AttackKind.NOISE: f"Random noise {norm}{budget}",
            AttackKind.APGD_T: f"APGD-T {norm}{budget} ({targets} targets, {self.steps} steps{restarts}, {eot})",
        }
        if self.kind == AttackKind.TRANSFER:
            method = {"pgd": "APGD-CE", "mi": "MI-FGSM", "dim": "DI-MI-FGSM"}.get(
                str(self.options.get("method", "pgd"))
            )
            source = self.options.get("source", "surrogate")
            return f"Transfer {method} Linf{budget} from {source} ({self.steps} steps)"
        return names[self.kind]

    @property
    def spec(self) -> str:
        """The spec that parses back to this attack (budgets in [0, 1] units, ``8/255`` where that is exact)."""
        parts = [] if self.eps is None else [f"eps={_exact_budget(self.eps)}"]
        parts += [f"steps={self.steps}", f"k={self.eot if self.eot else 'auto'}"]
        parts += [
            f"{name}={_exact_budget(value) if name == 'eps_step' else value}" for name, value in self.options.items()
        ]
        return f"{self.kind}:{','.join(parts)}"

    @property
    def _label_parts(self) -> tuple[str, str, str, str, str]:
        norm = str(self.options.get("norm", "Linf")).replace("RMS", "RMS-L2")
        restarts = f" x{self.options['restarts']} restarts" if "restarts" in self.options else ""
        eot = "EOT k=auto" if self.eot == 0 else f"EOT k={self.eot}"
        targeted = ", targeted" if self.options.get("targeted") else ""
        bpda = f", BPDA {self.options['bpda']}" if "bpda" in self.options else ""
        return norm, restarts, eot, targeted, bpda

    @property
    def slug(self) -> str:
        """A file-name-safe identifier."""
        budget = "" if self.eps is None else f"-eps{self.eps:.6g}"
        options = "".join(f"-{key}{value}" for key, value in sorted(self.options.items()))
        return "".join(
            c if c.isalnum() or c in "-_.=" else "_" for c in f"{self.kind}{budget}-s{self.steps}-k{self.eot}{options}"
        )

    @property
    def gradient_free(self) -> bool:
        """Black-box attacks (for the white-box vs black-box sanity check)."""
        return self.kind in (AttackKind.SQUARE, AttackKind.TRANSFER, AttackKind.NOISE)

    @property
    def norm(self) -> str:
        """``Linf``, ``L2`` or ``RMS`` (an L2 budget per pixel value, root-mean-square); C&W and DeepFool: ``L2``."""
        if self.kind in (AttackKind.PGD_L2, AttackKind.CW, AttackKind.DEEPFOOL):
            return "L2"
        return str(self.options.get("norm", "Linf"))

    @property
    def group(self) -> str:
        """The threat model whose robust accuracy this attack's results join: norm and budget."""
        if self.eps is None:
            return "minimum-norm L2"
        return f"{self.norm.replace('RMS', 'RMS-L2')} {format_budget(self.eps)}"


#: The papers' own threat models, replayed by ``art-purifiers evaluate --protocol NAME`` beside the adaptive attacks.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "qiu2021": {
        "attacks": ["apgd:eps=0.05,norm=RMS,targeted=True,k=30,bpda=identity,steps=200"],
        "source": "Qiu et al. 2021, section 6: targeted attacks with random target labels, an L2 budget of 0.05 as the "
        "root-mean-square over all pixel values, BPDA with the identity, EOT over 30 draws, 200+ rounds. Their "
        "optimiser was a fixed learning rate of 0.1; the replay uses APGD's step schedule (at least as strong).",
    },
    "ferrari2022": {
        "attacks": ["pgd:eps=8/255,steps=200,eps_step=0.001"],
        "source": "Ferrari et al. 2022: BPDA (straight-through JPEG, exact restorer gradients) as PGD with step 1e-3 "
        "for "
        "up to 200 iterations; the Linf budget 8/255 is ours (their figures sweep it).",
    },
    "zhang2021": {
        "attacks": ["pgd:eps=8/255,steps=1000,eps_step=0.1/255"],
        "source": "Zhang & Gao 2021, section 4.4 (Table 3): BPDA run with Athalye et al.'s code for 1000 iterations at "
        "learning rate 0.1. The paper states neither the budget nor the pixel scale: the replay reads the rate as 0.1 "
        "of 255 and uses Linf 8/255. Against the ensemble (--classifier "
        "art_purifiers.estimators.compression_ensemble:zhang2021_ensemble) the BPDA is inside every member.",
    },
}

#: Binary-search steps of C&W's constant (ART's default is 10; each costs ``steps`` iterations).
CW_BINARY_SEARCH_STEPS = 3

_DEFAULT_STEPS = {
    AttackKind.PGD: 50,
    AttackKind.PGD_L2: 50,
    AttackKind.PGD_EOT: 20,
    AttackKind.PGD_IDENTITY: 50,
    AttackKind.AUTOATTACK: 100,
    AttackKind.CW: 10,
    AttackKind.DEEPFOOL: 50,
    AttackKind.SQUARE: 1000,
    AttackKind.TRANSFER: 50,
    AttackKind.LEARNED_BPDA: 50,
    AttackKind.APGD: 100,
    AttackKind.CASCADE: 100,
    AttackKind.ORIGINAL_AUTOATTACK: 100,
    AttackKind.NOISE: 1,
    AttackKind.APGD_T: 100,
}


def parse_attack(spec: str, eps_scale: float = 1.0) -> AttackSpec:
    """
    Parse an attack spec such as ``pgd:eps=8/255,steps=50`` or ``pgd-eot:eps=8/255,steps=20,k=10``.

    ``eps`` defaults to 8/255 (Linf) or 0.5 (L2); C&W and DeepFool take none. Every option is checked against
    :data:`OPTION_TYPES`, and a Linf or RMS budget above 1 (the whole range of [0, 1] images) is refused with a hint,
    never guessed to be in 0-255 units.

    :param eps_scale: The unit of the budgets given (``eps`` and ``eps_step``): 255 reads ``eps=8`` as 8/255.
    :raises ValueError: naming the attack, the option, what it accepts and the value given.
    """
    name, options = parse_spec(spec)
    if name.lower() not in ATTACK_KINDS:
        raise ValueError(
            f"Unknown attack {name.lower()!r}; known: {', '.join(ATTACK_KINDS)} (art-purifiers list shows them)."
        )
    kind = AttackKind(name.lower())
    if isinstance(eps_scale, bool) or not isinstance(eps_scale, (int, float)) or not eps_scale > 0:
        raise ValueError(f"The budget scale must be a number > 0 (255 for budgets in 0-255 units), got {eps_scale!r}.")
    allowed = kind_options(kind)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown option(s) {', '.join(unknown)} for attack {kind!r}; it takes: {', '.join(allowed)}.")
    automatic = kind in AUTOMATIC_EOT
    k = options.pop("k", 10 if kind == AttackKind.PGD_EOT else 0 if automatic else 1)
    eot = 0 if automatic and k in ("auto", 0) else _checked(kind, "k", k, " or auto" * automatic)
    if kind == AttackKind.SQUARE and "queries" in options and "steps" in options:
        raise ValueError("Attack 'square': give its queries as steps or as queries, not both.")
    steps_name = "queries" if "queries" in options and kind == AttackKind.SQUARE else "steps"
    steps = _checked(kind, steps_name, options.pop(steps_name, _DEFAULT_STEPS[kind]))
    options = {name: _checked(kind, name, value) for name, value in options.items()}
    eps = options.pop("eps", None)
    if kind in (AttackKind.CW, AttackKind.DEEPFOOL):
        if eps is not None:
            raise ValueError(f"{kind} is a minimum-norm attack and takes no eps.")
    elif eps is None:
        eps = 0.5 if kind == AttackKind.PGD_L2 else 8 / 255
    else:
        eps = float(
            check_budget(
                kind, "eps", eps, eps_scale, "L2" if kind == AttackKind.PGD_L2 else options.get("norm", "Linf")
            )
        )
    if "eps_step" in options:
        norm = "L2" if kind == AttackKind.PGD_L2 else "Linf"
        options["eps_step"] = check_budget(kind, "eps_step", options["eps_step"], eps_scale, norm)
    return AttackSpec(kind, eps, steps, eot, options)


def kind_options(kind: str) -> list[str]:
    """The options an attack kind (or its spec name) takes, in the order ``art-purifiers list`` shows them."""
    kind = AttackKind(kind)
    common = [] if kind in (AttackKind.CW, AttackKind.DEEPFOOL) else ["eps"]
    return common + ["steps", *(["queries"] if kind == AttackKind.SQUARE else []), "k", *sorted(KIND_OPTIONS[kind])]


def _checked(kind: str, name: str, value: Any, alternatives: str = "") -> Any:
    """``value`` converted by :data:`OPTION_TYPES`, or a :class:`ValueError` naming the option and what it accepts."""
    option = OPTION_TYPES[name]
    try:
        return option.convert(value)
    except (ValueError, TypeError):
        raise ValueError(
            f"Attack {kind!r}: {name}={value!r} is not valid; {name} must be {option.description}{alternatives}."
        ) from None


def check_budget(kind: str, name: str, value: float, scale: float, norm: str) -> float:
    """
    A budget in [0, 1] pixel units: ``value / scale``. A Linf or RMS budget above 1 exceeds the whole range of [0, 1]
    images, so it was almost surely given in 0-255 units: refused with the two ways to say it.

    :raises ValueError: for a Linf or RMS budget above 1.
    """
    budget = value / scale if scale != 1 else value
    if norm in ("Linf", "RMS") and budget > 1:
        given = f"{value:g}" + (f" with --eps-scale {scale:g}" if scale != 1 else "")
        raise ValueError(
            f"Attack {kind!r}: {name}={given} is a {norm} budget of {budget:g} on images in [0, 1], more than their "
            f"whole range; give it as {value:g}/255, or pass --eps-scale 255 to give every budget in 0-255 units."
        )
    return budget


def check_l2_budget(attack: AttackSpec, dimensions: int) -> None:
    """
    :raises ValueError: for an L2 budget larger than the diameter of the [0, 1] image cube (``sqrt(dimensions)``),
        which no perturbation can use: a budget in 0-255 units, almost surely.
    """
    diameter = dimensions**0.5
    if attack.norm == "L2" and attack.eps is not None and attack.eps > diameter:
        raise ValueError(
            f"Attack {attack.kind!r}: an L2 budget of {attack.eps:g} exceeds the largest distance between images in "
            f"[0, 1] of {dimensions} values ({diameter:.4g}); give it in [0, 1] units (divided by 255), or pass "
            "--eps-scale 255 to give every budget in 0-255 units."
        )
