"""The ``art-purifiers`` command line: ``demo`` (offline showcase), ``evaluate`` (adaptive attack suite) and ``zoo``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.error import URLError


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
        from art_purifiers.demo import run_demo

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
