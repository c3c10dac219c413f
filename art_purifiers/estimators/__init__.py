"""Classifier-side defences: models that carry a defence inside and are attacked as one model."""

from art_purifiers.estimators.compression_ensemble import (
    ZHANG2021_MEMBERS,
    ZHANG2021_TABLE,
    CompressionEnsemble,
    compression_ensemble_classifier,
    search_ensemble_table,
    zhang2021_ensemble,
)

__all__ = [
    "CompressionEnsemble",
    "ZHANG2021_MEMBERS",
    "ZHANG2021_TABLE",
    "compression_ensemble_classifier",
    "search_ensemble_table",
    "zhang2021_ensemble",
]
