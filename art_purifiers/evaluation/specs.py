"""
Text specs of defences and attacks, as the command line takes them: ``name`` or ``name:key=value,key=value``.

Values are Python literals or fractions (``eps=8/255``). Examples::

    none                      jpeg:quality=50          NNFavoredJpeg:table=search
    QuantizeDistort           QuantizeDistort:table=learned,distortion_limit=0.25
    pgd:eps=8/255,steps=50    pgd-eot:eps=8/255,steps=20,k=10    autoattack:eps=8/255    cw    square:eps=8/255
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
)


@dataclass(frozen=True)
class AttackSpec:
    """
    One attack with its budget, resolved to defaults.

    :param kind: One of :data:`ATTACK_KINDS`.
    :param eps: Budget (Linf, or L2 for ``pgd-l2``; ``None`` for the minimum-norm attacks C&W and DeepFool).
    :param steps: Iterations (PGD family), or queries (Square).
    :param eot: EOT draws k per gradient (1 = plain BPDA; randomized defences only).
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
        }
        return names[self.kind]

    @property
    def slug(self) -> str:
        """A file-name-safe identifier."""
        budget = "" if self.eps is None else f"-eps{self.eps:.6g}"
        return f"{self.kind}{budget}-s{self.steps}-k{self.eot}".replace("/", "_")

    @property
    def gradient_free(self) -> bool:
        """Black-box attacks (for the white-box vs black-box sanity check)."""
        return self.kind in ("square", "transfer")


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
    eot = int(options.pop("k", 10 if kind == "pgd-eot" else 1))
    if eot < 1:
        raise ValueError(f"k (EOT draws) must be at least 1, got {eot}.")
    return AttackSpec(kind, eps, steps, eot, options)
