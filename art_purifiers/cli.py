"""The ``art-purifiers`` command line: ``demo`` (offline showcase), ``evaluate`` (adaptive attack suite) and ``zoo``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.error import URLError

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``art-purifiers`` command."""
    from art_purifiers import __version__

    parser = argparse.ArgumentParser(prog="art-purifiers", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="purify scikit-image's photos with every defence (offline)")
    demo.add_argument("--output", type=Path, default=Path("demo-output"), help="output directory")
    demo.add_argument("--size", type=int, default=224, help="photo size in pixels (default 224)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the randomized defences")
    commands.add_parser("zoo", help="list the shipped pretrained artifacts")
    evaluate_parser = _add_evaluate_parser(commands)
    report = commands.add_parser("report", help="write the tables and plots of one or several evaluate runs")
    report_parser = report
    report.add_argument("runs", nargs="+", type=Path, help="results.json files or evaluate output directories")
    report.add_argument("--output", type=Path, required=True, help="directory for results.md/.csv/.json and plots")
    report.add_argument("--notes", type=Path, help="a Markdown file appended to results.md (discussion of the numbers)")
    report.add_argument(
        "--pages",
        action="store_true",
        help="instead of one report, write one page per defence (NAME.md with its plots, CSV and JSON) and "
        "summary.md; runs with other image counts get their own section",
    )
    report.add_argument("--notes-dir", type=Path, help="with --pages: NAME.md files appended to the defence pages")
    args = parser.parse_args(argv)

    if args.command == "demo":
        if args.size < 8:
            parser.error("--size must be at least 8")
        rows = run_demo(args.output, args.size, args.seed)
        width = max(len(r["defence"]) for r in rows)
        for row in rows:
            print(
                f"{row['photo']:<10} {row['defence']:<{width}}  PSNR {row['psnr_db']:6.2f} dB  SSIM {row['ssim']:.4f}"
            )
        print(f"wrote {args.output / 'demo.png'} and {args.output / 'demo.md'}")
    elif args.command == "evaluate":
        return _run_evaluate(evaluate_parser, args, argv)
    elif args.command == "report":
        return _run_report(report_parser, args)
    elif args.command == "zoo":
        from art_purifiers import zoo

        for name in zoo.names() or ["(no artifacts shipped yet)"]:
            print(name)
    return 0


def _add_evaluate_parser(commands: Any) -> argparse.ArgumentParser:
    from art_purifiers.evaluation import DEFAULT_ATTACKS
    from art_purifiers.evaluation.specs import ATTACK_KINDS, PROTOCOLS

    evaluate = commands.add_parser(
        "evaluate",
        help="run the adaptive attack suite against defences",
        description="Attack defended classifiers and write results.json, results.md, results.csv and plots to "
        "--output. Re-running the same command resumes an interrupted run. Example (CPU, about an hour per "
        "deterministic defence at the defaults; minutes on a GPU): art-purifiers evaluate --download "
        "--defence NNFavoredJpeg --attack cascade:eps=8/255 --output runs/nnfj",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    evaluate.add_argument(
        "--defence",
        action="append",
        required=True,
        dest="defences",
        metavar="SPEC",
        help="defence spec, repeatable: none, jpeg:quality=50, NNFavoredJpeg:table=search, "
        "QuantizeDistort:table=learned, ...",
    )
    evaluate.add_argument(
        "--attack",
        action="append",
        dest="attacks",
        metavar="SPEC",
        help=f"attack spec KIND[:key=value,...], repeatable; kinds: {', '.join(ATTACK_KINDS)} "
        f"(default: {' '.join(DEFAULT_ATTACKS)})",
    )
    evaluate.add_argument(
        "--protocol",
        action="append",
        default=[],
        choices=sorted(PROTOCOLS),
        help="add a paper's own attack (its threat model, steps and EOT count) to the attacks; repeatable",
    )
    evaluate.add_argument("--classifier", default="cifar10-reference", help="zoo name, weight file or module:attr")
    evaluate.add_argument(
        "--surrogate",
        default="cifar10-surrogate",
        help="source model of the transfer attacks, as --classifier; A+B chains models, e.g. an attacker's own "
        "purifier before its classifier: runs/nrp-attacker/purifier.pt+cifar10-surrogate",
    )
    evaluate.add_argument("--dataset", default="cifar10", help="cifar10 or imagefolder:PATH")
    evaluate.add_argument("--data-dir", help="CIFAR-10 directory (default: $ART_PURIFIERS_DATA)")
    evaluate.add_argument("--download", action="store_true", help="download CIFAR-10 with torchvision")
    evaluate.add_argument("--image-size", type=int, help="resize ImageFolder images to this size")
    evaluate.add_argument("--num-images", type=int, default=500, help="clean-correct test images to attack")
    evaluate.add_argument("--draws", type=int, default=5, help="defence draws for randomized defences")
    evaluate.add_argument("--fit-images", type=int, default=256, help="training images for table search/learning")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--batch-size", type=int, default=100)
    evaluate.add_argument(
        "--chunk-size",
        type=int,
        help="images per chunk: the unit of saved progress and of work shared among torchrun processes "
        "(default: the batch size)",
    )
    evaluate.add_argument("--device", default="auto", help="auto, cpu or cuda")
    evaluate.add_argument("--no-sanity", action="store_true", help="skip the sanity-check attacks")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.add_argument("--output", type=Path, required=True, help="output directory (resumable)")
    return evaluate


def _run_evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    import shlex

    from art_purifiers.evaluation import DEFAULT_ATTACKS, EvaluationConfig, evaluate
    from art_purifiers.evaluation.specs import PROTOCOLS

    args.chunk_size = args.batch_size if args.chunk_size is None else args.chunk_size
    for name, minimum in (("num_images", 1), ("draws", 1), ("fit_images", 1), ("batch_size", 1), ("chunk_size", 1)):
        if getattr(args, name) < minimum:
            parser.error(f"--{name.replace('_', '-')} must be at least {minimum}")
    config = EvaluationConfig(
        defences=args.defences,
        attacks=(args.attacks or list(DEFAULT_ATTACKS))
        + [a for name in args.protocol for a in PROTOCOLS[name]["attacks"]],
        classifier=args.classifier,
        surrogate=args.surrogate,
        dataset=args.dataset,
        data_dir=args.data_dir,
        download=args.download,
        image_size=args.image_size,
        num_images=args.num_images,
        draws=args.draws,
        seed=args.seed,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        fit_images=args.fit_images,
        sanity_checks=not args.no_sanity,
        device=args.device,
        command="art-purifiers " + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        verbose=not args.quiet,
    )
    try:
        evaluate(config, args.output)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    except (URLError, ConnectionError) as error:  # --download without internet access
        parser.error(f"could not download CIFAR-10 ({error}); pass --data-dir with a local copy instead")
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 wrote them
        print(f"wrote {args.output / 'results.json'}, results.md, results.csv and plots")
    return 0


def _mergeable_groups(runs: list[dict[str, Any]], sources: list[str]) -> list[dict[str, Any]]:
    """The runs merged into as few groups as their configurations allow, in order of first appearance."""
    from art_purifiers.evaluation.report import merge

    groups: list[tuple[list[dict[str, Any]], list[str]]] = []
    for run, source in zip(runs, sources):
        for members, names in groups:
            try:
                merge([*members, run], [*names, source])
            except ValueError:
                continue
            members.append(run)
            names.append(source)
            break
        else:
            groups.append(([run], [source]))
    return [merge(members, names) for members, names in groups]


def _run_report(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import json

    from art_purifiers.evaluation.report import merge, write_pages, write_reports

    files = [run / "results.json" if run.is_dir() else run for run in args.runs]
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        parser.error(f"no results.json at {', '.join(missing)}")
    runs, sources = [json.loads(file.read_text()) for file in files], [str(file.parent) for file in files]
    args.output.mkdir(parents=True, exist_ok=True)
    if args.pages:  # runs that cannot be merged (other image counts) get their own section of the summary
        pages = write_pages(_mergeable_groups(runs, sources), args.output, args.notes_dir)
        print(f"wrote {', '.join(str(page) for page in pages)} and {args.output / 'summary.md'}")
        return 0
    try:
        results = merge(runs, sources)
    except ValueError as error:
        parser.error(str(error))
    (args.output / "results.json").write_text(json.dumps(results, indent=1))
    write_reports(results, args.output)
    if args.notes is not None:
        if not args.notes.is_file():
            parser.error(f"--notes {args.notes} does not exist")
        with open(args.output / "results.md", "a") as handle:
            handle.write("\n" + args.notes.read_text())
    print(f"wrote {args.output / 'results.md'}, results.csv, results.json and plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
