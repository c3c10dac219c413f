"""Defences built for the shared contract and fuzz tests where the defaults need weights that are not shipped."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch

from art_purifiers import NeuralRepresentationPurifier
from art_purifiers.nets.nrp import NRPResidualGenerator


def small_nrp() -> Any:
    """``NeuralRepresentationPurifier`` on a small random light purifier (no purifier is shipped yet), as a param."""
    torch.manual_seed(5)
    network = NRPResidualGenerator(features=8, blocks=2)
    factory = functools.partial(NeuralRepresentationPurifier, network=network)
    return pytest.param(factory, id="NeuralRepresentationPurifier")
