r"""`streamvlm eval mcq`: multiple-choice video QA by option-letter logits, offline or streaming.

    streamvlm eval mcq --annotations ovo_bench_new.json --video-root videos/ --model DIR \
        --mode streaming --out ovo-streaming.json

Every question (the annotation formats are described in `streamvlm.eval.mcq.load_annotations`) is
asked as a text-only user turn after the video has been watched up to its time; the answer is the
choice whose first token has the largest logit right after `<|im_start|>assistant\n`
(`StreamingSession.ask_choice`).

- offline: a fresh session keeping everything (policy `full`) watches the clip from its start up
  to the question time — at most `--max-seconds` seconds, evenly spaced, the last one always
  included — with silent replies, then the question is asked.
- streaming: each video is streamed once through the engine (its policy, its commentary; `--silent`
  for silent replies) and every question is asked when the stream reaches its time; asking leaves
  the stream undisturbed.

Answers go to `<out stem>.items.jsonl` as they come (an interrupted run resumes: answered questions
are not asked again); the report (`--out`, JSON) and a summary (`.md`) are written at the end.
"""

import argparse
import hashlib
import json
import math
import re
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import StreamConfig
from ..errors import SourceError, StreamvlmError
from .transcripts import read_jsonl, read_text, write_atomic

MCQ_HELP = __doc__.split("\n\n", 1)[1]
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
YES_NO = ("Yes", "No")
DIGITS = tuple("0123456789")
OVO_CATEGORIES = {
    "real-time": ("STU", "OJR", "ATR", "ACR", "OCR", "FPD"),
    "backward": ("EPM", "ASI", "HLD"),
    "forward": ("REC", "SSR", "CRR"),
}
OVO_MCQ_TASKS = OVO_CATEGORIES["real-time"] + OVO_CATEGORIES["backward"]
MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."


# -- the command -------------------------------------------------------------------------------
def register(sub) -> None:
    """Add `eval mcq` to the `eval` subparsers."""
    from ..cache.policy import POLICIES
    from ..cli import non_negative_int, positive_int

    p = sub.add_parser(
        "mcq",
        help="multiple-choice video QA (OVO-Bench, LongVideoBench), offline or streaming",
        description=MCQ_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--annotations", required=True, help="OVO-Bench or LongVideoBench annotation JSON")
    p.add_argument("--format", choices=("auto", "ovo", "lvb"), default="auto", help="default: auto")
    p.add_argument("--video-root", default=".", help="folder the annotation's video paths are under")
    p.add_argument("--model", default=None, help="checkpoint dir or hub id (default: the shipped model)")
    p.add_argument("--mode", choices=("offline", "streaming"), default="offline", help="default offline")
    p.add_argument("--out", default=None, help="report JSON (default mcq-<annotations>-<mode>.json)")
    p.add_argument("--fps", type=positive_int, default=None, help="frames per second (default: model's, 2)")
    p.add_argument("--max-items", type=positive_int, default=None, help="only the first N annotation items")
    p.add_argument("--tasks", default=None, help="comma-separated tasks / question categories to keep")
    p.add_argument(
        "--max-seconds",
        type=non_negative_int,
        default=64,
        help="offline: seconds of frames watched at most, evenly spaced (default 64; 0 = all)",
    )
    p.add_argument("--policy", choices=POLICIES, default=None, help="streaming: cache policy (model's)")
    p.add_argument("--silent", action="store_true", help="streaming: watch with silent replies")
    p.add_argument("--max-new-tokens", type=positive_int, default=None, help="streaming: per second")
    p.add_argument("--strict", action="store_true", help="stop at the first malformed item")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    p.add_argument("--min-pixels", type=positive_int, default=None, help="per-frame pixel floor")
    p.add_argument("--max-pixels", type=positive_int, default=None, help="per-frame pixel budget")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_mcq)


def cmd_mcq(args) -> int:
    from ..runner import load_for_run

    fmt, questions, skipped = load_annotations(args.annotations, args.format)
    if args.tasks:
        keep = {t.strip() for t in args.tasks.split(",") if t.strip()}
        questions = [q for q in questions if q.task in keep]
        skipped = [s for s in skipped if s.task in keep]
    if args.max_items:
        items = set(list(dict.fromkeys(q.item for q in questions))[: args.max_items])
        questions = [q for q in questions if q.item in items]
    if args.strict and skipped:
        raise StreamvlmError(f"{args.annotations}: item {skipped[0].item}: {skipped[0].reason}")
    out = Path(args.out or f"mcq-{Path(args.annotations).stem}-{args.mode}.json")
    run = MCQRun(fmt, questions, skipped, Path(args.video_root), out, args)
    run.check_videos()
    loaded = load_for_run(args.model, args.device, args.dtype, args.min_pixels, args.max_pixels, args.quiet)
    report = run.evaluate(loaded)
    if not args.quiet:
        print(run.paths["markdown"].read_text(encoding="utf-8"))
    print(
        f"report: {run.paths['json']}  summary: {run.paths['markdown']}  answers: {run.paths['items']}",
        file=sys.stderr,
    )
    return 0 if report["scores"]["n"] else 2


# -- annotations -------------------------------------------------------------------------------
@dataclass
class Question:
    key: str  # unique per question: the item id, plus "#k" for the k-th probe of a forward item
    item: str  # annotation item id
    task: str  # OVO task or LongVideoBench question_category
    video: str  # as written in the annotation (relative to the video root unless absolute)
    time: float | None  # seconds watched before asking; None = the whole video
    prompt: str
    choices: list[str]  # labels whose first tokens are scored
    answer: int  # index into choices
    group: str | None = None  # LongVideoBench duration_group

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Skip:
    item: str
    task: str
    reason: str


def load_annotations(path: str | Path, fmt: str = "auto") -> tuple[str, list[Question], list[Skip]]:
    """Read an annotation file (JSON list, or JSON Lines); returns (format, questions, skipped).

    Every item becomes one or more `Question`s: a prompt asked after the video has been watched up
    to `time` seconds, choice labels whose first tokens are scored, and the index of the right one.
    Items that cannot be asked are `Skip`s with a reason (counted in the report, never dropped).

    OVO-Bench (`ovo_bench_new.json`; a `{"backward": [...], "realtime": [...], "forward": [...]}`
    object is accepted too):
    - backward (EPM, ASI, HLD) and real-time (STU, OJR, ATR, ACR, OCR, FPD) items: `id`, `task`,
      `video`, `realtime` (seconds), `question`, `options`, `gt` (index of the right option);
    - forward active-responding items: `test_info` probes, each asked at its own `realtime`:
      REC (`activity`; probe `count`, scored over the digits 0-9: counts above 9 are skipped),
      SSR (probe `step`, `type` 1 = the step is being performed: Yes/No),
      CRR (`question`; probe `type` 1 = the clue has been shown: Yes/No).
    Category averages follow OVO-Bench's scorer: the mean of the per-task accuracies.

    LongVideoBench (`lvb_val.json`): `id`, `video_id`, `video_path` (default `<video_id>.mp4`),
    `question`, `candidates` (or `option0`..`option4` with "N/A" for unused slots),
    `correct_choice`, `duration` (the question is asked at the end of the video),
    `question_category`, `duration_group`.
    """
    items = _read_items(path)
    if not items:
        raise StreamvlmError(f"{path}: no annotation items")
    if fmt == "auto":
        fmt = detect_format(items[0], path)
    parse = {"ovo": ovo_questions, "lvb": lvb_questions}.get(fmt)
    if parse is None:
        raise StreamvlmError(f"unknown annotation format {fmt!r}; choose ovo, lvb or auto")
    questions, skipped = [], []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            skipped.append(Skip(f"#{number}", "?", f"item {number} is not a JSON object"))
            continue
        item_id = str(item.get("id", f"#{number}"))
        try:
            for q in parse(item, item_id):
                (skipped if isinstance(q, Skip) else questions).append(q)
        except _Malformed as exc:
            task = item.get("task", item.get("question_category", "?"))
            skipped.append(Skip(item_id, str(task), str(exc)))
    keys = [q.key for q in questions]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise StreamvlmError(f"{path}: item id {dup.split('#')[0]} appears more than once")
    return fmt, questions, skipped


def detect_format(item, path) -> str:
    if isinstance(item, dict) and ("candidates" in item or "correct_choice" in item or "video_id" in item):
        return "lvb"
    if isinstance(item, dict) and "task" in item and ("realtime" in item or "test_info" in item):
        return "ovo"
    raise StreamvlmError(
        f"{path}: cannot tell the format from the first item (OVO-Bench items have 'task' and "
        "'realtime' or 'test_info'; LongVideoBench items have 'candidates' and 'correct_choice'); "
        "pass --format"
    )


def _read_items(path: str | Path) -> list:
    path = Path(path)
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [row for _, row in read_jsonl(path)]  # JSON Lines (one item per line)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        return [item for part in data.values() for item in part]  # OVO-Bench split by category
    if not isinstance(data, list):
        raise StreamvlmError(f"{path}: expected a JSON list of annotation items")
    return data


class _Malformed(Exception):
    pass


def _is(value, kind) -> bool:
    """isinstance, with booleans never counting as numbers."""
    return isinstance(value, kind) and not isinstance(value, bool)


def _get(item: dict, key: str, kind, what: str | None = None):
    value = item.get(key)
    if not _is(value, kind):
        raise _Malformed(f"'{key}' missing or not {what or kind.__name__}")
    if isinstance(value, str) and not value.strip():
        raise _Malformed(f"'{key}' is empty")
    return value


def _seconds(value, key: str) -> float:
    if not _is(value, int | float) or value < 0:
        raise _Malformed(f"'{key}' missing or not a time in seconds >= 0")
    return float(value)


def _options(options, key: str) -> list[str]:
    if not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS):
        raise _Malformed(f"'{key}' must be a list of 2 to {len(LETTERS)} options")
    if not all(_is(o, str | int | float) for o in options):
        raise _Malformed(f"'{key}' holds an option that is not text")
    return [str(o) for o in options]


def _index(value, n: int, key: str) -> int:
    if not _is(value, int) or not 0 <= value < n:
        raise _Malformed(f"'{key}' must be an option index 0..{n - 1}, got {value!r}")
    return value


def mcq_prompt(question: str, options: list[str]) -> str:
    lines = [question.strip(), *(f"{LETTERS[i]}. {o.strip()}" for i, o in enumerate(options))]
    return "\n".join([*lines, MCQ_INSTRUCTION])


def ovo_questions(item: dict, item_id: str) -> list[Question | Skip]:
    task = _get(item, "task", str, "a task name")
    video = _get(item, "video", str, "a video path")
    if task in OVO_CATEGORIES["forward"] or ("test_info" in item and task not in OVO_MCQ_TASKS):
        return _ovo_forward(item, item_id, task, video)
    question = _get(item, "question", str, "text")
    options = _options(item.get("options"), "options")
    answer = _index(item.get("gt"), len(options), "gt")
    time = _seconds(item.get("realtime"), "realtime")
    prompt = mcq_prompt(question, options)
    return [Question(item_id, item_id, task, video, time, prompt, list(LETTERS[: len(options)]), answer)]


def _ovo_forward(item: dict, item_id: str, task: str, video: str) -> list[Question | Skip]:
    probes = item.get("test_info")
    if not isinstance(probes, list) or not probes:
        raise _Malformed("'test_info' must be a non-empty list of probes")
    if task == "REC":
        activity = _get(item, "activity", str, "text")
        head = f"How many times did they {activity.strip()}? Answer with a single number."
    elif task == "CRR":
        question = _get(item, "question", str, "text")
        head = (
            f"Question: {question.strip()}\nDo the frames so far, especially the latest ones, give "
            "enough information to answer the question? Answer Yes or No."
        )
    elif task != "SSR":
        raise _Malformed(f"forward task {task} is not supported (REC, SSR and CRR are)")
    out = []
    for k, probe in enumerate(probes):
        if not isinstance(probe, dict):
            raise _Malformed(f"test_info[{k}] is not an object")
        time = _seconds(probe.get("realtime"), f"test_info[{k}].realtime")
        if task == "REC":
            count = probe.get("count")
            if not _is(count, int) or count < 0:
                raise _Malformed(f"test_info[{k}].count must be a whole number >= 0")
            if count > 9:  # this probe only; the item's other probes are asked
                out.append(Skip(f"{item_id}#{k}", task, "REC count above 9 (answers are one digit)"))
                continue
            prompt, choices, answer = head, list(DIGITS), count
        else:
            kind = probe.get("type")
            if kind not in (0, 1) or isinstance(kind, bool):
                raise _Malformed(f"test_info[{k}].type must be 0 or 1")
            if task == "SSR":
                step = _get(probe, "step", str, "text")
                head = (
                    f"This is one step of the procedure shown: {step.strip()}\n"
                    "Is the person performing this step right now? Answer Yes or No."
                )
            prompt, choices, answer = head, list(YES_NO), 0 if kind == 1 else 1
        out.append(Question(f"{item_id}#{k}", item_id, task, video, time, prompt, choices, answer))
    return out


def lvb_questions(item: dict, item_id: str) -> list[Question]:
    question = _get(item, "question", str, "text")
    if "candidates" in item:
        options = _options(item["candidates"], "candidates")
    else:  # the parquet export: option0..option4, "N/A" for unused slots
        slots = [item.get(f"option{i}") for i in range(5)]
        options = _options([o for o in slots if o not in (None, "N/A")], "option0..4")
    answer = _index(item.get("correct_choice"), len(options), "correct_choice")
    if isinstance(item.get("video_path"), str) and item["video_path"]:
        video = item["video_path"]
    else:
        video = f"{_get(item, 'video_id', str, 'text')}.mp4"
    time = _seconds(item["duration"], "duration") if item.get("duration") is not None else None
    task = str(item.get("question_category") or "all")
    group = None if item.get("duration_group") is None else str(item["duration_group"])
    choices = list(LETTERS[: len(options)])
    return [
        Question(item_id, item_id, task, video, time, mcq_prompt(question, options), choices, answer, group)
    ]


# -- asking the questions ----------------------------------------------------------------------
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
    """One line of the answers file."""
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
    """One `eval mcq` run: its questions, the skipped ones, the answers file and the report."""

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

    def skip(self, q: Question, reason: str) -> None:
        self.skipped.append(Skip(q.key, q.task, reason))

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
                self.skip(q, "video file not found")
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
        """What the answers depend on; its hash tells whether an answers file can be resumed."""
        s = {
            "format": self.fmt,
            "mode": self.args.mode,
            "model": str(loaded.path),
            "config": dict(vars(config)),
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

            def ask(q: Question, session, watched: int) -> None:
                if not watched:
                    self.skip(q, "video holds no complete second before the question")
                    return
                row = answer_row(q, session.ask_choice(q.prompt, q.choices), watched, run)
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                sink.flush()
                done[q.key] = row
                bar.update(1)

            if self.args.mode == "offline":
                self.offline(loaded, config, todo, ask, bar)
            else:
                self.streaming(loaded, config, todo, ask, bar)
        bar.close()
        results = [done[q.key] for q in self.questions if q.key in done]
        answered_now = len(results) - (len(self.questions) - len(todo))
        return self.write_report(results, settings, run, answered_now)

    def offline(self, loaded, config: StreamConfig, todo: list[Question], ask, bar) -> None:
        """A fresh session per question, watching up to `--max-seconds` of the seconds before it."""
        from ..engine import StreamingSession

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
                self.skip(q, f"video unreadable: {exc}")
                continue
            ask(q, session, watched)

    def streaming(self, loaded, config: StreamConfig, todo: list[Question], ask, bar) -> None:
        """One stream per video; each question is asked when the stream reaches its time."""
        from ..engine import StreamingSession

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
                        ask(pending.pop(0), session, watched)
                    if not pending:
                        break
            except SourceError as exc:
                for q in pending:
                    self.skip(q, f"video unreadable: {exc}")
                continue
            for q in pending:  # the video ended before their time: asked at its end
                ask(q, session, watched)

    def source(self, q: Question, fps: int):
        """The question's video as a `VideoFileSource`, or None (skipped) when it cannot be opened."""
        from ..sources import VideoFileSource

        try:
            return VideoFileSource(self.video_path(q.video), fps=fps)
        except SourceError as exc:
            self.skip(q, f"video unreadable: {exc}")
            return None

    # -- the report -------------------------------------------------------------------------
    def write_report(self, results: list[dict], settings: dict, run: str, answered_now: int) -> dict:
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


# -- accuracy ----------------------------------------------------------------------------------
def aggregate(results: list[dict], fmt: str) -> dict:
    """Accuracy tables from per-question result rows (`task`, `correct`, optional `group`)."""

    def table(rows_by: dict) -> dict:
        return {
            name: {"n": len(v), "correct": sum(v), "accuracy": sum(v) / len(v)}
            for name, v in sorted(rows_by.items())
        }

    by_task, by_group = defaultdict(list), defaultdict(list)
    for r in results:
        by_task[r["task"]].append(bool(r["correct"]))
        if r.get("group") is not None:
            by_group[r["group"]].append(bool(r["correct"]))
    tasks = table(by_task)
    out = {
        "n": len(results),
        "accuracy": sum(bool(r["correct"]) for r in results) / len(results) if results else None,
        "tasks": tasks,
        "task_mean": sum(t["accuracy"] for t in tasks.values()) / len(tasks) if tasks else None,
    }
    if by_group:
        out["groups"] = table(by_group)
    if fmt == "ovo":
        categories = {}
        for name, members in OVO_CATEGORIES.items():
            present = [m for m in members if m in tasks]
            accs = [tasks[m]["accuracy"] for m in present]
            categories[name] = {"tasks": present, "accuracy": sum(accs) / len(accs) if accs else None}
        out["categories"] = categories
        out["other_tasks"] = sorted(t for t in tasks if not any(t in m for m in OVO_CATEGORIES.values()))
    return out


def summary_markdown(report: dict) -> str:
    """A short table: overall, per category (OVO-Bench), per task and per duration group."""

    def pct(x) -> str:
        return "n/a" if x is None else f"{100 * x:.2f}"

    s = report["scores"]
    lines = [
        f"# {report['format'].upper()} multiple choice, {report['mode']} ({report['model']})",
        "",
        f"{s['n']} questions scored: accuracy {pct(s['accuracy'])} %, mean over tasks "
        f"{pct(s['task_mean'])} %; {report['skipped']['count']} skipped.",
        "",
    ]
    if "categories" in s:
        lines += ["| category | tasks | accuracy % |", "|---|---|---|"]
        for name, c in s["categories"].items():
            lines.append(f"| {name} | {', '.join(c['tasks']) or '-'} | {pct(c['accuracy'])} |")
        lines.append("")
    for title, rows in (("task", s["tasks"]), ("duration group", s.get("groups", {}))):
        if rows:
            lines += [f"| {title} | n | accuracy % |", "|---|---|---|"]
            lines += [f"| {k} | {v['n']} | {pct(v['accuracy'])} |" for k, v in rows.items()]
            lines.append("")
    if report["skipped"]["count"]:
        lines.append("Skipped: " + "; ".join(f"{r} ({n})" for r, n in report["skipped"]["reasons"].items()))
    return "\n".join(lines).rstrip() + "\n"
