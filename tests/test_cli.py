"""The offline demo behind the README's first command."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from art_purifiers.cli import DEMO_PHOTOS, main


def test_demo_writes_a_labelled_side_by_side_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--output", str(tmp_path), "--size", "64"]) == 0
    with Image.open(tmp_path / "demo.png") as image:
        # columns: original + 3 defences; rows: one per photo with a 14-pixel label strip
        assert image.size == (4 * 64, len(DEMO_PHOTOS) * (64 + 14))
    table = (tmp_path / "demo.md").read_text().splitlines()
    assert len(table) == 2 + 3 * len(DEMO_PHOTOS)
    printed = capsys.readouterr().out
    psnr = {
        name: [float(line.split("PSNR")[1].split("dB")[0]) for line in printed.splitlines() if name in line]
        for name in ("NNFavoredJpeg", "QuantizeDistort")
    }
    # quantization alone stays close to the photo; the random geometric distortion moves pixels, so PSNR is lower
    assert min(psnr["NNFavoredJpeg"]) > 22 and max(psnr["QuantizeDistort"]) < min(psnr["NNFavoredJpeg"])


def test_demo_rejects_tiny_sizes_and_zoo_lists(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--size", "2"])
    assert main(["zoo"]) == 0
    assert capsys.readouterr().out.strip()
