"""`streamvlm bench` on the tiny shape: report contract, plot, errors (timings are not asserted)."""

import json

from streamvlm.bench.report import summarize_policy
from streamvlm.cli import main


def test_bench_report_contract(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "--shape",
                "tiny",
                "--minutes",
                "0.5",
                "--policies",
                "streaming,full,recompute",
                "--new-tokens",
                "3",
                "--vision-window",
                "4",
                "--text-rounds",
                "4",
                "--text-sink",
                "8",
                "--text-window",
                "24",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert set(report["series"]) == {"streaming", "full", "recompute"}
    assert (report["config"]["text_sink"], report["config"]["text_window"]) == (8, 24)
    for policy, rows in report["series"].items():
        assert len(rows) == 30
        assert {"t", "step_ms", "cache_tokens", "max_position", "rss_mb", "evict_ms", "kv_bytes"} <= set(
            rows[0]
        )
        summary = report["summary"][policy]
        assert summary["ms_per_stream_second_p99"] >= summary["ms_per_stream_second_median"] > 0
    full, streaming = report["series"]["full"], report["series"]["streaming"]
    assert full[-1]["cache_tokens"] > 2 * streaming[-1]["cache_tokens"]  # full grows, streaming is bounded
    assert "recompute_over_streaming_median" in report["summary"]["ratios"]
    assert (tmp_path / "bench.png").stat().st_size > 5000
    table = capsys.readouterr().out
    assert "| streaming | 30 |" in table


def test_flatness_and_growth_are_computed_per_minute():
    rows = [
        {
            "t": t,
            "step_ms": 10.0 + (t >= 120) * 1.0,
            "rss_mb": 100.0 + (t >= 300) * 2.0,
            "evict_ms": 0.1,
            "prefill_ms": 1,
            "decode_ms": 8,
            "cache_tokens": 5,
            "max_position": 9,
            "kv_bytes": 1,
            "peak_device_mb": None,
        }
        for t in range(600)
    ]
    s = summarize_policy(rows)
    assert abs(s["flat_ratio_last_vs_minute_2"] - 1.1) < 1e-9
    assert abs(s["rss_growth_minute_5_to_last"] - 0.02) < 1e-9  # minute 5 = [240, 300) s: 100 MB -> 102 MB
    assert s["ms_per_stream_second_by_minute"][0] == 10.0 and len(s["ms_per_stream_second_by_minute"]) == 10


def test_bench_rejects_bad_options(capsys):
    assert main(["bench", "--policies", "streaming,magic"]) == 2
    assert "unknown magic" in capsys.readouterr().err
    assert main(["bench", "--device", "cuda"]) == 2
