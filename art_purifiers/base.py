"""The ART plumbing shared by every purifier: validation, layouts, scaling, chunking, seeding and BPDA modes.

A :class:`PurifierPreprocessor` is an ART :class:`~art.defences.preprocessor.PreprocessorPyTorch`. ART's
``PyTorchClassifier`` (up to 1.20 at least, ART issue #1526) differentiates through
:meth:`PurifierPreprocessor.forward` with autograd whenever every preprocessing step is a ``PreprocessorPyTorch``, so
the backward chosen by ``bpda`` is carried by ``forward`` itself (autograd functions inside the defences), and the
NumPy entry points :meth:`__call__` and :meth:`estimate_gradient` run the same code. An ART with the fix of #1526
(:data:`ART_HAS_ESTIMATED_GRADIENTS`) asks a defence for its gradients through
``forward_with_estimated_gradient`` instead: here one pass of ``forward`` again, whose graph already carries the
``bpda`` backward (one draw of a randomized defence for value and gradient, nothing purified twice), and
:meth:`PurifierPreprocessor.estimate_forward` is the ``bpda`` surrogate for callers of ART's API.
"""

from __future__ import annotations

import copy
import inspect
import math
import secrets
import warnings
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from torch import nn

from art_purifiers.ops.device import full_precision
from art_purifiers.ops.quantize import Rounding, clamp_straight_through, replace_gradient

BPDA_MODES: tuple[str, ...] = ("straight_through", "identity", "surrogate")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# relative slack on the clip_values range check (attacks clip exactly; float32 round-off is tiny)
_RANGE_TOLERANCE = 1e-5
# pixels per CPU chunk (about 2 MB of float32, in cache)
_CPU_CHUNK_ELEMENTS = 1 << 19
# pixels (H x W) per chunk through a network: 256 CIFAR-10 images on the CPU, 64 times more on an accelerator
_NETWORK_CHUNK_PIXELS = {"cpu": 1 << 18, "other": 1 << 24}
# a clip range this wide with every value in [0, 1] is most likely [0, 1] data passed as 0-255
_WIDE_RANGE = 10.0

Randomness = dict[str, Any] | None
#: Whether the installed ART takes the gradients of PyTorch defences from ``estimate_forward`` (the fix of ART issue
#: #1526, which adds ``PreprocessorPyTorch.forward_with_estimated_gradient``); without it ART differentiates
#: ``forward``, which carries the ``bpda`` backward for that reason.
ART_HAS_ESTIMATED_GRADIENTS = hasattr(PreprocessorPyTorch, "forward_with_estimated_gradient")
# identity mode never differentiates through the defence, so plain rounding suffices there
_ROUNDING_FOR_BPDA: dict[str, Rounding] = {
    "straight_through": "straight_through",
    "surrogate": "soft",
    "identity": "hard",
}


def needs_gradient(x: torch.Tensor) -> bool:
    """Whether autograd will differentiate through ``x`` here: then the ``bpda`` backward applies."""
    return torch.is_grad_enabled() and x.requires_grad


class _CheckedAfterInit(type(PreprocessorPyTorch)):  # type: ignore[misc]
    """
    Runs a defence's :meth:`PurifierPreprocessor._after_init` when its construction is complete, so that a subclass
    sets its own attributes after ``super().__init__()``, as ART's defences do, and they are checked all the same.
    """

    def __init__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(name, bases, namespace, **kwargs)
        # help(), inspect and Sphinx show the constructor's parameters, not this __call__'s (*args, **kwargs)
        signature = inspect.signature(cls.__init__)  # type: ignore[misc]
        cls.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        defence = super().__call__(*args, **kwargs)
        defence._after_init()
        return defence


class PurifierPreprocessor(PreprocessorPyTorch, metaclass=_CheckedAfterInit):
    """
    Base class of the input-purification defences: a batched, device-agnostic ``PreprocessorPyTorch``.

    Subclasses implement :meth:`_purify` on ``(N, C, H, W)`` float tensors in ``[0, 1]`` and, when they are random,
    :meth:`_draw` (all per-image randomness for a batch, drawn on the CPU before chunking so that outputs do not
    depend on ``batch_size`` or the device) and :meth:`_is_randomized`. Defences whose output has another size (a
    x2 super-resolution) override :meth:`purified_size`; defences built on networks register them with
    :meth:`_set_network` and fetch the copy for the input's device with :meth:`_network`, and usually override
    :meth:`_chunk_size`.

    Layout: ``channels_first=True`` (NCHW) by default, because these defences sit in front of PyTorch models; ART's
    NumPy defences default to NHWC, so set ``channels_first=False`` for NHWC data.

    Precision: the purification runs in float32 (float64 for float64 input) with autocast switched off and, on CUDA,
    without TF32 matrix products (:func:`~art_purifiers.ops.device.full_precision`), so a ``torch.autocast`` region
    around an attack changes neither the rounding steps nor the networks; the output is cast back to the input's
    dtype.

    Memory: ``PyTorchClassifier`` moves the whole input array to the device before calling :meth:`forward`;
    ``batch_size`` bounds the intermediates of the purification, not that first copy.

    Chaining: several of these defences chain in one ``preprocessing_defences`` list (all-torch path). Chaining one
    with ART's NumPy-only defences makes ART raise ``NotImplementedError`` (``art/estimators/pytorch.py``).
    """

    params = ["clip_values", "channels_first", "bpda", "seed", "batch_size", "device_type"]

    def __init__(
        self,
        *,
        clip_values: tuple[float, float] = (0.0, 1.0),
        channels_first: bool = True,
        bpda: str = "straight_through",
        seed: int | None = None,
        batch_size: int = 256,
        apply_fit: bool = False,
        apply_predict: bool = True,
        device_type: str = "gpu",
    ) -> None:
        """
        :param clip_values: ``(min, max)`` of the input range, e.g. ``(0, 1)`` or ``(0, 255)``; outputs are clipped
                            to it. 8-bit steps of a defence work on the range mapped to ``[0, 255]``; 8-bit images
                            give the same result in ``(0, 1)`` and ``(0, 255)`` (up to float round-off).
        :param channels_first: ``True`` for NCHW input (default), ``False`` for NHWC.
        :param bpda: Backward of the non-differentiable steps: ``"straight_through"`` (identity through each such
                     step, exact gradients elsewhere), ``"identity"`` (the whole defence is the identity in
                     backward) or ``"surrogate"`` (smooth approximations in backward). The forward is always exact.
        :param seed: Seed of the defence's own random generator; ``None`` seeds it from OS entropy.
        :param batch_size: Number of images purified at once.
        :param apply_fit: Apply the defence when the classifier is trained.
        :param apply_predict: Apply the defence at prediction time.
        :param device_type: ``"gpu"`` or ``"cpu"``: the device of the NumPy entry points (``forward`` always runs on
                            the device of its input).
        """
        super().__init__(device_type=device_type, is_fitted=True, apply_fit=apply_fit, apply_predict=apply_predict)
        self.clip_values = clip_values
        self.channels_first = channels_first
        self.bpda = bpda
        self.seed = seed
        self.batch_size = batch_size
        self.device_type = device_type
        self._networks = NetworkCache()
        self._network_sources_loaded: dict[Hashable, Any] = {}
        # the base's own parameters are checked and the generator seeded here, so that a subclass may already draw
        # from it in its __init__; the subclass's parameters are checked when its whole __init__ has run
        PurifierPreprocessor._check_params(self)
        self._generator = torch.Generator()
        self._reseed()

    def _after_init(self) -> None:
        """When the whole ``__init__`` (a subclass's too) has run: check every parameter, load the networks."""
        self._check_params()
        self._load_networks()

    # ------------------------------------------------------------------ subclass hooks

    def _draw(self, num_images: int, height: int, width: int) -> Randomness:
        """
        Draw the random parameters of ``num_images`` images from ``self._generator`` (CPU).

        :return: A dict of tensors or objects supporting slicing on their first dimension, or ``None``.
        """
        return None

    def _purify(self, x: torch.Tensor, randomness: Randomness) -> torch.Tensor:
        """
        Purify ``(N, C, H, W)`` images in ``[0, 1]`` (float32 or float64) on ``x.device``.

        Non-differentiable steps must use the backward selected by :attr:`rounding` / :attr:`bpda`. Values may
        leave ``[0, 1]``; the base class clips them.
        """
        raise NotImplementedError

    def _is_randomized(self) -> bool:
        """Whether the current parameters make two calls on the same input differ (see :attr:`randomized`)."""
        return False

    def purified_size(self, height: int, width: int) -> tuple[int, int]:
        """
        Height and width of the purified images for inputs of ``height`` x ``width`` (the same unless a defence
        changes the size, e.g. a x2 super-resolution).
        """
        return height, width

    def _identity_surrogate(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """
        What ``bpda="identity"`` differentiates instead of the defence: ``x`` itself, or, when the output has
        another size, ``x`` resized to it by bicubic interpolation (float32, no antialiasing).
        """
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        return F.interpolate(work, size=size, mode="bicubic", align_corners=False).to(x.dtype)

    def _chunk_size(self, x: torch.Tensor) -> int:
        """
        Images purified at once, at most ``batch_size``. The default suits cheap per-pixel work: on the CPU,
        chunks small enough to stay in cache. Defences that run networks override it (see
        :meth:`_network_chunk_size`).

        :param x: The whole ``(N, C, H, W)`` batch.
        """
        if x.device.type != "cpu":
            return int(self.batch_size)
        per_image = x.shape[1] * x.shape[2] * x.shape[3]
        return int(min(self.batch_size, max(1, _CPU_CHUNK_ELEMENTS // per_image)))

    def _network_chunk_size(self, x: torch.Tensor) -> int:
        """A chunk size for networks: bounded by pixels per chunk (activations grow with H x W), at most
        ``batch_size``."""
        budget = _NETWORK_CHUNK_PIXELS["cpu" if x.device.type == "cpu" else "other"]
        return int(min(self.batch_size, max(1, budget // (x.shape[2] * x.shape[3]))))

    def _network_sources(self) -> dict[Hashable, Any]:
        """
        The networks the defence runs with its current parameters, as ``key -> source`` (a zoo name, a weight file,
        a module, ...): :meth:`_load_networks` loads each source with :meth:`_load_network`. None by default.
        """
        return {}

    def _load_network(self, key: Hashable, source: Any) -> nn.Module:
        """The network of one source of :meth:`_network_sources`."""
        raise NotImplementedError(f"{type(self).__name__} names network sources but does not load them.")

    def _load_networks(self) -> None:
        """
        The one place where a defence's networks are loaded (after its parameters are checked, at construction and
        in :meth:`set_params`): the sources that changed are loaded, all or none (a failing load changes nothing),
        and the networks no longer named are forgotten.
        """
        wanted = self._network_sources()
        # a defence pickled by an earlier version: the networks it holds came from its current sources
        loaded = getattr(self, "_network_sources_loaded", None)
        if loaded is None:
            loaded = {key: source for key, source in wanted.items() if key in self._networks.keys()}
        changed = {key: source for key, source in wanted.items() if key not in loaded or loaded[key] != source}
        networks = {key: self._load_network(key, source) for key, source in changed.items()}
        if networks or set(loaded) - set(wanted):
            self._networks = self._networks.copy()  # a shallow copy of the defence keeps the networks it had
        for key, network in networks.items():
            self._set_network(key, network)
        for key in set(loaded) - set(wanted):
            self._networks.discard(key)
        self._network_sources_loaded = dict(wanted)

    def _set_network(self, key: Hashable, network: nn.Module) -> None:
        """Register a network under ``key`` (see :class:`NetworkCache`: a frozen eval-mode copy is kept)."""
        self._networks.set(key, network)

    def _network(self, key: Hashable, device: torch.device, dtype: torch.dtype = torch.float32) -> nn.Module:
        """The network registered under ``key``, on ``device`` in ``dtype`` (copied once, then cached)."""
        return self._networks.get(key, device, dtype)

    @property
    def randomized(self) -> bool:
        """Whether two calls on the same input may differ (then EOT is meaningful)."""
        return self._is_randomized()

    @property
    def rounding(self) -> Rounding:
        """The rounding variant of ``ops.quantize`` matching the BPDA mode."""
        return _ROUNDING_FOR_BPDA[self.bpda]

    # ------------------------------------------------------------------ random state

    def get_random_state(self) -> torch.Tensor:
        """
        The state of the defence's random generator, to replay draws with :meth:`set_random_state` (as
        :class:`~art_purifiers.attacks.EOTPyTorchClassifier` does for Carlini & Wagner's paired gradients).

        :return: A CPU ``ByteTensor`` (a copy).
        """
        return self._generator.get_state()

    def set_random_state(self, state: torch.Tensor) -> None:
        """
        Restore a state returned by :meth:`get_random_state`: the next calls draw what they drew after it.

        :raises TypeError: if ``state`` is not a ``torch.ByteTensor`` of a generator state.
        """
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8:
            raise TypeError(f"state must be a torch.ByteTensor from get_random_state, got {type(state).__name__}.")
        self._generator.set_state(state)

    # ------------------------------------------------------------------ ART API

    def forward(self, x: torch.Tensor, y: Any | None = None) -> tuple[torch.Tensor, Any | None]:
        """
        Purify a batch on ``x.device``, carrying the BPDA backward for autograd.

        :param x: Images ``(N, C, H, W)`` (or ``(N, H, W, C)`` with ``channels_first=False``) within
                  ``clip_values``, floating point, 1 or 3 channels.
        :param y: Labels, returned unchanged.
        :return: Purified images (same layout, dtype and device; the size given by :meth:`purified_size`) and ``y``.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"forward expects a torch.Tensor, got {type(x).__name__}; use __call__ for NumPy arrays.")
        self._validate(tuple(x.shape), x.dtype)
        self._check_values(x)
        # contiguous: convolutions on a permuted view pick other kernels and differ in the last bits
        nchw = x if self.channels_first else x.permute(0, 3, 1, 2).contiguous()
        randomness = self._draw(nchw.shape[0], nchw.shape[2], nchw.shape[3])
        chunk = self._chunk_size(nchw)
        needs_grad = needs_gradient(x)
        parts: list[torch.Tensor] = []
        out: torch.Tensor | None = None
        for start in range(0, nchw.shape[0], chunk):
            part = (
                None if randomness is None else {key: value[start : start + chunk] for key, value in randomness.items()}
            )
            purified = self._purify_scaled(nchw[start : start + chunk], part)
            if needs_grad:
                parts.append(purified)
                continue
            if out is None:  # sized from the first chunk: the output may be larger than the input
                out = purified.new_empty((nchw.shape[0], *purified.shape[1:]))
            out[start : start + chunk] = purified
        if out is None:
            out = parts[0] if len(parts) == 1 else torch.cat(parts)
        if not self.channels_first:
            out = out.permute(0, 2, 3, 1)
        return out, y

    def estimate_forward(self, x: torch.Tensor, y: Any | None = None) -> torch.Tensor:
        """
        The differentiable estimate of the defence that ``bpda`` selects (ART's name for a BPDA surrogate): the
        purified images carrying the ``bpda`` backward, or for ``bpda="identity"`` the input itself (resized to the
        purified size when the defence changes it).

        :param x: Images as in :meth:`forward`.
        :param y: Labels, unused.
        """
        if self.bpda != "identity":
            return self.forward(x, y)[0]
        nchw = x if self.channels_first else x.permute(0, 3, 1, 2)
        surrogate = self._identity_surrogate(nchw, self.purified_size(nchw.shape[2], nchw.shape[3]))
        return surrogate if self.channels_first else surrogate.permute(0, 2, 3, 1)

    def forward_with_estimated_gradient(self, x: torch.Tensor, y: Any | None = None) -> tuple[torch.Tensor, Any | None]:
        """
        What an ART with the fix of its issue #1526 calls where it needs gradients: :meth:`forward`, whose graph
        already carries the ``bpda`` backward (ART's default would run ``forward`` and then :meth:`estimate_forward`,
        purifying twice and, for a randomized defence, taking value and gradient from two different draws).
        """
        return self.forward(x, y)

    def __call__(self, x: np.ndarray, y: Any | None = None) -> tuple[np.ndarray, Any | None]:
        """
        Purify a NumPy batch on ``self.device``; the input array is never modified.

        :param x: Images as in :meth:`forward`, as a floating-point NumPy array.
        :param y: Labels, returned unchanged.
        :return: Purified images (same layout and dtype) and ``y``.
        """
        x_tensor = self._numpy_to_tensor(x, "x")
        with torch.no_grad():
            out, _ = self.forward(x_tensor)
        return out.cpu().numpy(), y

    def estimate_gradient(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """
        Backpropagate ``grad`` (the gradient with respect to the purified images) to ``x`` with the ``bpda`` backward.

        ``grad`` has the shape of the purified images, or ``(N, K, ...)`` for K class gradients (as ART passes
        them); the K gradients then go through one forward pass, so a randomized defence uses one draw for all of
        them (and fresh randomness at each call, as a new forward pass would).

        :param x: Images as in :meth:`__call__`.
        :param grad: Gradient with respect to the purified images, or ``(N, K, ...)`` of them.
        :return: Gradient with respect to ``x``: ``x``'s shape (or ``(N, K, ...)``), ``x``'s dtype.
        """
        x_tensor = self._numpy_to_tensor(x, "x").requires_grad_(True)
        grad_tensor = self._numpy_to_tensor(grad, "grad", validate=False)
        out_shape = self._output_shape(tuple(x_tensor.shape))
        per_class = (
            grad_tensor.dim() == x_tensor.dim() + 1 and grad_tensor.shape[:1] + grad_tensor.shape[2:] == out_shape
        )
        if tuple(grad_tensor.shape) != out_shape and not per_class:
            raise ValueError(
                f"grad has shape {tuple(grad_tensor.shape)}; expected the purified images' shape {out_shape} "
                f"(x has shape {tuple(x_tensor.shape)}) or (N, K, ...) class gradients of it."
            )
        with torch.enable_grad():
            out, _ = self.forward(x_tensor)
            outputs = grad_tensor.to(out.dtype).unbind(1) if per_class else [grad_tensor.to(out.dtype)]
            gradients = [
                torch.autograd.grad(out, x_tensor, g, retain_graph=k + 1 < len(outputs), allow_unused=True)[0]
                for k, g in enumerate(outputs)
            ]
        gradients = [torch.zeros_like(x_tensor) if g is None else g for g in gradients]
        gradient = torch.stack(gradients, 1) if per_class else gradients[0]
        return gradient.cpu().numpy()

    def _output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the purified batch for an input batch of ``shape`` (in this defence's layout)."""
        if self.channels_first:
            return (*shape[:2], *self.purified_size(shape[2], shape[3]))
        return (shape[0], *self.purified_size(shape[1], shape[2]), shape[3])

    def set_params(self, **kwargs: Any) -> None:
        """
        Set parameters listed in :attr:`params`; a new ``seed`` re-seeds the generator.

        :raises ValueError: for unknown names or invalid values (the defence is left unchanged).
        """
        unknown = sorted(set(kwargs) - set(self.params))
        if unknown:
            raise ValueError(f"Unknown parameter(s) {unknown} for {type(self).__name__}; valid: {self.params}.")
        previous = {key: getattr(self, key) for key in kwargs}
        for key, value in kwargs.items():
            setattr(self, key, value)
        try:
            self._check_params()
            self._load_networks()
        except (TypeError, ValueError):
            for key, value in previous.items():
                setattr(self, key, value)
            raise
        if "seed" in kwargs:
            self._reseed()
        if "device_type" in kwargs:
            PreprocessorPyTorch.__init__(
                self,
                device_type=self.device_type,
                is_fitted=True,
                apply_fit=self.apply_fit,
                apply_predict=self.apply_predict,
            )

    def get_params(self) -> dict[str, Any]:
        """Current values of :attr:`params`."""
        return {key: getattr(self, key) for key in self.params}

    def _check_params(self) -> None:
        clip = self.clip_values
        if (
            not isinstance(clip, (tuple, list))
            or len(clip) != 2
            or not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in clip)
            or not all(math.isfinite(float(v)) for v in clip)
            or float(clip[0]) >= float(clip[1])
        ):
            raise ValueError(f"clip_values must be a (min, max) pair of finite numbers with min < max, got {clip!r}.")
        self.clip_values = (float(clip[0]), float(clip[1]))
        if not isinstance(self.channels_first, bool):
            raise TypeError(f"channels_first must be a bool, got {self.channels_first!r}.")
        if self.bpda not in BPDA_MODES:
            raise ValueError(f"bpda must be one of {BPDA_MODES}, got {self.bpda!r}.")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0
        ):
            raise ValueError(f"seed must be None or a non-negative integer, got {self.seed!r}.")
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, (int, np.integer))
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}.")
        if self.device_type not in ("gpu", "cpu"):
            raise ValueError(f"device_type must be 'gpu' or 'cpu', got {self.device_type!r}.")

    # ------------------------------------------------------------------ helpers

    def _reseed(self) -> None:
        seed = secrets.randbits(63) if self.seed is None else int(self.seed)
        self._generator = torch.Generator().manual_seed(seed)

    def _purify_scaled(self, x: torch.Tensor, randomness: Randomness) -> torch.Tensor:
        """
        Map a chunk from ``clip_values`` to [0, 1], purify it at full precision (float32, float64 for float64 input),
        with the BPDA backward, clip, map back and cast to the input's dtype.
        """
        low, high = self.clip_values
        work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        needs_grad = needs_gradient(x)
        with full_precision(x.device):
            # a correctly rounded division, not a product with the rounded reciprocal: k in (0, 255) then maps to the
            # very float of k / 255 in (0, 1), so the DCT rounding ties of 8-bit images fall the same way in any range;
            # the divisor is a tensor on x's device because CUDA turns a division by a number into that product
            span = torch.full((), high - low, dtype=work_dtype, device=x.device)
            unit = (x.to(work_dtype) - low) / span
            if not needs_grad or self.bpda == "identity":
                with torch.no_grad():
                    purified = self._purify(unit, randomness).clamp_(0.0, 1.0).mul_(high - low).add_(low).to(x.dtype)
                if not needs_grad:
                    return purified
                # identity in backward: the value of the purified images, the gradient of x (or of x resized)
                return replace_gradient(purified, self._identity_surrogate(x, (purified.shape[-2], purified.shape[-1])))
            purified = clamp_straight_through(self._purify(unit, randomness), 0.0, 1.0)
            return (purified * (high - low) + low).to(x.dtype)

    def _validate(self, shape: tuple[int, ...], dtype: Any) -> None:
        layout = "(N, C, H, W)" if self.channels_first else "(N, H, W, C)"
        if len(shape) != 4:
            raise ValueError(f"{type(self).__name__} expects a 4-D batch {layout}, got shape {shape}.")
        if shape[0] == 0:
            raise ValueError("Empty batch: x has 0 images.")
        channels = shape[1] if self.channels_first else shape[3]
        spatial = shape[2:] if self.channels_first else shape[1:3]
        if channels not in (1, 3):
            other = shape[3] if self.channels_first else shape[1]
            hint = f" Did you mean channels_first={not self.channels_first}?" if other in (1, 3) else ""
            raise ValueError(f"Expected 1 or 3 channels in layout {layout}, got shape {shape}.{hint}")
        if min(spatial) < 1:
            raise ValueError(f"Images must have non-zero height and width, got shape {shape}.")
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"x must be floating point (float16/32/64), got dtype {dtype}; convert it first.")

    def _check_values(self, x: torch.Tensor) -> None:
        """Reject NaN, infinity and values outside ``clip_values`` (with a hint); warn on [0, 1] data in 0-255."""
        low, high = self.clip_values
        x_min, x_max = (float(v) for v in torch.aminmax(x.detach().float()))
        if not (math.isfinite(x_min) and math.isfinite(x_max)):
            raise ValueError("x contains NaN or infinite values.")
        slack = _RANGE_TOLERANCE * (high - low)
        if x_min < low - slack or x_max > high + slack:
            raise ValueError(
                f"x has values in [{x_min:g}, {x_max:g}], outside clip_values=({low:g}, {high:g})."
                + _range_hint(x_min, x_max, low, high)
            )
        if high - low >= _WIDE_RANGE and 0.0 <= x_min and 0.0 < x_max <= 1.0:
            warnings.warn(
                f"Every value of x lies in [0, 1] but clip_values=({low:g}, {high:g}): if the images are in [0, 1], "
                "pass clip_values=(0, 1), otherwise the 8-bit steps see nearly black images.",
                stacklevel=3,
            )

    def _numpy_to_tensor(self, array: Any, name: str, validate: bool = True) -> torch.Tensor:
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array, got {type(array).__name__}.")
        if array.dtype.kind != "f":
            raise TypeError(
                f"{name} must be floating point (float16/32/64), got dtype {array.dtype}; convert it first."
            )
        if validate:
            self._validate(array.shape, torch.float32)
        if self.device.type == "cpu" and array.flags.writeable:
            # shares memory: forward never writes into its input
            return torch.from_numpy(np.ascontiguousarray(array))
        return torch.tensor(array, device=self.device)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_generator"] = self._generator.get_state()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        generator_state = state.pop("_generator")
        self.__dict__.update(state)
        self._generator = torch.Generator()
        self._generator.set_state(generator_state)

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={getattr(self, key)!r}" for key in self.params)
        return f"{type(self).__name__}({args})"


def _range_hint(x_min: float, x_max: float, low: float, high: float) -> str:
    """A guess at what was meant, for the out-of-range error; empty when there is no good guess."""
    if 0.0 <= x_min and x_max <= 255.0 and high <= 1.0:
        return " Did you mean clip_values=(0, 255)?"
    if x_min < 0.0 <= low:
        if -1.0 <= x_min and x_max <= 1.0:
            return " Did you mean clip_values=(-1, 1)?"
        return (
            " Standardised images? The defences work on pixel ranges: pass the images before normalisation and let "
            "ART standardise after the defences, PyTorchClassifier(..., preprocessing=(mean, std))."
        )
    return ""


class NetworkCache:
    """
    The networks of a defence, frozen (no parameter requires grad) and in eval mode, with one copy per device and
    dtype made on first use.

    A network handed to :meth:`set` is copied once, so the caller's module is never moved, frozen or switched to
    eval mode in place. Pickling keeps the registered networks and drops the per-device copies.
    """

    def __init__(self) -> None:
        self._networks: dict[Hashable, nn.Module] = {}
        self._copies: dict[tuple[Hashable, torch.device, torch.dtype], nn.Module] = {}

    def copy(self) -> NetworkCache:
        """A cache of the same networks and copies (the modules shared), to change without changing this one."""
        twin = NetworkCache()
        twin._networks, twin._copies = dict(self._networks), dict(self._copies)
        return twin

    def set(self, key: Hashable, network: nn.Module) -> None:
        """Register a frozen eval-mode copy of ``network`` under ``key`` (replacing an earlier one)."""
        if not isinstance(network, nn.Module):
            raise TypeError(f"Expected a torch.nn.Module, got {type(network).__name__}.")
        frozen = copy.deepcopy(network).eval()
        for parameter in frozen.parameters():
            parameter.requires_grad_(False)
        self.discard(key)
        self._networks[key] = frozen

    def get(self, key: Hashable, device: torch.device, dtype: torch.dtype = torch.float32) -> nn.Module:
        """The network under ``key`` on ``device`` in ``dtype`` (floating-point parameters and buffers)."""
        index = (key, torch.device(device), dtype)
        if index not in self._copies:
            network = self._networks[key]
            tensors = [*network.parameters(), *network.buffers()]
            fits = all(t.device == index[1] and (t.dtype == dtype or not t.is_floating_point()) for t in tensors)
            self._copies[index] = network if fits else copy.deepcopy(network).to(device=index[1], dtype=dtype)
        return self._copies[index]

    def discard(self, key: Hashable) -> None:
        """Forget the network under ``key`` and its copies (no error if there is none)."""
        self._networks.pop(key, None)
        self._copies = {index: module for index, module in self._copies.items() if index[0] != key}

    def keys(self) -> list[Hashable]:
        """The registered keys."""
        return list(self._networks)

    def __getstate__(self) -> dict[str, Any]:
        return {"_networks": self._networks, "_copies": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
