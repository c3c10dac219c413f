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
from dataclasses import dataclass, field
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
    return f"{float(fraction):.3g}"


ATTACK_KINDS = (
    "pgd",
    "pgd-l2",
    "pgd-eot",
    "pgd-identity",
    "autoattack",
    "cw",
    "deepfool",
    "square",
    "transfer",
    "learned-bpda",
    "apgd",
    "cascade",
    "original-autoattack",
    "noise",
    "apgd-t",
)
#: The attacks of the v2 engine (our APGD, the original AutoAttack, the surrogate); the rest run through ART.
V2_KINDS = ("apgd", "cascade", "original-autoattack", "noise", "transfer", "apgd-t")

#: Kinds whose EOT draw count may be chosen from the gradient report (``k=auto``, their default).
AUTOMATIC_EOT = ("apgd", "cascade", "apgd-t")

#: Options each kind accepts besides eps, steps (or queries) and k.
KIND_OPTIONS: dict[str, set[str]] = {
    "pgd": {"eps_step", "restarts"},
    "pgd-l2": {"eps_step", "restarts"},
    "pgd-eot": {"eps_step", "restarts"},
    "pgd-identity": {"eps_step", "restarts"},
    "learned-bpda": {"eps_step", "restarts"},
    "autoattack": {"queries"},
    "cw": {"lr", "binary_search_steps", "initial_const"},
    "deepfool": set(),
    "square": {"restarts"},
    "apgd": {"norm", "restarts", "loss", "targeted", "bpda"},
    "cascade": {"norm", "restarts", "square", "levels"},
    "apgd-t": {"norm", "restarts", "targets"},
    "original-autoattack": {"norm", "version"},
    "noise": {"norm"},
    "transfer": {"method", "source"},
}


@dataclass(frozen=True)
class AttackSpec:
    """
    One attack with its budget, resolved to defaults.

    :param kind: One of :data:`ATTACK_KINDS`.
    :param eps: Budget (Linf, or L2 for ``pgd-l2``; ``None`` for the minimum-norm attacks C&W and DeepFool).
    :param steps: Iterations (PGD family), or queries (Square).
    :param eot: EOT draws k per gradient (1 = plain BPDA; randomized defences only; 0 = chosen from the measured
        gradient consistency, v2 attacks only).
    :param options: Extra options passed on (e.g. ``restarts``).
    """

    kind: str
    eps: float | None = None
    steps: int = 50
    eot: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The column name in reports: what the attack is, its budget and its cost."""
        budget = f" {format_budget(self.eps)}" if self.eps is not None else ""
        norm, restarts, eot, targeted, bpda = self._label_parts
        names = {
            "pgd": f"PGD-BPDA Linf{budget} ({self.steps} steps)",
            "pgd-l2": f"PGD-BPDA L2{budget} ({self.steps} steps)",
            "pgd-eot": f"PGD-BPDA+EOT Linf{budget} ({self.steps} steps, k={self.eot})",
            "pgd-identity": f"PGD-BPDA-identity Linf{budget} ({self.steps} steps)",
            "autoattack": f"AutoAttack Linf{budget}" + (f" (EOT k={self.eot})" if self.eot > 1 else ""),
            "cw": f"C&W L2 ({self.options.get('binary_search_steps', CW_BINARY_SEARCH_STEPS)}x{self.steps} steps)",
            "deepfool": f"DeepFool ({self.steps} steps)",
            "square": f"Square Linf{budget} ({self.steps} queries)",
            "transfer": f"Transfer PGD Linf{budget} ({self.steps} steps)",
            "learned-bpda": f"Learned-BPDA PGD Linf{budget} ({self.steps} steps)",
            "apgd": f"APGD-{str(self.options.get('loss', 'ce')).upper()} {norm}{budget} ({self.steps} steps"
            f"{restarts}, {eot}{targeted}{bpda})",
            "cascade": f"Cascade {norm}{budget} (APGD-CE/DLR {self.steps} steps{restarts}, {eot}, Square "
            f"{self.options.get('square', 5000)}, x{2 ** int(self.options.get('levels', 1))} check)",
            "original-autoattack": f"AutoAttack original {self.options.get('version', 'auto')} {norm}{budget}",
            "noise": f"Random noise {norm}{budget}",
            "apgd-t": f"APGD-T {norm}{budget} ({self.options.get('targets', 9)} targets, {self.steps} steps{restarts}, "
            f"{eot})",
        }
        if self.kind == "transfer":
            method = {"pgd": "APGD-CE", "mi": "MI-FGSM", "dim": "DI-MI-FGSM"}.get(
                str(self.options.get("method", "pgd"))
            )
            source = self.options.get("source", "surrogate")
            return f"Transfer {method} Linf{budget} from {source} ({self.steps} steps)"
        return names[self.kind]

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
        return self.kind in ("square", "transfer", "noise")

    @property
    def norm(self) -> str:
        """``Linf``, ``L2`` or ``RMS`` (an L2 budget per pixel value, root-mean-square); C&W and DeepFool: ``L2``."""
        if self.kind in ("pgd-l2", "cw", "deepfool"):
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
    "pgd": 50,
    "pgd-l2": 50,
    "pgd-eot": 20,
    "pgd-identity": 50,
    "autoattack": 100,
    "cw": 10,
    "deepfool": 50,
    "square": 1000,
    "transfer": 50,
    "learned-bpda": 50,
    "apgd": 100,
    "cascade": 100,
    "original-autoattack": 100,
    "noise": 1,
    "apgd-t": 100,
}


def parse_attack(spec: str) -> AttackSpec:
    """
    Parse an attack spec such as ``pgd:eps=8/255,steps=50`` or ``pgd-eot:eps=8/255,steps=20,k=10``.

    ``eps`` defaults to 8/255 (Linf) or 0.5 (L2); C&W and DeepFool take none.
    """
    kind, options = parse_spec(spec)
    kind = kind.lower()
    if kind not in ATTACK_KINDS:
        raise ValueError(f"Unknown attack {kind!r}; known: {', '.join(ATTACK_KINDS)}.")
    eps = options.pop("eps", None)
    if kind in ("cw", "deepfool"):
        if eps is not None:
            raise ValueError(f"{kind} is a minimum-norm attack and takes no eps.")
    else:
        eps = float(eps) if eps is not None else (0.5 if kind == "pgd-l2" else 8 / 255)
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}.")
    steps = int(options.pop("steps", options.pop("queries", _DEFAULT_STEPS[kind])))
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    automatic = kind in AUTOMATIC_EOT
    k = options.pop("k", 10 if kind == "pgd-eot" else 0 if automatic else 1)
    eot = 0 if k == "auto" and automatic else k
    if not isinstance(eot, int) or eot < (0 if automatic else 1):
        raise ValueError(f"k (EOT draws) must be a positive integer{' or auto' * automatic}, got {k!r}.")
    unknown = sorted(set(options) - KIND_OPTIONS[kind])
    if unknown:
        known = ", ".join(["eps", "steps", "k", *sorted(KIND_OPTIONS[kind])])
        raise ValueError(f"Unknown option(s) {', '.join(unknown)} for attack {kind!r}; it takes: {known}.")
    if str(options.get("norm", "Linf")) not in ("Linf", "L2", "RMS"):
        raise ValueError(f"norm must be Linf, L2 or RMS, got {options['norm']!r}.")
    return AttackSpec(kind, eps, steps, eot, options)
