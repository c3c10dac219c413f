"""The ART contract of PurifierPreprocessor, exercised through both shipped defences."""

from __future__ import annotations

import copy
import inspect
import pickle
from typing import Any

import numpy as np
import pytest
import torch

from art_purifiers import (
    CompressRestore,
    NNFavoredJpeg,
    QuantizeDistort,
)
from art_purifiers.base import NetworkCache, PurifierPreprocessor
from tests.defences import DEFENCES


@pytest.mark.parametrize("defence_class", DEFENCES)
def test_layouts_scales_and_dtypes_agree(defence_class: type[PurifierPreprocessor], images: np.ndarray) -> None:
    reference = defence_class(seed=3, device_type="cpu")(images)[0]
    nhwc = defence_class(seed=3, channels_first=False, device_type="cpu")(images.transpose(0, 2, 3, 1))[0]
    np.testing.assert_allclose(nhwc.transpose(0, 3, 1, 2), reference, atol=1e-6)
    scaled = defence_class(seed=3, clip_values=(0, 255), device_type="cpu")(images * 255)[0]
    np.testing.assert_allclose(scaled / 255, reference, atol=1e-4)
    for dtype in (np.float16, np.float64):
        cast = images.astype(dtype)
        out = defence_class(seed=3, device_type="cpu")(cast)[0]
        assert out.dtype == dtype and out.shape == images.shape
        # compared with float32 work on the same (rounded) pixels; float16 keeps ~3 decimal digits
        expected = defence_class(seed=3, device_type="cpu")(cast.astype(np.float32))[0]
        np.testing.assert_allclose(out.astype(np.float32), expected, atol=2e-3)
    assert reference.min() >= 0 and reference.max() <= 1


@pytest.mark.parametrize("defence_class", DEFENCES)
def test_grey_images_and_one_channel(defence_class: type[PurifierPreprocessor], images: np.ndarray) -> None:
    grey = images[:, :1]
    out = defence_class(seed=0)(grey)[0]
    assert out.shape == grey.shape and not np.allclose(out, grey)


@pytest.mark.parametrize("defence_class", DEFENCES)
def test_input_is_never_modified(defence_class: type[PurifierPreprocessor], images: np.ndarray) -> None:
    before = images.copy()
    defence = defence_class(seed=0)
    defence(images)
    defence.estimate_gradient(images, np.ones_like(images))
    tensor = torch.from_numpy(images.copy())
    defence.forward(tensor)
    np.testing.assert_array_equal(images, before)
    np.testing.assert_array_equal(tensor.numpy(), before)


@pytest.mark.parametrize("defence_class", DEFENCES)
def test_pickle_and_deepcopy_continue_the_same_sequence(
    defence_class: type[PurifierPreprocessor], images: np.ndarray
) -> None:
    defence = defence_class(seed=11)
    defence(images)
    clones = [pickle.loads(pickle.dumps(defence)), copy.deepcopy(defence)]
    expected = defence(images)[0]
    for clone in clones:
        np.testing.assert_array_equal(clone(images)[0], expected)
        assert clone.get_params().keys() == defence.get_params().keys()


def test_seeds_make_randomness_reproducible_and_fresh(images: np.ndarray) -> None:
    first, second = QuantizeDistort(seed=5), QuantizeDistort(seed=5)
    outputs = [first(images)[0] for _ in range(3)]
    for out in outputs:
        np.testing.assert_array_equal(second(images)[0], out)
    assert not np.array_equal(outputs[0], outputs[1])  # fresh draws per call
    assert not np.array_equal(QuantizeDistort(seed=6)(images)[0], outputs[0])  # different seeds differ
    first.set_params(seed=5)  # re-seeding restarts the sequence
    np.testing.assert_array_equal(first(images)[0], outputs[0])
    unseeded = [QuantizeDistort(seed=None)(images)[0] for _ in range(2)]
    assert not np.array_equal(*unseeded)


def test_outputs_do_not_depend_on_batch_size(images: np.ndarray) -> None:
    big = np.concatenate([images] * 5)
    outs = [QuantizeDistort(seed=2, batch_size=size)(big)[0] for size in (1, 3, 256)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    # each image gets its own distortion
    assert not np.array_equal(outs[0][0], outs[0][4])


def test_deterministic_defence_is_deterministic(images: np.ndarray) -> None:
    assert not NNFavoredJpeg().randomized and QuantizeDistort().randomized
    assert not QuantizeDistort(distort=False).randomized
    np.testing.assert_array_equal(NNFavoredJpeg(seed=1)(images)[0], NNFavoredJpeg(seed=2)(images)[0])


def test_set_params_validates_and_rolls_back() -> None:
    defence = NNFavoredJpeg(bpda="identity")
    with pytest.raises(ValueError, match="Unknown parameter"):
        defence.set_params(quality_factor=3)
    with pytest.raises(ValueError, match="bpda"):
        defence.set_params(bpda="exact", batch_size=3)
    assert defence.bpda == "identity" and defence.batch_size == 256
    defence.set_params(bpda="surrogate", favored_diagonals=3, device_type="cpu")
    assert defence.bpda == "surrogate" and defence.favored_diagonals == 3 and defence.device.type == "cpu"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"clip_values": (1, 0)}, "clip_values"),
        ({"clip_values": (0, float("nan"))}, "clip_values"),
        ({"bpda": "none"}, "bpda"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"batch_size": 0}, "batch_size"),
        ({"device_type": "tpu"}, "device_type"),
    ],
)
def test_constructor_rejects_bad_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NNFavoredJpeg(**kwargs)
    with pytest.raises(TypeError, match="channels_first"):
        NNFavoredJpeg(channels_first=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "x,error,match",
    [
        (np.zeros((3, 8, 8), np.float32), ValueError, "4-D"),
        (np.zeros((0, 3, 8, 8), np.float32), ValueError, "Empty batch"),
        (np.zeros((2, 4, 8, 8), np.float32), ValueError, "1 or 3 channels"),
        (np.zeros((2, 8, 8, 3), np.float32), ValueError, "channels_first=False"),
        (np.zeros((2, 3, 8, 8), np.uint8), TypeError, "floating point"),
        (np.full((2, 3, 8, 8), np.nan, np.float32), ValueError, "NaN"),
        (np.full((2, 3, 8, 8), np.inf, np.float32), ValueError, "NaN or infinite"),
        (np.full((2, 3, 8, 8), 2.0, np.float32), ValueError, "outside clip_values"),
        (np.full((2, 3, 8, 8), 200.0, np.float32), ValueError, r"clip_values=\(0, 255\)"),
        (np.full((2, 3, 8, 8), -0.1, np.float32), ValueError, "outside clip_values"),
        ([[[[0.5]]]], TypeError, "NumPy array"),
    ],
)
@pytest.mark.parametrize("defence_class", DEFENCES)
def test_bad_input_raises_clear_errors(defence_class: type[PurifierPreprocessor], x, error, match: str) -> None:
    with pytest.raises(error, match=match):
        defence_class()(x)
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        with pytest.raises(error, match=match):
            defence_class().forward(torch.from_numpy(x))


def test_forward_rejects_arrays_and_returns_labels_untouched(images: np.ndarray) -> None:
    with pytest.raises(TypeError, match="torch.Tensor"):
        NNFavoredJpeg().forward(images)  # type: ignore[arg-type]
    labels = torch.arange(4)
    _, y = NNFavoredJpeg().forward(torch.from_numpy(images), labels)
    assert y is labels


@pytest.mark.parametrize("defence_class", DEFENCES)
def test_estimate_gradient_agrees_with_autograd_through_forward(
    defence_class: type[PurifierPreprocessor], images: np.ndarray
) -> None:
    grad = np.random.default_rng(1).standard_normal(images.shape).astype(np.float32)
    for bpda in ("straight_through", "identity", "surrogate"):
        numpy_grad = defence_class(seed=4, bpda=bpda, device_type="cpu").estimate_gradient(images, grad)
        x = torch.from_numpy(images.copy()).requires_grad_(True)
        defence_class(seed=4, bpda=bpda, device_type="cpu").forward(x)[0].backward(torch.from_numpy(grad))
        assert x.grad is not None
        np.testing.assert_allclose(numpy_grad, x.grad.numpy(), atol=1e-6)
        assert numpy_grad.dtype == images.dtype
    with pytest.raises(ValueError, match="grad has shape"):
        defence_class().estimate_gradient(images, grad[:2])


def test_bpda_backwards_of_the_dct_defence(images: np.ndarray) -> None:
    grad = np.random.default_rng(2).standard_normal(images.shape).astype(np.float32)
    # straight-through rounding and clipping around orthonormal transforms: the identity in backward
    np.testing.assert_allclose(NNFavoredJpeg(bpda="straight_through").estimate_gradient(images, grad), grad, atol=1e-5)
    np.testing.assert_array_equal(NNFavoredJpeg(bpda="identity").estimate_gradient(images, grad), grad)
    surrogate = NNFavoredJpeg(bpda="surrogate").estimate_gradient(images, grad)
    assert np.isfinite(surrogate).all() and 0 < np.abs(surrogate).mean() < np.abs(grad).mean()


def test_distortion_backward_is_the_exact_gather_gradient(images: np.ndarray) -> None:
    defence = QuantizeDistort(seed=0, quantize=False, bpda="straight_through")
    probe = copy.deepcopy(defence)
    grad = np.ones_like(images)
    # gradient of sum(out) counts how often each input pixel is read: 0 for dropped pixels, more for duplicated ones
    counts = defence.estimate_gradient(images, grad)
    out = probe(images)[0]
    assert set(np.unique(counts)) <= set(range(0, 10)) and (counts == 0).any() and (counts > 1).any()
    np.testing.assert_allclose(counts.sum(axis=(2, 3)), np.full(images.shape[:2], images.shape[2] * images.shape[3]))
    assert not np.array_equal(out, images)


class Upscale2x(PurifierPreprocessor):
    """A toy defence whose output is twice the input's size (nearest-neighbour x2), like a super-resolution."""

    def purified_size(self, height: int, width: int) -> tuple[int, int]:
        return 2 * height, 2 * width

    def _purify(self, x: torch.Tensor, randomness: object) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def test_a_larger_output_is_allocated_from_the_first_chunk(images: np.ndarray) -> None:
    out = Upscale2x(batch_size=3)(np.concatenate([images, images]))[0]
    expected = images.repeat(2, axis=2).repeat(2, axis=3)
    np.testing.assert_array_equal(out, np.concatenate([expected, expected]))
    nhwc = Upscale2x(channels_first=False)(images.transpose(0, 2, 3, 1))[0]
    np.testing.assert_array_equal(nhwc, expected.transpose(0, 2, 3, 1))


def test_backwards_of_a_larger_output(images: np.ndarray) -> None:
    grad = np.random.default_rng(3).standard_normal((4, 3, 40, 56)).astype(np.float32)
    # straight-through: the exact gradient of nearest x2, i.e. the sum over each 2x2 output block
    exact = Upscale2x(device_type="cpu").estimate_gradient(images, grad)
    np.testing.assert_allclose(exact, grad.reshape(4, 3, 20, 2, 28, 2).sum(axis=(3, 5)), rtol=1e-6, atol=1e-6)
    # identity: the gradient of a plain bicubic resize to the output size
    x = torch.from_numpy(images).requires_grad_(True)
    torch.nn.functional.interpolate(x, size=(40, 56), mode="bicubic", align_corners=False).backward(
        torch.from_numpy(grad)
    )
    identity = Upscale2x(bpda="identity", device_type="cpu").estimate_gradient(images, grad)
    np.testing.assert_allclose(identity, x.grad, atol=1e-6)
    with pytest.raises(ValueError, match=r"purified images' shape \(4, 3, 40, 56\)"):
        Upscale2x(device_type="cpu").estimate_gradient(images, np.ones_like(images))


@pytest.mark.parametrize("defence", [Upscale2x(), NNFavoredJpeg(), QuantizeDistort(seed=2)], ids=type)
def test_estimate_gradient_takes_class_gradients(defence: PurifierPreprocessor, images: np.ndarray) -> None:
    out_shape = defence._output_shape(images.shape)
    grads = np.random.default_rng(4).standard_normal((4, 5, *out_shape[1:])).astype(np.float32)
    twin = copy.deepcopy(defence)
    per_class = defence.estimate_gradient(images, grads)
    assert per_class.shape == (4, 5, *images.shape[1:])
    # reference: one forward (one draw of a random defence), then one backward per class
    x = torch.from_numpy(images).requires_grad_(True)
    out = twin.forward(x)[0]
    for k in range(5):
        (expected,) = torch.autograd.grad(out, x, torch.from_numpy(grads[:, k]), retain_graph=True)
        np.testing.assert_allclose(per_class[:, k], expected.numpy(), rtol=1e-5, atol=1e-6)


def test_a_larger_output_in_art(images: np.ndarray) -> None:
    from art.estimators.classification import PyTorchClassifier

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 40 * 56, 4))
    classifier = PyTorchClassifier(
        model, torch.nn.CrossEntropyLoss(), input_shape=(3, 20, 28), nb_classes=4, clip_values=(0, 1),
        preprocessing_defences=[Upscale2x(device_type="cpu")], device_type="cpu",
    )  # fmt: skip
    assert classifier.predict(images).shape == (4, 4)
    assert classifier.loss_gradient(images, np.eye(4)[[0, 1, 2, 3]]).shape == images.shape
    assert classifier.class_gradient(images).shape == (4, 4, *images.shape[1:])


def test_network_cache_copies_freezes_and_keeps_one_copy_per_device_and_dtype() -> None:
    users = torch.nn.Conv2d(3, 3, 1).train()
    cache = NetworkCache()
    cache.set("net", users)
    cpu = cache.get("net", torch.device("cpu"))
    assert cpu is not users and not cpu.training and not any(p.requires_grad for p in cpu.parameters())
    assert users.training and users.weight.requires_grad  # the user's module is untouched
    assert cache.get("net", torch.device("cpu")) is cpu
    double = cache.get("net", torch.device("cpu"), torch.float64)
    assert double.weight.dtype == torch.float64 and cpu.weight.dtype == torch.float32
    torch.testing.assert_close(double.weight.float(), users.weight.detach())
    clone = pickle.loads(pickle.dumps(cache))
    assert clone._copies == {} and clone.keys() == ["net"]
    cache.set("net", torch.nn.Conv2d(3, 3, 1))
    assert cache.get("net", torch.device("cpu")) is not cpu
    with pytest.raises(TypeError, match="nn.Module"):
        cache.set("other", "not a module")  # type: ignore[arg-type]


def test_random_state_replays_draws(images: np.ndarray) -> None:
    defence = QuantizeDistort(seed=1)
    state = defence.get_random_state()
    first = defence(images)[0]
    defence.set_random_state(state)
    np.testing.assert_array_equal(defence(images)[0], first)
    assert not np.array_equal(defence(images)[0], first)
    with pytest.raises(TypeError, match="get_random_state"):
        defence.set_random_state([1, 2, 3])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "low,high,hint,not_hint",
    [
        (0.0, 200.0, r"Did you mean clip_values=\(0, 255\)", None),
        (-0.5, 0.5, r"Did you mean clip_values=\(-1, 1\)", "(0, 255)"),
        (-2.1, 2.6, r"preprocessing=\(mean, std\)", "(0, 255)"),
    ],
)
def test_out_of_range_hints(low: float, high: float, hint: str, not_hint: str | None) -> None:
    x = np.linspace(low, high, 2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
    with pytest.raises(ValueError, match=hint) as error:
        NNFavoredJpeg()(x)
    assert not_hint is None or not_hint not in str(error.value)


def test_unit_range_data_under_a_0_255_range_warns(images: np.ndarray) -> None:
    with pytest.warns(UserWarning, match=r"lies in \[0, 1\] but clip_values=\(0, 255\)"):
        NNFavoredJpeg(clip_values=(0, 255))(images)


@pytest.mark.parametrize("defence_class", DEFENCES)
def test_autocast_changes_nothing(defence_class: type[PurifierPreprocessor], images: np.ndarray) -> None:
    # measured before the fix: NNFavoredJpeg drifted 15/255 inside a CPU bf16 autocast region
    x = torch.from_numpy(images)
    expected = defence_class(seed=0).forward(x)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = defence_class(seed=0).forward(x)[0]
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("defence_class", [NNFavoredJpeg, QuantizeDistort])
def test_half_precision_inputs(
    defence_class: type[PurifierPreprocessor], dtype: torch.dtype, images: np.ndarray
) -> None:
    cast = torch.from_numpy(images).to(dtype)
    out = defence_class(seed=0).forward(cast)[0]
    expected = defence_class(seed=0).forward(cast.float())[0]  # float32 work on the same down-cast input
    assert out.dtype == dtype
    assert (out.float() - expected).abs().max() <= 1 / 255


def test_chunk_sizes_suit_the_work() -> None:
    photo = torch.zeros(64, 3, 224, 224)
    assert NNFavoredJpeg()._chunk_size(photo) == (1 << 19) // (3 * 224 * 224)  # cache-sized pixel chunks
    assert CompressRestore()._chunk_size(photo) == (1 << 18) // (224 * 224)  # activation-bounded network chunks
    assert CompressRestore(batch_size=2)._chunk_size(photo) == 2


def _art_default_estimated_forward(defence: PurifierPreprocessor, x: torch.Tensor) -> torch.Tensor:
    """What ART with the fix of its issue #1526 does for a defence without its own hook: the value of ``forward``,
    the gradient of ``estimate_forward``."""
    with torch.no_grad():
        value = defence.forward(x)[0]
    estimate = defence.estimate_forward(x)
    return value + (estimate - estimate.detach())


@pytest.mark.parametrize("defence_class", DEFENCES)
@pytest.mark.parametrize("bpda", ["straight_through", "identity", "surrogate"])
def test_the_hook_of_an_art_with_estimated_gradients_is_one_pass_of_forward(
    defence_class: type[PurifierPreprocessor], bpda: str, images: np.ndarray
) -> None:
    grad = torch.from_numpy(np.random.default_rng(2).standard_normal(images.shape).astype(np.float32))
    results = []
    for run in ("forward", "hook", "art default"):
        defence = defence_class(seed=7, bpda=bpda, device_type="cpu")
        x = torch.from_numpy(images.copy()).requires_grad_(True)
        if run == "forward":
            out = defence.forward(x)[0]
        elif run == "hook":
            out = defence.forward_with_estimated_gradient(x)[0]
        else:
            out = _art_default_estimated_forward(defence, x)
        if out.shape != x.shape:  # a defence that changes the size: take the gradient of a sum
            out.sum().backward()
        else:
            out.backward(grad)
        assert x.grad is not None
        results.append((out.detach(), x.grad))
    (value, gradient), (hook_value, hook_gradient), (art_value, art_gradient) = results
    assert torch.equal(hook_value, value) and torch.equal(hook_gradient, gradient)
    # estimate_forward is the bpda surrogate: ART's default recipe gives the same images and gradients (for a
    # randomized defence only where the surrogate is the identity: a second draw differs otherwise)
    assert torch.equal(art_value, value)
    if bpda == "identity" or not defence_class(seed=7).randomized:
        torch.testing.assert_close(art_gradient, gradient, rtol=1e-5, atol=1e-6)


class _Scaled(PurifierPreprocessor):
    """A toy defence written as ART writes its defences: its own attributes set after ``super().__init__()``."""

    params = PurifierPreprocessor.params + ["factor"]

    def __init__(self, factor: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = factor

    def _check_params(self) -> None:
        super()._check_params()
        if not 0 < self.factor <= 1:
            raise ValueError(f"factor must be in (0, 1], got {self.factor!r}.")

    def _purify(self, x: torch.Tensor, randomness: object) -> torch.Tensor:
        return x * self.factor


def test_attributes_set_after_the_base_constructor_are_checked() -> None:
    with pytest.raises(ValueError, match="factor must be in"):
        _Scaled(factor=2.0)
    with pytest.raises(ValueError, match="bpda must be one of"):
        _Scaled(bpda="none")
    defence = _Scaled(factor=0.25)
    out, _ = defence.forward(torch.ones(1, 3, 4, 4))
    assert torch.allclose(out, torch.full((1, 3, 4, 4), 0.25))
    with pytest.raises(ValueError, match="factor must be in"):
        defence.set_params(factor=0.0)
    assert defence.factor == 0.25


class _DrawsInInit(PurifierPreprocessor):
    """A defence written the older way (its attributes first) that draws from its generator in ``__init__``."""

    def __init__(self, **kwargs: Any) -> None:
        self.factor = 0.5
        super().__init__(**kwargs)
        self.first_draw = torch.rand(4, generator=self._generator)

    def _purify(self, x: torch.Tensor, randomness: object) -> torch.Tensor:
        return x * self.factor


def test_the_generator_is_seeded_before_a_subclass_draws_in_its_constructor() -> None:
    for seed in (1, 2):
        expected = torch.rand(4, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(_DrawsInInit(seed=seed).first_draw, expected)
    with pytest.raises(ValueError, match="bpda must be one of"):
        _DrawsInInit(bpda="none")


def test_constructor_signatures_are_the_defences_own() -> None:
    assert "qf_range" in inspect.signature(CompressRestore).parameters
    assert "favored_diagonals" in inspect.signature(NNFavoredJpeg).parameters
    assert "factor" in inspect.signature(_Scaled).parameters


def test_a_defence_pickled_before_network_sources_were_recorded_still_takes_new_parameters() -> None:
    defence = CompressRestore(seed=0, device_type="cpu")
    del defence.__dict__["_network_sources_loaded"]  # what an earlier version's pickle holds
    restored = pickle.loads(pickle.dumps(defence))
    restored.set_params(seed=1, n_iter=1)
    assert sorted(restored._networks.keys()) == sorted(restored.restorers)
    restored.forward(torch.rand(1, 3, 8, 8))


def test_a_shallow_copy_that_drops_a_network_leaves_the_original_its_own() -> None:
    from art_purifiers import SuperResolution

    original = SuperResolution(upsampler="edsr", device_type="cpu")
    twin = copy.copy(original)
    twin.set_params(upsampler="bicubic")
    assert list(original._networks.keys()) == ["edsr"] and not list(twin._networks.keys())
    original.forward(torch.rand(1, 3, 8, 8))
