"""`streamvlm eval judge` / `eval events` end to end: a real OpenAI-compatible server on loopback
(tests/judge_server.py) answered through the real `openai` client, never a patched one.

Constructed cases: each video is a row of 10 s reference windows; in a window planned "A" the
candidate A repeats reference words and B says something else, "B" the opposite, "tie" both say
the same. The loopback judge prefers the candidate sharing more words with the reference, so
every expected number is known exactly.
"""

import json
from pathlib import Path

import pytest
from judge_server import JudgeServer

from streamvlm.cli import main
from streamvlm.eval.judge import backoff, parse_answer
from streamvlm.eval.stats import cluster_bootstrap_ci
from streamvlm.eval.transcripts import Segment
from streamvlm.eval.units import windows

WINDOW_S = 10


def texts(video: str, i: int, plan: str) -> tuple[str, str, str]:
    """(reference, A, B) for window i of a video."""
    ref = f"{video}goal{i} {video}striker{i} {video}corner{i}"
    hit, miss = f"{video}goal{i} {video}striker{i}", f"crowd noise {i}"
    return ref, *{"A": (hit, miss), "B": (miss, hit), "tie": (hit, hit)}[plan]


def make_case(tmp_path: Path, plans: dict[str, list[str]]) -> dict[str, Path]:
    """Reference metadata, A as a directory of per-second files, B as a {video, items} JSONL."""
    ref_rows, b_rows = [], []
    a_dir = tmp_path / "a"
    a_dir.mkdir()
    for video, plan in plans.items():
        content, a_items, b_items = [], [], []
        for i, outcome in enumerate(plan):
            ref, a, b = texts(video, i, outcome)
            content.append([i * WINDOW_S, (i + 1) * WINDOW_S, ref])
            for s in range(i * WINDOW_S, (i + 1) * WINDOW_S):
                speak = s == i * WINDOW_S + 5
                a_items.append({"start": s, "end": s + 1, "text": a if speak else ""})
                b_items.append({"start": s, "end": s + 1, "text": b if speak else ""})
        ref_rows.append({"video": f"videos/{video}.mp4", "content": content, "title": f"match {video}"})
        (a_dir / f"{video}.jsonl").write_text("".join(json.dumps(it) + "\n" for it in a_items))
        b_rows.append({"video": f"{video}.mp4", "items": b_items})
    paths = {"reference": tmp_path / "meta.jsonl", "a": a_dir, "b": tmp_path / "b.jsonl"}
    paths["reference"].write_text("".join(json.dumps(r) + "\n" for r in ref_rows))
    paths["b"].write_text("".join(json.dumps(r) + "\n" for r in b_rows))
    return paths


def judge(server: JudgeServer, paths: dict, tmp_path: Path, *extra, out="report.json") -> int:
    argv = ["eval", "judge", "--reference", paths["reference"], "--a", paths["a"], "--b", paths["b"]]
    argv += ["--window", WINDOW_S, "--base-url", server.url, "--judge-model", "loopback-judge"]
    argv += ["--out", tmp_path / out, "--cache", tmp_path / "cache", "--backoff", "0.01", "--quiet", *extra]
    return main([str(a) for a in argv])


def report(tmp_path: Path, out="report.json") -> dict:
    return json.loads((tmp_path / out).read_text())


PLANS = {"v1": ["A", "A", "B", "tie"], "v2": ["A", "tie", "tie", "B"]}


def test_known_win_rate_ties_swap_consistency_and_both_orders(tmp_path):
    paths = make_case(tmp_path, PLANS)
    with JudgeServer() as server:
        assert judge(server, paths, tmp_path, "--concurrency", 4) == 0
        r = report(tmp_path)
        assert (r["a_wins"], r["b_wins"], r["ties"]) == (3, 2, 3)
        assert r["win_rate"] == pytest.approx((3 + 0.5 * 3) / 8)
        assert r["swap_consistency"] == 1.0 and r["first_position_rate"] == 0.5
        assert (r["n_windows"], r["n_videos"], r["unparseable"]) == (8, 2, 0)
        assert r["ci95"][0] <= r["win_rate"] <= r["ci95"][1]
        v1 = r["per_video"][0]
        assert (v1["video"], v1["windows"], v1["a_wins"], v1["b_wins"], v1["ties"]) == (
            "videos/v1.mp4",
            4,
            2,
            1,
            1,
        )
        assert v1["win_rate"] == pytest.approx(2.5 / 4)
        assert r["lengths"]["mean_words"]["reference"] == 3.0
        assert r["judge"]["requests_sent"] == 16 and server.count == 16
        # both orders for every window: A's words once under "Commentary A" and once under "Commentary B"
        prompts = [c["messages"][1]["content"] for c in server.calls]
        for video, plan in PLANS.items():
            for i, outcome in enumerate(plan):
                a_text = texts(video, i, outcome)[1]
                shown = [p for p in prompts if f"{video}goal{i} " in p and f"Time span: {i * 10} s" in p]
                assert len(shown) == 2
                firsts = sorted(f"[Commentary A]\n{a_text}\n" in p for p in shown)
                assert firsts == ([False, True] if outcome != "tie" else [True, True])
    for suffix in (".md", ".png", ".judgements.jsonl"):
        assert (tmp_path / f"report{suffix}").stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / "report.judgements.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all({"ab", "ba"} <= row.keys() for row in rows)
    assert "A's win rate 56.2 %" in (tmp_path / "report.md").read_text()


def test_position_biased_judge_gives_zero_swap_consistency(tmp_path):
    paths = make_case(tmp_path, PLANS)
    with JudgeServer(policy="first") as server:
        assert judge(server, paths, tmp_path) == 0
    r = report(tmp_path)
    assert r["swap_consistency"] == 0.0 and r["win_rate"] == 0.5 and r["ties"] == 8
    assert r["first_position_rate"] == 1.0 and r["per_judgement_win_rate"] == 0.5


def test_unreadable_answers_are_asked_again_then_counted(tmp_path):
    paths = make_case(tmp_path, PLANS)
    with JudgeServer(garbage_first=2) as server:  # the first judgement needs two reminders
        assert judge(server, paths, tmp_path, "--concurrency", 1) == 0
        assert server.count == 16 + 2 and report(tmp_path)["unparseable"] == 0
        reminder = server.calls[1]["messages"]
        assert [m["role"] for m in reminder] == ["system", "user", "assistant", "user"]
    with JudgeServer(policy="garbage") as server:
        assert judge(server, paths, tmp_path / "g", "--parse-retries", 1) == 0
        r = report(tmp_path / "g")
        assert server.count == 16 * 2
        assert (r["unparseable"], r["units_unparseable"], r["n_windows"], r["win_rate"]) == (16, 8, 0, None)
        assert all(row["unparseable"] == 4 for row in r["per_video"])
        server.policy, server.calls = "overlap", []
        assert judge(server, paths, tmp_path / "g") == 0  # cached unreadable answers are not re-asked ...
        assert server.count == 0
        assert judge(server, paths, tmp_path / "g", "--retry-unparseable") == 0  # ... unless asked to
        assert server.count == 16 and report(tmp_path / "g")["win_rate"] == pytest.approx(4.5 / 8)


def test_verbose_answers_with_a_final_verdict_are_read():
    for text, want in [
        ("A", "A"),
        (" b. ", "B"),
        ("**TIE**", "TIE"),
        ("Commentary B", "B"),
        ("Answer: A", "A"),
        ("Some reasoning.\n\nVerdict: TIE", "TIE"),
        ("A or B", None),
        ("Commentary A is better than B", None),
        ("", None),
    ]:
        assert parse_answer(text) == want, text


def test_rate_limits_and_server_errors_are_retried_with_backoff(tmp_path):
    paths = make_case(tmp_path, {"v1": ["A", "B"]})
    with JudgeServer(fail_first=3, fail_status=429) as server:
        assert judge(server, paths, tmp_path, "--concurrency", 1, "--backoff", "0.05") == 0
        times = [c["t"] for c in server.calls[:4]]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert all(gap >= 0.05 * 2**i for i, gap in enumerate(gaps)), gaps
        assert server.count == 4 + 3
        assert report(tmp_path)["judge"]["requests_retried"] == 3 and report(tmp_path)["win_rate"] == 0.5
    with JudgeServer(fail_first=2, fail_status=503) as server:
        assert judge(server, paths, tmp_path / "s", "--concurrency", 1) == 0
        assert server.count == 4 + 2
    assert backoff(3, 1.0, rand=lambda: 0.0) == 8.0 and backoff(0, 1.0, 5.0, rand=lambda: 0.0) == 5.0


def test_endpoint_that_keeps_failing_stops_with_one_line(tmp_path, capsys):
    paths = make_case(tmp_path, {"v1": ["A"]})
    with JudgeServer(fail_first=100, fail_status=500) as server:
        assert judge(server, paths, tmp_path, "--retries", 2, "--concurrency", 1) == 2
        assert server.count == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("streamvlm: error: judge endpoint failed 3 times") and "re-run" in err[-1]


def test_concurrency_is_bounded_and_slow_answers_time_out(tmp_path, capsys):
    paths = make_case(tmp_path, PLANS)
    with JudgeServer(delay_s=0.05) as server:
        assert judge(server, paths, tmp_path, "--concurrency", 3) == 0
        assert 1 < server.max_in_flight <= 3 and server.count == 16
    (tmp_path / "t").mkdir()
    with JudgeServer(delay_s=1.0) as server:
        argv = ("--concurrency", 1, "--timeout", 0.2, "--retries", 1)
        assert judge(server, make_case(tmp_path / "t", {"v1": ["A"]}), tmp_path / "t", *argv) == 2
        assert server.count == 2
    assert "failed 2 times, last: APITimeoutError" in capsys.readouterr().err


def test_cache_resumes_a_stopped_run_and_a_rerun_sends_nothing(tmp_path):
    paths = make_case(tmp_path, PLANS)
    with JudgeServer() as server:
        assert judge(server, paths, tmp_path, "--max-videos", 1) == 0  # part of the run
        assert server.count == 8
        server.reset()
        server.fail_from = 4  # the endpoint dies after three more answers
        assert judge(server, paths, tmp_path, "--concurrency", 1, "--retries", 0) == 2
        server.fail_from = None
        server.reset()
        assert judge(server, paths, tmp_path, "--concurrency", 2) == 0  # resumes: 16 - 8 - 3 left
        assert server.count == 5
        first = report(tmp_path)
        server.reset()
        assert judge(server, paths, tmp_path) == 0
        assert server.count == 0
        again = report(tmp_path)
    assert again["judge"]["cached"] == 16 and again["judge"]["requests_sent"] == 0
    for key in ("win_rate", "ci95", "ties", "swap_consistency", "per_video"):
        assert again[key] == first[key]
    assert not list((tmp_path / "cache").rglob(".tmp-*"))  # writes are atomic: no torn files left


def test_cluster_bootstrap_is_over_videos():
    # contains the point estimate
    scores, ns = [3, 5, 2, 8, 6], [10, 10, 10, 10, 10]
    low, high = cluster_bootstrap_ci(scores, ns, seed=1)
    assert low <= sum(scores) / sum(ns) <= high
    # shrinks with more videos of the same kind
    few = cluster_bootstrap_ci([2, 8, 4, 6], [10] * 4)
    many = cluster_bootstrap_ci([2, 8, 4, 6] * 10, [10] * 40)
    assert many[1] - many[0] < 0.6 * (few[1] - few[0])
    # clusters, not windows: two videos of 100 windows each, one all A and one all B, say little
    low, high = cluster_bootstrap_ci([100, 0], [100, 100])
    assert (low, high) == (0.0, 1.0)
    # deterministic for a seed; undefined for one video
    assert cluster_bootstrap_ci(scores, ns, seed=3) == cluster_bootstrap_ci(scores, ns, seed=3)
    assert cluster_bootstrap_ci([3], [10]) is None


def test_window_rule():
    segs = [
        Segment(0, 4, "a"),
        Segment(5, 9, "b"),
        Segment(12, 15, "c"),
        Segment(40, 45, "d"),
        Segment(46, 60, ""),
    ]
    assert windows(segs, 10) == [(0, 10, "a b"), (12, 22, "c"), (40, 45, "d")]
    assert windows(segs, 0) == [(0, 45, "a b c d")]
    assert windows([Segment(0, 30, "long")], 10) == [(0, 30, "long")]


def test_missing_videos_and_uncovered_windows_are_reported(tmp_path, capsys):
    paths = make_case(tmp_path, {"v1": ["A", "B"], "v2": ["A", "A"], "v3": ["B", "B"]})
    (paths["a"] / "v2.jsonl").unlink()
    lines = (paths["a"] / "v3.jsonl").read_text().splitlines()
    (paths["a"] / "v3.jsonl").write_text("\n".join(lines[:10]) + "\n")  # A stopped after 10 s of v3
    with JudgeServer() as server:
        assert judge(server, paths, tmp_path) == 0
    r = report(tmp_path)
    ex = r["excluded"]
    assert ex["videos_missing_in_a"] == ["videos/v2.mp4"] and ex["videos_missing_in_b"] == []
    assert (ex["units_in_missing_videos"], ex["not_covered_by_a"], ex["not_covered_by_b"]) == (2, 1, 0)
    assert (r["n_total"], r["n_windows"], r["n_videos"]) == (6, 3, 2)
    assert [row["windows"] for row in r["per_video"]] == [2, 0, 1]
    assert [row["missing_in"] for row in r["per_video"]] == [[], ["A"], []]
    assert "1 video missing in A (excluded): videos/v2.mp4" in capsys.readouterr().err
    assert "| videos/v2.mp4 | 0 | 0 | 0 | 0 | 0 | missing in A |" in (tmp_path / "report.md").read_text()


def test_single_per_second_file_for_a_one_video_reference(tmp_path):
    paths = make_case(tmp_path, {"v1": ["A", "A", "tie"]})
    paths["a"] = paths["a"] / "v1.jsonl"
    with JudgeServer() as server:
        assert judge(server, paths, tmp_path) == 0
    assert report(tmp_path)["win_rate"] == pytest.approx(2.5 / 3)


@pytest.mark.parametrize(
    "break_it, message",
    [
        (
            lambda p: p["reference"].write_text('{"video": "x.mp4", "content": [[0, 1, "a"]]}\n{oops\n'),
            "meta.jsonl:2",
        ),
        (lambda p: p["reference"].write_text('{"video": "x.mp4"}\n'), "'content' must be a list"),
        (lambda p: p["b"].write_text('{"video": "v1.mp4", "items": [{"end": "late"}]}\n'), "b.jsonl:1"),
        (lambda p: p.update(a=p["a"] / "v1.jsonl"), "the reference holds 2 videos"),
        (lambda p: p.update(b=p["b"].with_name("nope.jsonl")), "nope.jsonl: no such file"),
    ],
)
def test_input_errors_exit_2_with_one_line(tmp_path, capsys, break_it, message):
    paths = make_case(tmp_path, PLANS)
    break_it(paths)
    with JudgeServer() as server:
        assert judge(server, paths, tmp_path) == 2
        assert server.count == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("streamvlm: error: ") and message in err[0], err


def test_remote_endpoint_needs_a_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    paths = make_case(tmp_path, PLANS)
    argv = ["eval", "judge", "--reference", paths["reference"], "--a", paths["a"], "--b", paths["b"]]
    argv += ["--base-url", "https://judge.example.com/v1", "--judge-model", "m", "--out", tmp_path / "r.json"]
    assert main([str(a) for a in argv]) == 2
    assert "OPENAI_API_KEY is not set" in capsys.readouterr().err


def test_events_end_to_end(tmp_path):
    """LiveSports-3K-CC rows (event_asr as a JSON string) against per-event predictions."""
    plans = {"vidA": ["A", "B", "tie"], "vidB": ["A", "A"]}
    ref_rows, preds_a, preds_b = [], [], []
    for video, plan in plans.items():
        for i, outcome in enumerate(plan):
            ref, a, b = texts(video, i, outcome)
            begin, end = 10.5 * i, 10.5 * i + 8.25
            asr = json.dumps([[begin, end, ref]])
            ref_rows.append(
                {
                    "video_id": video,
                    "event_id": i,
                    "begin": begin,
                    "end": end,
                    "event_asr": asr,
                    "video": f"{video}.mp4",
                }
            )
            preds_a.append({"video_id": video, "event_id": i, "begin": begin, "end": end, "pred": a})
            preds_b.append({"video_id": video, "event_id": i, "begin": begin, "end": end, "pred": b})
    preds_a.pop()  # A has no prediction for the last event of vidB
    files = {}
    for name, rows in (("events", ref_rows), ("a", preds_a), ("b", preds_b)):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))

    def events(server, a, out):
        argv = ["eval", "events", "--reference", files["events"], "--a", a, "--b", files["b"], "--quiet"]
        argv += ["--base-url", server.url, "--judge-model", "j", "--out", tmp_path / out, "--backoff", "0.01"]
        return main([str(x) for x in argv])

    with JudgeServer() as server:
        assert events(server, files["a"], "ev.json") == 0
        assert server.count == 8
        assert "[Human commentary (reference)]" in server.calls[0]["messages"][1]["content"]
    r = json.loads((tmp_path / "ev.json").read_text())
    assert (r["unit"], r["n_windows"], r["n_videos"], r["n_total"]) == ("event", 4, 2, 5)
    assert (r["a_wins"], r["b_wins"], r["ties"]) == (2, 1, 1) and r["win_rate"] == pytest.approx(2.5 / 4)
    assert r["excluded"]["events_missing_in_a"] == 1 and r["swap_consistency"] == 1.0

    # A as `streamvlm run` per-second files: its text for an event is the items ending inside it
    a_dir = tmp_path / "a_runs"
    a_dir.mkdir()
    for video, plan in plans.items():
        said = {int(10.5 * i) + 3: texts(video, i, outcome)[1] for i, outcome in enumerate(plan)}
        items = [
            {"start": s, "end": s + 1, "text": said.get(s, "")} for s in range(int(10.5 * len(plan)) + 1)
        ]
        (a_dir / f"{video}.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    with JudgeServer() as server:
        assert events(server, a_dir, "ev2.json") == 0
    r = json.loads((tmp_path / "ev2.json").read_text())
    assert (r["n_windows"], r["a_wins"], r["b_wins"], r["ties"]) == (5, 3, 1, 1)


def test_report_ci_resamples_videos_not_windows(tmp_path):
    paths = make_case(tmp_path, {"v1": ["A"] * 6, "v2": ["B"] * 6})
    with JudgeServer() as server:
        assert judge(server, paths, tmp_path, "--resamples", 500) == 0
    r = report(tmp_path)
    assert r["win_rate"] == 0.5 and r["ci95"] == [0.0, 1.0]  # a window bootstrap would say about ±0.28
