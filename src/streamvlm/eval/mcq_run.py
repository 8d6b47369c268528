"""Running multiple-choice questions through the engine (offline and streaming), resumable answers,
and the report. The command line is in `mcq.py`; the annotation formats in `vqa.py`."""

import hashlib
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

from ..config import StreamConfig
from ..engine import StreamingSession
from ..errors import SourceError, StreamvlmError
from ..sources import VideoFileSource
from .vqa import Question, Skip, aggregate, summary_markdown


def watch_seconds(time: float | None) -> float:
    """How many whole seconds are watched before a question at `time` (inf = the whole video)."""
    return math.inf if time is None else max(1, math.floor(time + 1e-6))


def spread(n: int, at_most: int) -> list[int]:
    """`at_most` of the seconds 0..n-1, evenly spaced, first and last included (0 = all of them)."""
    if not at_most or n <= at_most:
        return list(range(n))
    if at_most == 1:
        return [n - 1]
    return sorted({round(i * (n - 1) / (at_most - 1)) for i in range(at_most)})


def answer_row(q: Question, logits, watched: int, run: str) -> dict:
    pred = int(logits.argmax())
    return {
        "key": q.key,
        "item": q.item,
        "task": q.task,
        "group": q.group,
        "video": q.video,
        "time": q.time,
        "watched_s": watched,
        "pred": q.choices[pred],
        "answer": q.choices[q.answer],
        "correct": pred == q.answer,
        "logits": [round(float(x), 4) for x in logits],
        "run": run,
    }


class MCQRun:
    def __init__(
        self, fmt: str, questions: list[Question], skipped: list[Skip], video_root: Path, out: Path, args
    ):
        self.fmt, self.questions, self.skipped = fmt, questions, list(skipped)
        self.video_root, self.args = video_root, args
        stem = out.with_suffix("") if out.suffix == ".json" else out
        self.paths = {
            "json": stem.with_suffix(".json"),
            "markdown": stem.with_suffix(".md"),
            "items": stem.with_name(stem.name + ".items.jsonl"),
        }

    def video_path(self, video: str) -> Path:
        path = Path(video).expanduser()
        return path if path.is_absolute() else self.video_root / path

    def check_videos(self) -> None:
        """Questions whose video is missing are skipped (counted); none found at all is an error."""
        found = {v: self.video_path(v).is_file() for v in {q.video for q in self.questions}}
        if found and not any(found.values()):
            example = self.video_path(next(iter(found)))
            raise StreamvlmError(
                f"none of the {len(found)} videos is under --video-root {self.video_root} (e.g. {example})"
            )
        for q in self.questions:
            if not found[q.video]:
                self.skipped.append(Skip(q.key, q.task, "video file not found"))
        self.questions = [q for q in self.questions if found[q.video]]
        if not self.questions:
            raise StreamvlmError(f"{self.args.annotations}: no question to ask ({len(self.skipped)} skipped)")

    # -- settings and resume ----------------------------------------------------------------
    def config(self, loaded) -> StreamConfig:
        values = dict(loaded.defaults.get("stream", {}))
        values.update(greedy=True)
        if self.args.fps:
            values["fps"] = self.args.fps
        if self.args.mode == "offline":
            values["policy"] = "full"
        elif self.args.policy:
            values["policy"] = self.args.policy
        if self.args.max_new_tokens:
            values["max_new_tokens"] = self.args.max_new_tokens
        return StreamConfig.from_dict(values)

    def settings(self, loaded, config: StreamConfig) -> dict:
        s = {
            "format": self.fmt,
            "mode": self.args.mode,
            "model": str(loaded.path),
            "config": {k: v for k, v in vars(config).items()},
            "min_pixels": self.args.min_pixels,
            "max_pixels": self.args.max_pixels,
            "dtype": str(next(loaded.model.parameters()).dtype),
        }
        if self.args.mode == "offline":
            s["max_seconds"] = self.args.max_seconds
        else:
            s["silent"] = self.args.silent
        return s

    def load_answers(self, run: str) -> dict[str, dict]:
        path = self.paths["items"]
        if not path.exists():
            return {}
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):  # a line cut by an interruption: drop it
            text = text[: text.rfind("\n") + 1]
            path.write_text(text, encoding="utf-8")
        done = {}
        for number, line in enumerate(text.splitlines(), 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise StreamvlmError(f"{path}:{number}: not valid JSON; delete the file to restart") from None
            if row.get("run") != run:
                raise StreamvlmError(
                    f"{path} holds answers from a run with other settings; pass another --out or delete it"
                )
            done[row["key"]] = row
        return done

    # -- the runs ---------------------------------------------------------------------------
    def evaluate(self, loaded) -> dict:
        from tqdm import tqdm

        config = self.config(loaded)
        settings = self.settings(loaded, config)
        run = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
        done = self.load_answers(run)
        todo = [q for q in self.questions if q.key not in done]
        self.paths["items"].parent.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(todo), unit="q", desc=f"{self.args.mode} questions", disable=self.args.quiet)
        with open(self.paths["items"], "a", encoding="utf-8") as sink:

            def record(q: Question, logits, watched: int) -> None:
                row = answer_row(q, logits, watched, run)
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                sink.flush()
                done[q.key] = row
                bar.update(1)

            if self.args.mode == "offline":
                self.offline(loaded, config, todo, record, bar)
            else:
                self.streaming(loaded, config, todo, record, bar)
        bar.close()
        results = [done[q.key] for q in self.questions if q.key in done]
        answered_now = len(results) - (len(self.questions) - len(todo))
        return self.write_report(results, settings, run, answered_now)

    def offline(self, loaded, config: StreamConfig, todo: list[Question], record, bar) -> None:
        for q in todo:
            source = self.source(q, config.fps)
            if source is None:
                continue
            n = watch_seconds(q.time)
            if n == math.inf:
                n = math.floor(source.duration + 1e-6) if source.duration else sys.maxsize
            chosen = set(spread(n, self.args.max_seconds)) if n != sys.maxsize else None
            session = StreamingSession(loaded, config)
            watched = 0
            try:
                for i, chunk in enumerate(source):
                    if i >= n:
                        break
                    if chosen is None or i in chosen:
                        session.step(chunk.frames, chunk.start, chunk.end, reply="")
                        watched += 1
                    bar.set_postfix_str(f"{Path(q.video).name} {i + 1}/{n if n != sys.maxsize else '?'} s")
            except SourceError as exc:
                self.skipped.append(Skip(q.key, q.task, f"video unreadable: {exc}"))
                continue
            if self.ready(q, watched):
                record(q, session.ask_choice(q.prompt, q.choices), watched)

    def streaming(self, loaded, config: StreamConfig, todo: list[Question], record, bar) -> None:
        by_video: dict[str, list[Question]] = {}
        for q in todo:
            by_video.setdefault(q.video, []).append(q)
        for video, questions in by_video.items():
            pending = sorted(questions, key=lambda q: watch_seconds(q.time))
            source = self.source(pending[0], config.fps)
            if source is None:
                continue
            session = StreamingSession(loaded, config)
            watched = 0
            try:
                for chunk in source:
                    session.step(chunk.frames, chunk.start, chunk.end, reply="" if self.args.silent else None)
                    watched += 1
                    bar.set_postfix_str(f"{Path(video).name} {watched} s")
                    while pending and watch_seconds(pending[0].time) <= watched:
                        q = pending.pop(0)
                        record(q, session.ask_choice(q.prompt, q.choices), watched)
                    if not pending:
                        break
            except SourceError as exc:
                self.skipped += [Skip(q.key, q.task, f"video unreadable: {exc}") for q in pending]
                continue
            for q in pending:  # the video ended before their time: asked at its end
                if self.ready(q, watched):
                    record(q, session.ask_choice(q.prompt, q.choices), watched)

    def source(self, q: Question, fps: int) -> VideoFileSource | None:
        try:
            return VideoFileSource(self.video_path(q.video), fps=fps)
        except SourceError as exc:
            self.skipped.append(Skip(q.key, q.task, f"video unreadable: {exc}"))
            return None

    def ready(self, q: Question, watched: int) -> bool:
        if not watched:
            self.skipped.append(Skip(q.key, q.task, "video holds no complete second before the question"))
        return bool(watched)

    # -- the report -------------------------------------------------------------------------
    def write_report(self, results: list[dict], settings: dict, run: str, answered_now: int) -> dict:
        from .transcripts import write_atomic

        reasons = Counter(re.sub(r"\[\d+\]", "[k]", re.sub(r": .*", "", s.reason)) for s in self.skipped)
        report = {
            "format": self.fmt,
            "mode": self.args.mode,
            "model": settings["model"],
            "annotations": str(self.args.annotations),
            "video_root": str(self.video_root),
            "scores": aggregate(results, self.fmt),
            "questions": len(self.questions),
            "answered_this_run": answered_now,
            "skipped": {
                "count": len(self.skipped),
                "reasons": dict(reasons.most_common()),
                "examples": [vars(s) for s in self.skipped[:20]],
            },
            "settings": settings,
            "run": run,
            "answers": str(self.paths["items"]),
        }
        write_atomic(self.paths["json"], json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        write_atomic(self.paths["markdown"], summary_markdown(report))
        if self.skipped and not self.args.quiet:
            print(f"streamvlm: {len(self.skipped)} questions skipped (see the report)", file=sys.stderr)
        return report
