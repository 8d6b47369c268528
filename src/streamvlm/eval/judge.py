"""Asking an LLM judge, through any OpenAI-compatible endpoint, which of two commentaries is better.

Owns the prompt, the answer parser, the on-disk cache, bounded concurrency and retries. Every unit
is asked twice, once with A shown first and once with B shown first (orders "ab" and "ba"); a
verdict is stored in candidate terms ("A", "B", "tie") or None when the judge's answer could not be
read even after asking again.

Why these choices: the research code asked for a bare "A" or "B", allowed no tie and read anything
not starting with "A" as a vote for B, so a confused judge silently favoured the second candidate.
Here the judge may answer TIE, an answer is read strictly, an unreadable one is asked again (the
conversation continues with a one-line format reminder) and then counted as unparseable.
"""

import hashlib
import ipaddress
import json
import os
import random
import re
import sys
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from ..errors import StreamvlmError
from .transcripts import write_atomic
from .units import Unit

PROMPT_VERSION = "streamvlm-judge-1"  # part of every cache key: a prompt change never reuses answers
ORDERS = ("ab", "ba")
RETRY_STATUS = {408, 409, 429}  # and every 5xx
MAX_BACKOFF_S = 60.0

SYSTEM_WINDOW = (
    "You compare two machine-generated live commentaries of the same stretch of a sports broadcast. "
    "A transcript of what the human commentator said during that stretch is given as the reference: "
    "use it to learn what happened on screen and how a broadcaster sounds.\n"
    "Prefer the commentary that (1) gets the happenings right, agreeing with the reference and "
    "inventing or contradicting nothing, and (2) sounds like a broadcaster calling the action as it "
    "unfolds, with quick analysis and changing energy, not like someone describing a picture. Saying "
    "little when little happens is fine; repetition, rambling and filler are not.\n"
    "The order in which the commentaries are shown and their length are not merits.\n"
    "Reply with exactly one word: A, B, or TIE (only when neither is better)."
)
SYSTEM_EVENT = (
    "You compare two machine-generated commentaries of one event in a sports video with what the "
    "human commentator said about it.\n"
    "Judge first on content: which one reports the same happenings and specifics as the human "
    "commentator? Only if that leaves them level, judge on manner: which one sounds more like the "
    "human (register, vocabulary, sentence shape)?\n"
    "The order in which the commentaries are shown and their length are not merits.\n"
    "Reply with exactly one word: A, B, or TIE (only when neither is better)."
)
REMINDER = "Reply with exactly one word: A, B, or TIE."
EMPTY = "(no commentary)"


@dataclass
class JudgeConfig:
    base_url: str
    model: str
    api_key: str
    cache_dir: Path
    concurrency: int = 8
    retries: int = 5  # per request, on 408/409/429/5xx and connection errors
    backoff_s: float = 1.0  # first wait; doubles each retry
    timeout_s: float = 120.0
    parse_retries: int = 2  # extra asks after an unreadable answer
    max_chars: int = 6000  # per text block; the research code cut at 8000
    seed: int | None = None  # sent to the endpoint when set (part of the cache key)
    retry_unparseable: bool = False  # re-ask cached answers that could not be read
    progress: bool = True


@dataclass
class Verdict:
    winner: str | None  # "A", "B", "tie" in candidate terms; None = unparseable
    raw: str  # the judge's last answer
    asks: int  # requests made for it (0 when it came from the cache)


@dataclass
class UnitResult:
    unit: Unit
    verdicts: dict[str, Verdict]  # by order, "ab" and "ba"


@dataclass
class RunCounts:
    requests: int = 0  # HTTP requests sent, retries included
    retried: int = 0  # requests that were retried after 429/5xx/connection errors
    cached: int = 0  # verdicts read from the cache
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw: int) -> None:
        with self.lock:
            for key, value in kw.items():
                setattr(self, key, getattr(self, key) + value)


def is_loopback(base_url: str) -> bool:
    host = urlparse(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_key(base_url: str) -> str:
    """OPENAI_API_KEY from the environment; a placeholder is enough for a server on this machine."""
    if urlparse(base_url).scheme not in ("http", "https"):
        raise StreamvlmError(f"--base-url {base_url}: expected http(s)://host[:port]/v1")
    key = os.environ.get("OPENAI_API_KEY", "")
    if key:
        return key
    if is_loopback(base_url):
        return "local-judge"
    raise StreamvlmError(f"OPENAI_API_KEY is not set; the judge endpoint {base_url} needs an API key")


def clip(text: str, max_chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[:max_chars] + " [...]"


def build_messages(unit: Unit, order: str, mode: str, max_chars: int) -> list[dict]:
    """The chat messages for one unit in one order ("ab": A shown first)."""
    first, second = (unit.text_a, unit.text_b) if order == "ab" else (unit.text_b, unit.text_a)
    lines = []
    if unit.title:
        lines.append(f"Video title: {clip(unit.title, 300)}")
    lines.append(f"Time span: {unit.start:.0f} s to {unit.end:.0f} s")
    label = "Human commentary (reference)" if mode == "event" else "Reference transcript"
    for name, text in (
        (label, unit.reference),
        ("Commentary A", first),
        ("Commentary B", second),
    ):
        lines += ["", f"[{name}]", clip(text, max_chars) or EMPTY]
    lines += ["", "Which commentary is better? Reply A, B, or TIE."]
    system = SYSTEM_EVENT if mode == "event" else SYSTEM_WINDOW
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}]


_TOKEN = r"(?:commentary\s+|candidate\s+)?(A|B|TIE)"
_ANSWER = re.compile(rf"^(?:(?:final\s+)?(?:answer|verdict|winner)\s*[:\-]?\s*)?{_TOKEN}$", re.IGNORECASE)


def parse_answer(text: str) -> str | None:
    """Read "A", "B" or "TIE" (positions as shown) from an answer; None when it cannot be read.

    Accepted: the bare word (any case, with markdown or punctuation around it), "Commentary B",
    "Answer: A", "Verdict: TIE", alone or on the last non-empty line after some reasoning.
    """
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    for candidate in (" ".join(lines), lines[-1] if lines else ""):
        cleaned = re.sub(r"[*_`\"'.!()\[\]]", "", candidate).strip()
        match = _ANSWER.match(cleaned)
        if match:
            return match.group(1).upper()
    return None


def to_candidate(position: str | None, order: str) -> str | None:
    """Map a positional answer back to the candidate it names."""
    if position is None:
        return None
    if position == "TIE":
        return "tie"
    first_is_a = order == "ab"
    return "A" if (position == "A") == first_is_a else "B"


def cache_key(model: str, messages: list[dict], order: str, seed: int | None) -> str:
    payload = {"v": PROMPT_VERSION, "model": model, "messages": messages, "order": order, "temperature": 0}
    if seed is not None:
        payload["seed"] = seed
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class JudgeCache:
    """One small JSON file per judgement, written atomically so a killed run leaves no torn entry."""

    def __init__(self, root: Path):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StreamvlmError(f"--cache {root}: cannot create: {exc.strerror}") from None

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, record: dict) -> None:
        write_atomic(self._path(key), json.dumps(record, ensure_ascii=False))


class EndpointError(StreamvlmError):
    """The judge endpoint failed for good (retries spent, or an error retrying cannot fix)."""


class _Stopped(Exception):
    """An ask skipped because the run is stopping."""


class Judge:
    def __init__(self, config: JudgeConfig, mode: str = "window"):
        import openai  # heavy import, only when judging

        self.openai = openai
        self.config, self.mode = config, mode
        # the client's own retries are off: ours are counted, configurable and tested
        self.client = openai.OpenAI(
            base_url=config.base_url, api_key=config.api_key, max_retries=0, timeout=config.timeout_s
        )
        self.cache = JudgeCache(config.cache_dir)
        self.counts = RunCounts()
        self._stop = threading.Event()
        self._failure: EndpointError | None = None

    def judge_all(self, units: list[Unit]) -> list[UnitResult]:
        """Both orders of every unit, cached answers first, the rest with bounded concurrency."""
        results = {u.uid: UnitResult(u, {}) for u in units}
        pending: list[tuple[Unit, str, list[dict], str]] = []
        for unit in units:
            for order in ORDERS:
                messages = build_messages(unit, order, self.mode, self.config.max_chars)
                key = cache_key(self.config.model, messages, order, self.config.seed)
                record = self.cache.get(key)
                if record is not None and not (record["answer"] is None and self.config.retry_unparseable):
                    results[unit.uid].verdicts[order] = Verdict(
                        to_candidate(record["answer"], order), record["raw"], 0
                    )
                    self.counts.add(cached=1)
                else:
                    pending.append((unit, order, messages, key))
        if pending:
            self._run(pending, results)
        return list(results.values())

    def _run(self, pending, results: dict[str, UnitResult]) -> None:
        from tqdm import tqdm

        bar = tqdm(
            total=len(pending),
            desc="judging",
            unit="ask",
            disable=not self.config.progress,
            file=sys.stderr,
        )
        pool = ThreadPoolExecutor(max_workers=self.config.concurrency)
        try:
            futures = {pool.submit(self._ask, m, key): (unit, order) for unit, order, m, key in pending}
            not_done = set(futures)
            while not_done:
                done, not_done = wait(not_done, return_when=FIRST_EXCEPTION)
                for future in done:
                    if future.exception() is not None:  # the endpoint failed for good: stop the run
                        raise self._failure or future.exception()
                    unit, order = futures[future]
                    answer, raw, asks = future.result()
                    results[unit.uid].verdicts[order] = Verdict(to_candidate(answer, order), raw, asks)
                    bar.update(1)
        except EndpointError as exc:
            total = self.counts.cached + len(pending)
            raise EndpointError(
                f"{exc}; at least {self.counts.cached + bar.n} of {total} judgements are cached, "
                "re-run the same command to resume"
            ) from None
        finally:
            self._stop.set()  # queued asks return at once instead of calling a failing endpoint
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()

    def _ask(self, messages: list[dict], key: str) -> tuple[str | None, str, int]:
        """One judgement: ask, re-ask on an unreadable answer, cache the outcome either way."""
        if self._stop.is_set():
            raise _Stopped()
        conversation, asks = list(messages), 0
        for _ in range(1 + self.config.parse_retries):
            raw = self._complete(conversation)
            asks += 1
            answer = parse_answer(raw)
            if answer is not None:
                break
            conversation += [{"role": "assistant", "content": raw}, {"role": "user", "content": REMINDER}]
        self.cache.put(key, {"answer": answer, "raw": raw, "asks": asks, "model": self.config.model})
        return answer, raw, asks

    def _fail(self, message: str) -> "EndpointError":
        """Record the first failure and stop every other ask: a dead endpoint is not hammered."""
        error = EndpointError(message)
        with self.counts.lock:
            self._failure = self._failure or error
        self._stop.set()
        return error

    def _complete(self, messages: list[dict]) -> str:
        """One chat completion with exponential backoff on errors a retry can fix."""
        openai = self.openai
        extra = {"seed": self.config.seed} if self.config.seed is not None else {}
        for attempt in range(self.config.retries + 1):
            self.counts.add(requests=1)
            try:
                response = self.client.chat.completions.create(
                    model=self.config.model, messages=messages, temperature=0, **extra
                )
                choices = response.choices or []
                return (choices[0].message.content or "") if choices else ""
            except openai.APIStatusError as exc:
                if not (exc.status_code in RETRY_STATUS or exc.status_code >= 500):
                    raise self._fail(f"judge endpoint answered {exc.status_code}: {_message(exc)}") from None
                error: Exception = exc
            except openai.APIConnectionError as exc:  # includes timeouts
                error = exc
            except openai.APIError as exc:  # e.g. a reply that is not a chat completion
                raise self._fail(f"judge endpoint: {_describe(exc)}") from None
            if attempt == self.config.retries:
                tries = f"{attempt + 1} time" + ("s" if attempt else "")
                raise self._fail(f"judge endpoint failed {tries}, last: {_describe(error)}") from None
            self.counts.add(retried=1)
            # an Event wait, not a sleep: a failure elsewhere or Ctrl-C ends the wait at once
            if self._stop.wait(backoff(attempt, self.config.backoff_s, _retry_after(error))):
                raise _Stopped()
        raise AssertionError("unreachable")


def backoff(
    attempt: int, base_s: float, retry_after_s: float | None = None, rand: Callable = random.random
) -> float:
    """base * 2^attempt with up to 25 % jitter (never less), at least what Retry-After asks, capped."""
    delay = base_s * 2**attempt * (1 + 0.25 * rand())
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, MAX_BACKOFF_S)


def _retry_after(error: Exception) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    text = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(text or exc).split())[:300]


def _describe(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    if status is not None:
        return f"status {status}"
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"
