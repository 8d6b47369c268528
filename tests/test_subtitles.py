"""`streamvlm data from-subtitles`: own videos + subtitles -> Inf-Stream-Train -> chunks -> SFT -> run."""

import json
from collections import Counter
from fractions import Fraction

import av
import pytest
import yaml

from streamvlm.cli import main
from streamvlm.data.formats import read_annotations
from streamvlm.data.subtitles import Cue, merge_rolling, timed_words
from streamvlm.sources import synthetic_frames, write_video

YOUTUBE_VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.500 --> 00:00:02.000 align:start position:0%
 
red<00:00:01.000><c> serves</c><00:00:01.500><c> long</c>

00:00:02.000 --> 00:00:02.010 align:start position:0%
red serves long

00:00:02.010 --> 00:00:04.000 align:start position:0%
red serves long
blue<00:00:03.000><c> returns</c>
"""

SRT = """1
00:00:01,000 --> 00:00:02,000
<i>Welcome</i> to the &amp; final

2
00:00:02,000 --> 00:00:03,500
>> COMMENTATOR: Red serves [crowd cheers]

3
00:00:03,000 --> 00:00:05,000
- What a shot! ♪ la la ♪

4
00:00:05,000 --> 00:00:06,000
[Music]

5
00:00:07,500 --> 00:00:09,000
after the end
"""


def words_of(cues_text: str, kind: str, duration: float = 8.0, keep_sounds: bool = False):
    import webvtt

    captions = webvtt.from_buffer(cues_text.splitlines(), format=kind).captions
    cues = [
        Cue(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, c.raw_text)
        for c in captions
    ]
    counts = Counter()
    return timed_words(cues, duration, keep_sounds, counts), counts


def test_rolling_captions_keep_each_word_once_with_its_inline_time():
    words, counts = words_of(YOUTUBE_VTT, "vtt")
    assert [w for _, _, w in words] == ["red", "serves", "long", "blue", "returns"]
    assert [(a, b) for a, b, w in words if w in ("serves", "returns")] == [(1.0, 1.5), (3.0, 4.0)]
    assert words[2] == (1.5, 2.0, "long") and counts["repeated words"] == 6  # 3 + 3 repeated


def test_markup_speakers_and_sound_cues_are_cleaned_and_the_end_is_respected():
    words, counts = words_of(SRT, "srt", duration=7.0)
    assert " ".join(w for _, _, w in words) == "Welcome to the & final Red serves What a shot!"
    assert counts["speaker tags"] == 3 and counts["sound cues"] == 3 and counts["cues past the end"] == 1
    assert counts["overlapping cues"] == 1
    assert all(a <= b for a, b, _ in words) and [b for _, b, _ in words] == sorted(b for _, b, _ in words)
    first = words[:5]  # cue 1 spread over [1, 2] by length: "Welcome" takes 7 of 18 letters
    assert first[0] == (1.0, round(1 + 7 / 18, 3), "Welcome") and first[-1][1] == 2.0
    kept, _ = words_of(SRT, "srt", duration=7.0, keep_sounds=True)
    assert "[Music]" in [w for _, _, w in kept] and "♪" in [w for _, _, w in kept]


def test_a_single_repeated_word_is_not_taken_for_a_rolling_caption():
    counts = Counter()
    said = merge_rolling([[(0, 1, "Go")], [(1, 2, "go"), (2, 3, "Red!")]], counts)
    assert [w for _, _, w in said] == ["Go", "go", "Red!"] and not counts["repeated words"]


def write_with_subtitle_stream(path, seconds: int, lines: list[tuple[float, float, str]]):
    """An MKV with H.264 video and an SRT subtitle stream inside."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=2)
        video.width, video.height, video.pix_fmt = 56, 56, "yuv420p"
        subs = out.add_stream("subrip")
        subs.time_base = Fraction(1, 1000)
        subs.codec_context.subtitle_header = b"[Script Info]\r\nScriptType: v4.00+\r\n"
        for start, end, text in lines:
            packet = av.Packet(text.encode())
            packet.stream, packet.time_base = subs, subs.time_base
            packet.pts = packet.dts = int(start * 1000)
            packet.duration = int((end - start) * 1000)
            out.mux(packet)
        for frame in synthetic_frames(seconds, 2, (56, 56)):
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A folder as a user has it: good videos and every kind of bad one."""
    root = tmp_path_factory.mktemp("library")
    videos, subs = root / "videos", root / "subs"
    videos.mkdir(), subs.mkdir()
    srt = "1\n00:00:01,000 --> 00:00:03,000\nRed serves\n\n2\n00:00:04,000 --> 00:00:06,500\nBlue returns\n"
    write_video(videos / "match1.mp4", synthetic_frames(8, 2, (56, 56)), fps=2)
    (subs / "match1.en.srt").write_text(srt)
    write_video(videos / "match2.mp4", synthetic_frames(8, 2, (56, 56), seed=1), fps=2)
    (subs / "match2.vtt").write_text(
        "WEBVTT\n\n00:02.000 --> 00:04.000\nRed scores\n\n00:07.000 --> 00:30.000\nlate\n"
    )
    write_with_subtitle_stream(
        videos / "inside.mkv", 6, [(0.5, 2.0, "Blue serves"), (3.0, 4.5, "{\\i1}Red{\\i0} returns")]
    )
    (videos / "empty.mp4").write_bytes(b"")
    data = (videos / "match1.mp4").read_bytes()
    (videos / "cut.mp4").write_bytes(data[: len(data) // 2])
    write_video(videos / "nosubs.mp4", synthetic_frames(3, 2, (56, 56)), fps=2)
    write_video(videos / "latin.mp4", synthetic_frames(3, 2, (56, 56)), fps=2)
    (subs / "latin.srt").write_bytes("1\n00:00:00,000 --> 00:00:01,000\ncafé\n".encode("latin-1"))
    write_video(videos / "music.mp4", synthetic_frames(3, 2, (56, 56)), fps=2)
    (subs / "music.srt").write_text("1\n00:00:00,000 --> 00:00:02,000\n[Music]\n")
    return root


def test_from_subtitles_writes_what_make_chunks_reads_and_counts_what_it_skipped(
    library, tmp_path, tiny_dir, capsys
):
    out = tmp_path / "data"
    args = [
        "data",
        "from-subtitles",
        str(library / "videos"),
        "--subs",
        str(library / "subs"),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    records = {r.video.split("/")[-1]: r for r in read_annotations(out / "annotations.jsonl")}
    assert sorted(records) == ["inside.mkv", "match1.mp4", "match2.mp4"]
    match1 = records["match1.mp4"]
    assert match1.video_end == pytest.approx(8.0, abs=0.6) and match1.video_path().is_file()
    assert match1.second_texts()[:7] == ["", "Red", "serves", "", "Blue", "", "returns"]  # by word end
    assert [w for _, _, w in records["match2.mp4"].words] == [
        "Red",
        "scores",
        "late",
    ]  # cut at the video's end
    assert max(b for _, b, _ in records["match2.mp4"].words) <= records["match2.mp4"].video_end
    inside = records["inside.mkv"]  # no sidecar: the subtitle stream inside the file, markup stripped
    assert [w for _, _, w in inside.words] == ["Blue", "serves", "Red", "returns"]
    assert inside.words[0][0] == 0.5 and inside.words[-1][1] == 4.5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == 3 and summary["cleaned"]["cues cut at the end"] == 1
    unreadable = {k: v for k, v in summary["skipped"].items() if k in ("video unreadable", "video truncated")}
    assert summary["skipped"] == {"no subtitles": 1, "video empty": 1, "subtitles not text": 1, "no words": 1,
                                  **unreadable} and sum(unreadable.values()) == 1  # fmt: skip
    assert "cut.mp4" in " ".join(summary["problems"]) and "skipped 1: no subtitles" in capsys.readouterr().err

    # make-chunks reads the result unchanged
    chunks = tmp_path / "chunks.jsonl"
    cut = ["--model", str(tiny_dir), "--window", "4", "--stride", "2"]
    assert main(["make-chunks", str(out / "annotations.jsonl"), "--out", str(chunks), *cut]) == 0
    windows = list(read_annotations(chunks))
    assert len(windows) >= 4 and all(w.video_path().is_file() for w in windows)


def test_strict_stops_at_the_first_unusable_video_and_nothing_is_half_written(library, tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "annotations.jsonl").write_text("previous run\n")
    videos = library / "videos"
    args = ["data", "from-subtitles", str(videos / "match1.mp4"), str(videos / "empty.mp4"), "--subs",
            str(library / "subs"), "--out", str(out), "--strict"]  # fmt: skip
    assert main(args) == 2
    assert "empty.mp4: empty file (0 bytes)" in capsys.readouterr().err
    assert (out / "annotations.jsonl").read_text() == "previous run\n"  # untouched
    assert main(args[:-1] + ["--encoding", "nope"]) == 2  # a bad option is one line too
    assert (
        main(["data", "from-subtitles", str(videos / "nosubs.mp4"), "--out", str(out)]) == 2
    )  # nothing usable
    assert (out / "annotations.jsonl").read_text() == "previous run\n"
    latin = [
        "data",
        "from-subtitles",
        str(videos / "latin.mp4"),
        "--subs",
        str(library / "subs"),
        "--out",
        str(out),
    ]
    assert main(latin + ["--encoding", "latin-1"]) == 0
    assert [w for _, _, w in next(read_annotations(out / "annotations.jsonl")).words] == ["café"]


def test_subtitled_video_to_a_fine_tuned_checkpoint_that_streams(tmp_path, tiny_dir):
    """The README's path: video + SRT -> annotations -> chunks -> a few SFT steps -> streamvlm run."""
    videos = tmp_path / "videos"
    write_video(videos / "game.mp4", synthetic_frames(12, 2, (56, 56)), fps=2)
    cues = [(k, k + 1.5, "Red serves" if k % 4 == 0 else "Blue returns") for k in range(0, 11, 2)]
    srt = "".join(
        f"{i + 1}\n00:00:{a:06.3f} --> 00:00:{b:06.3f}\n{t}\n\n".replace(".", ",")
        for i, (a, b, t) in enumerate(cues)
    )
    (videos / "game.srt").write_text(srt)
    data = tmp_path / "data"
    assert main(["data", "from-subtitles", str(videos), "--out", str(data)]) == 0
    chunks = data / "chunks.jsonl"
    cut = ["--model", str(tiny_dir), "--window", "6", "--stride", "3"]
    assert main(["make-chunks", str(data / "annotations.jsonl"), "--out", str(chunks), *cut]) == 0
    config = tmp_path / "sft.yaml"
    options = {"learning_rate": 1e-3, "lr_scheduler": "constant", "warmup_ratio": 0.0, "max_steps": 2}
    options |= {"save_steps": 2, "batch_size": 2, "device": "cpu", "bf16": False}
    config.write_text(yaml.safe_dump({"model": str(tiny_dir), **options}))
    assert main(["train", str(config), f"train_data={chunks}", f"output_dir={tmp_path / 'run'}"]) == 0
    final = tmp_path / "run" / "final"
    out = tmp_path / "out.jsonl"
    assert main(["run", str(videos / "game.mp4"), "--model", str(final), "--greedy", "--max-new-tokens", "3",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["start"] for line in lines] == [float(k) for k in range(12)]
    assert all(isinstance(line["text"], str) for line in lines)
