"""Zhang & Gao's noisy compression training: the loss against a hand-written version, resume, seeds, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from art.estimators.classification import PyTorchClassifier
from torch import nn
from torch.nn import functional as F

from art_purifiers import NNFavoredJpeg
from art_purifiers.training.noisy_compression import NoisyCompressionTrainer


def small_classifier(seed: int = 0) -> PyTorchClassifier:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)
    )
    return PyTorchClassifier(
        model, nn.CrossEntropyLoss(), input_shape=(3, 16, 16), nb_classes=3, clip_values=(0.0, 1.0), device_type="cpu"
    )


def images(count: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((count, 3, 16, 16)).astype(np.float32)
    return x, rng.integers(0, 3, count)


def test_one_step_is_sgd_on_the_papers_loss() -> None:
    # noise 0 and one full batch: the step must equal SGD (lr 0.005, first step) on
    # 0.9 * CE(f(x)) + 0.1 * CE(f(NNFavoredJpeg(quality=50)(x))), written out here independently
    x, y = images()
    classifier = small_classifier()
    reference = small_classifier()
    trainer = NoisyCompressionTrainer(
        classifier, quality=50, noise_std=0.0, nb_epochs=1, batch_size=len(x), verbose=False
    )
    trainer.fit(x, y)
    compressed = NNFavoredJpeg(quality=50)(x)[0]
    model = reference.model
    logits = model(torch.from_numpy(x)), model(torch.from_numpy(compressed))
    target = torch.from_numpy(y)
    loss = 0.9 * F.cross_entropy(logits[0], target) + 0.1 * F.cross_entropy(logits[1], target)
    gradients = torch.autograd.grad(loss, list(model.parameters()))
    for trained, before, gradient in zip(classifier.model.parameters(), model.parameters(), gradients):
        torch.testing.assert_close(trained.detach(), before.detach() - 0.005 * gradient, rtol=1e-5, atol=1e-7)


def test_the_compressed_images_carry_gaussian_noise_of_the_given_level() -> None:
    x = np.full((64, 3, 16, 16), 0.5, dtype=np.float32)
    trainer = NoisyCompressionTrainer(small_classifier(), quality=30, noise_std=0.05, verbose=False)
    noisy = trainer.noisy_compressed(torch.from_numpy(x), torch.Generator().manual_seed(0))
    noise = noisy - NNFavoredJpeg(quality=30).forward(torch.from_numpy(x))[0]
    assert float(noise.std()) == pytest.approx(0.05, rel=0.05) and abs(float(noise.mean())) < 0.002


def colour_task(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # the label is the brightest colour channel: low-frequency content that the compression keeps
    x, y = images(count, seed)
    x = 0.2 + 0.1 * x
    x[np.arange(count), y] += 0.5
    return x.astype(np.float32), y


def test_training_lowers_the_loss_and_records_history(tmp_path: Path) -> None:
    x, y = colour_task(24, 0)
    trainer = NoisyCompressionTrainer(
        small_classifier(), quality=50, nb_epochs=8, batch_size=8, learning_rate=0.2, verbose=False
    )
    trainer.fit(x, y, validation_data=colour_task(12, 1))
    losses = [record["loss"] for record in trainer.history]
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0]
    assert trainer.history[-1]["val_accuracy"] > 0.9 and trainer.history[-1]["val_accuracy_q50"] > 0.9


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path: Path) -> None:
    x, y = images()
    settings = {"quality": 40, "batch_size": 5, "verbose": False, "checkpoint": tmp_path / "run.pt"}
    whole = small_classifier()
    NoisyCompressionTrainer(whole, nb_epochs=3, **{**settings, "checkpoint": tmp_path / "whole.pt"}).fit(x, y)
    interrupted = small_classifier()
    NoisyCompressionTrainer(interrupted, nb_epochs=2, **settings).fit(x, y)
    resumed = small_classifier()  # a fresh process: the weights come from the checkpoint
    trainer = NoisyCompressionTrainer(resumed, nb_epochs=3, **settings)
    trainer.fit(x, y, resume=True)
    assert [record["epoch"] for record in trainer.history] == [1, 2, 3]
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b)


def test_seeds_make_the_noise_reproducible_and_different() -> None:
    x, y = images()

    def trained(seed: int) -> torch.Tensor:
        classifier = small_classifier()
        NoisyCompressionTrainer(classifier, quality=50, batch_size=4, seed=seed, verbose=False).fit(x, y)
        return torch.cat([p.detach().flatten() for p in classifier.model.parameters()])

    assert torch.equal(trained(1), trained(1)) and not torch.equal(trained(1), trained(2))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"quality": 0}, "quality"),
        ({"quality": 50.0}, "quality"),
        ({"xi": 1.5}, "xi"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"nb_epochs": 0}, "nb_epochs"),
        ({"lr_decay": 0.0}, "lr_decay"),
    ],
)
def test_bad_parameters_are_named(kwargs: dict, error: str) -> None:
    with pytest.raises((ValueError, TypeError), match=error):
        NoisyCompressionTrainer(small_classifier(), **{"quality": 50, **kwargs})


def test_bad_data_and_classifiers_are_refused() -> None:
    trainer = NoisyCompressionTrainer(small_classifier(), quality=50, verbose=False)
    x, y = images()
    with pytest.raises(ValueError, match="labels"):
        trainer.fit(x, y[:-1])
    with pytest.raises(ValueError, match="shape"):
        trainer.fit(x[:, :, :8], y)
    with pytest.raises(TypeError, match="floating point"):
        trainer.fit((x * 255).astype(np.uint8), y)
    with pytest.raises(TypeError, match="PyTorchClassifier"):
        NoisyCompressionTrainer(small_classifier().model, quality=50)  # type: ignore[arg-type]


def test_the_model_set_is_a_chain_and_resumes_without_retraining(tmp_path: Path, monkeypatch) -> None:
    from art_purifiers.training import noisy_compression
    from art_purifiers.training.noisy_compression import train_model_set

    x, y = colour_task(12, 0)
    options = {"nb_epochs": 1, "batch_size": 6, "verbose": False}
    model = small_classifier().model
    histories = train_model_set(model, x, y, tmp_path / "set", qualities=(90, 50), **options)
    assert set(histories) == {90, 50} and all(len(h) == 1 for h in histories.values())
    # rebuilt member by member with the trainer alone: M90 from M, M50 from M90
    expected = small_classifier()
    for quality in (90, 50):
        NoisyCompressionTrainer(expected, quality, **options).fit(x, y)
        saved = torch.load(tmp_path / "set" / f"m{quality}.pt", weights_only=True)
        for name, tensor in expected.model.state_dict().items():
            torch.testing.assert_close(saved[name], tensor)
    # a second call finds both members and trains nothing
    monkeypatch.setattr(noisy_compression.NoisyCompressionTrainer, "fit", lambda *a, **k: pytest.fail("retrained"))
    fresh = small_classifier().model
    assert train_model_set(fresh, x, y, tmp_path / "set", qualities=(90, 50), **options) == histories
    torch.testing.assert_close(fresh.state_dict(), torch.load(tmp_path / "set" / "m50.pt", weights_only=True))


def cifar_sized_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)
    )


def test_the_command_trains_the_set_from_a_cifar10_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    from PIL import Image

    from art_purifiers.data import CIFAR10_CLASSES
    from art_purifiers.training.noisy_compression import main

    monkeypatch.setenv("ART_PURIFIERS_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    for name in CIFAR10_CLASSES:
        (tmp_path / "cifar" / "train" / name).mkdir(parents=True)
        for index in range(2):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "cifar" / "train" / name / f"{index}.png")
    model = "tests.test_noisy_training:cifar_sized_model"
    arguments = ["--data-dir", str(tmp_path / "cifar"), "--output", str(tmp_path / "set"), "--qualities", "70", "30",
                 "--epochs", "1", "--validation-images", "4", "--classifier", model]  # fmt: skip
    assert main(arguments) == 0
    assert sorted(f.name for f in (tmp_path / "set").glob("m*.pt")) == [
        "m30-checkpoint.pt", "m30.pt", "m70-checkpoint.pt", "m70.pt",
    ]  # fmt: skip
    assert '"val_accuracy_q30"' in capsys.readouterr().out


def test_the_command_exports_zoo_members_with_cards(tmp_path: Path, monkeypatch) -> None:
    from PIL import Image

    from art_purifiers import zoo
    from art_purifiers.data import CIFAR10_CLASSES
    from art_purifiers.nets.classifier import CifarConvNet
    from art_purifiers.training.noisy_compression import main

    monkeypatch.setenv("ART_PURIFIERS_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    for split, count in (("train", 3), ("test", 1)):
        for name in CIFAR10_CLASSES:
            (tmp_path / "cifar" / split / name).mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "cifar" / split / name / f"{index}.png")
    torch.manual_seed(0)
    start = tmp_path / "start.pt"
    zoo.save(start, CifarConvNet(widths=(4, 4, 8, 8)), "cifar-convnet", {"widths": [4, 4, 8, 8]},
             {"data": "-", "resolution": "32x32", "metrics": {}, "command": "-"})  # fmt: skip
    arguments = ["--data-dir", str(tmp_path / "cifar"), "--output", str(tmp_path / "set"), "--qualities", "70", "30",
                 "--epochs", "1", "--validation-images", "4", "--train-images", "16",
                 "--classifier", str(start)]  # fmt: skip
    assert main(arguments) == 0
    test = [(np.asarray(Image.open(f)), CIFAR10_CLASSES.index(f.parent.name))
            for f in sorted((tmp_path / "cifar" / "test").glob("*/*.png"))]  # fmt: skip
    x = np.stack([pixels for pixels, _ in test]).transpose(0, 3, 1, 2).astype(np.float32) / 255
    y = np.array([label for _, label in test])
    for quality in (70, 30):
        file = tmp_path / "set" / f"cifar10-noisy-q{quality}.pt"
        member, card = zoo.load_file(file), zoo.card(file)
        trained = torch.load(tmp_path / "set" / f"m{quality}.pt", weights_only=True)
        for key, value in member.state_dict().items():  # stored in float16
            torch.testing.assert_close(value, trained[key].to(value.dtype), atol=2e-3, rtol=2e-3)
        assert card["quality"] == quality and "--train-images 16" in card["command"]
        assert card["data"].startswith("CIFAR-10 train: 16 images") and len(card["history"]) == 1
        with torch.no_grad():
            compressed = NNFavoredJpeg(quality=quality)(x)[0]
            accuracy = (member(torch.from_numpy(compressed)).argmax(1).numpy() == y).mean()
        assert card["metrics"][f"test_top1_q{quality}"] == pytest.approx(accuracy)
        assert card["metrics"]["test_images"] == 10
    with pytest.raises(SystemExit):
        main([*arguments[:-4], "--train-images", "0"])
