"""The adaptive evaluation suite: attacks through ART, sanity checks and paper-style reports."""

from art_purifiers.evaluation.specs import AttackSpec, parse_attack, parse_spec
from art_purifiers.evaluation.suite import DEFAULT_ATTACKS, SANITY_ATTACKS, EvaluationConfig, evaluate

__all__ = [
    "DEFAULT_ATTACKS",
    "SANITY_ATTACKS",
    "AttackSpec",
    "EvaluationConfig",
    "evaluate",
    "parse_attack",
    "parse_spec",
]
