"""Summaries, target checks, a table and a plot for `streamvlm bench` reports."""

from pathlib import Path

import numpy as np


def _median(values) -> float | None:
    return float(np.median(values)) if len(values) else None


def _minute(rows: list[dict], minute: int) -> list[dict]:
    """Rows of minute `minute` (1-based: minute 1 is [0, 60) s)."""
    return [r for r in rows if (minute - 1) * 60 <= r["t"] < minute * 60]


def summarize_policy(rows: list[dict]) -> dict:
    if not rows:
        return {"seconds": 0}
    step = np.array([r["step_ms"] for r in rows])
    minutes = int(rows[-1]["t"] // 60) + 1
    per_minute = [_median([r["step_ms"] for r in _minute(rows, m)]) for m in range(1, minutes + 1)]
    last = minutes if len(_minute(rows, minutes)) >= 30 else minutes - 1  # a full-ish last minute
    flat = None
    if last >= 3 and per_minute[1]:
        flat = per_minute[last - 1] / per_minute[1]
    rss5 = _median([r["rss_mb"] for r in _minute(rows, 5)])
    rss_last = _median([r["rss_mb"] for r in _minute(rows, last)]) if last >= 1 else None
    return {
        "seconds": len(rows),
        "ms_per_stream_second_median": float(np.median(step)),
        "ms_per_stream_second_p99": float(np.percentile(step, 99)),
        "ms_per_stream_second_mean": float(step.mean()),
        "ms_per_stream_second_by_minute": per_minute,
        "real_time_factor": 1000.0 / float(np.median(step)),
        "prefill_ms_median": _median([r["prefill_ms"] for r in rows]),
        "decode_ms_median": _median([r["decode_ms"] for r in rows]),
        "evict_ms_median": _median([r["evict_ms"] for r in rows]),
        "bookkeeping_share_median": _median([r["evict_ms"] / r["step_ms"] for r in rows]),
        "cache_tokens_max": max(r["cache_tokens"] for r in rows),
        "cache_tokens_last": rows[-1]["cache_tokens"],
        "max_position_max": max(r["max_position"] for r in rows),
        "kv_mb_last": rows[-1]["kv_bytes"] / 2**20,
        "rss_mb_last": rows[-1]["rss_mb"],
        "flat_ratio_last_vs_minute_2": flat,
        "rss_growth_minute_5_to_last": (rss_last / rss5 - 1) if rss5 and rss_last and last > 5 else None,
        "peak_device_mb": max((r["peak_device_mb"] or 0 for r in rows), default=None) or None,
    }


def summarize(series: dict[str, list[dict]], config=None) -> dict:
    summary = {policy: summarize_policy(rows) for policy, rows in series.items()}
    streaming = summary.get("streaming", {})
    ratios = {}
    if streaming.get("seconds"):
        for other in ("recompute", "full", "sliding"):
            if summary.get(other, {}).get("seconds"):
                ratios[f"{other}_over_streaming_median"] = (
                    summary[other]["ms_per_stream_second_median"] / streaming["ms_per_stream_second_median"]
                )
    summary["ratios"] = ratios
    summary["targets"] = targets(summary)
    return summary


def targets(summary: dict) -> dict:
    """The issue's ratio targets, where this run measured what they need (None: not measured)."""
    s = summary.get("streaming", {})
    ratios = summary.get("ratios", {})
    flat, rss = s.get("flat_ratio_last_vs_minute_2"), s.get("rss_growth_minute_5_to_last")
    recompute = ratios.get("recompute_over_streaming_median")
    share, rtf = s.get("bookkeeping_share_median"), s.get("real_time_factor")
    return {
        "flat_step_time (<= 1.10)": None if flat is None else flat <= 1.10,
        "flat_rss (growth <= 5 %)": None if rss is None else rss <= 0.05,
        "faster_than_recompute (>= 5x)": None if recompute is None else recompute >= 5.0,
        "bookkeeping (<= 5 % of step)": None if share is None else share <= 0.05,
        "real_time (>= 10x)": None if rtf is None else rtf >= 10.0,
    }


def table(report: dict) -> str:
    rows = [
        "| policy | seconds | median ms/s | p99 ms/s | real-time × | prefill | decode | evict | cache tok | "
        "max pos | KV MB | RSS MB |",
        "|" + "---|" * 12,
    ]
    for policy, s in report["summary"].items():
        if policy in ("ratios", "targets") or not s.get("seconds"):
            continue
        rows.append(
            f"| {policy} | {s['seconds']} | {s['ms_per_stream_second_median']:.1f} | "
            f"{s['ms_per_stream_second_p99']:.1f} | {s['real_time_factor']:.1f} | "
            f"{s['prefill_ms_median']:.1f} | "
            f"{s['decode_ms_median']:.1f} | {s['evict_ms_median']:.2f} | {s['cache_tokens_max']} | "
            f"{s['max_position_max']} | {s['kv_mb_last']:.1f} | {s['rss_mb_last']:.0f} |"
        )
    lines = ["\n".join(rows), ""]
    for key, value in report["summary"]["ratios"].items():
        lines.append(f"- {key}: {value:.2f}")
    s = report["summary"].get("streaming", {})
    for key in ("flat_ratio_last_vs_minute_2", "rss_growth_minute_5_to_last", "bookkeeping_share_median"):
        if s.get(key) is not None:
            lines.append(f"- streaming {key}: {s[key]:.3f}")
    for key, ok in report["summary"]["targets"].items():
        lines.append(f"- target {key}: {'not measured' if ok is None else ('PASS' if ok else 'FAIL')}")
    for policy, why in report.get("stopped", {}).items():
        if why:
            lines.append(f"- {policy} stopped: {why}")
    return "\n".join(lines)


def plot(report: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for policy, rows in report["series"].items():
        if not rows:
            continue
        t = np.array([r["t"] for r in rows]) / 60
        ax_t.plot(t, [r["step_ms"] for r in rows], lw=0.8, label=policy)
        ax_m.plot(t, [r["kv_bytes"] / 2**20 for r in rows], lw=1.2, label=policy)
    ax_t.axhline(1000, color="grey", ls="--", lw=0.8, label="real time")
    ax_t.set(xlabel="stream time (min)", ylabel="ms per second of stream", yscale="log", title="latency")
    ax_m.set(xlabel="stream time (min)", ylabel="KV cache (MB)", title="memory")
    for ax in (ax_t, ax_m):
        ax.grid(alpha=0.3)
        ax.legend()
    cfg = report["config"]
    fig.suptitle(
        f"{cfg.get('model') or cfg.get('shape')} · {cfg['fps']} fps · {cfg['size'][0]}x{cfg['size'][1]} · "
        f"{report['machine']['device']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
