"""
Throughput of ``art-purifiers evaluate`` under ``torchrun``: the same attacks with 1 process and with N processes.

Run from the repository root (CIFAR-10 as an ImageFolder, e.g. a JPEG copy):

    python -m benchmarks.bench_distributed --data-dir path/to/cifar10
    python -m benchmarks.bench_distributed --data-dir path/to/cifar10 --device cuda --processes 1,2

Every configuration runs the CLI into a fresh output directory; the figure is each attack's ``wall_seconds`` (rank 0's
wall time from the attack's start to its gathered results, so setup, data loading and the clean pass are left out).
On a CPU the baseline is one process with one intra-op thread per core in use, and the table also shows one process
with as many threads as there are cores, which is what a plain run uses. The per-image results of runs with the same
threads per process are compared: they must be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ("pgd:eps=8/255,steps=20", "apgd:eps=8/255,steps=20")


def evaluate_command(processes: int, arguments: list[str]) -> list[str]:
    """``art-purifiers evaluate ARGUMENTS`` as one plain process, or under ``torchrun --nproc_per_node=N`` here."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return (launcher if processes > 1 else [sys.executable]) + ["-m", "art_purifiers.cli", "evaluate", *arguments]


def run(processes: int, threads: int, output: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One CLI run; returns its results.json."""
    command = ["--data-dir", str(args.data_dir), "--defence", args.defence, "--num-images", str(args.num_images)]
    command += ["--batch-size", str(args.batch_size), "--chunk-size", str(args.chunk_size), "--device", args.device]
    command += [item for attack in args.attacks for item in ("--attack", attack)]
    command = evaluate_command(processes, command + ["--no-sanity", "--quiet", "--output", str(output)])
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads((output / "results.json").read_text()))


def correctness(output: Path) -> dict[str, np.ndarray]:
    """Every per-image, per-draw correctness tensor of a run, by its path under ``state``."""
    return {str(f.relative_to(output)): np.load(f)["correct"] for f in sorted((output / "state").rglob("correct*.npz"))}


def identical(first: Path, second: Path) -> bool:
    one, two = correctness(first), correctness(second)
    return sorted(one) == sorted(two) and all(np.array_equal(one[name], two[name]) for name in one)


def table(runs: dict[tuple[int, int], dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Rows: configuration x attack, with images/s and the speed-up over the 1-process, 1-thread baseline."""
    baseline_key = min(runs, key=lambda key: (key[0], key[1] != args.threads))
    lines = ["| processes | threads each | attack | wall s | images/s | vs 1 process |", "|---|---|---|---|---|---|"]
    rows_of = {key: results["defences"][args.defence]["rows"] for key, results in runs.items()}
    for (processes, threads), rows in rows_of.items():
        for label, row in rows.items():
            baseline = rows_of[baseline_key][label]["wall_seconds"]
            lines.append(
                f"| {processes} | {threads} | {label} | {row['wall_seconds']:.1f} | "
                f"{args.num_images / row['wall_seconds']:.1f} | {baseline / row['wall_seconds']:.2f}x |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--defence", default="NNFavoredJpeg")
    parser.add_argument("--attack", action="append", dest="attacks", help=f"default: {' '.join(ATTACKS)}")
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    args.attacks = args.attacks or list(ATTACKS)
    counts = [int(count) for count in args.processes.split(",")]
    configurations = [(count, args.threads) for count in counts]
    if args.device == "cpu" and (1, os.cpu_count() or 1) not in configurations:
        configurations.insert(1, (1, os.cpu_count() or 1))  # what a plain run on this machine uses
    runs, folders = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        run(1, args.threads, Path(scratch) / "warm-up", args)  # decodes and caches the data once
        for processes, threads in configurations:
            folders[processes, threads] = Path(scratch) / f"p{processes}-t{threads}"
            runs[processes, threads] = run(processes, threads, folders[processes, threads], args)
            print(f"{processes} process(es) x {threads} thread(s): done", file=sys.stderr)
        same = [key for key in configurations[1:] if key[1] == args.threads]
        verdicts = {key: identical(folders[key], folders[configurations[0]]) for key in same}
        checks = [f"{key[0]} processes: {'identical' if same_results else 'DIFFERENT'}"
                  for key, same_results in verdicts.items()]  # fmt: skip
    environment = runs[configurations[0]]["environment"]
    lines = [
        f"# `art-purifiers evaluate` under torchrun: {args.device}",
        "",
        f"Command: `python -m benchmarks.bench_distributed {' '.join(sys.argv[1:])}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {environment['torch']}; "
        f"device {args.device}. Defence `{args.defence}`, {args.num_images} CIFAR-10 test images (a copy that was "
        f"re-encoded as JPEG q75), batch {args.batch_size}, chunk {args.chunk_size}.",
        "",
        *table(runs, args),
        "",
        f"Per-image, per-draw results against 1 process x {args.threads} thread(s): {'; '.join(checks)}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
