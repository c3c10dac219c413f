"""The zoo's file format, sha256 checks and weights_only loading, with a tiny architecture registered here."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from art_purifiers import zoo
from art_purifiers.nets import ARCHITECTURES, register_architecture

CARD = {"data": "none", "resolution": "any", "metrics": {}, "command": "pytest"}


@register_architecture("test-tiny")
class Tiny(torch.nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, width, 3)
        self.register_buffer("steps", torch.tensor(3))


def test_round_trip_keeps_weights_config_and_card(tmp_path: Path) -> None:
    module = Tiny(width=5)
    file = tmp_path / "tiny.pt"
    digest = zoo.save(file, module, "test-tiny", {"width": 5}, CARD, half=False)
    assert digest == zoo.sha256_of(file) and len(digest) == 64
    loaded = zoo.load_file(file)
    assert isinstance(loaded, Tiny) and not loaded.training and loaded.conv.out_channels == 5
    torch.testing.assert_close(loaded.conv.weight, module.conv.weight)
    assert int(loaded.steps) == 3 and zoo.card(file)["command"] == "pytest"
    zoo.save(file, module, "test-tiny", {"width": 5}, CARD, half=True)
    half = zoo.load_file(file)
    assert half.conv.weight.dtype == torch.float32
    torch.testing.assert_close(half.conv.weight, module.conv.weight, atol=1e-3, rtol=1e-3)


def test_registry_lookup_and_sha256_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "tiny.pt"
    digest = zoo.save(file, Tiny(), "test-tiny", {}, CARD)
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setitem(zoo.REGISTRY, "tiny", zoo.Artifact("tiny", "tiny.pt", digest, "test-tiny", "pytest"))
    assert "tiny" in zoo.names() and zoo.path("tiny") == file
    assert isinstance(zoo.load("tiny"), Tiny)
    file.write_bytes(file.read_bytes() + b"tampered")
    with pytest.raises(RuntimeError, match="sha256"):
        zoo.load("tiny")
    file.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        zoo.path("tiny")
    with pytest.raises(KeyError, match="Unknown artifact"):
        zoo.load("no-such-model")


def test_unsafe_or_foreign_files_are_refused(tmp_path: Path) -> None:
    unsafe = tmp_path / "unsafe.pt"
    with open(unsafe, "wb") as handle:
        pickle.dump(
            {"format": zoo.FORMAT, "payload": Tiny}, handle, protocol=2
        )  # a class object: refused by weights_only
    with pytest.raises(ValueError, match="not a loadable"):
        zoo.load_file(unsafe)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="not an art-purifiers weight file"):
        zoo.load_file(foreign)
    unknown = tmp_path / "unknown.pt"
    torch.save({"format": zoo.FORMAT, "architecture": "nope", "config": {}, "card": CARD, "state_dict": {}}, unknown)
    with pytest.raises(ValueError, match="unknown architecture"):
        zoo.load_file(unknown)


def test_save_validates_its_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model card lacks"):
        zoo.save(tmp_path / "x.pt", Tiny(), "test-tiny", {}, {"data": "x"})
    with pytest.raises(ValueError, match="registered architecture"):
        zoo.save(tmp_path / "x.pt", torch.nn.Linear(1, 1), "test-tiny", {}, CARD)
    with pytest.raises(ValueError, match="already registered"):
        register_architecture("test-tiny")(torch.nn.Linear)
    assert ARCHITECTURES["test-tiny"] is Tiny


def test_the_reference_classifier_ships_and_loads() -> None:
    assert "cifar10-reference" in zoo.names()
    model = zoo.load("cifar10-reference")
    assert not model.training
    logits = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    card = zoo.card(zoo.path("cifar10-reference"))
    assert card["metrics"]["test_top1"] >= 0.88 and "art_purifiers.training.classifier" in card["command"]


def test_a_card_with_non_json_values_is_stored_as_plain_text(tmp_path: Path) -> None:
    # torch.__version__ is a str subclass that weights_only loading refuses; save must store plain types
    file = tmp_path / "tiny.pt"
    zoo.save(file, Tiny(), "test-tiny", {}, {**CARD, "torch": torch.__version__})
    assert zoo.card(file)["torch"] == str(torch.__version__)


def test_the_transfer_surrogate_is_another_architecture_with_its_own_weights() -> None:
    surrogate, reference = zoo.load("cifar10-surrogate"), zoo.load("cifar10-reference")
    assert type(surrogate).__name__ != type(reference).__name__
    card = zoo.card(zoo.path("cifar10-surrogate"))
    assert card["metrics"]["test_top1"] >= 0.85 and "--label-smoothing 0" in card["command"]
    assert not any(
        a.shape == b.shape and torch.equal(a, b)
        for a, b in zip(surrogate.state_dict().values(), reference.state_dict().values())
        if a.numel() > 16
    )


@pytest.mark.parametrize("name", zoo.names())
def test_shipped_cards_name_repo_relative_paths_only(name: str) -> None:
    import json
    import re

    card = json.dumps(zoo.card(zoo.path(name)))
    absolute = re.findall(r"(?:^|[\s\"'=])(/[\w.-]+/[\w./-]+)", card)
    assert not absolute, f"{name}'s model card names machine paths: {absolute}"
