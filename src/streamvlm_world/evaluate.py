"""Scoring commentary against the world's exact ground truth, second by second.

- exact: the second's text equals the truth text (silence included);
- events: for each kind (serve, return, point) a predicted line matches a truth event of the same
  kind and team within ±`tolerance_s` seconds (one-to-one); precision, recall, F1;
- score: among truth points matched by a predicted point line, the fraction whose announced score
  equals the truth score (and, where serve lines announce it too, the same among matched serves);
- counted score (whole streams only): the same fraction for the score the predicted point lines
  imply when counted exactly from 0-0 (team of each line, new game after `points_to_win`). It is the
  ceiling the model's own point calls leave: one missed, extra or wrong-team point spoils every later
  count (its games then end out of step too), however well the model carries the score;
- stepped score (whole streams only): among matched points and matched serves that announce a
  score, the fraction whose score follows from the model's own previous announcement (0-0 at the
  start and after a game's last point): a serve repeats it, a point adds one for its team. How well
  it carries the score, free of its history;
- nickname: among matched point lines, the fraction naming the team by its own nickname.
"""

import re
from dataclasses import dataclass

from .commentary import NICKNAMES, NUMBER_WORDS

KINDS = ("serve", "return", "point")
_POINT = re.compile(r"^(\w+) scores?! Red (\w+) Blue (\w+)(?: now (Red|Blue) (\w+))?")
_TEAM = re.compile(r"^(Red|Blue) (serves|returns)\b(?:\. Red (\w+) Blue (\w+))?")


@dataclass
class Said:
    t: float
    kind: str
    team: str | None
    score: tuple[int, int] | None = None
    name: str | None = None


def parse(text: str, t: float, nicknames: dict[str, str] | None) -> list[Said]:
    """The events a line of commentary announces (unknown words are ignored)."""
    by_name = {name: team for team, name in (nicknames or {}).items()}
    text = text.strip()
    m = _POINT.match(text)
    if m:
        name = m.group(1)
        team = by_name.get(name) or ({"Red": "red", "Blue": "blue"}.get(name))
        if team is None and name in NICKNAMES:
            team = "?"  # a nickname, but not one of this match's teams
        score = [read_number(m.group(2)), read_number(m.group(3))]
        if m.group(4):  # `score_change`: the score before the point, then one team's new count
            score[m.group(4) == "Blue"] = read_number(m.group(5))
        return [Said(t, "point", team, tuple(score), name)]
    m = _TEAM.match(text)
    if m:
        score = (read_number(m.group(3)), read_number(m.group(4))) if m.group(3) else None
        return [Said(t, "serve" if m.group(2) == "serves" else "return", m.group(1).lower(), score)]
    return []


def read_number(word: str) -> int | None:
    """A score number said as digits or as a word; None for anything else."""
    if word.isdigit():
        return int(word)
    return NUMBER_WORDS.index(word) if word in NUMBER_WORDS else None


def truth_events(rows: list[dict]) -> list[Said]:
    return [
        Said(row["start"], e["kind"], e["team"], tuple(row["score"]) if e["kind"] != "return" else None)
        for row in rows
        for e in row["events"]
    ]


def match(pred: list[Said], truth: list[Said], tolerance_s: float = 1.0) -> list[tuple[Said, Said]]:
    """Greedy one-to-one matching by time: same kind and team, |dt| <= tolerance."""
    pairs, used = [], set()
    for p in sorted(pred, key=lambda s: s.t):
        best = None
        for i, g in enumerate(truth):
            if i in used or g.kind != p.kind or g.team != p.team or abs(g.t - p.t) > tolerance_s:
                continue
            if best is None or abs(g.t - p.t) < abs(truth[best].t - p.t):
                best = i
        if best is not None:
            used.add(best)
            pairs.append((p, truth[best]))
    return pairs


def f1(n_pred: int, n_truth: int, n_match: int) -> dict:
    precision = n_match / n_pred if n_pred else (1.0 if not n_truth else 0.0)
    recall = n_match / n_truth if n_truth else 1.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "predicted": n_pred,
        "truth": n_truth,
    }


def score_lines(
    predicted: list[str],
    rows: list[dict],
    nicknames: dict[str, str] | None,
    tolerance_s: float = 1.0,
    points_to_win: int | None = None,
) -> dict:
    """Metrics of predicted per-second texts against the truth rows of the same seconds; with
    `points_to_win` (only for a stream from its first second) also the counted and stepped scores."""
    n = min(len(predicted), len(rows))
    predicted, rows = predicted[:n], rows[:n]
    said = [
        s for text, row in zip(predicted, rows, strict=True) for s in parse(text, row["start"], nicknames)
    ]
    truth = truth_events(rows)
    result = {
        "seconds": n,
        "exact": sum(p == r["text"] for p, r in zip(predicted, rows, strict=True)) / max(n, 1),
        "silence_accuracy": _ratio(
            sum(not p for p, r in zip(predicted, rows, strict=True) if not r["text"]),
            sum(not r["text"] for r in rows),
        ),
    }
    announced = []  # matched lines that announce a score
    for kind in KINDS:
        p = [s for s in said if s.kind == kind]
        g = [s for s in truth if s.kind == kind]
        pairs = match(p, g, tolerance_s)
        announced += [a for a, _ in pairs if a.score is not None]
        result[kind] = f1(len(p), len(g), len(pairs))
        if kind == "serve" and any(a.score is not None for a, _ in pairs):
            result["serve_score_accuracy"] = _ratio(sum(a.score == b.score for a, b in pairs), len(pairs))
        if kind == "point":
            result["score_accuracy"] = _ratio(sum(a.score == b.score for a, b in pairs), len(pairs))
            if points_to_win is not None:
                counted = count_score(p, points_to_win)
                result["counted_score_accuracy"] = _ratio(
                    sum(counted[id(a)] == b.score for a, b in pairs), len(pairs)
                )
            if nicknames:
                result["nickname_accuracy"] = _ratio(
                    sum(a.name == nicknames[b.team] for a, b in pairs), len(pairs)
                )
    if points_to_win is not None:
        stepped = step_score(said, points_to_win)
        result["stepped_score_accuracy"] = _ratio(
            sum(stepped[id(a)] == a.score for a in announced), len(announced)
        )
    return result


def count_score(points: list[Said], points_to_win: int) -> dict[int, tuple[int, int]]:
    """{id(point): the score after it} counting `points` (in time order) exactly from 0-0."""
    score, out = (0, 0), {}
    for p in sorted(points, key=lambda s: s.t):
        if max(score) >= points_to_win:
            score = (0, 0)
        score = (score[0] + (p.team == "red"), score[1] + (p.team == "blue"))
        out[id(p)] = score
    return out


def step_score(said: list[Said], points_to_win: int) -> dict[int, tuple[int, int]]:
    """{id(line): the score it should announce given the lines before it}: the latest earlier
    announced score (0-0 before any, or after a game's last point), plus one for the team of a point."""
    last, out = (0, 0), {}
    for s in sorted((s for s in said if s.score is not None), key=lambda s: s.t):
        base = (0, 0) if max(last) >= points_to_win else last
        point = s.kind == "point"
        out[id(s)] = (base[0] + (point and s.team == "red"), base[1] + (point and s.team == "blue"))
        last = s.score if None not in s.score else last
    return out


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None
