"""Learned-approximator BPDA: true defence output in forward, the approximator's gradient in backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from art_purifiers import NNFavoredJpeg
from art_purifiers.attacks import LearnedBPDA, train_approximator


def test_forward_is_the_defence_and_backward_is_the_approximator() -> None:
    defence = NNFavoredJpeg(device_type="cpu")
    images = np.random.default_rng(0).random((16, 3, 16, 16)).astype(np.float32)
    approximator = train_approximator(defence, images, steps=30, batch_size=8, verbose=False)
    wrapper = LearnedBPDA(defence, approximator, device_type="cpu")
    x = torch.from_numpy(images[:4]).requires_grad_(True)
    out, _ = wrapper.forward(x)
    torch.testing.assert_close(out.detach(), defence.forward(x.detach())[0])
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    x_copy = x.detach().clone().requires_grad_(True)
    (approximator(x_copy) * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_copy.grad)
    # and that gradient is not the identity's (the approximator learned something of its own)
    assert not torch.allclose(x.grad, weights)


def test_training_reduces_the_error_and_rejects_empty_data() -> None:
    defence = NNFavoredJpeg(device_type="cpu")
    images = np.random.default_rng(1).random((16, 3, 16, 16)).astype(np.float32)
    short = train_approximator(defence, images, steps=2, verbose=False, seed=0)
    longer = train_approximator(defence, images, steps=80, verbose=False, seed=0)
    assert longer.final_mse < short.final_mse
    with pytest.raises(ValueError, match="non-empty NCHW"):
        train_approximator(defence, images[:0], verbose=False)
