"""Writing a judging report: the JSON (`--out`), a readable markdown summary beside it (also
printed), a plot of per-video win rates with the overall CI, and every judgement as JSONL so a
number can be traced back to the judge's words.
"""

import json
from pathlib import Path

from ..errors import StreamvlmError
from .judge import UnitResult
from .transcripts import write_atomic


def companion_paths(out: str | Path) -> dict[str, Path]:
    out = Path(out)
    stem = out.with_suffix("")
    return {
        "json": out,
        "markdown": stem.with_suffix(".md"),
        "plot": stem.with_suffix(".png"),
        "judgements": Path(f"{stem}.judgements.jsonl"),
    }


def judgements_jsonl(results: list[UnitResult]) -> str:
    lines = []
    for r in results:
        u = r.unit
        row = {
            "video": u.video,
            "id": u.uid,
            "start": u.start,
            "end": u.end,
            "a": u.text_a,
            "b": u.text_b,
            "reference": u.reference,
        }
        for order, v in r.verdicts.items():
            row[order] = {"winner": v.winner, "raw": v.raw}
        lines.append(json.dumps(row, ensure_ascii=False))
    return "\n".join(lines) + ("\n" if lines else "")


def write_report(report: dict, results: list[UnitResult], out: str | Path) -> dict[str, Path]:
    paths = companion_paths(out)
    report["files"] = {k: str(v) for k, v in paths.items()}
    write_atomic(paths["judgements"], judgements_jsonl(results))
    write_atomic(paths["markdown"], markdown(report))
    plot(report, paths["plot"])
    write_atomic(paths["json"], json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return paths


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def markdown(r: dict, max_rows: int = 50) -> str:
    unit = r["unit"]
    ci = r["ci95"]
    ci_text = f"[{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "n/a (needs two or more videos)"
    ex = r["excluded"]
    lengths = r["lengths"]
    lines = [
        f"# Pairwise judging: {r['inputs']['a']} (A) vs {r['inputs']['b']} (B)",
        "",
        f"**A's win rate {_pct(r['win_rate'])}**, 95 % CI {ci_text} ({r['ci_method']}).",
        "",
        "| | |",
        "|---|---|",
        f"| {unit}s judged | {r['n_windows']} of {r['n_total']} |",
        f"| videos | {r['n_videos']} |",
        f"| A wins / B wins / ties | {r['a_wins']} / {r['b_wins']} / {r['ties']} |",
        f"| swap consistency (both orders agree) | {_pct(r['swap_consistency'])} |",
        f"| first-shown candidate chosen | {_pct(r['first_position_rate'])} |",
        f"| per-judgement win rate | {_pct(r['per_judgement_win_rate'])} |",
        f"| unparseable judgements ({unit}s left out) | {r['unparseable']} ({r['units_unparseable']}) |",
        f"| videos missing in A / B | {len(ex['videos_missing_in_a'])} / {len(ex['videos_missing_in_b'])} |",
        f"| {unit}s in missing videos | {ex['units_in_missing_videos']} |",
        f"| {unit}s not covered by A / B | {ex['not_covered_by_a']} / {ex['not_covered_by_b']} |",
        f"| events without a prediction in A / B | {ex['events_missing_in_a']} / "
        f"{ex['events_missing_in_b']} |",
        f"| judge | {r['judge']['model']} at {r['judge']['base_url']} |",
        f"| requests sent / cached judgements | {r['judge']['requests_sent']} / {r['judge']['cached']} |",
        "",
        "## Length",
        "",
        f"Mean words per {unit}: A {_num(lengths['mean_words']['a'])}, B {_num(lengths['mean_words']['b'])}, "
        f"reference {_num(lengths['mean_words']['reference'])}.",
        f"A's win rate when A is longer: {_pct(lengths['win_rate_by_longer']['a_longer'])} "
        f"({lengths['n_by_longer']['a_longer']} {unit}s); when B is longer: "
        f"{_pct(lengths['win_rate_by_longer']['b_longer'])} ({lengths['n_by_longer']['b_longer']}); "
        f"same length: {_pct(lengths['win_rate_by_longer']['same_length'])} "
        f"({lengths['n_by_longer']['same_length']}). The longer candidate won "
        f"{_pct(lengths['longer_wins'])} of decisive {unit}s of unequal length.",
        "",
        "## Per video",
        "",
        f"| video | {unit}s | A wins | B wins | ties | unparseable | A's win rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["per_video"][:max_rows]:
        rate = f"missing in {' and '.join(row['missing_in'])}" if row["missing_in"] else _pct(row["win_rate"])
        lines.append(
            f"| {row['video']} | {row['windows']} | {row['a_wins']} | {row['b_wins']} | {row['ties']} "
            f"| {row['unparseable']} | {rate} |"
        )
    if len(r["per_video"]) > max_rows:
        lines.append(f"| ... {len(r['per_video']) - max_rows} more in the JSON | | | | | | |")
    lines += ["", f"Command: `{r['command']}`", ""]
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def plot(r: dict, path: Path) -> None:
    """Per-video win rates (sorted) with the overall win rate and its CI as a band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = sorted((row for row in r["per_video"] if row["win_rate"] is not None), key=lambda x: x["win_rate"])
    fig = Figure(figsize=(8, max(2.5, min(12, 0.3 * len(rows) + 1.5))))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ys = range(len(rows))
    ax.scatter([row["win_rate"] for row in rows], ys, s=[10 + row["windows"] for row in rows], zorder=3)
    if r["win_rate"] is not None:
        ax.axvline(r["win_rate"], color="C1", label=f"overall {_pct(r['win_rate'])}")
    if r["ci95"]:
        ax.axvspan(*r["ci95"], color="C1", alpha=0.2, label="95 % CI (videos resampled)")
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(-0.02, 1.02)
    if len(rows) <= 40:
        ax.set_yticks(list(ys), [str(row["video"])[-30:] for row in rows], fontsize=7)
    else:
        ax.set_yticks([])
    ax.set_xlabel("A's win rate (dot size: units judged)")
    ax.set_title(f"A vs B, {r['n_windows']} {r['unit']}s in {r['n_videos']} videos", fontsize=10)
    if r["win_rate"] is not None:
        ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """Lay out and write a matplotlib figure, or a one-line error naming the file."""
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise StreamvlmError(f"cannot write {path}: {exc.strerror}") from None
