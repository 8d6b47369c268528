"""The public training formats: Inf-Stream-Train / Live-WhisperX-style JSONL with a seeks file.

One conversation per line:

    [{"role": "user", "content": [
         {"type": "video", "video": PATH, "video_start": s, "video_end": e},
         {"type": "text", "text": QUERY, "previous": PRIOR_TEXT}]},
     {"role": "assistant", "content": [
         {"type": "text_stream", "text_stream": [[w_start, w_end, word], ...], "qa_stream": [...]}]}]

`<stem>_seeks.jsonl` beside `<stem>.jsonl` holds one JSON array: the byte offset of every line,
so a dataset can read line i without scanning the file. Video paths are relative to the
annotation file's directory, or to `$DATASET_PATH`, or absolute.
"""

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StreamvlmError


class DataError(StreamvlmError):
    """A malformed annotation, a missing video, a window outside its video."""


Word = tuple[float, float, str]


@dataclass
class StreamRecord:
    video: str  # as written in the annotation
    video_start: float
    video_end: float
    query: str = ""
    previous: str = ""
    words: list[Word] = field(default_factory=list)
    qa: list = field(default_factory=list)
    where: str = ""  # "file:line", for messages
    root: Path | None = None  # the annotation file's directory

    @property
    def seconds(self) -> int:
        return int(round(self.video_end - self.video_start))

    def video_path(self, must_exist: bool = True) -> Path:
        """Where the video is: as written if absolute, else beside the annotation file (or under
        $DATASET_PATH). `must_exist=False` (commentary-only data): the first place, existing or not."""
        path = Path(self.video)
        candidates = [path] if path.is_absolute() else [(self.root or Path(".")) / path]
        if not must_exist:
            return candidates[0]
        if not path.is_absolute() and os.environ.get("DATASET_PATH"):
            candidates.append(Path(os.environ["DATASET_PATH"]) / path)
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise DataError(
            f"{self.where}: video {self.video} not found (looked in {', '.join(map(str, candidates))})"
        )

    def second_texts(self) -> list[str]:
        """The words spoken in each second [start + k, start + k + 1): those whose end time falls in it."""
        texts: list[list[str]] = [[] for _ in range(self.seconds)]
        for _, end, word in self.words:
            k = int(-(-(end - self.video_start) // 1)) - 1  # (a, a+1] -> k = ceil(end - start) - 1
            if 0 <= k < len(texts) and word.strip():
                texts[k].append(word.strip())
        return [" ".join(t) for t in texts]

    def to_json(self) -> list:
        text = {"type": "text", "text": self.query, "previous": self.previous}
        stream = {"type": "text_stream", "text_stream": [list(w) for w in self.words]}
        if self.qa:
            stream["qa_stream"] = self.qa
        video = {
            "type": "video",
            "video": self.video,
            "video_start": self.video_start,
            "video_end": self.video_end,
        }
        return [{"role": "user", "content": [video, text]}, {"role": "assistant", "content": [stream]}]

    @classmethod
    def from_json(cls, conversation, where: str = "", root: Path | None = None) -> "StreamRecord":
        try:
            user, assistant = conversation[0], conversation[1]
            contents = user["content"]
            video = next(c for c in contents if c.get("type") == "video")
            text = next((c for c in contents if c.get("type") == "text"), {})
            stream = next(c for c in assistant["content"] if "text_stream" in c)
            words = [(float(a), float(b), str(w)) for a, b, w in stream["text_stream"]]
            record = cls(
                video=str(video["video"]),
                video_start=float(video.get("video_start", 0.0)),
                video_end=float(video["video_end"]),
                query=str(text.get("text") or ""),
                previous=str(text.get("previous") or ""),
                words=words,
                qa=list(stream.get("qa_stream") or []),
                where=where,
                root=root,
            )
        except (KeyError, IndexError, TypeError, ValueError, StopIteration, AttributeError) as exc:
            raise DataError(
                f"{where}: not an Inf-Stream-Train conversation ({type(exc).__name__}: {exc})"
            ) from exc
        if record.video_end <= record.video_start:
            raise DataError(
                f"{where}: video_end {record.video_end} is not after video_start {record.video_start}"
            )
        return record


def seeks_path(path: Path) -> Path:
    stem = path.name.removesuffix(".jsonl").removesuffix("_with_seeks")
    return path.with_name(f"{stem}_seeks.jsonl")


def read_annotations(path: str | Path, skipped: list[str] | None = None) -> Iterator[StreamRecord]:
    """Records of one annotation file, in order. A malformed line raises `DataError` naming it, or,
    when a `skipped` list is given, is appended there (file:line and reason) and left out."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist")
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield StreamRecord.from_json(json.loads(line), where, path.parent)
            except (json.JSONDecodeError, UnicodeDecodeError, DataError) as exc:
                if skipped is None:
                    raise DataError(f"{where}: malformed line ({exc})") from exc
                skipped.append(f"{where}: {exc}")


def read_seeks(path: str | Path) -> list[int]:
    """Byte offsets of the lines of `path`: from its seeks file when present, else by scanning."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such annotation file")
    seeks = seeks_path(path)
    if seeks.is_file():
        offsets = json.loads(seeks.read_text())
        if not isinstance(offsets, list) or not all(isinstance(o, int) for o in offsets):
            raise DataError(f"{seeks}: expected one JSON array of byte offsets")
        return offsets
    offsets, position = [], 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                offsets.append(position)
            position += len(line)
    return offsets


def read_line(path: Path, offset: int) -> StreamRecord:
    with open(path, "rb") as f:
        f.seek(offset)
        line = f.readline()
    try:
        return StreamRecord.from_json(json.loads(line), f"{path}@{offset}", path.parent)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}@{offset}: malformed line ({exc}); is the seeks file stale?") from exc


def write_annotations(records: Iterable[StreamRecord], path: str | Path) -> int:
    """Write records as JSONL plus its seeks file; returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    offsets = []
    with open(path, "wb") as f:
        for record in records:
            offsets.append(f.tell())
            f.write(json.dumps(record.to_json(), ensure_ascii=False).encode() + b"\n")
    seeks_path(path).write_text(json.dumps(offsets))
    return len(offsets)
