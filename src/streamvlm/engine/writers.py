"""Commentary and statistics files, written line by line and flushed, so a crash loses nothing.

JSONL: one object per second of stream, `{"start", "end", "text"}` (empty text for silence).
WebVTT / SRT: one cue per second that has something to say.
"""

import json
from pathlib import Path

from ..errors import StreamvlmError

FORMATS = (".jsonl", ".vtt", ".srt")


def timestamp(seconds: float, sep: str = ".") -> str:
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


class LineFile:
    """A text file that is flushed after every write."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "w", encoding="utf-8")
        except OSError as exc:
            raise StreamvlmError(f"cannot write {path}: {exc.strerror}") from exc

    def _write(self, s: str) -> None:
        self.file.write(s)
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class JsonlWriter(LineFile):
    """One JSON object per line (per-second statistics)."""

    def write(self, row: dict) -> None:
        self._write(json.dumps(row, ensure_ascii=False) + "\n")


class CommentaryWriter(LineFile):
    def __init__(self, path: str | Path):
        self.format = Path(path).suffix.lower()
        if self.format not in FORMATS:
            raise StreamvlmError(f"--out {path}: unknown format; use one of {', '.join(FORMATS)}")
        super().__init__(path)
        self.cues = 0
        if self.format == ".vtt":
            self._write("WEBVTT\n\n")

    def write(self, start: float, end: float, text: str) -> None:
        if self.format == ".jsonl":
            self._write(json.dumps({"start": start, "end": end, "text": text}, ensure_ascii=False) + "\n")
            return
        text = " ".join(text.split())
        if not text:
            return
        self.cues += 1
        if self.format == ".vtt":
            self._write(f"{timestamp(start)} --> {timestamp(end)}\n{text.replace('-->', '->')}\n\n")
        else:
            self._write(f"{self.cues}\n{timestamp(start, ',')} --> {timestamp(end, ',')}\n{text}\n\n")
