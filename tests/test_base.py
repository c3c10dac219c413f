"""The ART contract of PurifierPreprocessor, exercised through both shipped defences."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

from art_purifiers import NNFavoredJpeg, QuantizeDistort
from art_purifiers.base import PurifierPreprocessor

DEFENCES = [NNFavoredJpeg, QuantizeDistort]


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
        numpy_grad = defence_class(seed=4, bpda=bpda).estimate_gradient(images, grad)
        x = torch.from_numpy(images.copy()).requires_grad_(True)
        defence_class(seed=4, bpda=bpda).forward(x)[0].backward(torch.from_numpy(grad))
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
