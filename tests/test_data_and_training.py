"""Data loading (ImageFolder, CIFAR-10 resolution and errors) and the classifier recipe's augmentation."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from art_purifiers.data import load_cifar10, load_image_folder
from art_purifiers.training.classifier import augment, learning_rate


def _write(root: Path, classes: dict[str, int], size: tuple[int, int] = (6, 5)) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    written: dict[str, list[np.ndarray]] = {}
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index:03d}.png")
            written.setdefault(name, []).append(pixels)
    return written


def test_image_folder_decodes_every_image_with_sorted_class_labels(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ART_PURIFIERS_CACHE", str(tmp_path / "cache"))
    written = _write(tmp_path / "data", {"zebra": 2, "apple": 3})
    for _ in range(2):  # the second load comes from the cache
        dataset = load_image_folder(tmp_path / "data")
        assert dataset.classes == ("apple", "zebra")
        assert dataset.labels.tolist() == [0, 0, 0, 1, 1]
        expected = np.stack(written["apple"] + written["zebra"]).transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(dataset.images.numpy(), expected)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    floats = dataset.as_float([4])
    assert floats.dtype == np.float32 and floats.shape == (1, 3, 5, 6) and floats.max() <= 1.0


def test_parallel_loads_share_the_cache_without_colliding(tmp_path: Path, monkeypatch) -> None:
    # parallel evaluation runs decode the same folder at once; every writer must finish, one cache file remains
    monkeypatch.setenv("ART_PURIFIERS_CACHE", str(tmp_path / "cache"))
    _write(tmp_path / "data", {"a": 2, "b": 1})
    writers = 4
    barrier = threading.Barrier(writers)
    real_save = torch.save

    def save_together(*args, **kwargs):
        barrier.wait(timeout=30)  # every writer has its temporary file open before any renames
        real_save(*args, **kwargs)
        barrier.wait(timeout=30)

    monkeypatch.setattr(torch, "save", save_together)
    with ThreadPoolExecutor(writers) as pool:
        datasets = list(pool.map(lambda _: load_image_folder(tmp_path / "data", workers=1), range(writers)))
    assert all(torch.equal(d.images, datasets[0].images) for d in datasets)
    assert [f.suffix for f in (tmp_path / "cache").iterdir()] == [".pt"]


def test_image_folder_resizes_and_centre_crops(tmp_path: Path) -> None:
    _write(tmp_path / "data", {"a": 1}, size=(40, 20))
    dataset = load_image_folder(tmp_path / "data", size=8, cache=False)
    assert tuple(dataset.images.shape) == (1, 3, 8, 8)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        load_image_folder(tmp_path / "flat")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image files"):
        load_image_folder(tmp_path / "empty")
    _write(tmp_path / "mixed", {"x": 1}, size=(6, 5))
    _write(tmp_path / "mixed", {"y": 1}, size=(7, 5))
    with pytest.raises(ValueError, match="different sizes"):
        load_image_folder(tmp_path / "mixed", cache=False)


def test_cifar10_needs_data_or_download(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ART_PURIFIERS_DATA", raising=False)
    with pytest.raises(ValueError, match="No CIFAR-10 data given"):
        load_cifar10()
    with pytest.raises(ValueError, match="neither an ImageFolder layout"):
        load_cifar10(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_cifar10(tmp_path, split="validation")
    _write(tmp_path / "test", {"cat": 1, "dog": 1})
    with pytest.raises(ValueError, match="expected CIFAR-10's"):
        load_cifar10(tmp_path, "test")


def test_augment_crops_and_flips_like_a_numpy_reference() -> None:
    images = torch.randint(0, 256, (64, 3, 5, 7), dtype=torch.uint8)
    out = augment(images, torch.Generator().manual_seed(0), pad=2).numpy()
    padded = np.pad(images.numpy().astype(np.float32), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    flips = 0
    for image, result in zip(padded, out):
        crops = set()
        for dy in range(5):
            for dx in range(5):
                crop = image[:, dy : dy + 5, dx : dx + 7]
                for flipped, candidate in ((0, crop), (1, crop[..., ::-1])):
                    if np.array_equal(candidate, result):
                        crops.add((dy, dx, flipped))
        assert crops, "output is not a flipped or unflipped crop of the padded image"
        flips += min(f for _, _, f in crops)
    assert 10 < flips < 54  # about half flipped


def test_one_cycle_schedule() -> None:
    assert learning_rate(0, 100, 0.4) == 0.0
    assert learning_rate(25, 100, 0.4) == pytest.approx(0.4)
    assert learning_rate(100, 100, 0.4) == pytest.approx(0.0)
    assert learning_rate(50, 100, 0.4) < learning_rate(30, 100, 0.4)


def tiny_recipe_arguments(tmp_path: Path, monkeypatch, per_class: int) -> list[str]:
    """A tiny CIFAR-10-shaped ImageFolder and the recipe options for a 1-block, 8-feature network on it."""
    from art_purifiers.data import CIFAR10_CLASSES

    monkeypatch.setenv("ART_PURIFIERS_CACHE", str(tmp_path / "cache"))
    for split in ("train", "test"):
        _write(tmp_path / "cifar" / split, {name: per_class for name in CIFAR10_CLASSES}, size=(32, 32))
    return ["--data-dir", str(tmp_path / "cifar"), "--output", str(tmp_path / "run"), "--blocks", "1", "--features",
            "8", "--batch-size", "4"]  # fmt: skip


def test_edsr_recipe_trains_writes_a_zoo_file_and_resumes(tmp_path: Path, monkeypatch, capsys) -> None:
    from art_purifiers import zoo
    from art_purifiers.nets.edsr import EDSR
    from art_purifiers.training import edsr

    common = tiny_recipe_arguments(tmp_path, monkeypatch, per_class=2) + ["--eval-images", "6", "--device", "cpu"]
    assert edsr.main([*common, "--steps", "3"]) == 0
    assert edsr.main([*common, "--steps", "4", "--resume"]) == 0
    assert "resumed at step 3" in capsys.readouterr().out
    file = tmp_path / "run" / f"{edsr.NAME}.pt"
    network = zoo.load_file(file)
    card = zoo.card(file)
    assert isinstance(network, EDSR) and len(network.body) == 2
    assert [entry["step"] for entry in card["log"]] == [3, 4]
    for images in ("cifar10_test", "held_out_photo_crops"):
        assert {"bicubic", "edsr"} <= set(card["metrics"][images])
    assert card["metrics"]["cifar10_test"]["images"] == 6


def test_restorer_recipe_resumes_from_its_checkpoint(tmp_path: Path, monkeypatch, capsys) -> None:
    from art_purifiers import zoo
    from art_purifiers.training import restorer

    common = tiny_recipe_arguments(tmp_path, monkeypatch, per_class=1) + ["--quality", "40", "--eval-images", "4"]
    assert restorer.main([*common, "--steps", "2"]) == 0
    assert restorer.main([*common, "--steps", "3", "--resume"]) == 0
    assert "resumed at step 2" in capsys.readouterr().out
    card = zoo.card(tmp_path / "run" / "cifar10-restorer-q40.pt")
    assert [entry["step"] for entry in card["log"]] == [2, 3]


def test_nrp_recipe_trains_writes_a_zoo_file_and_resumes(tmp_path: Path, monkeypatch, capsys) -> None:
    from art_purifiers import zoo
    from art_purifiers.nets.classifier import CifarVGG
    from art_purifiers.nets.nrp import NRPResidualGenerator
    from art_purifiers.training import nrp

    card = {"data": "none", "resolution": "32x32", "metrics": {}, "command": "test"}
    features = tmp_path / "features.pt"
    config = {"widths": [4, 4, 4], "depths": [1, 1, 1]}
    zoo.save(features, CifarVGG(**config), "cifar-vgg", config, card, half=False)
    common = tiny_recipe_arguments(tmp_path, monkeypatch, per_class=1) + [
        "--feature-network", str(features), "--layer", "features.relu3_1", "--ssp-steps", "1", "--eval-images", "4"
    ]  # fmt: skip
    assert nrp.main([*common, "--steps", "2"]) == 0
    assert nrp.main([*common, "--steps", "3", "--resume"]) == 0
    assert "resumed at step 2" in capsys.readouterr().out
    file = tmp_path / "run" / "cifar10-nrp-light.pt"
    assert isinstance(zoo.load_file(file), NRPResidualGenerator)
    written = zoo.card(file)
    assert [entry["step"] for entry in written["log"]] == [2, 3] and written["layer"] == "features.relu3_1"
    metrics = written["metrics"]
    assert 20 < metrics["ssp100"]["psnr_db"] < 40  # 16/255 of perturbation
    assert {"clean+purifier", "ssp100+purifier"} <= set(metrics)
    test = load_cifar10(tmp_path / "cifar", "test")
    with torch.no_grad():
        predictions = zoo.load("cifar10-reference")(test.images.float() / 255).argmax(1)
    expected = int((predictions == test.labels).sum()) / len(test)
    assert metrics["test_accuracy"]["images"] == len(test) and metrics["test_accuracy"]["classifier"] == expected
    assert 0 <= metrics["test_accuracy"]["purifier+classifier"] <= 1


def test_the_classifier_recipe_resumed_after_a_crash_ends_where_an_uninterrupted_run_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from art_purifiers.data import ImageDataset
    from art_purifiers.training import classifier

    generator = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=generator)
    data = ImageDataset(images, torch.arange(24) % 10, tuple(str(i) for i in range(10)), "random")
    options = {"epochs": 2, "batch_size": 8, "widths": (4, 8, 8, 8), "bf16": False}
    straight = classifier.train(data, None, tmp_path / "straight", **options)

    def crash_in_the_second_epoch(step: int, total: int, peak: float) -> float:
        if step >= 3:  # 24 images in batches of 8: the second epoch starts at step 3
            raise KeyboardInterrupt
        return learning_rate(step, total, peak)

    monkeypatch.setattr(classifier, "learning_rate", crash_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        classifier.train(data, None, tmp_path / "resumed", **options)
    monkeypatch.setattr(classifier, "learning_rate", learning_rate)
    resumed = classifier.train(data, None, tmp_path / "resumed", resume=True, **options)
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert [record["epoch"] for record in resumed.history] == [1, 2]  # type: ignore[attr-defined]
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]  # type: ignore[attr-defined]
