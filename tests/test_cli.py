"""The offline demo behind the README's first command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from art_purifiers import NNFavoredJpeg
from art_purifiers.cli import main
from art_purifiers.demo import DEMO_PHOTOS, defence_label, demo_layout


def test_demo_writes_a_labelled_side_by_side_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--output", str(tmp_path), "--size", "64"]) == 0
    geometry = demo_layout(64, len(DEMO_PHOTOS), 5)  # columns: original + 4 defences
    with Image.open(tmp_path / "demo.png") as image:
        assert image.size == (5 * 64, geometry["header"] + len(DEMO_PHOTOS) * (3 * 64 + geometry["strip"]))
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    # the amplified difference of the first photo: visible for NNFavoredJpeg (column 1), which alone looks unchanged
    top = geometry["header"] + 2 * 64 + geometry["strip"]
    assert pixels[top + 40 : top + 64, 64:128].mean() > 10
    table = (tmp_path / "demo.md").read_text().splitlines()
    assert len(table) == 2 + 4 * len(DEMO_PHOTOS) and "favored_diagonals=4" in table[2]
    printed = capsys.readouterr().out
    psnr = {
        name: [float(line.split("PSNR")[1].split("dB")[0]) for line in printed.splitlines() if name in line]
        for name in ("NNFavoredJpeg", "QuantizeDistort", "SuperResolution")
    }
    # quantization alone stays close to the photo; the random geometric distortion moves pixels, so PSNR is lower
    assert min(psnr["NNFavoredJpeg"]) > 22 and max(psnr["QuantizeDistort"]) < min(psnr["NNFavoredJpeg"])
    # denoising, x2 super-resolution and the resize back keep the photo recognisable
    assert min(psnr["SuperResolution"]) > 20


def test_demo_rejects_tiny_sizes_and_zoo_lists(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--size", "2"])
    assert main(["zoo"]) == 0
    assert capsys.readouterr().out.strip()


def test_defence_labels_name_the_parameters() -> None:
    assert defence_label("NNFavoredJpeg", NNFavoredJpeg(qs_af=36)) == [
        "NNFavoredJpeg", "favored_diagonals=4", "qs_of=16.0", "qs_af=36",
    ]  # fmt: skip


def user_jpeg_defence() -> object:
    """A user's own defence for ``--defence tests.test_cli:user_jpeg_defence``."""
    from art.defences.preprocessor import JpegCompression

    return JpegCompression(clip_values=(0.0, 1.0), quality=50, channels_first=True)


def not_a_defence() -> int:
    return 3


def test_evaluate_usage_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "art-purifiers" in capsys.readouterr().out
    output = tmp_path / "out"
    with pytest.raises(SystemExit):
        main(["evaluate", "--defence", "none", "--attack", "pgd:epsilon=8/255", "--output", str(output)])
    error = capsys.readouterr().err
    assert "usage: art-purifiers evaluate" in error and "epsilon" in error and "eps_step" in error
    with pytest.raises(SystemExit):
        main(["evaluate", "--defence", "none", "--data-dir", str(tmp_path / "missing"), "--output", str(output)])
    assert not output.exists()  # nothing is created before the data is found
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    help_text = capsys.readouterr().out
    assert "cascade" in help_text and "original-autoattack" in help_text and "(default: 500)" in help_text


def test_protocol_and_user_defence_reach_the_suite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from art_purifiers.evaluation import suite
    from art_purifiers.evaluation.specs import PROTOCOLS
    from art_purifiers.evaluation.targets import build_defences

    seen = {}

    def fake_evaluate(config: object, output: object) -> dict:
        seen["config"] = config
        return {}

    monkeypatch.setattr(suite, "evaluate", fake_evaluate)
    monkeypatch.setattr("art_purifiers.evaluation.evaluate", fake_evaluate)
    arguments = ["evaluate", "--defence", "tests.test_cli:user_jpeg_defence", "--attack", "noise", "--protocol"]
    assert main([*arguments, "qiu2021", "--output", str(tmp_path / "o")]) == 0
    assert seen["config"].attacks == ["noise", *PROTOCOLS["qiu2021"]["attacks"]]
    chain, info = build_defences("tests.test_cli:user_jpeg_defence", None)
    assert type(chain[0]).__name__ == "JpegCompression" and "user defence" in info["note"]
    with pytest.raises(TypeError, match="Preprocessor"):
        build_defences("tests.test_cli:not_a_defence", None)
