"""
The upstream check (``tox -e upstream``): apply the patch series of this folder to ART's release archive and run ART's
tests and style gates on it, offline except for the package registry.

Steps: download ART's sdist (its sha256 pinned below), unpack it into a git tree with ``conftest.py`` of this folder
at its root; run the series' #1526 tests on the *unpatched* library and require them to fail; ``git apply --check``
then apply every patch (each must carry a ``Signed-off-by:`` line); run ART's tests of the touched modules and the new
tests under coverage; measure the coverage of the statements the series adds (ART asks for 80%); run ART's gates on
the changed files (black and pycodestyle at 120, pylint with ART's settings at its ``--fail-under``, mypy, vermin for
Python 3.10). Exits non-zero when any step fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ART_VERSION = "1.20.1"
ART_SDIST_SHA256 = "5bfd751a1b1a1a2a669d961f7df0de7a9e3d95e5695e7a75ee6748cd5a339203"
HERE = Path(__file__).resolve().parent
PATCHES = sorted((HERE / "patches").glob("*.patch"))
# the reproducer of issue #1526: a rounding defence (zero gradient) and a detaching one (raises) on unpatched ART
REPRODUCER = "tests/estimators/classification/test_pytorch_preprocessing_gradients.py"
REPRODUCER_CASES = ("RoundingPyTorch", "DetachingPyTorch")
# ART's tests of the touched modules that run offline: the preprocessor tests, without those that need TensorFlow,
# or the ffmpeg program (ART's audio and video PyTorch codecs); ART's PyTorch estimator tests download MNIST
ART_TESTS = "tests/defences/preprocessor"
NOT_OFFLINE = (
    "tests/defences/preprocessor/test_spatial_smoothing_tensorflow.py",
    "tests/defences/preprocessor/test_mp3_compression_pytorch.py",
    "tests/defences/preprocessor/test_video_compression_pytorch.py",
)
# ART's modules the series changes (the others it adds): their pylint score must not drop
TOUCHED = (
    "art/defences/preprocessor/__init__.py",
    "art/defences/preprocessor/preprocessor.py",
    "art/estimators/pytorch.py",
)
PYLINT_FAIL_UNDER = 9.6  # ART's CI: pylint --fail-under=9.6 art/
PYCODESTYLE_IGNORE = "C0330,C0415,E203,E231,W503"  # ART's CI
MIN_NEW_COVERAGE = 80.0


def run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, echo it and its output, and stop the check on failure unless ``check`` is false."""
    print(f"$ {' '.join(command)}", flush=True)
    result = subprocess.run(command, cwd=cwd, text=True, capture_output=True)
    print((result.stdout + result.stderr).rstrip()[-6000:], flush=True)
    if check and result.returncode != 0:
        sys.exit(f"upstream check FAILED: {command[0]} {' '.join(command[1:3])} ... returned {result.returncode}")
    return result


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def unpack_art(work: Path) -> Path:
    """Download the sdist, check its sha256, unpack it as a git tree with a first commit, add the test conftest."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spec = f"adversarial-robustness-toolbox=={ART_VERSION}"
    run(python("-m", "pip", "download", "--no-deps", "--no-binary", ":all:", spec, "-d", str(work)), work)
    archive = next(work.glob("adversarial*robustness*toolbox-*.tar.gz"))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != ART_SDIST_SHA256:
        sys.exit(f"upstream check FAILED: {archive.name} has sha256 {digest}, expected {ART_SDIST_SHA256}")
    with tarfile.open(archive) as tar:
        tar.extractall(work, filter="data")
    tree = next(path for path in work.iterdir() if path.is_dir())
    shutil.copy(HERE / "conftest.py", tree / "conftest.py")
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=check", "-c", "user.email=check@invalid",
                                                      "commit", "-qm", f"ART {ART_VERSION}"]):  # fmt: skip
        run(["git", *command], tree)
    return tree


def pytest(tree: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(python("-m", "pytest", "-p", "no:cacheprovider", "--framework=pytorch", "-q", "-rfEs", *args), tree,
               check=check)  # fmt: skip


def unpatched_reproducer_fails(tree: Path) -> None:
    """The #1526 tests of patch 1 on unpatched ART: the rounding and the detaching defence must fail."""
    run(["git", "apply", "--include=tests/*", str(PATCHES[0])], tree)
    result = pytest(tree, REPRODUCER, check=False)
    failed = set(re.findall(r"^FAILED \S+\[(\w+)\]", result.stdout, flags=re.MULTILINE))
    if not set(REPRODUCER_CASES) <= failed:
        sys.exit(f"upstream check FAILED: on unpatched ART the #1526 tests should fail for {REPRODUCER_CASES}; "
                 f"failed: {sorted(failed) or 'none'}")  # fmt: skip
    print(f"OK: on unpatched ART the #1526 tests fail for {', '.join(REPRODUCER_CASES)}", flush=True)
    run(["git", "checkout", "--", "."], tree)
    run(["git", "clean", "-fdq", "-e", "conftest.py"], tree)


def apply_series(tree: Path) -> None:
    for patch in PATCHES:
        if "\nSigned-off-by: " not in patch.read_text():
            sys.exit(f"upstream check FAILED: {patch.name} has no Signed-off-by line (ART requires the DCO)")
        run(["git", "apply", "--check", str(patch)], tree)
        run(["git", "apply", str(patch)], tree)
        print(f"OK: applied {patch.name}", flush=True)


def changed_files(tree: Path) -> tuple[list[str], list[str]]:
    """The library and test files the series adds or changes."""
    run(["git", "add", "-A"], tree)
    names = run(["git", "diff", "--cached", "--name-only", "HEAD"], tree).stdout.split()
    python_files = [name for name in names if name.endswith(".py") and name != "conftest.py"]
    return [n for n in python_files if n.startswith("art/")], [n for n in python_files if n.startswith("tests/")]


def added_lines(tree: Path, name: str) -> set[int]:
    diff = run(["git", "diff", "--cached", "-U0", "HEAD", "--", name], tree).stdout
    lines: set[int] = set()
    for start, count in re.findall(r"^@@ -\S+ \+(\d+)(?:,(\d+))? @@", diff, flags=re.MULTILINE):
        lines.update(range(int(start), int(start) + (1 if count == "" else int(count))))
    return lines


def tests_with_coverage(tree: Path, library: list[str], new_tests: list[str]) -> None:
    """ART's tests of the touched modules and the new tests, then the coverage of the added statements."""
    ignored = [f"--ignore={name}" for name in NOT_OFFLINE]
    run(python("-m", "coverage", "run", "--branch", "--source=art", "-m", "pytest", "-p", "no:cacheprovider",
               "--framework=pytorch", "-q", "-rfEs", ART_TESTS, *new_tests, *ignored), tree)  # fmt: skip
    run(python("-m", "coverage", "json", "-o", "coverage.json", "--include", ",".join(library)), tree)
    report = json.loads((tree / "coverage.json").read_text())["files"]
    statements = covered = 0
    for name in library:
        new = added_lines(tree, name)
        executed, missing = set(report[name]["executed_lines"]), set(report[name]["missing_lines"])
        statements += len(new & (executed | missing))
        covered += len(new & executed)
        print(f"  {name}: {len(new & executed)} of {len(new & (executed | missing))} new statements run", flush=True)
    percent = 100.0 * covered / max(1, statements)
    print(f"Coverage of the new statements: {covered} of {statements} ({percent:.1f}%)", flush=True)
    if percent < MIN_NEW_COVERAGE:
        sys.exit(f"upstream check FAILED: new statements {percent:.1f}% covered, ART asks for {MIN_NEW_COVERAGE}%")


def pylint_score(tree: Path, files: list[str]) -> float:
    output = run(
        python("-m", "pylint", "--persistent=n", f"--rcfile={HERE / 'pylintrc'}", *files), tree, check=False
    ).stdout
    return float(re.search(r"rated at (-?[\d.]+)/10", output).group(1))  # type: ignore[union-attr]


def style_gates(tree: Path, library: list[str], new_tests: list[str], unpatched_scores: dict[str, float]) -> None:
    """black, pycodestyle, pylint (new modules; changed modules against their unpatched score), mypy, vermin."""
    run(python("-m", "black", "--line-length", "120", "--check", *library, *new_tests), tree)
    run(python("-m", "pycodestyle", f"--ignore={PYCODESTYLE_IGNORE}", "--max-line-length=120", *library), tree)
    for name in library:
        score = pylint_score(tree, [name])
        before = unpatched_scores.get(name)
        print(f"pylint (ART's settings) {name}: {score:.2f}/10"
              + ("" if before is None else f" (unpatched: {before:.2f})"), flush=True)  # fmt: skip
        if score < (PYLINT_FAIL_UNDER if before is None else min(before, PYLINT_FAIL_UNDER)):
            sys.exit(f"upstream check FAILED: pylint {score:.2f} for {name}, below ART's --fail-under or the unpatched")
        if before is not None and score < before:
            sys.exit(f"upstream check FAILED: pylint {score:.2f} for {name}, the unpatched file had {before:.2f}")
    run(python("-m", "mypy", "--follow-imports=silent", *library), tree)
    vermin = str(Path(sys.executable).parent / "vermin")  # it has no __main__
    run([vermin, "--no-tips", "--violations", "--eval-annotations", "--feature", "union-types",
               "--target=3.10-", *library, *new_tests], tree)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (emptied first)")
    args = parser.parse_args()
    start = time.monotonic()
    tree = unpack_art(args.work)
    run(python("-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", "-e", "."), tree)
    unpatched_reproducer_fails(tree)
    unpatched_scores = {name: pylint_score(tree, [name]) for name in TOUCHED}
    apply_series(tree)
    library, new_tests = changed_files(tree)
    tests_with_coverage(tree, library, new_tests)
    style_gates(tree, library, new_tests, unpatched_scores)
    print(f"upstream check passed: {len(PATCHES)} patches on ART {ART_VERSION} ({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main()
