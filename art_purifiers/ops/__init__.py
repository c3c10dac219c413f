"""Pure, batched, device-agnostic tensor functions (no ART imports)."""

from art_purifiers.ops.color import rgb_to_luma, rgb_to_ycbcr, ycbcr_to_rgb
from art_purifiers.ops.dct import block_dct, block_idct, dct_matrix
from art_purifiers.ops.distort import GridDistortion, distortion_statistics, remap, sample_grid_distortion
from art_purifiers.ops.groups import group_indices, map_groups
from art_purifiers.ops.quantize import quantize_dct, replace_gradient, round_with, scale_quantization_table

__all__ = [
    "GridDistortion",
    "block_dct",
    "block_idct",
    "dct_matrix",
    "distortion_statistics",
    "group_indices",
    "map_groups",
    "quantize_dct",
    "remap",
    "replace_gradient",
    "rgb_to_luma",
    "rgb_to_ycbcr",
    "round_with",
    "sample_grid_distortion",
    "scale_quantization_table",
    "ycbcr_to_rgb",
]
