"""A small OpenAI-compatible chat-completions server on loopback for the judging tests.

It answers from the prompt alone, deterministically: with policy "overlap" it prefers the
commentary sharing more distinct words with the reference and says TIE when they share as many;
"first" always picks the commentary shown first (a maximally position-biased judge); "garbage"
never gives a readable verdict; "verbose" reasons first and ends with "Verdict: X".
Faults on request: the first `fail_first` calls, or every call from number `fail_from` on, answer
`fail_status`; the first `garbage_first` calls answer garbage; `delay_s` slows every answer.
It records every call (time, messages) and the most requests in flight at once, so tests can
count requests, inspect prompts and check the concurrency bound.
"""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECTION = re.compile(r"^\[(?P<name>[^\]]+)\]\n(?P<text>.*?)(?=\n\n\[|\n\nWhich|\Z)", re.DOTALL | re.MULTILINE)
EMPTY = "(no commentary)"


def sections(prompt: str) -> dict[str, str]:
    """{"reference", "A", "B"} texts of a judging prompt."""
    out = {}
    for m in SECTION.finditer(prompt):
        text = "" if m["text"].strip() == EMPTY else m["text"].strip()
        name = m["name"]
        key = name[-1] if name.startswith("Commentary ") else "reference"
        out[key] = text
    return out


def overlap_verdict(prompt: str) -> str:
    parts = sections(prompt)
    ref = set(parts.get("reference", "").lower().split())
    a = len(ref & set(parts.get("A", "").lower().split()))
    b = len(ref & set(parts.get("B", "").lower().split()))
    return "A" if a > b else "B" if b > a else "TIE"


class JudgeServer:
    def __init__(
        self,
        policy: str = "overlap",
        fail_first: int = 0,
        fail_status: int = 429,
        fail_from: int | None = None,
        garbage_first: int = 0,
        delay_s: float = 0.0,
    ):
        self.policy, self.fail_first, self.fail_status = policy, fail_first, fail_status
        self.fail_from, self.garbage_first, self.delay_s = fail_from, garbage_first, delay_s
        self.calls: list[dict] = []  # {"t": monotonic time, "messages": [...], "status": int}
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.calls)

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()

    def __enter__(self) -> "JudgeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, messages: list[dict]) -> tuple[int, str]:
        """(status, content) for one call; records it."""
        with self.lock:
            number = len(self.calls) + 1
            failing = number <= self.fail_first or (self.fail_from is not None and number >= self.fail_from)
            status = self.fail_status if failing else 200
            self.calls.append({"t": time.monotonic(), "messages": messages, "status": status})
            garbage = number <= self.garbage_first
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._reply(messages, status, garbage)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _reply(self, messages: list[dict], status: int, garbage: bool) -> tuple[int, str]:
        if self.delay_s:
            time.sleep(self.delay_s)
        if status != 200:
            return status, ""
        prompt = next(m["content"] for m in messages if m["role"] == "user")  # the first user turn
        if garbage or self.policy == "garbage":
            return 200, "Both commentaries have merits; it is hard to say."
        if self.policy == "first":
            return 200, "A"
        if self.policy == "verbose":
            return 200, f"Comparing both with the reference.\n\n**Verdict: {overlap_verdict(prompt)}**"
        return 200, overlap_verdict(prompt)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                status, content = server.answer(body["messages"])
                if status != 200:
                    return self._send(status, {"error": {"message": f"injected {status}", "type": "test"}})
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{server.count}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output clean
                pass

        return Handler
