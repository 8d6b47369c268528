"""Multiple-choice video QA annotations (OVO-Bench, LongVideoBench) as a flat list of questions,
and the accuracy tables computed from the answers.

Every annotation item becomes one or more `Question`s: a prompt asked after the video has been
watched up to `time` seconds, a list of choice labels whose first tokens are scored, and the index
of the right one. Items that cannot be asked are returned as `Skip`s with a reason (counted in the
report, never dropped silently).

OVO-Bench (`ovo_bench_new.json`, a JSON list; a `{"backward": [...], "realtime": [...],
"forward": [...]}` object is accepted too):
- backward (EPM, ASI, HLD) and real-time (STU, OJR, ATR, ACR, OCR, FPD) items: `id`, `task`,
  `video`, `realtime` (seconds), `question`, `options`, `gt` (index of the right option);
- forward active-responding items: `test_info` probes, each asked at its own `realtime`:
  REC (`activity`; probe `count`, scored over the digits 0-9: counts above 9 are skipped),
  SSR (probe `step`, `type` 1 = the step is being performed: Yes/No),
  CRR (`question`; probe `type` 1 = the clue has been shown: Yes/No).
Category averages follow OVO-Bench's scorer: the mean of the per-task accuracies.

LongVideoBench (`lvb_val.json`): `id`, `video_id`, `video_path` (default `<video_id>.mp4`),
`question`, `candidates` (or `option0`..`option4` with "N/A" for unused slots), `correct_choice`,
`duration` (the question is asked at the end of the video), `question_category`,
`duration_group`.
"""

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import StreamvlmError
from .transcripts import read_jsonl, read_text

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
    """Read an annotation file; returns (format, questions, skipped)."""
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
        try:
            for q in parse(item, number):
                (skipped if isinstance(q, Skip) else questions).append(q)
        except _Malformed as exc:
            task = item.get("task", item.get("question_category", "?"))
            skipped.append(Skip(str(item.get("id", f"#{number}")), str(task), str(exc)))
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


def _get(item: dict, key: str, kind, what: str | None = None):
    value = item.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        raise _Malformed(f"'{key}' missing or not {what or kind.__name__}")
    if isinstance(value, str) and not value.strip():
        raise _Malformed(f"'{key}' is empty")
    return value


def _seconds(value, key: str) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _Malformed(f"'{key}' missing or not a time in seconds >= 0")
    return float(value)


def _options(options, key: str) -> list[str]:
    if not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS):
        raise _Malformed(f"'{key}' must be a list of 2 to {len(LETTERS)} options")
    if not all(isinstance(o, str | int | float) and not isinstance(o, bool) for o in options):
        raise _Malformed(f"'{key}' holds an option that is not text")
    return [str(o) for o in options]


def _index(value, n: int, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise _Malformed(f"'{key}' must be an option index 0..{n - 1}, got {value!r}")
    return value


def mcq_prompt(question: str, options: list[str]) -> str:
    lines = [question.strip(), *(f"{LETTERS[i]}. {o.strip()}" for i, o in enumerate(options))]
    return "\n".join([*lines, MCQ_INSTRUCTION])


# -- OVO-Bench ---------------------------------------------------------------------------------
def ovo_questions(item: dict, number: int) -> list[Question | Skip]:
    item_id = str(item.get("id", f"#{number}"))
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
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
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


# -- LongVideoBench ----------------------------------------------------------------------------
def lvb_questions(item: dict, number: int) -> list[Question]:
    item_id = str(item.get("id", f"#{number}"))
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
