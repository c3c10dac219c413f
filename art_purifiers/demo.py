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
    """Every available defence with its defaults, by display name."""
    from art_purifiers import CompressRestore, NNFavoredJpeg, QuantizeDistort, SuperResolution

    return {
        "NNFavoredJpeg": NNFavoredJpeg(device_type="cpu"),
        "QuantizeDistort": QuantizeDistort(seed=seed, device_type="cpu"),
        "CompressRestore": CompressRestore(seed=seed, device_type="cpu"),
        "SuperResolution": SuperResolution(device_type="cpu"),
    }


def load_photos(size: int) -> np.ndarray:
    """scikit-image's bundled colour photos, resized to ``size`` x ``size``, as an NCHW float32 batch in [0, 1]."""
    from skimage import data, transform

    photos = [transform.resize(getattr(data, name)(), (size, size), anti_aliasing=True) for name in DEMO_PHOTOS]
    return np.stack(photos).transpose(0, 3, 1, 2).astype(np.float32)


def defence_label(name: str, defence: Any) -> list[str]:
    """The defence's name and its own parameters that are set (not the shared ART plumbing), one per line."""
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
        else:
            text = f"{value}"
        lines.append(f"{key}={text}")
    return lines


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def demo_layout(size: int, photos: int, columns: int) -> dict[str, int]:
    """Pixel geometry of the demo PNG: a header, then per photo the images, a metrics strip, zooms and differences."""
    font = max(12, size // 14)
    header = HEADER_LINES * (font + 3) + 4
    strip = font + 6
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
HEADER_LINES = 6


def render_demo(
    photos: np.ndarray, purified: dict[str, np.ndarray], labels: dict[str, list[str]], metrics: dict
) -> Any:
    """The side-by-side PNG: columns original + defences; per photo the images, zoomed crops, amplified differences."""
    from PIL import Image, ImageDraw

    size = photos.shape[-1]
    geometry = demo_layout(size, len(photos), 1 + len(purified))
    font = _font(geometry["font"])
    canvas = Image.new("RGB", (geometry["width"], geometry["height"]), "white")
    draw = ImageDraw.Draw(canvas)
    columns = [("original", photos, ["original", "(no defence)"])] + [
        (name, images, labels[name]) for name, images in purified.items()
    ]
    for j, (name, images, label) in enumerate(columns):
        left = j * size
        for line_index, line in enumerate(label[:HEADER_LINES]):
            draw.text((left + 3, 2 + line_index * (geometry["font"] + 3)), line, fill="black", font=font)
        for i in range(len(photos)):
            top = geometry["header"] + i * geometry["block"]
            canvas.paste(_to_pil(images[i]), (left, top))
            text = "" if name == "original" else "{:.1f} dB  SSIM {:.3f}".format(*metrics[(i, name)])
            draw.text((left + 3, top + size + 2), text, fill="black", font=font)
            canvas.paste(_zoom(images[i], size), (left, top + size + geometry["strip"]))
            difference = np.abs(images[i] - photos[i]) * DIFFERENCE_GAIN
            canvas.paste(_to_pil(difference), (left, top + 2 * size + geometry["strip"]))
            if name == "original":
                caption = f"rows: image,\n4x zoom of the centre,\n|difference| x{DIFFERENCE_GAIN}"
                draw.text((left + 3, top + 2 * size + geometry["strip"] + 3), caption, fill="white", font=font)
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
