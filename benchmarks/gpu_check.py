"""The GPU check: on a CUDA machine, run the ``cuda``-marked tests and the GPU benchmarks and write a report.

    tox -e gpu                                  # or, in an environment with the package and its test extras:
    python -m benchmarks.gpu_check              # writes benchmarks/results/gpu-<device>.md
    python -m benchmarks.gpu_check --quick --full-suite

The report holds the environment, the test outcomes, the figures the tests measured (flip rates, PSNRs, gradient
differences), images/s of every defence on the GPU against ART's ``JpegCompression`` (``benchmarks/bench_gpu.py``),
the JPEG backends (``benchmarks/bench_jpeg_backends.py``), nvJPEG's distance from libjpeg, SuperResolution's
denoiser and EDSR (``benchmarks/bench_super_resolution.py``), and the NRP generators
(``benchmarks/bench_nrp.py``). Exits with status 1
when a test failed and 2 when there is no CUDA device.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> list[str]:
    """One Markdown line per fact about the machine and the software."""
    import art
    import torchvision

    from art_purifiers import __version__
    from art_purifiers.ops.codec import available_backends, default_backend

    driver = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
    ).stdout.strip()
    properties = torch.cuda.get_device_properties(0)
    return [
        f"- GPU: {properties.name}, {properties.total_memory / 2**30:.0f} GiB, driver {driver or 'unknown'}",
        f"- CPU: {os.cpu_count()} cores ({platform.machine()}), {torch.get_num_threads()} torch threads",
        f"- Python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
        f"torchvision {torchvision.__version__}, ART {art.__version__}, art-purifiers {__version__}",
        f"- JPEG backends here: {', '.join(available_backends())}; default (`auto`): {default_backend()}",
    ]


def run_pytest(arguments: list[str], figures: Path | None = None) -> tuple[bool, str, list[str]]:
    """Run pytest in a subprocess; return (success, the summary line, the short-summary lines)."""
    env = dict(os.environ)
    if figures is not None:
        env["ART_PURIFIERS_FIGURES"] = str(figures)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", "--tb=short", *arguments]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=RESULTS.parent.parent)
    lines = result.stdout.splitlines()
    outcomes = [line for line in lines if re.match(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) ", line)]
    outcomes += failure_messages(lines)
    summary = next((line.strip("= ") for line in reversed(lines) if re.search(r"\d+ (passed|failed)", line)), "")
    if result.returncode not in (0, 5):  # 5: nothing collected
        print(result.stdout[-6000:], result.stderr[-3000:], sep="\n", file=sys.stderr)
    return result.returncode in (0, 5), summary or "no summary (see stderr)", outcomes


def failure_messages(lines: list[str], per_failure: int = 12) -> list[str]:
    """The first ``E`` lines of each failure's traceback, under its name (so a report says why, not only what)."""
    messages: list[str] = []
    current, taken = "", 0
    for line in lines:
        header = re.match(r"^_{3,} (.+?) _{3,}$", line)
        if header:
            current, taken = header.group(1), 0
        elif current and line.startswith("E ") and line[1:].strip() and taken < per_failure:
            messages += [f"  why {current}:"] if taken == 0 else []
            messages.append("    " + line[1:].strip()[:200])
            taken += 1
    return messages


def figure_lines(figures: Path) -> list[str]:
    """The figures recorded by the tests, as table rows."""
    if not figures.is_file():
        return []
    entries = [json.loads(line) for line in figures.read_text().splitlines() if line.strip()]
    return [f"| {entry['name']} | {entry['value']:.6g} | `{entry['test']}` |" for entry in entries]


def benchmark_lines(repeats: int) -> list[str]:
    """The GPU throughput table, its verdicts, the JPEG backends and nvJPEG's PSNR."""
    from benchmarks import bench_gpu, bench_jpeg_backends, bench_nrp, bench_super_resolution

    rows, verdicts = bench_gpu.run(repeats)
    lines = ["## Defences on the GPU", "", bench_gpu.HEADER, *rows, "", *verdicts, ""]
    lines += ["## JPEG backends", "", "| setting | device | method | images/s | vs ART |", "|---|---|---|---|---|"]
    for size, batch in bench_jpeg_backends.SETTINGS:
        lines += bench_jpeg_backends.bench_setting(size, batch, repeats)
    lines += ["", "| setting | device | method | images/s | vs the host codec |", "|---|---|---|---|---|"]
    for size, batch in bench_jpeg_backends.CUDA_SETTINGS:  # targets: 20,000 images/s at 224x224 (tensor codec)
        lines += bench_jpeg_backends.bench_cuda_setting(size, batch, repeats)
    lines += [
        "",
        "| channels | quality | nvJPEG vs libjpeg PSNR (dB) | max difference (grey levels) |",
        "|---|---|---|---|",
    ]
    lines += bench_jpeg_backends.nvjpeg_psnr()
    lines += ["", "## SuperResolution (CPU and CUDA rows)", "", bench_super_resolution.HEADER]
    for size, batch in bench_super_resolution.SETTINGS:
        lines += bench_super_resolution.rows(size, batch, repeats)
    lines += ["", "## NeuralRepresentationPurifier (CUDA rows)", "", bench_nrp.HEADER]
    for size, batch in bench_nrp.CUDA_SETTINGS:
        lines += bench_nrp.cuda_rows(size, batch, repeats)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer benchmark repetitions")
    parser.add_argument("--full-suite", action="store_true", help="also run the whole test suite with CUDA visible")
    parser.add_argument("--no-benchmarks", action="store_true", help="tests only")
    parser.add_argument("--output", type=Path, help="report file (default: benchmarks/results/gpu-<device>.md)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("No CUDA device here: the cuda-marked tests skip on this machine; run the GPU check on a GPU machine.")
        return 2
    started = time.time()
    name = torch.cuda.get_device_name(0)
    output = args.output or RESULTS / f"gpu-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.md"
    command = "python -m benchmarks.gpu_check" + "".join(
        f" {flag}"
        for flag, on in (
            ("--quick", args.quick),
            ("--full-suite", args.full_suite),
            ("--no-benchmarks", args.no_benchmarks),
        )
        if on
    )
    lines = [f"# GPU check: {name}", "", f"Command: `{command}` on {datetime.date.today()}.", "", *environment(), ""]
    with tempfile.TemporaryDirectory() as scratch:
        figures = Path(scratch) / "figures.jsonl"
        ok, summary, outcomes = run_pytest(["-m", "cuda", "tests"], figures)
        lines += ["## CUDA tests (`pytest -m cuda`)", "", f"**{summary}**", "", "```", *outcomes, "```", ""]
        lines += ["| figure measured by the tests | value | test |", "|---|---|---|", *figure_lines(figures), ""]
    if args.full_suite:
        full_ok, full_summary, full_outcomes = run_pytest(["-n", str(min(8, os.cpu_count() or 1)), "tests"])
        failures = [line for line in full_outcomes if not line.startswith(("PASSED", "SKIPPED", "XFAIL"))]
        lines += [
            "## The whole test suite with CUDA visible",
            "",
            f"**{full_summary}**",
            "",
            "```",
            *failures,
            "```",
            "",
        ]
        ok = ok and full_ok
    if not args.no_benchmarks:
        lines += benchmark_lines(2 if args.quick else 5)
    lines += ["", f"Total time: {time.time() - started:.0f} s."]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {output}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
