"""
The offline demo behind ``art-purifiers demo``: scikit-image's bundled photos purified by every defence, written as
a side-by-side PNG (each defence labelled with its parameters, PSNR/SSIM against the original, a 4x zoom of the
centre and the difference amplified 8x) and a Markdown table.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

DEMO_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def default_defences(seed: int) -> dict:
    """Every defence of the package with its defaults (shipped networks included), by class name."""
    from art_purifiers import (
        CompressRestore,
        JpegCompressionPyTorch,
        NeuralRepresentationPurifier,
        NNFavoredJpeg,
        QuantizeDistort,
        SuperResolution,
    )

    return {
        "NNFavoredJpeg": NNFavoredJpeg(device_type="cpu"),
        "QuantizeDistort": QuantizeDistort(seed=seed, device_type="cpu"),
        "CompressRestore": CompressRestore(seed=seed, device_type="cpu"),
        "SuperResolution": SuperResolution(device_type="cpu"),
        "NeuralRepresentationPurifier": NeuralRepresentationPurifier(seed=seed, device_type="cpu"),
        "JpegCompressionPyTorch": JpegCompressionPyTorch(device_type="cpu"),  # the JPEG baseline, as ART's
    }


def load_photos(size: int) -> np.ndarray:
    """scikit-image's bundled colour photos, resized to ``size`` x ``size``, as an NCHW float32 batch in [0, 1]."""
    from skimage import data, transform

    photos = [transform.resize(getattr(data, name)(), (size, size), anti_aliasing=True) for name in DEMO_PHOTOS]
    return np.stack(photos).transpose(0, 3, 1, 2).astype(np.float32)


def defence_label(name: str, defence: Any) -> list[str]:
    """The defence's name and its own parameters that are set (not the ART plumbing every defence has), one per line."""
    from torch import nn

    from art_purifiers.base import PurifierPreprocessor

    lines = [name]
    for key in defence.params:
        if key in PurifierPreprocessor.params:
            continue
        value = getattr(defence, key)
        if value is None:
            continue
        if isinstance(value, np.ndarray):
            text = f"{value.min():g}..{value.max():g}" if value.min() != value.max() else f"{value.min():g}"
        elif isinstance(value, dict):
            text = "/".join(f"q{quality}" for quality in value)
        elif isinstance(value, nn.Module):
            text = type(value).__name__
        elif isinstance(value, float):
            text = f"{value:.4g}"
        else:
            text = f"{value}"
        lines.append(f"{key}={text}")
    return lines


#: Pixels between a column's edges and its text.
TEXT_MARGIN = 3
#: Characters after which a long line of text is preferably broken.
_BREAK_AFTER = "=,/_ "


def font_size(size: int) -> int:
    """The font size of the text in a demo PNG whose images are ``size`` pixels wide."""
    return max(12, size // 14)


def line_height(font_px: int) -> int:
    """The distance between two lines of text in a font of ``font_px`` pixels."""
    return font_px + 3


def demo_font(size: int) -> Any:
    """The font of a demo PNG whose images are ``size`` pixels wide (:func:`font_size` pixels)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=font_size(size))
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def wrap_line(line: str, font: Any, width: float) -> list[str]:
    """
    Break ``line`` into pieces that each fit ``width`` pixels in ``font`` (measured with ``font.getlength``), at the
    last ``=``, ``,``, ``/``, ``_``, space or lower-to-upper-case step that fits, else between characters. Joined,
    the pieces give ``line`` back; a single character wider than ``width`` stays a piece of its own.
    """
    pieces = []
    rest = line
    while font.getlength(rest) > width and len(rest) > 1:
        end = 1  # the longest prefix that fits (at least one character)
        while end < len(rest) and font.getlength(rest[: end + 1]) <= width:
            end += 1
        natural = [
            cut
            for cut in range(1, end + 1)
            if cut < len(rest) and (rest[cut - 1] in _BREAK_AFTER or (rest[cut - 1].islower() and rest[cut].isupper()))
        ]
        cut = natural[-1] if natural else end
        pieces.append(rest[:cut])
        rest = rest[cut:]
    return [*pieces, rest]


def wrap_lines(lines: list[str], font: Any, width: float) -> list[str]:
    """Every line of ``lines`` wrapped to ``width`` pixels (:func:`wrap_line`), in order."""
    return [piece for line in lines for piece in wrap_line(line, font, width)]


def demo_layout(size: int, photos: int, columns: int, header_lines: int, strip_lines: int = 1) -> dict[str, int]:
    """
    Pixel geometry of the demo PNG: a header of ``header_lines`` lines of text, then per photo the images, a metrics
    strip of ``strip_lines`` lines, zooms and differences.
    """
    font = font_size(size)
    header = header_lines * line_height(font) + 4
    strip = strip_lines * line_height(font) + 3
    block = 3 * size + strip
    return {"font": font, "header": header, "strip": strip, "block": block, "width": columns * size,
            "height": header + photos * block}  # fmt: skip


def _to_pil(image: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(np.round(np.clip(image.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8))


def _zoom(image: np.ndarray, size: int) -> Any:
    """The central quarter-width crop, enlarged 4x with nearest-neighbour so single pixels show."""
    from PIL import Image

    side = max(2, size // 4)
    top = left = (size - side) // 2
    return _to_pil(image[:, top : top + side, left : left + side]).resize((size, size), Image.Resampling.NEAREST)


DIFFERENCE_GAIN = 8


def render_demo(
    photos: np.ndarray, purified: dict[str, np.ndarray], labels: dict[str, list[str]], metrics: dict
) -> Any:
    """
    The side-by-side PNG: columns original + defences; per photo the images, zoomed crops, amplified differences.
    Every line of text is wrapped to its column (:func:`wrap_line`), and the header and the metrics strips are as
    tall as their longest text, so no text is cut.
    """
    from PIL import Image, ImageDraw

    size = photos.shape[-1]
    font = demo_font(size)
    text_width = size - 2 * TEXT_MARGIN
    columns = [("original", photos, ["original", "(no defence)"])] + [
        (name, images, labels[name]) for name, images in purified.items()
    ]
    headers = [wrap_lines(label, font, text_width) for _, _, label in columns]
    strips = {
        key: wrap_line("{:.1f} dB  SSIM {:.3f}".format(*value), font, text_width) for key, value in metrics.items()
    }
    caption = wrap_lines(
        ["rows: image,", "4x zoom of the centre,", f"|difference| x{DIFFERENCE_GAIN}"], font, text_width
    )
    geometry = demo_layout(
        size, len(photos), len(columns), max(map(len, headers)), max(map(len, strips.values()), default=1)
    )
    step = line_height(geometry["font"])
    canvas = Image.new("RGB", (geometry["width"], geometry["height"]), "white")
    draw = ImageDraw.Draw(canvas)
    for j, ((name, images, _), header) in enumerate(zip(columns, headers)):
        left = j * size
        for line_index, line in enumerate(header):
            draw.text((left + TEXT_MARGIN, 2 + line_index * step), line, fill="black", font=font)
        for i in range(len(photos)):
            top = geometry["header"] + i * geometry["block"]
            canvas.paste(_to_pil(images[i]), (left, top))
            for line_index, line in enumerate([] if name == "original" else strips[(i, name)]):
                draw.text((left + TEXT_MARGIN, top + size + 2 + line_index * step), line, fill="black", font=font)
            canvas.paste(_zoom(images[i], size), (left, top + size + geometry["strip"]))
            difference = np.abs(images[i] - photos[i]) * DIFFERENCE_GAIN
            canvas.paste(_to_pil(difference), (left, top + 2 * size + geometry["strip"]))
            for line_index, line in enumerate(caption if name == "original" else []):
                position = (left + TEXT_MARGIN, top + 2 * size + geometry["strip"] + 3 + line_index * step)
                draw.text(position, line, fill="white", font=font)
    return canvas


def run_demo(output: Path, size: int = 224, seed: int = 0) -> list[dict]:
    """
    Purify the demo photos with every defence, write ``demo.png`` (columns: original, then each defence labelled
    with its parameters; per photo: the images with PSNR/SSIM against the original, a 4x zoom of the centre, and
    the difference to the original amplified 8x) and ``demo.md`` (the table), and return the table rows.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    output.mkdir(parents=True, exist_ok=True)
    photos = load_photos(size)
    defences = default_defences(seed)
    with warnings.catch_warnings():  # the demo knowingly runs the CIFAR-10 restorers on larger photos
        warnings.filterwarnings("ignore", message="CompressRestore's restorers were trained")
        purified = {name: defence(photos)[0] for name, defence in defences.items()}
    labels = {name: defence_label(name, defence) for name, defence in defences.items()}
    rows, metrics = [], {}
    for i, photo_name in enumerate(DEMO_PHOTOS):
        for name, images in purified.items():
            psnr = float(peak_signal_noise_ratio(photos[i], images[i], data_range=1.0))
            ssim = float(structural_similarity(photos[i], images[i], channel_axis=0, data_range=1.0))
            metrics[(i, name)] = (psnr, ssim)
            parameters = ", ".join(labels[name][1:])
            rows.append({"photo": photo_name, "defence": name, "parameters": parameters, "psnr_db": psnr, "ssim": ssim})
    render_demo(photos, purified, labels, metrics).save(output / "demo.png")
    lines = ["| photo | defence | parameters | PSNR (dB) | SSIM |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['photo']} | {r['defence']} | {r['parameters']} | {r['psnr_db']:.2f} | {r['ssim']:.4f} |" for r in rows
    ]
    (output / "demo.md").write_text("\n".join(lines) + "\n")
    return rows
