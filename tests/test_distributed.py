"""
The suite under ``torchrun``: two gloo processes on this machine give the per-image results of one process, and a
run whose worker is killed resumes, with another number of processes, without attacking any chunk twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from art_purifiers.evaluation.distributed import World, chunk_bounds, init_world
from benchmarks.bench_distributed import correctness, evaluate_command
from tests.test_evaluation import write_dataset

ROOT = Path(__file__).resolve().parents[1]
#: Figures that measure time or speed, which differ between any two runs.
#: A deterministic and a randomized defence.
DEFENCES = ("none", "QuantizeDistort:distortion_limit=0.25")
TIMINGS = {"seconds", "wall_seconds", "images_per_second", "defence_images_per_second", "gradient_images_per_second"}


def _options(data: Path, attacks: list[str], defences: tuple[str, ...] = DEFENCES, **extra: object) -> list[str]:
    """A CLI run of the tiny margin model (see tests/test_evaluation.py)."""
    arguments = ["--dataset", f"imagefolder:{data}", "--classifier", "tests.test_evaluation:margin_model"]
    for defence in defences:
        arguments += ["--defence", defence]
    for attack in attacks:
        arguments += ["--attack", attack]
    settings = {"num-images": 16, "draws": 2, "batch-size": 2, "chunk-size": 4, "fit-images": 4, **extra}
    for name, value in settings.items():
        arguments += [f"--{name}", str(value)]
    return arguments + ["--no-sanity", "--quiet", "--device", "cpu"]


def _command(processes: int, arguments: list[str], output: Path) -> list[str]:
    return evaluate_command(processes, [*arguments, "--output", str(output)])


def _environment(tmp_path: Path) -> dict[str, str]:
    # one intra-op thread in every process (torchrun's own default), so that float sums are ordered alike
    return {**os.environ, "ART_PURIFIERS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip


def _run(processes: int, arguments: list[str], output: Path, tmp_path: Path) -> dict[str, Any]:
    done = subprocess.run(_command(processes, arguments, output), cwd=ROOT, env=_environment(tmp_path),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((output / "results.json").read_text())


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_timings(item) for key, item in value.items() if key not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(item) for item in value]
    return value


def _tables(output: Path) -> str:
    """The robust-accuracy and per-attack tables of ``results.md`` (the details below them hold timings)."""
    text = (output / "results.md").read_text()
    return text[: text.index("![accuracy vs budget]")]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    write_dataset(root / "data")
    return root


def test_two_processes_give_the_per_image_results_and_tables_of_one(data: Path) -> None:
    attacks = ["pgd:eps=6/255,steps=3", "apgd:eps=6/255,steps=3", "cascade:eps=6/255,steps=3,square=20"]
    attacks.append("learned-bpda:eps=6/255,steps=3")  # its approximator is trained on rank 0, then read by the others
    fitted = "QuantizeDistort:table=learned,distortion_limit=0.25"  # Algorithm 2 runs on rank 0
    arguments = _options(data / "data", attacks, (*DEFENCES, fitted))
    single = _run(1, arguments, data / "one", data)
    sharded = _run(2, arguments, data / "two", data)
    assert single["environment"]["processes"] == 1 and sharded["environment"]["processes"] == 2
    assert _without_timings(sharded["defences"]) == _without_timings(single["defences"])
    assert _tables(data / "two") == _tables(data / "one")
    one, two = correctness(data / "one"), correctness(data / "two")
    assert sorted(one) == sorted(two) and len(one) == 3  # a worst-case tensor per defence
    for name in one:
        np.testing.assert_array_equal(two[name], one[name])
    # the randomized defence's draws differ (so "identical" is not trivially true), and its attacks broke images
    entry = single["defences"]["QuantizeDistort:distortion_limit=0.25"]
    assert entry["randomized"] and 0 < entry["robust"]["Linf 6/255"]["robust"]["accuracy"] < 1


def _worker(launcher: subprocess.Popen, rank: int) -> int:
    """The process id of the worker of ``rank`` that ``torchrun`` started (read from /proc)."""
    for _ in range(600):
        for task in Path(f"/proc/{launcher.pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                try:
                    environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
                except OSError:  # a short-lived helper process that has gone
                    continue
                if f"RANK={rank}".encode() in environ:
                    return int(child)
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank} appeared")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers through /proc (Linux)")
def test_a_killed_worker_loses_no_image_and_a_restart_attacks_none_twice(data: Path) -> None:
    attacks = ["pgd:eps=6/255,steps=1500"]  # slow enough to stop it half way
    arguments = _options(data / "data", attacks, **{"num-images": 20, "chunk-size": 2, "batch-size": 2})
    reference = _run(1, arguments, data / "reference", data)
    output = data / "killed"
    launcher = subprocess.Popen(_command(2, arguments, output), cwd=ROOT, env=_environment(data),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    victim = _worker(launcher, rank=1)
    folder = output / "state" / "none"
    deadline = time.monotonic() + 240
    while len(list(folder.glob("pgd-*.chunks/????????.npz"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(victim, signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0  # torchrun stops the other worker and fails
    saved = {f: f.read_bytes() for f in folder.glob("pgd-*.chunks/????????.npz")}
    assert 3 <= len(saved) < len(chunk_bounds(20, 2)), "the run was not stopped half way"
    stamps = {f: f.stat().st_mtime_ns for f in saved}
    resumed = _run(1, arguments, output, data)  # another number of processes
    for file, content in saved.items():  # every saved chunk was kept as it was: attacked once
        assert file.stat().st_mtime_ns == stamps[file] and file.read_bytes() == content
    assert len(list(folder.glob("pgd-*.chunks/????????.npz"))) == len(chunk_bounds(20, 2))
    assert _without_timings(resumed["defences"]) == _without_timings(reference["defences"])  # no image lost
    assert len(resumed["environment"]["earlier"]) == 1  # the killed run's two processes, kept in the provenance


def test_a_single_process_world_needs_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert init_world() == (World(), False)
    world = World()
    assert world.broadcast(3) == 3 and world.all_gather("a") == ["a"] and world.share([1, 2, 3]) == [1, 2, 3]
    assert World(rank=1, size=2).share([0, 1, 2, 3, 4]) == [1, 3]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(ValueError, match="RANK=2, WORLD_SIZE=2"):
        init_world()
    monkeypatch.setenv("RANK", "first")
    with pytest.raises(ValueError, match="RANK must be a non-negative integer, got 'first'"):
        init_world()
    assert chunk_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_bounds(5, 0)


def test_a_process_given_another_configuration_is_stopped(tmp_path: Path) -> None:
    from art_purifiers.evaluation import EvaluationConfig
    from art_purifiers.evaluation.config import check_same_config

    rank0 = EvaluationConfig(defences=["none"], seed=0)

    class SecondRank(World):
        def broadcast(self, value: Any) -> Any:  # what rank 0 sends: its own configuration
            return {k: v for k, v in vars(rank0).items() if k not in ("command", "verbose")}

    check_same_config(EvaluationConfig(defences=["none"], seed=0, command="x"), SecondRank(1, 2))
    with pytest.raises(ValueError, match=r"Rank 1 was given another configuration than rank 0 \(seed: 0 on rank 0, 1"):
        check_same_config(EvaluationConfig(defences=["none"], seed=1), SecondRank(1, 2))


def test_a_suite_on_a_process_given_another_configuration_stops_before_loading_anything(tmp_path: Path) -> None:
    from art_purifiers.evaluation import EvaluationConfig
    from art_purifiers.evaluation.suite import Suite

    rank0 = EvaluationConfig(defences=["none"], seed=0, classifier="no-such-classifier")

    class SecondRank(World):
        def broadcast(self, value: Any) -> Any:
            return {k: v for k, v in vars(rank0).items() if k not in ("command", "verbose")}

    mine = EvaluationConfig(defences=["none"], seed=1, classifier="no-such-classifier")
    with pytest.raises(ValueError, match=r"Rank 1 was given another configuration than rank 0 \(seed: 0 on rank 0"):
        Suite(mine, tmp_path, SecondRank(1, 2)).run()  # not the unknown classifier: the check comes first


def test_uneven_chunks_are_shared_by_cost_and_every_chunk_goes_to_one_process() -> None:
    # a cascade level: most survivors sit in the first chunk; round-robin would give one process 12 of 16 units
    costs = [9.0, 1.0, 3.0, 1.0, 1.0, 1.0]
    items = list(range(len(costs)))
    for size in (1, 2, 3):
        shares = [World(rank, size).share(items, costs) for rank in range(size)]
        assert sorted(item for share in shares for item in share) == items  # each chunk exactly once
        loads = [sum(costs[i] for i in share) for share in shares]
        assert max(loads) <= sum(costs) / size + max(costs)  # Graham's bound for the longest-first rule
    assert [World(rank, 2).share(items, costs) for rank in range(2)] == [[0], [1, 2, 3, 4, 5]]
    assert sum(costs[i] for i in World(0, 2).share(items)) == 13.0  # round-robin, for comparison
    with pytest.raises(ValueError, match="one cost per item"):
        World(0, 2).share(items, costs[:2])


def test_each_process_takes_its_local_gpu_and_shares_them_when_there_are_fewer(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    if not torch.cuda.is_available():
        assert World(1, 2, 1).device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [World(rank, 4, rank).device("auto") for rank in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert World(3, 4, 3).device("cuda") == "cuda:1" and World(3, 4, 3).device("cpu") == "cpu"
    assert World().device("auto") == "cuda"  # a single process keeps the current device
