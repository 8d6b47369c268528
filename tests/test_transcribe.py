"""`streamvlm data transcribe`: own videos' speech -> Whisper word times -> Inf-Stream-Train -> chunks."""

import json
import os

import av
import numpy as np
import pytest

from streamvlm.cli import main
from streamvlm.data.formats import read_annotations
from streamvlm.data.transcribe import (
    RATE,
    audio_blocks,
    in_order,
    transcribe,
    transcript_path,
    write_tiny_whisper,
)
from streamvlm.sources import synthetic_frames, write_video


def write_talking_video(path, seconds: int, rate: int = 22050, tone: float = 220.0, seed: int = 0):
    """An MP4 with H.264 frames and a stereo AAC track: a tone that comes and goes, plus noise."""
    t = np.arange(seconds * rate) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size)
    wave = (0.3 * np.sin(2 * np.pi * tone * t) * (np.sin(np.pi * t) > 0) + 0.01 * noise).astype(np.float32)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=2)
        video.width, video.height, video.pix_fmt = 56, 56, "yuv420p"
        audio = out.add_stream("aac", rate=rate, layout="stereo")
        for frame in synthetic_frames(seconds, 2, (56, 56), seed=seed):
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        for i in range(0, wave.size, 1024):
            frame = av.AudioFrame.from_ndarray(
                np.tile(wave[i : i + 1024], (2, 1)), format="fltp", layout="stereo"
            )
            frame.sample_rate, frame.pts = rate, i
            out.mux(audio.encode(frame))
        out.mux(video.encode())
        out.mux(audio.encode())
    return path


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    return write_tiny_whisper(tmp_path_factory.mktemp("whisper"), seed=0)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """Videos as a user has them: two that speak (one longer than a 30 s window) and bad ones."""
    videos = tmp_path_factory.mktemp("talks")
    write_talking_video(videos / "talk.mp4", 8)
    write_talking_video(videos / "other.mp4", 3, tone=440.0, seed=2)
    write_talking_video(videos / "long.mp4", 41, tone=330.0, seed=1)
    write_video(videos / "mute.mp4", synthetic_frames(4, 2, (56, 56)), fps=2)  # no audio stream
    (videos / "empty.mp4").write_bytes(b"")
    data = (videos / "talk.mp4").read_bytes()
    (videos / "cut.mp4").write_bytes(data[: len(data) // 2])
    return videos


def test_audio_is_read_at_16_khz_mono_in_blocks_from_the_start(library):
    blocks = list(audio_blocks(library / "long.mp4", block_s=15))
    assert [offset for offset, _ in blocks] == [0.0, 15.0, 30.0]
    assert [b.size for _, b in blocks[:2]] == [15 * RATE] * 2 and blocks[0][1].dtype == np.float32
    samples = np.concatenate([b for _, b in blocks])
    assert abs(samples.size / RATE - 41) < 0.1
    spectrum = np.abs(np.fft.rfft(samples[: 10 * RATE]))
    assert np.fft.rfftfreq(10 * RATE, 1 / RATE)[spectrum.argmax()] == pytest.approx(330, abs=1)  # the tone


def test_long_audio_goes_in_blocks_and_each_block_keeps_its_place_in_time(library, whisper_dir, tmp_path):
    summary = transcribe([library / "long.mp4"], tmp_path, str(whisper_dir), "en", block_s=15, progress=False)
    (record,) = read_annotations(tmp_path / "annotations.jsonl")
    assert summary.transcribed == 1 and record.words and record.words[-1][1] <= record.video_end
    assert {int(a // 15) for a, _, _ in record.words} == {0, 1, 2}  # words in every block, at its times


def test_words_are_kept_in_order_and_inside_the_video():
    words = [
        (0.5, 1.0, " Red"),
        (0.8, 0.7, " serves"),
        (2.0, None, " "),
        (3.0, None, " long,"),
        (2.5, 4.0, " blue"),
        (9.5, 11.0, " late"),
        (11.0, 12.0, " gone"),
    ]
    assert in_order(words, duration=10.0) == [
        (0.5, 1.0, "Red"),
        (1.0, 1.0, "serves"),
        (3.0, 3.0, "long,"),
        (3.0, 4.0, "blue"),
        (9.5, 10.0, "late"),
    ]


def test_transcribe_writes_what_make_chunks_reads_resumes_and_counts_what_it_skipped(
    library, whisper_dir, tiny_dir, tmp_path, capsys
):
    out = tmp_path / "data"
    args = [
        "data",
        "transcribe",
        str(library),
        "--asr",
        str(whisper_dir),
        "--out",
        str(out),
        "--language",
        "en",
    ]
    assert main(args) == 0
    records = {r.video.split("/")[-1]: r for r in read_annotations(out / "annotations.jsonl")}
    assert sorted(records) == ["long.mp4", "other.mp4", "talk.mp4"]
    for name, seconds in (("talk.mp4", 8), ("other.mp4", 3), ("long.mp4", 41)):
        record = records[name]
        assert record.video_path().is_file() and record.video_end == pytest.approx(seconds, abs=0.6)
        assert record.words and all(
            0 <= a <= b <= record.video_end and w.strip() == w != "" for a, b, w in record.words
        )
        ends = [b for _, b, _ in record.words]
        assert ends == sorted(ends) and all(
            b0 <= a1 for (_, b0, _), (a1, _, _) in zip(record.words[:-1], record.words[1:], strict=True)
        )
        if name == "long.mp4":
            assert max(ends) > 30  # the second 30 s window of long.mp4 was transcribed too
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == 3 and summary["transcribed"] == 3 and summary["resumed"] == 0
    unreadable = {k: v for k, v in summary["skipped"].items() if k in ("video unreadable", "video truncated")}
    assert (
        summary["skipped"] == {"no audio stream": 1, "video empty": 1, **unreadable}
        and sum(unreadable.values()) == 1
    )
    assert "mute.mp4: has no audio stream" in capsys.readouterr().err

    # a second run transcribes nothing again: the words come from .transcripts, untouched
    saved = {name: transcript_path(library / name, out) for name in records}
    stamps = {name: p.stat().st_mtime_ns for name, p in saved.items()}
    first = (out / "annotations.jsonl").read_text()
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["transcribed"] == 0 and summary["resumed"] == 3
    assert {name: p.stat().st_mtime_ns for name, p in saved.items()} == stamps
    assert (out / "annotations.jsonl").read_text() == first

    # make-chunks reads the result unchanged
    chunks = tmp_path / "chunks.jsonl"
    cut = ["--model", str(tiny_dir), "--window", "8", "--stride", "4"]
    assert main(["make-chunks", str(out / "annotations.jsonl"), "--out", str(chunks), *cut]) == 0
    windows = list(read_annotations(chunks))
    assert len(windows) >= 9 and all(w.video_path().is_file() for w in windows)


def test_a_stopped_run_keeps_its_finished_videos_and_strict_stops_at_the_first_unusable(
    library, whisper_dir, tmp_path, capsys
):
    out = tmp_path / "data"
    out.mkdir()
    (out / "annotations.jsonl").write_text("previous run\n")
    given = ["--asr", str(whisper_dir), "--out", str(out)]
    assert (
        main(["data", "transcribe", str(library / "talk.mp4"), str(library / "mute.mp4"), *given, "--strict"])
        == 2
    )
    assert "mute.mp4: has no audio stream" in capsys.readouterr().err
    assert (out / "annotations.jsonl").read_text() == "previous run\n"  # untouched
    assert transcript_path(library / "talk.mp4", out).is_file()  # the finished video is kept

    transcript_path(library / "other.mp4", out).write_text('{"video": ')  # damaged: done again
    assert main(["data", "transcribe", str(library / "talk.mp4"), str(library / "other.mp4"), *given]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] == 1 and summary["transcribed"] == 1 and summary["videos"] == 2

    talk = library / "talk.mp4"  # a changed video is transcribed again
    os.utime(talk, ns=(talk.stat().st_atime_ns, talk.stat().st_mtime_ns + 10**9))
    assert main(["data", "transcribe", str(talk), *given]) == 0
    assert json.loads((out / "summary.json").read_text())["transcribed"] == 1

    assert main(["data", "transcribe", str(library / "empty.mp4"), *given]) == 2  # nothing usable
    assert "no video could be used (video empty: 1)" in capsys.readouterr().err
    assert (
        main(["data", "transcribe", str(library / "talk.mp4"), "--asr", str(tmp_path), "--out", str(out)])
        == 2
    )
    assert "cannot load a speech-recognition model" in capsys.readouterr().err  # not a model: one line
