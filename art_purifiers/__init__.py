"""art-purifiers: input-purification defences for the Adversarial Robustness Toolbox (ART), in PyTorch."""

from art_purifiers import zoo
from art_purifiers.attacks import EOTPyTorchClassifier
from art_purifiers.base import BPDA_MODES, PurifierPreprocessor
from art_purifiers.defences import (
    CompressRestore,
    JpegCompressionPyTorch,
    NeuralRepresentationPurifier,
    NNFavoredJpeg,
    QuantizeDistort,
    SuperResolution,
)

__version__ = "0.1.0"

__all__ = [
    "BPDA_MODES",
    "CompressRestore",
    "EOTPyTorchClassifier",
    "JpegCompressionPyTorch",
    "NNFavoredJpeg",
    "NeuralRepresentationPurifier",
    "PurifierPreprocessor",
    "QuantizeDistort",
    "SuperResolution",
    "__version__",
    "zoo",
]
