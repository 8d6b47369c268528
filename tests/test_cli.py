"""The command line end to end: real processes on generated videos, output formats, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import srt
import webvtt
from helpers import default_sigint

from streamvlm.cli import main
from streamvlm.sources import synthetic_frames, write_video


def cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "streamvlm", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def test_run_end_to_end_all_formats(tiny_dir, clip, tmp_path):
    out, stats = tmp_path / "c.jsonl", tmp_path / "s.jsonl"
    common = [
        "run",
        clip,
        "--model",
        tiny_dir,
        "--seconds",
        10,
        "--start",
        1,
        "--vision-window",
        4,
        "--text-rounds",
        4,
        "--greedy",
        "--max-new-tokens",
        6,
        "--query",
        "Commentate on this match",
        "--previous-text",
        "Red leads.",
    ]
    r = cli(*common, "--out", out, "--stats", stats)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(row["start"], row["end"]) for row in lines] == [(float(t), float(t + 1)) for t in range(1, 11)]
    assert all(isinstance(row["text"], str) for row in lines)
    rows = [json.loads(line) for line in stats.read_text().splitlines()]
    assert len(rows) == 10
    assert {"t", "cache_tokens", "max_position", "step_ms", "rss_mb"} <= set(rows[0])
    assert rows[-1]["cache_tokens"] < rows[-1]["max_position"] * 2
    spoken = [row for row in lines if row["text"]]
    assert spoken and all(f"[{_hms(row['start'])}] {row['text']}" in r.stdout for row in spoken)

    # the same stream as subtitles: parsed by independent libraries
    for fmt in ("vtt", "srt"):
        path = tmp_path / f"c.{fmt}"
        r2 = cli(*common, "--out", path, "--quiet")
        assert r2.returncode == 0 and r2.stdout == ""
        if fmt == "vtt":
            cues = [(c.start_in_seconds, c.text) for c in webvtt.read(str(path))]
        else:
            cues = [(c.start.total_seconds(), c.content) for c in srt.parse(path.read_text())]
        assert cues == [(row["start"], " ".join(row["text"].split())) for row in spoken]


def _hms(seconds):
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def test_tiny_model_command_and_default_model(tmp_path, clip):
    r = cli("tiny-model", tmp_path / "m", "--seed", 3)
    assert r.returncode == 0 and (tmp_path / "m" / "model.safetensors").is_file()
    r = cli("run", clip, "--seconds", 2, "--model", tmp_path / "m", "--out", tmp_path / "o.jsonl")
    assert r.returncode == 0, r.stderr
    env = {**os.environ, "STREAMVLM_CACHE": str(tmp_path / "cache")}
    r = cli("demo", "--seconds", 3, "--model", tmp_path / "m", "--out-dir", tmp_path / "demo", env=env)
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "demo" / "demo.jsonl").read_text().splitlines()) == 3
    assert (tmp_path / "demo" / "demo.vtt").read_text().startswith("WEBVTT")


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "{missing}"], "does not exist"),
        (["run", "{text}"], "not a readable video"),
        (
            ["run", "{clip}", "--model", "{tiny}", "--seconds", "30"],
            "ends at 12.0 s, before the requested 30 s",
        ),
        (["run", "{clip}", "--model", "{missing}"], "model directory"),
        (["run", "{clip}", "--model", "{tiny}", "--out", "{tmp}/x.txt"], "unknown format"),
        (
            ["run", "{clip}", "--greedy", "--temperature", "0.5"],
            "--greedy cannot be combined with --temperature",
        ),
        (["run", "{clip}", "--vision-window", "0"], "must be >= 1"),
        (["run", "{clip}", "--reset-every", "4"], "applies only to --policy sliding"),
        (["run", "{clip}", "--device", "cuda"], "CUDA is not available"),
        (["run", "{clip}", "--policy", "magic"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, clip, tiny_dir, capsys):
    text = tmp_path / "text.mp4"
    text.write_text("hello\n" * 100)
    fill = {"missing": tmp_path / "missing", "text": text, "clip": clip, "tiny": tiny_dir, "tmp": tmp_path}
    with pytest.raises(SystemExit) as exc:
        sys.exit(main([a.format(**fill) for a in args]))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_error_mid_stream_keeps_what_was_produced(tiny_dir, clip, tmp_path):
    out = tmp_path / "partial.jsonl"
    r = cli("run", clip, "--model", tiny_dir, "--start", 5, "--seconds", 20, "--out", out)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("streamvlm: error: ")
    assert len(out.read_text().splitlines()) == 7  # seconds 5..11 were streamed before the end


def test_debug_shows_the_traceback(tmp_path):
    r = cli("run", tmp_path / "missing.mp4", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_ctrl_c_flushes_the_output(tiny_dir, tmp_path):
    long_clip = write_video(tmp_path / "long.mp4", synthetic_frames(900, 2, (28, 28)), fps=2)
    out = tmp_path / "live.srt"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamvlm",
            "run",
            str(long_clip),
            "--model",
            str(tiny_dir),
            "--out",
            str(out),
            "--quiet",
            "--temperature",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("-->") < 5):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    cues = list(srt.parse(out.read_text()))
    assert len(cues) >= 5 and all(c.content for c in cues)
