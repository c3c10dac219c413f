"""The offline demo behind the README's first command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import art_purifiers
from art_purifiers import NeuralRepresentationPurifier, NNFavoredJpeg
from art_purifiers.base import PurifierPreprocessor
from art_purifiers.cli import main
from art_purifiers.demo import (
    DEMO_PHOTOS,
    TEXT_MARGIN,
    default_defences,
    defence_label,
    demo_font,
    demo_layout,
    render_demo,
    wrap_lines,
)
from art_purifiers.evaluation.specs import parse_attack


def test_demo_writes_a_labelled_side_by_side_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--output", str(tmp_path), "--size", "64"]) == 0
    defences = default_defences(0)
    font = demo_font(64)
    header_lines = max(len(wrap_lines(defence_label(n, d), font, 64 - 2 * TEXT_MARGIN)) for n, d in defences.items())
    columns = 1 + len(defences)  # the original, then every defence
    with Image.open(tmp_path / "demo.png") as image:
        width, height = image.size
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert width == columns * 64
    # the header holds every label line; the metrics strip under each photo may wrap at this small size
    layouts = [demo_layout(64, len(DEMO_PHOTOS), columns, header_lines, strip_lines) for strip_lines in (1, 2, 3)]
    assert height in [layout["height"] for layout in layouts]
    geometry = next(layout for layout in layouts if layout["height"] == height)
    # the amplified difference of the first photo: visible for NNFavoredJpeg (column 1), which alone looks unchanged
    top = geometry["header"] + 2 * 64 + geometry["strip"]
    assert pixels[top + 40 : top + 64, 64:128].mean() > 10
    table = (tmp_path / "demo.md").read_text().splitlines()
    assert len(table) == 2 + len(defences) * len(DEMO_PHOTOS) and "favored_diagonals=4" in table[2]
    assert {row.split(" | ")[1] for row in table[2:]} == set(defences)
    printed = capsys.readouterr().out
    psnr = {
        name: [float(line.split("PSNR")[1].split("dB")[0]) for line in printed.splitlines() if f" {name} " in line]
        for name in defences
    }
    # quantization alone stays close to the photo; the random geometric distortion moves pixels, so PSNR is lower
    assert min(psnr["NNFavoredJpeg"]) > 22 and max(psnr["QuantizeDistort"]) < min(psnr["NNFavoredJpeg"])
    # denoising, x2 super-resolution and the resize back keep the photo recognisable
    assert min(psnr["SuperResolution"]) > 20
    assert len(psnr["NeuralRepresentationPurifier"]) == len(DEMO_PHOTOS)


def test_demo_rejects_tiny_sizes_and_zoo_lists(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--size", "2"])
    assert main(["zoo"]) == 0
    assert capsys.readouterr().out.strip()


def test_defence_labels_name_the_parameters() -> None:
    assert defence_label("NNFavoredJpeg", NNFavoredJpeg(qs_af=36)) == [
        "NNFavoredJpeg", "favored_diagonals=4", "qs_of=16", "qs_af=36", "codec=dct",
    ]  # fmt: skip
    assert defence_label("NRP", NeuralRepresentationPurifier(device_type="cpu")) == [
        "NRP", "network=cifar10-nrp-light", "dynamic=False", "noise_std=0.05", "dynamic_eps=0.06275",
    ]  # fmt: skip


def test_demo_shows_every_defence_of_the_package() -> None:
    package_defences = {
        name
        for name in art_purifiers.__all__
        if isinstance(getattr(art_purifiers, name), type)
        and issubclass(getattr(art_purifiers, name), PurifierPreprocessor)
        and getattr(art_purifiers, name) is not PurifierPreprocessor
    }
    defences = default_defences(0)
    assert set(defences) == package_defences
    assert all(type(defence) is getattr(art_purifiers, name) for name, defence in defences.items())


@pytest.mark.parametrize("size", [64, 224])
def test_demo_text_fits_its_column_and_no_label_line_is_dropped(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    from PIL import ImageDraw

    drawn: list[tuple[float, float, str, Any]] = []
    draw_text = ImageDraw.ImageDraw.text

    def recording_text(self: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, *args: Any, **kwargs: Any) -> Any:
        drawn.append((xy[0], xy[1], text, kwargs["font"]))
        return draw_text(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", recording_text)
    photos = np.zeros((2, 3, size, size), dtype=np.float32)
    photos[:, 0] = 1.0  # pure red, a colour no text has
    defences = default_defences(0)
    labels = {name: defence_label(name, defence) for name, defence in defences.items()}
    metrics = {(i, name): (12.345, 0.5) for i in range(len(photos)) for name in defences}
    canvas = render_demo(photos, {name: photos for name in defences}, labels, metrics)
    red = (np.asarray(canvas) == [255, 0, 0]).all(axis=2).any(axis=1)
    header = int(np.argmax(red))  # the first row of the first photo
    assert header > 0
    header_text: dict[int, str] = {}
    for x, y, text, font in drawn:
        column = int(x) // size
        # every line, measured with the font it is drawn in, ends inside its own column
        assert "\n" not in text and x + font.getlength(text) <= (column + 1) * size - TEXT_MARGIN, (size, text)
        if y < header:
            assert y + font.getbbox(text)[3] <= header, (size, text)  # above the photos, not under them
            header_text[column] = header_text.get(column, "") + text
    # every label is drawn whole and in order (wrapping only splits lines)
    expected = [["original", "(no defence)"], *labels.values()]
    assert [header_text[column] for column in range(len(expected))] == ["".join(label) for label in expected]


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
    assert main(["evaluate", "--defence", "none", "--attack", "pgd:epsilon=8/255", "--output", str(output)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "epsilon" in error and "eps_step" in error  # one line, no usage or traceback
    assert main(["evaluate", "--defence", "none", "--data-dir", str(tmp_path / "missing"), "--output", str(output)])
    assert not output.exists()  # nothing is created before the data is found
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    help_text = capsys.readouterr().out
    assert "cascade" in help_text and "original-autoattack" in help_text and "(default 500)" in help_text
    assert "default: None" not in help_text


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
    # the user's own specs are recorded in their canonical form (budgets in [0, 1] units), the protocol's as written
    assert seen["config"].attacks == [parse_attack("noise").spec, *PROTOCOLS["qiu2021"]["attacks"]]
    chain, info = build_defences("tests.test_cli:user_jpeg_defence", None)
    assert type(chain[0]).__name__ == "JpegCompression" and "user defence" in info["note"]
    with pytest.raises(TypeError, match="Preprocessor"):
        build_defences("tests.test_cli:not_a_defence", None)
