"""Reading the files a judging run starts from (one-line errors naming the file and line), and
writing files atomically.

Reference files:
- Inf-Streams-Eval metadata JSONL: one row per video (or per scoring clip) with `video`,
  `content` = `[[start, end, text], ...]`, optional `title` and `preasr`.
- Event annotations, one row per event: LiveSports-3K-CC rows (`video_id`, `event_id`, `begin`,
  `end`, `event_asr_text` or `event_asr`, `event_title`) or our own `{"video", "begin", "end", "text"}`.

Generation inputs (one per candidate):
- a JSONL of `{"video", "items": [{"start", "end", "text"}, ...]}` rows (any model; rows of the same
  video are merged, as chunked generation writes them; `end_time` / `response` item keys and
  `chunk_start` / `chunk_end` row keys of the research code are understood too);
- a directory of `streamvlm run` per-second files named `<video file stem>.jsonl`;
- one `streamvlm run` per-second file, when the reference holds exactly one video;
- for events only: per-event predictions `{"video_id", "event_id", "begin", "end", "pred"}`.
"""

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StreamvlmError


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


@dataclass
class ReferenceRow:
    """One row of Inf-Streams-Eval metadata: a video's reference transcript (or a clip of it)."""

    video: str
    content: list[Segment]
    title: str = ""
    preasr: str = ""


@dataclass
class Event:
    """One annotated event: a time span of a video with the human commentary said during it."""

    video: str
    event_id: str
    begin: float
    end: float
    text: str
    title: str = ""


@dataclass
class Generation:
    """One candidate's commentary for one video and the span of stream time it covers."""

    items: list[Segment] = field(default_factory=list)
    covered: tuple[float, float] | None = None


@dataclass
class Candidate:
    """A generation input: commentary per video key (a path or a file stem)."""

    source: str
    videos: dict[str, Generation] = field(default_factory=dict)
    #: per-event predictions keyed by (video, event_id), for event prediction files only
    events: dict[tuple[str, str], str] | None = None
    _by_name: dict[str, list[str]] | None = field(default=None, init=False, repr=False)

    def find(self, video: str) -> Generation | None:
        """The generation for a reference video, matched by exact path, else file name, else stem."""
        if video in self.videos:
            return self.videos[video]
        if self._by_name is None:  # built once: file name and stem -> keys
            self._by_name = {}
            for k in self.videos:
                for name in {Path(k).name, video_stem(k)}:
                    self._by_name.setdefault(name, []).append(k)
        for name in (Path(video).name, video_stem(video)):
            matches = self._by_name.get(name, [])
            if len(matches) > 1:
                raise StreamvlmError(
                    f"{self.source}: video {video} matches several entries by name ({', '.join(matches[:3])})"
                )
            if matches:
                return self.videos[matches[0]]
        return None


def video_stem(video: str) -> str:
    return Path(video).stem


def read_text(path: str | Path) -> str:
    """A UTF-8 text file, or a one-line error naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StreamvlmError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StreamvlmError(f"{path}: cannot read: {exc}") from None


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for every non-empty line; a JSON array file is accepted too."""
    path = Path(path)
    text = read_text(path)
    if text.lstrip().startswith("["):  # a whole-file JSON array (e.g. a dataset export)
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StreamvlmError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        for i, row in enumerate(rows, 1):
            yield i, _object(row, path, i)
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StreamvlmError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        yield number, _object(row, path, number)


def _object(row, path: Path, number: int) -> dict:
    if not isinstance(row, dict):
        raise StreamvlmError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    return row


def _number(value, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StreamvlmError(f"{where}: {what} must be a number, got {value!r}")
    return float(value)


def _string(value, what: str, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise StreamvlmError(f"{where}: {what} must be a string, got {type(value).__name__}")
    return value


def read_reference(path: str | Path) -> list[ReferenceRow]:
    """Inf-Streams-Eval metadata rows, in file order."""
    rows = []
    for number, obj in read_jsonl(path):
        where = f"{path}:{number}"
        video = obj.get("video")
        if not isinstance(video, str) or not video:
            raise StreamvlmError(f"{where}: missing 'video' (a path or file name)")
        content = obj.get("content")
        if not isinstance(content, list):
            raise StreamvlmError(f"{where}: 'content' must be a list of [start, end, text]")
        segments = []
        for i, seg in enumerate(content):
            if not isinstance(seg, list | tuple) or len(seg) < 3:
                raise StreamvlmError(f"{where}: content[{i}] must be [start, end, text], got {seg!r}")
            start = _number(seg[0], f"content[{i}] start", where)
            end = _number(seg[1], f"content[{i}] end", where)
            if end < start:
                raise StreamvlmError(f"{where}: content[{i}] ends ({end}) before it starts ({start})")
            segments.append(Segment(start, end, _string(seg[2], f"content[{i}] text", where)))
        rows.append(
            ReferenceRow(
                video=video,
                content=segments,
                title=_string(obj.get("title"), "'title'", where),
                preasr=obj["preasr"] if isinstance(obj.get("preasr"), str) else "",
            )
        )
    if not rows:
        raise StreamvlmError(f"{path}: no reference rows")
    return rows


def read_events(path: str | Path) -> list[Event]:
    """Event annotations: LiveSports-3K-CC rows or `{"video", "begin", "end", "text"}` rows."""
    events, seen = [], set()
    for number, obj in read_jsonl(path):
        where = f"{path}:{number}"
        video = obj.get("video_id", obj.get("video"))
        if not isinstance(video, str | int) or video == "":
            raise StreamvlmError(f"{where}: missing 'video_id' or 'video'")
        video = str(video)
        begin = _number(obj.get("begin"), "'begin'", where)
        end = _number(obj.get("end"), "'end'", where)
        if end <= begin:
            raise StreamvlmError(f"{where}: event ends ({end}) at or before it begins ({begin})")
        text = _event_text(obj, where)
        event_id = str(obj["event_id"]) if obj.get("event_id") is not None else f"{begin:g}-{end:g}"
        if (video, event_id) in seen:
            raise StreamvlmError(f"{where}: event {event_id} of {video} appears twice")
        seen.add((video, event_id))
        title = obj.get("event_title", obj.get("title"))
        events.append(Event(video, event_id, begin, end, text, _string(title, "'event_title'", where)))
    if not events:
        raise StreamvlmError(f"{path}: no events")
    return events


def _event_text(obj: dict, where: str) -> str:
    if isinstance(obj.get("event_asr_text"), str):
        return obj["event_asr_text"]
    if isinstance(obj.get("text"), str):
        return obj["text"]
    asr = obj.get("event_asr")
    if isinstance(asr, str):  # LiveSports-3K stores the segment list as a JSON string
        try:
            asr = json.loads(asr)
        except json.JSONDecodeError:
            raise StreamvlmError(f"{where}: 'event_asr' is not a JSON list of [start, end, text]") from None
    if isinstance(asr, list):
        return " ".join(str(seg[2]).strip() for seg in asr if isinstance(seg, list) and len(seg) >= 3)
    raise StreamvlmError(f"{where}: no reference text ('event_asr_text', 'event_asr' or 'text')")


def read_candidate(path: str | Path, reference_videos: list[str], allow_events: bool = False) -> Candidate:
    """Read a generation input (see the module docstring for the accepted shapes)."""
    path = Path(path)
    if path.is_dir():
        return _read_directory(path)
    if not path.exists():
        raise StreamvlmError(f"{path}: no such file or directory")
    rows = list(read_jsonl(path))
    if not rows:
        raise StreamvlmError(f"{path}: empty generation file")
    first = rows[0][1]
    if "items" in first:
        return _read_items_rows(path, rows)
    if "pred" in first:
        if not allow_events:
            raise StreamvlmError(
                f"{path}: per-event predictions ('pred') can only be judged by `eval events`"
            )
        return _read_event_predictions(path, rows)
    if "end" in first or "end_time" in first:
        videos = sorted(set(reference_videos))
        if len(videos) != 1:
            raise StreamvlmError(
                f"{path}: a single per-second file, but the reference holds {len(videos)} videos; "
                "pass a directory of <video stem>.jsonl files or a {video, items} JSONL"
            )
        return Candidate(str(path), {videos[0]: _generation(_items(rows, path), None)})
    raise StreamvlmError(
        f"{path}:{rows[0][0]}: unknown generation format "
        "(expected 'items', 'pred' or per-second 'start'/'end'/'text')"
    )


def _read_directory(path: Path) -> Candidate:
    files = sorted(path.glob("*.jsonl"))
    if not files:
        raise StreamvlmError(f"{path}: directory holds no <video stem>.jsonl files")
    videos = {f.stem: _generation(_items(list(read_jsonl(f)), f), None) for f in files}
    return Candidate(str(path), videos)


def _read_items_rows(path: Path, rows: list[tuple[int, dict]]) -> Candidate:
    items: dict[str, list[Segment]] = {}
    spans: dict[str, list[float]] = {}
    for number, obj in rows:
        where = f"{path}:{number}"
        video = obj.get("video")
        if not isinstance(video, str) or not video:
            raise StreamvlmError(f"{where}: missing 'video'")
        if not isinstance(obj.get("items"), list):
            raise StreamvlmError(f"{where}: 'items' must be a list of {{start, end, text}}")
        items.setdefault(video, []).extend(_items([(number, it) for it in obj["items"]], path))
        if "chunk_start" in obj and "chunk_end" in obj:  # research chunk files state their span
            span = spans.setdefault(video, [float("inf"), float("-inf")])
            span[0] = min(span[0], _number(obj["chunk_start"], "'chunk_start'", where))
            span[1] = max(span[1], _number(obj["chunk_end"], "'chunk_end'", where))
    return Candidate(
        str(path), {v: _generation(its, tuple(spans[v]) if v in spans else None) for v, its in items.items()}
    )


def _read_event_predictions(path: Path, rows: list[tuple[int, dict]]) -> Candidate:
    events: dict[tuple[str, str], str] = {}
    for number, obj in rows:
        where = f"{path}:{number}"
        video = obj.get("video_id", obj.get("video"))
        if video is None or "pred" not in obj:
            raise StreamvlmError(f"{where}: an event prediction needs 'video_id' and 'pred'")
        if obj.get("event_id") is not None:
            event_id = str(obj["event_id"])
        else:
            begin, end = _number(obj.get("begin"), "'begin'", where), _number(obj.get("end"), "'end'", where)
            event_id = f"{begin:g}-{end:g}"
        events[(str(video), event_id)] = _string(obj["pred"], "'pred'", where)
    return Candidate(str(path), events=events)


def _items(rows: list[tuple[int, object]], path: Path) -> list[Segment]:
    out = []
    for number, obj in rows:
        where = f"{path}:{number}"
        if not isinstance(obj, dict):
            raise StreamvlmError(f"{where}: an item must be an object with start, end, text")
        end = _number(obj.get("end", obj.get("end_time")), "item 'end'", where)
        start_value = obj.get("start", obj.get("start_time"))
        # research items carry only end_time: one second each, as the engine emits them
        start = end - 1.0 if start_value is None else _number(start_value, "item 'start'", where)
        text = obj.get("text", obj.get("response", ""))
        out.append(Segment(start, end, _string(text, "item 'text'", where)))
    return out


def _generation(items: list[Segment], covered: tuple[float, float] | None) -> Generation:
    items = sorted(items, key=lambda s: s.end)
    if covered is None and items:
        covered = (min(s.start for s in items), items[-1].end)
    return Generation(items, covered)


def write_atomic(path: str | Path, text: str) -> None:
    """Write a whole file or nothing: a temporary file in the same directory, then a rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    except OSError as exc:
        raise StreamvlmError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StreamvlmError(f"cannot write {path}: {exc.strerror}") from None
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
