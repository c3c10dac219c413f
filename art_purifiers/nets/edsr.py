"""
EDSR x2 super-resolution network (Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution",
CVPR workshops 2017), the upsampler of Mustafa et al.'s defence (IEEE TIP 2019).

:class:`EDSR` is the EDSR-baseline shape: subtract the RGB mean, a 3x3 head conv, residual blocks without batch
normalisation (conv-ReLU-conv plus identity, scaled by ``res_scale``), a 3x3 conv closing a long skip over the blocks,
then a conv to 4x the features and a x2 pixel shuffle per factor of two, a 3x3 conv to the image channels, and add the
mean back. The defaults (16 blocks, 64 features, x2) have 1.37 M parameters.

The module names follow the reference implementation's state-dict keys (``head.0``, ``body.<i>.body.0/2``,
``body.<blocks>``, ``tail.0.0``, ``tail.1``), so its released weights load with :func:`load_reference_state_dict`;
those expect pixel values in [0, 255] (``pixel_range=255``), ours are trained on [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from art_purifiers.nets import register_architecture

#: The RGB mean of DIV2K subtracted by the reference implementation (on [0, 1] pixels).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class _ResidualBlock(nn.Module):
    def __init__(self, features: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, features, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


def _upsampler(features: int, scale: int) -> nn.Sequential:
    """``log2(scale)`` stages of conv to 4x the features and a x2 pixel shuffle."""
    stages: list[nn.Module] = []
    for _ in range(int(math.log2(scale))):
        stages += [nn.Conv2d(features, 4 * features, 3, padding=1), nn.PixelShuffle(2)]
    return nn.Sequential(*stages)


@register_architecture("edsr")
class EDSR(nn.Module):
    """
    :param scale: Upscaling factor, a power of two (the defence uses 2).
    :param blocks: Residual blocks (EDSR-baseline: 16; EDSR: 32).
    :param features: Width of the trunk (EDSR-baseline: 64; EDSR: 256).
    :param res_scale: Scale of each block's residual (EDSR-baseline: 1; EDSR: 0.1).
    :param channels: Image channels.
    :param pixel_range: Value of a white pixel the weights expect (1 for ours, 255 for the reference weights); inputs
                        and outputs of :meth:`forward` are always in [0, 1].
    :param rgb_mean: Mean subtracted before the head and added back at the end, on [0, 1] pixels.
    """

    mean: torch.Tensor

    def __init__(
        self,
        scale: int = 2,
        blocks: int = 16,
        features: int = 64,
        res_scale: float = 1.0,
        channels: int = 3,
        pixel_range: float = 1.0,
        rgb_mean: tuple[float, ...] = DIV2K_RGB_MEAN,
    ) -> None:
        super().__init__()
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"scale must be a power of two, got {scale}.")
        if len(rgb_mean) != channels:
            raise ValueError(f"rgb_mean has {len(rgb_mean)} values for {channels} channels.")
        self.scale = scale
        self.pixel_range = float(pixel_range)
        self.register_buffer("mean", torch.tensor(rgb_mean).view(1, channels, 1, 1), persistent=False)
        self.head = nn.Sequential(nn.Conv2d(channels, features, 3, padding=1))
        self.body = nn.Sequential(
            *(_ResidualBlock(features, res_scale) for _ in range(blocks)), nn.Conv2d(features, features, 3, padding=1)
        )
        self.tail = nn.Sequential(_upsampler(features, scale), nn.Conv2d(features, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale ``(N, C, H, W)`` images in [0, 1] to ``(N, C, scale*H, scale*W)`` (values may leave [0, 1])."""
        centred = (x - self.mean) * self.pixel_range
        features = self.head(centred)
        features = features + self.body(features)
        return self.tail(features) / self.pixel_range + self.mean


def load_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> EDSR:
    """
    Build an :class:`EDSR` from a state dict of the reference EDSR implementation (e.g. its released
    ``edsr_baseline_x2`` file, loaded with ``torch.load(file, weights_only=True)``). Like spandrel's architecture
    detection, the shape is read off the keys and tensors: features and channels from the head conv, blocks from the
    ``body.<i>.body.0`` keys, the scale from the number of x2 pixel-shuffle stages in the tail (x3 models are not
    supported); the mean-shift layers are checked and dropped, and ``pixel_range`` is 255.

    :param state_dict: The reference implementation's keys (``sub_mean.*``, ``head.0.*``, ``body.*``, ``tail.*``,
                       ``add_mean.*``).
    :raises ValueError: if keys are missing or unexpected, or the mean shift is not the reference one.
    """
    state = dict(state_dict)
    if "head.0.weight" not in state:
        raise ValueError("Not a reference EDSR state dict: no 'head.0.weight' key.")
    features, channels = state["head.0.weight"].shape[:2]
    blocks = sum(1 for key in state if key.startswith("body.") and key.endswith(".body.0.weight"))
    stages = [key for key in state if key.startswith("tail.0.") and key.endswith(".weight")]
    if not stages or any(state[key].shape[0] != 4 * features for key in stages):
        raise ValueError("The tail is not made of x2 pixel-shuffle stages (conv to 4x the features): not EDSR x2/x4.")
    scale = 2 ** len(stages)
    mean = _reference_mean(state.pop("sub_mean.bias", None), state.pop("add_mean.bias", None))
    for key in ("sub_mean.weight", "add_mean.weight"):
        weight = state.pop(key, None)
        if weight is not None and not torch.equal(weight.float().flatten(1), torch.eye(channels)):
            raise ValueError(f"{key} is not the identity (rgb_std other than 1 is not supported).")
    # the reference EDSR (256 features) scales residuals by 0.1, the baseline (64) by 1
    model = EDSR(scale, blocks, features, 0.1 if features == 256 else 1.0, channels, 255.0, mean)
    try:
        model.load_state_dict({key: value.float() for key, value in state.items()})
    except RuntimeError as error:
        raise ValueError(f"The state dict does not fit EDSR x{scale} with {blocks} blocks: {error}") from error
    return model.eval()


def _reference_mean(sub_bias: torch.Tensor | None, add_bias: torch.Tensor | None) -> tuple[float, ...]:
    """The RGB mean on [0, 1] pixels encoded in the reference mean-shift biases (``-255 * mean``, ``+255 * mean``)."""
    if sub_bias is None or add_bias is None:
        return DIV2K_RGB_MEAN
    if not torch.allclose(sub_bias.float(), -add_bias.float()):
        raise ValueError("sub_mean and add_mean do not shift by the same mean.")
    return tuple(float(v) / 255.0 for v in add_bias.float())
