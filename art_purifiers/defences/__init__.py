"""One module per paper; each defence is a thin :class:`~art_purifiers.base.PurifierPreprocessor` subclass."""

from art_purifiers.defences.compress_restore import CompressRestore
from art_purifiers.defences.jpeg_compression import JpegCompressionPyTorch
from art_purifiers.defences.nn_favored_jpeg import (
    NNFavoredJpeg,
    TableSearchResult,
    nn_favored_table,
    search_nn_favored_table,
)
from art_purifiers.defences.nrp import NeuralRepresentationPurifier
from art_purifiers.defences.quantize_distort import FEATURE_DISTILLATION_TABLE, QuantizeDistort
from art_purifiers.defences.super_resolution import SuperResolution

__all__ = [
    "CompressRestore",
    "FEATURE_DISTILLATION_TABLE",
    "JpegCompressionPyTorch",
    "NNFavoredJpeg",
    "NeuralRepresentationPurifier",
    "QuantizeDistort",
    "SuperResolution",
    "TableSearchResult",
    "nn_favored_table",
    "search_nn_favored_table",
]
