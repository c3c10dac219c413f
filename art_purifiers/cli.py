"""
The ``art-purifiers`` command line: ``demo`` (offline showcase), ``evaluate`` (adaptive attack suite), ``report``
(tables and pages of evaluate runs), ``list`` (the defences and attacks ``evaluate`` takes, with their options) and
``zoo`` (the shipped pretrained artifacts).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.error import URLError

if TYPE_CHECKING:
    from art_purifiers.evaluation.results import Results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``art-purifiers`` command."""
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _run_demo(commands["demo"], args)
    if args.command == "evaluate":
        return _run_evaluate(commands["evaluate"], args, argv)
    if args.command == "report":
        return _run_report(commands["report"], args)
    if args.command == "list":
        print(listing())
    elif args.command == "zoo":
        from art_purifiers import zoo

        for name in zoo.names() or ["(no artifacts shipped yet)"]:
            print(name)
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser of ``art-purifiers`` and of each command, by name."""
    from art_purifiers import __version__

    parser = argparse.ArgumentParser(prog="art-purifiers", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="purify scikit-image's photos with every defence (offline)")
    demo.add_argument("--output", type=Path, default=Path("demo-output"), help="output directory (default demo-output)")
    demo.add_argument("--size", type=int, default=224, help="photo size in pixels (default 224)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the randomized defences (default 0)")
    evaluate = _add_evaluate_parser(commands)
    report = _add_report_parser(commands)
    commands.add_parser("list", help="list the defences and attacks evaluate takes, with their options")
    commands.add_parser("zoo", help="list the shipped pretrained artifacts")
    return parser, {"demo": demo, "evaluate": evaluate, "report": report}


def _run_demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.size < 8:
        parser.error("--size must be at least 8")
    from art_purifiers.demo import run_demo

    rows = run_demo(args.output, args.size, args.seed)
    width = max(len(r["defence"]) for r in rows)
    for row in rows:
        print(f"{row['photo']:<10} {row['defence']:<{width}}  PSNR {row['psnr_db']:6.2f} dB  SSIM {row['ssim']:.4f}")
    print(f"wrote {args.output / 'demo.png'} and {args.output / 'demo.md'}")
    return 0


def _add_report_parser(commands: Any) -> argparse.ArgumentParser:
    report = commands.add_parser("report", help="write the tables and plots of one or several evaluate runs")
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
    return report


def _add_evaluate_parser(commands: Any) -> argparse.ArgumentParser:
    from art_purifiers.evaluation import EvaluationConfig

    default = {field.name: field.default for field in dataclasses.fields(EvaluationConfig)}
    evaluate = commands.add_parser(
        "evaluate",
        help="run the adaptive attack suite against defences",
        description="Attack defended classifiers and write results.json, results.md, results.csv and plots to "
        "--output. Re-running the same command resumes an interrupted run. Example: art-purifiers evaluate "
        f"--download --defence NNFavoredJpeg --attack cascade:eps=8/255 --output runs/nnfj. {CPU_TIME_NOTE}",
        epilog=_evaluate_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = evaluate.add_argument
    _add_spec_options(add, default)
    _add_data_options(add, default)
    _add_run_options(add, default)
    return evaluate


def _add_spec_options(add: Any, default: dict[str, Any]) -> None:
    """What is attacked and how: defences, attacks, protocols, their budgets' unit, the models."""
    from art_purifiers.evaluation.specs import PROTOCOLS

    add(
        "--defence",
        action="append",
        required=True,
        dest="defences",
        metavar="SPEC",
        help="defence spec NAME[:option=value,...], repeatable: none, jpeg:quality=50, NNFavoredJpeg:table=search, "
        "QuantizeDistort:table=learned, CompressRestore, package.module:attribute, ... (art-purifiers list)",
    )
    add(
        "--attack",
        action="append",
        dest="attacks",
        metavar="SPEC",
        help="attack spec KIND[:option=value,...], repeatable, e.g. pgd:eps=8/255,steps=50 (default: the adaptive "
        "set below; art-purifiers list shows every kind with its options)",
    )
    add(
        "--protocol",
        action="append",
        default=[],
        choices=sorted(PROTOCOLS),
        help="add a paper's own attack (its threat model, steps and EOT count) to the attacks; repeatable",
    )
    add(
        "--eps-scale",
        type=float,
        default=1.0,
        help="the unit of the budgets in your --attack specs: 255 gives them in 0-255 pixel units (eps=8 is "
        "8/255); default 1: images in [0, 1] (the default attacks and --protocol are always in [0, 1] units)",
    )
    add(
        "--classifier",
        default=default["classifier"],
        help=f"zoo name, weight file or module:attr (default {default['classifier']})",
    )
    add(
        "--surrogate",
        default=default["surrogate"],
        help="source model of the transfer attacks, as --classifier; A+B chains models, e.g. an attacker's own "
        f"purifier before its classifier: runs/nrp-attacker/purifier.pt+cifar10-surrogate "
        f"(default {default['surrogate']})",
    )


def _add_run_options(add: Any, default: dict[str, Any]) -> None:
    """Seeds, batches, devices and the output."""
    add(
        "--seed",
        type=int,
        default=default["seed"],
        help=f"seed of the image selection, the defences' draws and the attacks (default {default['seed']})",
    )
    add(
        "--batch-size",
        type=int,
        default=default["batch_size"],
        help=f"images per batch of the classifier, defences and attacks (default {default['batch_size']})",
    )
    add(
        "--chunk-size",
        type=int,
        help="images per chunk: the unit of saved progress and of work shared among torchrun processes "
        "(default: the batch size)",
    )
    add("--device", default=default["device"], help="auto, cpu or cuda (default auto: cuda when available)")
    add("--no-sanity", action="store_true", help="skip the sanity-check attacks")
    add(
        "--extend",
        action="store_true",
        help="add defences or attacks to the run already in --output (each command keeps its own provenance)",
    )
    add("--quiet", action="store_true", help="no progress bars")
    add("--output", type=Path, required=True, help="output directory (resumable)")


def _add_data_options(add: Any, default: dict[str, Any]) -> None:
    add("--dataset", default=default["dataset"], help="cifar10 or imagefolder:PATH (default cifar10)")
    add("--data-dir", help="CIFAR-10 directory: an ImageFolder tree or torchvision's cifar-10-batches-py "
        "(default: $ART_PURIFIERS_DATA)")  # fmt: skip
    add("--download", action="store_true", help="download the original CIFAR-10 with torchvision")
    add("--image-size", type=int, help="resize ImageFolder images to this size (default: keep their size)")
    add(
        "--num-images",
        type=int,
        default=default["num_images"],
        help=f"clean-correct test images to attack (default {default['num_images']})",
    )
    add(
        "--clean-images",
        type=_count_or_all,
        default=default["clean_images"],
        help="test images (in the seeded order) on which clean accuracy is measured, or 'all' for the whole split "
        "(default: those classified to find --num-images correct ones)",
    )
    add(
        "--draws",
        type=int,
        default=default["draws"],
        help=f"defence draws for randomized defences (default {default['draws']})",
    )
    add(
        "--fit-images",
        type=int,
        default=default["fit_images"],
        help=f"training images for table search and learning (default {default['fit_images']})",
    )


def _count_or_all(text: str) -> int:
    """``all`` (0: the whole split) or a positive image count."""
    if text == "all":
        return 0
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return count


#: CPU time of a default evaluation, as measured (see the docs' evaluation page).
CPU_TIME_NOTE = (
    "On 2 CPU cores the default attacks took about 1.5 hours per deterministic defence and 500 images (about 40 "
    "minutes without C&W), longer for a randomized defence; one GPU took 5 to 20 minutes."
)


def _evaluate_epilog() -> str:
    from art_purifiers.evaluation import DEFAULT_ATTACKS
    from art_purifiers.evaluation.specs import ATTACK_KINDS, kind_options

    kinds = "\n".join(f"  {kind:<20} {', '.join(kind_options(kind))}" for kind in ATTACK_KINDS)
    return (
        "attack kinds and their options (budgets in [0, 1] units, e.g. eps=8/255; art-purifiers list explains "
        f"each):\n{kinds}\n\ndefault attacks:\n  " + "\n  ".join(DEFAULT_ATTACKS)
    )


def listing() -> str:
    """What ``art-purifiers list`` prints: every defence and attack kind ``evaluate`` takes, with their options."""
    from art_purifiers.base import PurifierPreprocessor
    from art_purifiers.evaluation.specs import (
        ATTACK_KINDS,
        OPTION_HELP,
        OPTION_TYPES,
        PROTOCOLS,
        kind_options,
        parse_attack,
    )
    from art_purifiers.evaluation.targets import DEFENCES, SUITE_SETS, TABLE_CHOICES, defence_options

    lines = [
        "Defences (--defence NAME[:option=value,...]):",
        f"  {'none':<29} the undefended classifier",
        f"  {'jpeg':<29} ART's JpegCompression on tensors (JpegCompressionPyTorch); options: quality (1-100, 75)",
    ]
    for key, name in DEFENCES.items():
        own = [o for o in defence_options(key) if o not in PurifierPreprocessor.params]
        table = f" (table: {' or '.join(TABLE_CHOICES[key])})" if key in TABLE_CHOICES else ""
        lines.append(f"  {name:<29} options: {', '.join(own)}{table}")
    shared = [name for name in PurifierPreprocessor.params if name not in SUITE_SETS]
    lines += [f"  and every one of these also: {', '.join(shared)}",
              "  package.module:attribute      your own ART preprocessor, a list of them, or a function returning one",
              "", "Attacks (--attack KIND[:option=value,...]), each with its defaults:"]  # fmt: skip
    for kind in ATTACK_KINDS:
        lines.append(f"  {kind:<20} {parse_attack(kind).label}; options: {', '.join(kind_options(kind))}")
    lines += ["", "Attack options:"]
    lines += [f"  {name:<20} {OPTION_TYPES[name].description}: {text}" for name, text in OPTION_HELP.items()]
    lines += ["", "Protocols (--protocol NAME):"]
    lines += [f"  {name:<20} {'; '.join(protocol['attacks'])}" for name, protocol in PROTOCOLS.items()]
    return "\n".join(lines)


def _run_evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Run (or resume) an evaluation; a bad option or spec ends it with one line naming the problem."""
    from art_purifiers.evaluation import evaluate

    args.chunk_size = args.batch_size if args.chunk_size is None else args.chunk_size
    for name in ("num_images", "draws", "fit_images", "batch_size", "chunk_size", "image_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return _fail(parser, f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    try:
        evaluate(_evaluation_config(args, argv), args.output)
    except (ValueError, FileNotFoundError) as error:
        return _fail(parser, str(error))
    except (URLError, ConnectionError) as error:  # --download without internet access
        return _fail(parser, f"could not download CIFAR-10 ({error}); pass --data-dir with a local copy instead")
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 wrote them
        print(f"wrote {args.output / 'results.json'}, results.md, results.csv and plots")
    return 0


def _fail(parser: argparse.ArgumentParser, message: str) -> int:
    """One line on standard error (the usage is long and says nothing about a bad value), exit status 2."""
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return 2


def _evaluation_config(args: argparse.Namespace, argv: Sequence[str] | None) -> Any:
    import shlex

    from art_purifiers.evaluation import DEFAULT_ATTACKS, EvaluationConfig
    from art_purifiers.evaluation.specs import PROTOCOLS, parse_attack

    # the user's budgets in [0, 1] units (--eps-scale applies to their own specs, not to the defaults or protocols)
    attacks = [parse_attack(spec, args.eps_scale).spec for spec in args.attacks] if args.attacks else DEFAULT_ATTACKS
    return EvaluationConfig(
        defences=args.defences,
        attacks=[*attacks, *(a for name in args.protocol for a in PROTOCOLS[name]["attacks"])],
        classifier=args.classifier,
        surrogate=args.surrogate,
        dataset=args.dataset,
        data_dir=args.data_dir,
        download=args.download,
        image_size=args.image_size,
        num_images=args.num_images,
        clean_images=args.clean_images,
        draws=args.draws,
        seed=args.seed,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        fit_images=args.fit_images,
        sanity_checks=not args.no_sanity,
        device=args.device,
        extend=args.extend,
        command="art-purifiers " + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        verbose=not args.quiet,
    )


def _mergeable_groups(runs: list[Results], sources: list[str]) -> list[Results]:
    """The runs merged into as few groups as their configurations allow, in order of first appearance."""
    from art_purifiers.evaluation.results import merge

    groups: list[tuple[list[Results], list[str]]] = []
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

    from art_purifiers.evaluation.report import write_pages, write_reports
    from art_purifiers.evaluation.results import load_results, merge

    files = [run / "results.json" if run.is_dir() else run for run in args.runs]
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        parser.error(f"no results.json at {', '.join(missing)}")
    runs, sources = [load_results(file) for file in files], [str(file.parent) for file in files]
    args.output.mkdir(parents=True, exist_ok=True)
    if args.pages:  # runs that cannot be merged (other image counts) get their own section of the summary
        pages = write_pages(_mergeable_groups(runs, sources), args.output, args.notes_dir)
        print(f"wrote {', '.join(str(page) for page in pages)} and {args.output / 'summary.md'}")
        return 0
    try:
        results = merge(runs, sources)
    except ValueError as error:
        parser.error(str(error))
    (args.output / "results.json").write_text(json.dumps(results.to_json(), indent=1))
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
