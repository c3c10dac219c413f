"""Classifier-side defences: models that carry a defence inside and are attacked as one model."""

from art_purifiers.estimators.compression_ensemble import CompressionEnsemble, compression_ensemble_classifier

__all__ = ["CompressionEnsemble", "compression_ensemble_classifier"]
