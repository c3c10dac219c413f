"""The offline demo behind the README's first command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from art_purifiers import NNFavoredJpeg
from art_purifiers.cli import DEMO_PHOTOS, defence_label, demo_layout, main


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
