"""`streamvlm bench --suite gpu` (benchmarks/gpu.sh): the one-shot GPU benchmark, run end to end on a
CPU in its --dry-run mode (tiny model, tiny frames) so it cannot rot; its budget stop; its watchdog.
Timings are not asserted, only that every phase reports sane numbers."""

import json
import threading
import time

import pytest

from streamvlm.bench import gpu
from streamvlm.cli import main


@pytest.fixture
def no_exit(monkeypatch):
    """The watchdog ends the process with os._exit: here it records the call instead."""
    calls = []
    fired = threading.Event()

    def fake_exit(code):
        calls.append(code)
        fired.set()

    monkeypatch.setattr(gpu.GpuBench, "exit", staticmethod(fake_exit))
    return calls, fired


def test_gpu_suite_dry_run_end_to_end(tmp_path, capsys, no_exit):
    out = tmp_path / "gpu"
    started = time.monotonic()
    # the dry run's work is fixed (~20 s on a quiet 2-core machine); the budget only matters under load,
    # where a phase may end partial: every phase must still have measured something
    command = ["bench", "--suite", "gpu", "--dry-run", "--quiet", "--budget-s", "40", "--out", str(out)]
    assert main(command) == 0
    elapsed = time.monotonic() - started
    calls, _ = no_exit
    assert calls == []  # the watchdog never fired
    report = json.loads((out / "gpu.json").read_text())
    assert report["suite"] == "gpu" and report["config"]["dry_run"] and report["config"]["device"] == "cpu"
    assert elapsed < report["config"]["budget_s"] + 15
    assert report["budget"]["elapsed_s"] <= report["config"]["budget_s"] + 5
    phases = report["phases"]
    assert set(phases) == {"decode", "step_2fps", "fps_sweep", "memory", "policies"}

    decode = phases["decode"]
    assert decode["eager"]["ms_per_token_median"] > 0 and decode["eager"]["timed_steps"] >= 1
    compiled = decode["compiled"]
    if not gpu.compile_available():
        assert compiled["available"] is False and "not available" in compiled["note"]
    elif "error" not in compiled and compiled.get("timed_steps"):
        assert compiled["ms_per_token_median"] > 0 and decode["speedup"] > 0
    assert decode["best_mode"] in ("eager", "compiled")

    step = phases["step_2fps"]
    assert step["status"] in ("done", "partial") and 1 <= step["seconds"] <= report["config"]["step_seconds"]
    assert step["vision_tokens_per_second"] == 16  # the tiny processor: 112x112 frames, 2 per temporal patch
    assert step["seconds"] == 1 or step["step_ms_p99"] >= step["step_ms_median"] > 0
    assert all(r["wait_ms"] >= 0 for r in step["series"])

    sweep = phases["fps_sweep"]
    fps = [p["fps"] for p in sweep["points"]]
    assert fps == sorted(fps) and fps == [2, 4, 8, 16, 24, 32][: len(fps)] and fps
    tokens = [p["vision_tokens_per_second"] for p in sweep["points"]]
    assert tokens == sorted(tokens) and tokens[0] == 16
    for p in sweep["points"]:  # (the first second of each point is its warm-up)
        assert p["seconds"] < 2 or p["loop_ms_p99"] >= p["step_ms_median"] > 0
        assert p["real_time"] in (True, False, None)
    if sweep["max_real_time_fps"] is not None:
        assert sweep["max_real_time_fps"] in fps

    memory = phases["memory"]
    assert "peak_device_mb" in memory and memory["peak_device_mb"] is None  # no device memory on a CPU
    assert memory["rss_mb"] > 0 and set(memory["by_phase_mb"]) >= {"decode", "fps_sweep"}

    policies = phases["policies"]
    assert set(policies["series"]) == {"streaming", "full", "recompute"} and policies["common_seconds"] >= 1
    for name, s in policies["summary_over_common_seconds"].items():
        assert s["ms_per_stream_second_median"] > 0, name
    assert {"recompute_over_streaming_median", "full_over_streaming_median"} <= set(policies["ratios"])

    assert set(report["targets"]) == {
        "step p99 < 1 s at 2 fps",
        "8 fps real time (the paper)",
        "24 fps real time (3x the paper)",
    }
    assert (out / "gpu.png").stat().st_size > 5000
    table = (out / "gpu.md").read_text()
    for heading in ("## Decode", "## Per-second step at 2 fps", "## Real-time fps sweep", "## Peak device"):
        assert heading in table
    assert "| streaming |" in table and "# streamvlm GPU benchmark" in capsys.readouterr().out


def test_gpu_suite_stops_within_a_tiny_budget(tmp_path, no_exit):
    out = tmp_path / "gpu"
    started = time.monotonic()
    assert (
        main(["bench", "--suite", "gpu", "--dry-run", "--quiet", "--budget-s", "3", "--out", str(out)]) == 0
    )
    elapsed = time.monotonic() - started
    report = json.loads((out / "gpu.json").read_text())  # partial, but valid JSON
    assert report["complete"] is False and report["stopped"].startswith("partial")
    assert elapsed < 3 + 12  # at most one step (or one compilation) past the budget
    statuses = {name: phase["status"] for name, phase in report["phases"].items()}
    assert any(s.startswith("skipped") or s == "partial" for s in statuses.values()), statuses
    assert (out / "gpu.md").exists()


def test_watchdog_marks_the_report_and_ends_the_process(tmp_path, no_exit):
    calls, fired = no_exit
    config = gpu.GpuBenchConfig.dry(out=str(tmp_path / "gpu"), budget_s=0.2, watchdog_grace_s=0.1)
    bench = gpu.GpuBench(config, quiet=True)
    bench.save(plot=False)
    timer = bench.start_watchdog()
    assert fired.wait(5) and calls == [124]
    timer.cancel()
    report = json.loads((tmp_path / "gpu" / "gpu.json").read_text())
    assert report["stopped"].startswith("watchdog") and report["complete"] is False


def test_gpu_suite_rejects_bad_options(capsys):
    assert main(["bench", "--suite", "gpu", "--dry-run", "--sweep", "2,x"]) == 2
    assert "--sweep" in capsys.readouterr().err
    assert main(["bench", "--suite", "gpu", "--dry-run", "--policies", "streaming,magic"]) == 2
    assert main(["bench", "--suite", "gpu"]) == 2  # cuda by default: not on this machine
    assert main(["bench", "--dry-run"]) == 2  # the policies suite has no dry run


def test_sigterm_saves_and_exits(tmp_path):
    """The real entry point in its own process: SIGTERM mid-run stops at the next stream second and
    leaves a valid, marked report (what `timeout` in benchmarks/gpu.sh sends first)."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "gpu"
    command = [sys.executable, "-m", "streamvlm", "bench", "--suite", "gpu", "--dry-run", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:  # the handler is in place once the suite says it is building
            if "building" in line:
                break
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 3, err[-2000:]
    report = json.loads((out / "gpu.json").read_text())
    assert report["stopped"].startswith("interrupted (signal 15)") and report["complete"] is False
    assert all(p["status"] in ("skipped: time budget", "not run", "done") for p in report["phases"].values())


def test_targets_read_the_sweep():
    def report(*points, step=None):
        sweep = {"points": [{"fps": f, "real_time": ok} for f, ok in points]}
        return {"phases": {"fps_sweep": sweep, "step_2fps": {"real_time": step}}}

    keys = ("step p99 < 1 s at 2 fps", "8 fps real time (the paper)", "24 fps real time (3x the paper)")
    got = gpu.targets(report((2, True), (4, True), (8, True), (16, True), (24, True), (32, False), step=True))
    assert [got[k] for k in keys] == [True, True, True]
    got = gpu.targets(report((2, True), (4, True), (8, True), (16, False), step=True))
    assert [got[k] for k in keys] == [True, True, False]
    got = gpu.targets(report((2, True), (4, None)))  # the budget ended the sweep at 4 fps
    assert [got[k] for k in keys] == [None, None, None]
    assert gpu.targets({"phases": {}}) == dict.fromkeys(keys)


def test_a_rerun_of_some_phases_only(tmp_path, no_exit):
    out = tmp_path / "gpu"
    command = ["bench", "--suite", "gpu", "--dry-run", "--quiet", "--phases", "fps_sweep", "--sweep", "2,4"]
    assert main([*command, "--out", str(out)]) == 0
    report = json.loads((out / "gpu.json").read_text())
    statuses = {name: phase["status"] for name, phase in report["phases"].items()}
    assert statuses["decode"] == statuses["policies"] == "skipped: not asked"
    assert statuses["fps_sweep"] in ("done", "partial") and report["phases"]["fps_sweep"]["points"]
    assert report["phases"]["fps_sweep"]["mode"] == "eager"  # no decode phase: nothing says compiled pays
    assert main(["bench", "--suite", "gpu", "--dry-run", "--phases", "decode,magic"]) == 2
