"""The defences every shared contract and fuzz test runs on: each one the day it lands."""

from __future__ import annotations

from typing import Any

from art_purifiers import (
    CompressRestore,
    JpegCompressionPyTorch,
    NeuralRepresentationPurifier,
    NNFavoredJpeg,
    QuantizeDistort,
    SuperResolution,
)


class NNFavoredJpegFile(NNFavoredJpeg):
    """NNFavoredJpeg writing a real JPEG file with its table (``codec="jpeg"``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"codec": "jpeg", **kwargs})


class QuantizeDistortFile(QuantizeDistort):
    """QuantizeDistort writing a real JPEG file with its table (``codec="jpeg"``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"codec": "jpeg", **kwargs})


DEFENCES = [
    NNFavoredJpeg,
    QuantizeDistort,
    CompressRestore,
    SuperResolution,
    NeuralRepresentationPurifier,
    NNFavoredJpegFile,
    QuantizeDistortFile,
    JpegCompressionPyTorch,
]
