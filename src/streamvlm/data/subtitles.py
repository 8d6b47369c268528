"""Your own videos with subtitles -> Inf-Stream-Train annotations (`streamvlm data from-subtitles`).

A video's subtitles come from a sidecar WebVTT / SRT file (beside the video or under `subs_dir`:
`<stem>.vtt`, `<stem>.srt`, `<stem>.<lang>.vtt`, ...) or, failing that, from a subtitle stream
inside the container (read with PyAV). Each cue becomes timed words:

- word times where the format has them (WebVTT's inline `<00:01:02.500>` tags, as in YouTube's
  automatic captions), else the cue's time spread over its words by their length;
- rolling captions (each cue repeating the line before it, YouTube-style) and repeated cues are
  merged: words that continue what was already said are dropped;
- markup (`<i>`, `<c.color>`, `<v Speaker>`, `{\\an8}`, entities) and speaker tags (`>>`, a leading
  `- `, `NAME:`) are stripped; sound cues (`[Music]`, `(applause)`, `♪ … ♪`) are dropped unless
  `keep_sounds`;
- cues past the end of the video are dropped, cues across it are cut at it.

One record per video (`video_start` 0, `video_end` its duration, no query, no previous text), in
`annotations.jsonl` + `annotations_seeks.jsonl`: what `make-chunks` and `train` read. A video that
cannot be used (missing, empty, truncated or unreadable, no subtitles, subtitles that are not
UTF-8 or not WebVTT / SRT, no words) is skipped and counted by reason, or stops the run with
`strict`. Files are written under temporary names and moved into place: nothing half-written.
"""

import html
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import av

from .formats import DataError, StreamRecord, Word, seeks_path, write_annotations

SUBTITLE_SUFFIXES = (".vtt", ".srt")
INLINE_TIME = re.compile(r"<((?:\d+:)?\d{1,2}:\d{2}[.,]\d{3})>")
TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")
SOUND = re.compile(r"\[[^\]]*\]|\([^)]*\)|[♪♫][^♪♫]*(?:[♪♫]|$)")
SPEAKER = re.compile(r"^(?:>>+\s*|-\s+|[A-Z][A-Z0-9 .'-]{0,30}:\s+)")
WORD = re.compile(r"\S+")


@dataclass
class Cue:
    start: float
    end: float
    text: str  # raw text, markup included, lines joined by "\n"


@dataclass
class Summary:
    videos: int = 0  # written
    words: int = 0
    seconds: float = 0.0
    skipped: Counter = field(default_factory=Counter)  # reason -> videos
    cleaned: Counter = field(default_factory=Counter)  # what the cleaning did, counted
    problems: list[str] = field(default_factory=list)  # one line per skipped video

    def add(self, record: StreamRecord) -> None:
        self.videos += 1
        self.words += len(record.words)
        self.seconds += record.video_end

    def skip(self, exc: "Skip") -> None:
        self.skipped[exc.reason] += 1
        self.problems.append(str(exc))

    def to_dict(self) -> dict:
        return {
            "videos": self.videos,
            "words": self.words,
            "hours": round(self.seconds / 3600, 3),
            "skipped": dict(self.skipped),
            "cleaned": dict(self.cleaned),
            "problems": self.problems,
        }


class Skip(DataError):
    """This video cannot be used; `reason` is the short name it is counted under."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# -- reading ---------------------------------------------------------------------------------
def seconds_of(stamp: str) -> float:
    parts = stamp.replace(",", ".").split(":")
    return sum(float(p) * 60**i for i, p in enumerate(reversed(parts)))


def read_subtitle_file(path: Path, encoding: str = "utf-8") -> list[Cue]:
    """The cues of a WebVTT or SRT file, parsed by webvtt-py (SRT through its converter)."""
    import webvtt
    from webvtt.errors import MalformedFileError

    try:
        text = path.read_bytes().decode(encoding)
    except UnicodeDecodeError as exc:
        raise Skip("subtitles not text", f"{path}: not {encoding} text ({exc.reason} at byte {exc.start}); "
                   "give its --encoding") from None  # fmt: skip
    text = text.lstrip("\ufeff")
    kind = "vtt" if text.lstrip().startswith("WEBVTT") else "srt"
    try:
        captions = webvtt.from_buffer(text.splitlines(), format=kind).captions
    except (MalformedFileError, ValueError, IndexError) as exc:
        raise Skip("subtitles malformed", f"{path}: not a valid {kind.upper()} file ({exc})") from None
    return [
        Cue(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, c.raw_text)
        for c in captions
    ]


def read_embedded(video: Path) -> list[Cue]:
    """The cues of the first subtitle stream inside `video` (text subtitles: SRT, WebVTT, ASS,
    mov_text...); [] when it has none."""
    with av.open(str(video)) as container:
        if not container.streams.subtitles:
            return []
        stream = container.streams.subtitles[0]
        cues = []
        for packet in container.demux(stream):
            if packet.pts is None or not packet.size:
                continue
            start = float(packet.pts * packet.time_base)
            end = start + float((packet.duration or 0) * packet.time_base)
            for sub in packet.decode():
                text = getattr(sub, "dialogue", None) or getattr(sub, "text", b"")
                text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
                cues.append(Cue(start, max(end, start), text.replace("\\N", "\n").replace("\\n", "\n")))
        return cues


def find_subtitles(video: Path, subs_dir: Path | None) -> Path | None:
    """`<stem>.vtt` / `.srt`, else `<stem>.<anything>.vtt` / `.srt` (a language), beside the video
    or in `subs_dir`."""
    folder = subs_dir or video.parent
    for suffix in SUBTITLE_SUFFIXES:
        if (folder / f"{video.stem}{suffix}").is_file():
            return folder / f"{video.stem}{suffix}"
    found = sorted(p for s in SUBTITLE_SUFFIXES for p in folder.glob(f"{glob_escape(video.stem)}.*{s}"))
    return found[0] if found else None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def video_duration(video: Path) -> float:
    """Seconds of video in the file, after checking it opens and decodes at both ends."""
    if not video.is_file():
        raise Skip("video missing", f"{video}: no such file")
    if video.stat().st_size == 0:
        raise Skip("video empty", f"{video}: empty file (0 bytes)")
    try:
        with av.open(str(video)) as container:
            if not container.streams.video:
                raise Skip("no video stream", f"{video}: has no video stream")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                raise Skip("video unreadable", f"{video}: its duration is unknown")
            next(container.decode(stream))  # the first frame
            container.seek(int(max(0.0, duration - 2.0) / stream.time_base), stream=stream)
            last = None
            for frame in container.decode(stream):  # decodes to the end: a truncated file fails here
                last = frame
    except Skip:
        raise
    except (av.error.FFmpegError, StopIteration, OSError) as exc:
        raise Skip("video unreadable", f"{video}: not a readable video ({exc})") from None
    if last is None or last.time is None or last.time < duration - 2.5:
        raise Skip("video truncated", f"{video}: ends before its stated {duration:.1f} s")
    return duration


# -- cleaning --------------------------------------------------------------------------------
def clean_line(line: str, keep_sounds: bool, counts: Counter) -> str:
    line = html.unescape(TAG.sub("", line)).replace("\u00a0", " ").strip()
    for _ in range(3):  # ">> BOB: - ..." has three
        line, n = SPEAKER.subn("", line)
        if not n:
            break
        counts["speaker tags"] += n
    if not keep_sounds:
        line, n = SOUND.subn(" ", line)
        counts["sound cues"] += n
    return " ".join(line.split())


def cue_words(cue: Cue, keep_sounds: bool, counts: Counter) -> list[Word]:
    """The cue's words with times: inline word times where present, else spread by length."""
    pieces = INLINE_TIME.split(cue.text)  # text, time, text, time, ...
    segments = [(cue.start, pieces[0])]
    segments += [(seconds_of(t), text) for t, text in zip(pieces[1::2], pieces[2::2], strict=True)]
    words: list[Word] = []
    for i, (start, text) in enumerate(segments):
        end = segments[i + 1][0] if i + 1 < len(segments) else cue.end
        found = WORD.findall(" ".join(clean_line(line, keep_sounds, counts) for line in text.splitlines()))
        words += spread(found, start, max(end, start))
    return words


def spread(words: list[str], start: float, end: float) -> list[Word]:
    """Times for `words` said one after another in [start, end], each in proportion to its length."""
    total = sum(len(w) for w in words)
    out, at = [], 0
    for w in words:
        a = start + (end - start) * at / total
        at += len(w)
        out.append((round(a, 3), round(start + (end - start) * at / total, 3), w))
    return out


def normal(word: str) -> str:
    return re.sub(r"[^\w]", "", word.lower())


def merge_rolling(cues: list[list[Word]], counts: Counter, memory: int = 64) -> list[Word]:
    """Cue word lists -> one word stream, without what a cue repeats of the words just before it
    (rolling captions, repeated cues): the longest run of its first words that equals the last
    words said is dropped when it is the whole cue or at least two words."""
    said: list[Word] = []
    for words in cues:
        recent = [normal(w) for _, _, w in said[-memory:]]
        new = [normal(w) for _, _, w in words]
        overlap = next(
            (k for k in range(min(len(recent), len(new)), 0, -1) if recent[len(recent) - k :] == new[:k]), 0
        )
        if overlap == len(new) or overlap >= 2:
            counts["repeated words"] += overlap
            words = words[overlap:]
        said += words
    return said


def timed_words(cues: list[Cue], duration: float, keep_sounds: bool, counts: Counter) -> list[Word]:
    cues = sorted(cues, key=lambda c: (c.start, c.end))
    kept = []
    for i, cue in enumerate(cues):
        if cue.start >= duration:
            counts["cues past the end"] += 1
            continue
        if cue.end > duration:
            counts["cues cut at the end"] += 1
            cue = Cue(cue.start, duration, cue.text)
        if i and cue.start < cues[i - 1].end - 1e-3:
            counts["overlapping cues"] += 1
        kept.append(cue)
    retimed = [cue_words(cue, keep_sounds, counts) for cue in kept]
    return sorted(merge_rolling(retimed, counts), key=lambda w: (w[1], w[0]))


# -- the command -----------------------------------------------------------------------------
def video_record(
    video: Path, out_dir: Path, subs_dir: Path | None, keep_sounds: bool, encoding: str, counts: Counter
) -> StreamRecord:
    duration = video_duration(video)
    subtitles = find_subtitles(video, subs_dir)
    if subtitles is not None:
        cues = read_subtitle_file(subtitles, encoding)
    else:
        try:
            cues = read_embedded(video)
        except av.error.FFmpegError as exc:
            raise Skip(
                "subtitles unreadable", f"{video}: its subtitle stream cannot be read ({exc})"
            ) from None
        if not cues:
            where = subs_dir or video.parent
            raise Skip(
                "no subtitles", f"{video}: no {video.stem}.vtt / .srt in {where} and no subtitle stream"
            )
    words = timed_words(cues, duration, keep_sounds, counts)
    if not words:
        raise Skip("no words", f"{video}: its subtitles hold no words (after cleaning)")
    return video_stream_record(video, out_dir, duration, words)


def video_stream_record(video: Path, out_dir: Path, duration: float, words: list[Word]) -> StreamRecord:
    """The record of a whole video (no query, no previous text), its path relative to `out_dir`."""
    return StreamRecord(video=os.path.relpath(video.resolve(), out_dir.resolve()), video_start=0.0,
                        video_end=round(duration, 3), words=words, root=out_dir)  # fmt: skip


def write_records(records: list[StreamRecord], summary: Summary, out_dir: Path) -> None:
    """`out_dir/annotations.jsonl` + its seeks, written under temporary names and moved into place;
    an error when no video could be used."""
    if not records:
        reasons = ", ".join(f"{k}: {v}" for k, v in summary.skipped.items())
        raise DataError(f"no video could be used ({reasons})")
    final, temp = out_dir / "annotations.jsonl", out_dir / ".annotations.partial.jsonl"
    write_annotations(records, temp)
    os.replace(seeks_path(temp), seeks_path(final))
    os.replace(temp, final)


def from_subtitles(
    videos: list[Path],
    out_dir: Path,
    subs_dir: Path | None = None,
    keep_sounds: bool = False,
    strict: bool = False,
    encoding: str = "utf-8",
    progress: bool = True,
) -> Summary:
    """Write `out_dir/annotations.jsonl` (+ seeks) for `videos`; returns what was done."""
    from tqdm import tqdm

    summary, records = Summary(), []
    for video in tqdm(videos, desc="videos", unit="video", disable=not progress):
        try:
            record = video_record(video, out_dir, subs_dir, keep_sounds, encoding, summary.cleaned)
        except Skip as exc:
            if strict:
                raise
            summary.skip(exc)
            continue
        records.append(record)
        summary.add(record)
    write_records(records, summary, out_dir)
    return summary
