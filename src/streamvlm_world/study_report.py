"""The policy study's markdown tables and plot (accuracy vs stream time, one line per policy)."""

from pathlib import Path

from streamvlm.eval.report import save_figure


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _min(seconds: float) -> str:
    return f"{seconds / 60:.3g}"


def markdown(r: dict) -> str:
    lines = [f"# Long-stream policy study: {r['model']}", ""]
    if r["model_is_random"]:
        lines += [
            "**Random weights** (no metrics.json beside the model): the numbers only check the study.",
            "",
        ]
    cfg = r["stream_config"]
    lines += [
        f"Held-out world matches, scored per {_min(r['bucket_s'])} min bucket against the exact truth. "
        f"Streaming defaults: vision window {cfg['vision_window']} s, {cfg['text_rounds']} text rounds, "
        f"text memory {cfg['text_sink']} + {cfg['text_window']} tokens, {cfg['max_new_tokens']} tokens per "
        f"second at most, {'greedy' if cfg['greedy'] else 'sampled'}. No-memory: text memory 0 + 0; "
        f"append: no re-indexing of positions. {r['full_rule'].capitalize()}. Counted score: the score "
        "accuracy if the model's own point lines were counted exactly from 0-0 (the ceiling its point "
        "calls leave: one missed or wrong-team point spoils every later count). Stepped score: how often "
        "an announced score follows from the model's own previous announcement (a serve repeats it, a "
        "point adds one; the carrying alone, free of its history).",
        "",
    ]
    for length in r["lengths"]:
        lines += [
            f"## {_min(length['seconds'])} min (world seed {length['seed']})",
            "",
            "| policy | point F1 | serve F1 | return F1 | score acc. | counted / stepped score "
            "| exact | silence "
            "| last bucket: point F1 / score acc. | cache tokens (median / max) | memory tokens (max) "
            "| max position | ms per stream s (median / p99) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, cell in length["policies"].items():
            o = cell["overall"]
            last = [b for b in cell["buckets"] if not b["skipped"]][-1]
            label = name if cell["status"] == "done" else f"{name} (first {_min(cell['streamed_s'])} min)"
            lines.append(
                f"| {label} | {_f(o['point_f1'])} | {_f(o['serve_f1'])} | {_f(o['return_f1'])} | "
                f"{_pct(o['score_accuracy'])} | {_pct(o.get('counted_score_accuracy'))} / "
                f"{_pct(o.get('stepped_score_accuracy'))} | "
                f"{_pct(o['exact'])} | {_pct(o['silence_accuracy'])} | "
                f"{_f(last['point_f1'])} / {_pct(last['score_accuracy'])} | {o['cache_tokens_median']:g} / "
                f"{o['cache_tokens_max']} | {o['memory_tokens_max']} | {o['max_position']} | "
                f"{o['step_ms_median']:.0f} / {o['step_ms_p99']:.0f} |"
            )
        buckets = next(iter(length["policies"].values()))["buckets"]
        lines += [
            "",
            "Point F1 / score accuracy per bucket (minutes of stream):",
            "",
            "| policy | " + " | ".join(f"{_min(b['start_s'])}-{_min(b['end_s'])}" for b in buckets) + " |",
            "|---|" + "---|" * len(buckets),
        ]
        for name, cell in length["policies"].items():
            cells = [
                "skipped" if b["skipped"] else f"{_f(b['point_f1'])} / {_pct(b['score_accuracy'])}"
                for b in cell["buckets"]
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if r.get("attention"):
        lines += attention_markdown(r["attention"])
    if r.get("command"):
        lines += [f"Command: `{r['command']}`", ""]
    return "\n".join(lines)


def attention_markdown(a: dict) -> list[str]:
    groups = a["groups"]
    lines = [
        f"## Attention mass of the current round's prompt tokens (world seed {a['seed']})",
        "",
        "Share per key group, mean over heads and query tokens: streamed cache / full attention over the "
        "same tokens (a shadow full-attention session replaying the streamed replies).",
        "",
    ]
    for p in a["probes"]:
        lines += [
            f"Second {p['t']}: {p['streaming_keys']} keys streamed, {p['full_keys']} with full attention.",
            "",
            "| layer | " + " | ".join(g.replace("_", " ") for g in groups) + " |",
            "|---|" + "---|" * len(groups),
        ]
        for layer, (s, f) in enumerate(zip(p["streaming"], p["full"], strict=True)):
            lines.append(f"| {layer} | " + " | ".join(f"{s[g]:.3f} / {f[g]:.3f}" for g in groups) + " |")
        lines.append("")
    return lines


def plot(r: dict, path: Path) -> None:
    """Point F1 and score accuracy per bucket vs stream time; one panel column per stream length."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lengths = r["lengths"]
    fig = Figure(figsize=(4.5 * len(lengths), 6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(lengths), squeeze=False)
    for col, length in enumerate(lengths):
        for row, (metric, label) in enumerate(
            (("point_f1", "point F1"), ("score_accuracy", "score accuracy"))
        ):
            ax = axes[row][col]
            for i, (name, cell) in enumerate(length["policies"].items()):
                done = [b for b in cell["buckets"] if not b["skipped"]]
                xs = [(b["start_s"] + b["end_s"]) / 120 for b in done]
                ys = [float("nan") if b[metric] is None else b[metric] for b in done]
                ax.plot(xs, ys, marker="o", markersize=3, label=name, color=f"C{i}")
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlim(0, length["seconds"] / 60)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"{_min(length['seconds'])} min match (seed {length['seed']})", fontsize=10)
            else:
                ax.set_xlabel("stream time, minutes (bucket middle)")
    axes[0][0].legend(fontsize=8, loc="lower left")
    save_figure(fig, path)
