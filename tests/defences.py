"""The defences every shared contract and fuzz test runs on: each one the day it lands."""

from __future__ import annotations

from art_purifiers import (
    CompressRestore,
    NeuralRepresentationPurifier,
    NNFavoredJpeg,
    QuantizeDistort,
    SuperResolution,
)

DEFENCES = [NNFavoredJpeg, QuantizeDistort, CompressRestore, SuperResolution, NeuralRepresentationPurifier]
