"""From verdicts to numbers: win rate with ties, position-swap consistency, a cluster-bootstrap
confidence interval over videos, per-video table, and candidate length statistics.

Rules:
- Each judgement scores A with 1 (A better), 0.5 (tie) or 0 (B better). A unit (window or event)
  is won by the candidate its two judgements favour on balance: A+A and A+tie go to A, a split
  (A+B) and tie+tie are a tie. `win_rate` = (A wins + 0.5 ties) / units, A's.
- A unit with an unparseable judgement is left out of every rate and counted (`unparseable` counts
  judgements, `units_unparseable` units).
- `swap_consistency`: share of units whose two orders gave the same verdict (tie = tie too).
- The CI resamples whole videos with replacement: windows of one video share a model's state and
  a commentator's style, so they are not independent and a window bootstrap would be too narrow.
"""

from dataclasses import dataclass

import numpy as np

from .judge import UnitResult

SCORE = {"A": 1.0, "tie": 0.5, "B": 0.0}


def unit_outcome(ab: str | None, ba: str | None) -> str | None:
    if ab is None or ba is None:
        return None
    total = SCORE[ab] + SCORE[ba]
    return "A" if total > 1 else "B" if total < 1 else "tie"


def words(text: str) -> int:
    return len(text.split())


@dataclass
class Scored:
    video: str
    outcome: str | None
    ab: str | None
    ba: str | None
    words_a: int
    words_b: int
    words_reference: int


def score(results: list[UnitResult]) -> list[Scored]:
    out = []
    for r in results:
        ab, ba = r.verdicts["ab"].winner, r.verdicts["ba"].winner
        u = r.unit
        out.append(
            Scored(
                u.video, unit_outcome(ab, ba), ab, ba, words(u.text_a), words(u.text_b), words(u.reference)
            )
        )
    return out


def win_rate(outcomes: list[str]) -> float | None:
    return sum(SCORE[o] for o in outcomes) / len(outcomes) if outcomes else None


def cluster_bootstrap_ci(
    per_cluster_score: list[float], per_cluster_n: list[int], resamples: int = 2000, seed: int = 0
) -> list[float] | None:
    """95 % percentile CI of sum(score) / sum(n) when whole clusters are resampled with replacement.

    `per_cluster_score[i]` is the summed unit score of cluster i (A wins + 0.5 ties), `per_cluster_n[i]`
    its number of units. None with fewer than two clusters: one video says nothing about the spread.
    """
    scores, ns = np.asarray(per_cluster_score, float), np.asarray(per_cluster_n, float)
    keep = ns > 0
    scores, ns = scores[keep], ns[keep]
    if len(ns) < 2:
        return None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ns), size=(resamples, len(ns)))
    rates = scores[picks].sum(axis=1) / ns[picks].sum(axis=1)
    low, high = np.percentile(rates, [2.5, 97.5])
    return [float(low), float(high)]


def summarize(
    scored: list[Scored],
    videos: list[str],
    resamples: int = 2000,
    seed: int = 0,
    missing: dict[str, list[str]] | None = None,
) -> dict:
    """The report's statistics for units of `videos` (every video considered, in order);
    `missing` names the videos each candidate lacks ({"a": [...], "b": [...]}), shown per video."""
    missing = missing or {}
    decided = [s for s in scored if s.outcome is not None]
    outcomes = [s.outcome for s in decided]
    judgements = [v for s in scored for v in (s.ab, s.ba)]
    parsed = [v for v in judgements if v is not None]

    per_video = []
    for video in videos:
        mine = [s for s in scored if s.video == video]
        got = [s.outcome for s in mine if s.outcome is not None]
        per_video.append(
            {
                "video": video,
                "windows": len(got),
                "a_wins": got.count("A"),
                "b_wins": got.count("B"),
                "ties": got.count("tie"),
                "unparseable": len(mine) - len(got),
                "win_rate": win_rate(got),
                "missing_in": [name.upper() for name in ("a", "b") if video in missing.get(name, ())],
            }
        )
    judged_videos = [row for row in per_video if row["windows"]]
    ci = cluster_bootstrap_ci(
        [row["a_wins"] + 0.5 * row["ties"] for row in judged_videos],
        [row["windows"] for row in judged_videos],
        resamples,
        seed,
    )
    return {
        "win_rate": win_rate(outcomes),
        "ci95": ci,
        "ci_method": f"percentile, cluster bootstrap over videos, {resamples} resamples, seed {seed}",
        "a_wins": outcomes.count("A"),
        "b_wins": outcomes.count("B"),
        "ties": outcomes.count("tie"),
        "swap_consistency": (sum(s.ab == s.ba for s in decided) / len(decided)) if decided else None,
        "first_position_rate": first_position_rate(scored),
        "per_judgement_win_rate": win_rate(parsed),
        "unparseable": len(judgements) - len(parsed),
        "units_unparseable": len(scored) - len(decided),
        "n_windows": len(decided),
        "n_videos": len(judged_videos),
        "lengths": length_stats(decided),
        "per_video": per_video,
    }


def first_position_rate(scored: list[Scored]) -> float | None:
    """Share of decisive judgements that chose the candidate shown first (0.5 = no position bias)."""
    firsts = [s.ab == "A" for s in scored if s.ab in ("A", "B")]
    firsts += [s.ba == "B" for s in scored if s.ba in ("A", "B")]
    return sum(firsts) / len(firsts) if firsts else None


def length_stats(decided: list[Scored]) -> dict:
    """Mean words per unit and A's win rate split by which candidate said more (length bias)."""

    def mean(values: list[int]) -> float | None:
        return float(np.mean(values)) if values else None

    groups = {
        "a_longer": [s.outcome for s in decided if s.words_a > s.words_b],
        "b_longer": [s.outcome for s in decided if s.words_a < s.words_b],
        "same_length": [s.outcome for s in decided if s.words_a == s.words_b],
    }
    return {
        "mean_words": {
            "a": mean([s.words_a for s in decided]),
            "b": mean([s.words_b for s in decided]),
            "reference": mean([s.words_reference for s in decided]),
        },
        "win_rate_by_longer": {name: win_rate(outs) for name, outs in groups.items()},
        "n_by_longer": {name: len(outs) for name, outs in groups.items()},
        "longer_wins": _longer_wins(decided),
    }


def _longer_wins(decided: list[Scored]) -> float | None:
    """Among decisive units of unequal length, the share won by the longer candidate."""
    pairs = [
        (s.words_a > s.words_b, s.outcome) for s in decided if s.words_a != s.words_b and s.outcome != "tie"
    ]
    if not pairs:
        return None
    return sum((a_longer and o == "A") or (not a_longer and o == "B") for a_longer, o in pairs) / len(pairs)
