"""What gets judged: scoring windows cut from reference transcripts, or annotated events, each with
the two candidates' text for the same span, and an account of everything left out and why.

Window rule (Inf-Streams-Eval). Within each reference row, segments with text are taken in time
order and grouped greedily: a window starts at a segment's start and takes the following segments
while the window stays within `window_s` seconds (a single longer segment is a window of its own).
A window ends where the next one starts, so reference pauses belong to the window before them, but
never later than `window_s` after its start unless its own segments reach further: stretches where
the reference is silent for longer than that are not scored (there is nothing to compare with).
`window_s = 0` makes each reference row one window, the research code's rule for its score-clip
files. A candidate's text for a window (start, end] is its items whose `end` falls inside it,
joined in time order, as the research code did.

A window or event is judged only when both candidates' output spans it (1 s tolerance): a
generation that started at 1000 s is not compared on the hour before it.
"""

from dataclasses import dataclass, field

from .transcripts import Candidate, Event, Generation, ReferenceRow, Segment

COVERAGE_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class Unit:
    """One comparison: a span of one video, its reference text and both candidates' text."""

    video: str  # the reference video: the cluster of the bootstrap
    uid: str
    start: float
    end: float
    title: str
    reference: str
    text_a: str
    text_b: str


@dataclass
class Selection:
    units: list[Unit] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)  # reference videos considered, in file order
    missing: dict[str, list[str]] = field(default_factory=lambda: {"a": [], "b": []})
    not_covered: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})
    missing_events: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})
    total: int = 0  # windows or events of the videos considered, before any exclusion
    in_missing_videos: int = 0  # of those, the ones whose video a candidate lacks

    def excluded(self) -> dict:
        return {
            "videos_missing_in_a": self.missing["a"],
            "videos_missing_in_b": self.missing["b"],
            "units_in_missing_videos": self.in_missing_videos,
            "not_covered_by_a": self.not_covered["a"],
            "not_covered_by_b": self.not_covered["b"],
            "events_missing_in_a": self.missing_events["a"],
            "events_missing_in_b": self.missing_events["b"],
        }


def windows(content: list[Segment], window_s: float) -> list[tuple[float, float, str]]:
    """(start, end, reference text) of each scoring window of one reference row."""
    segments = sorted((s for s in content if s.text.strip()), key=lambda s: (s.start, s.end))
    if not segments:
        return []
    if window_s <= 0:
        return [(segments[0].start, max(s.end for s in segments), join(segments))]
    groups: list[list[Segment]] = []
    for seg in segments:
        if groups and seg.end - groups[-1][0].start <= window_s:
            groups[-1].append(seg)
        else:
            groups.append([seg])
    out = []
    for i, group in enumerate(groups):
        start, last_end = group[0].start, max(s.end for s in group)
        next_start = groups[i + 1][0].start if i + 1 < len(groups) else last_end
        end = min(next_start, max(last_end, start + window_s))
        if end <= start:  # two segments starting together: keep the span rather than an empty window
            end = last_end
        out.append((start, end, join(group)))
    return out


def join(segments: list[Segment]) -> str:
    return " ".join(s.text.strip() for s in segments if s.text.strip())


def text_in(generation: Generation, start: float, end: float) -> str:
    return join([s for s in generation.items if start < s.end <= end])


def covers(generation: Generation, start: float, end: float) -> bool:
    if generation.covered is None:
        return False
    low, high = generation.covered
    return low <= start + COVERAGE_TOLERANCE_S and end <= high + COVERAGE_TOLERANCE_S


def _first_videos(videos: list[str], max_videos: int | None) -> list[str]:
    ordered = list(dict.fromkeys(videos))
    return ordered[:max_videos] if max_videos else ordered


def select_windows(
    rows: list[ReferenceRow],
    a: Candidate,
    b: Candidate,
    window_s: float,
    max_videos: int | None = None,
    check_coverage: bool = True,
) -> Selection:
    """The scoring windows of every reference video both candidates have, and what was left out."""
    sel = Selection(videos=_first_videos([r.video for r in rows], max_videos))
    gens = _match(sel, a, b)
    considered = set(sel.videos)
    for row in rows:
        if row.video not in considered:
            continue
        for start, end, reference in windows(row.content, window_s):
            sel.total += 1
            if row.video not in gens:
                sel.in_missing_videos += 1
                continue
            gen_a, gen_b = gens[row.video]
            if check_coverage and not _both_cover(sel, gen_a, gen_b, start, end):
                continue
            text_a, text_b = text_in(gen_a, start, end), text_in(gen_b, start, end)
            uid = f"{row.video}@{start:g}-{end:g}"
            sel.units.append(Unit(row.video, uid, start, end, row.title, reference, text_a, text_b))
    return sel


def select_events(
    events: list[Event],
    a: Candidate,
    b: Candidate,
    max_videos: int | None = None,
    check_coverage: bool = True,
) -> Selection:
    """The events both candidates have commentary for: per-event predictions or per-second items."""
    sel = Selection(videos=_first_videos([e.video for e in events], max_videos))
    for name, cand in (("a", a), ("b", b)):
        if cand.events is None:  # item-based: a whole video can be missing, reported once per video
            sel.missing[name] = [v for v in sel.videos if cand.find(v) is None]
    considered = set(sel.videos)
    for event in events:
        if event.video not in considered:
            continue
        sel.total += 1
        if any(event.video in sel.missing[name] for name in ("a", "b")):
            sel.in_missing_videos += 1
            continue
        text_a = _event_text(sel, "a", a, event, check_coverage)
        text_b = _event_text(sel, "b", b, event, check_coverage)
        if text_a is None or text_b is None:
            continue
        uid = f"{event.video}#{event.event_id}"
        sel.units.append(
            Unit(event.video, uid, event.begin, event.end, event.title, event.text, text_a, text_b)
        )
    return sel


def _event_text(sel: Selection, name: str, cand: Candidate, event: Event, check_coverage: bool) -> str | None:
    if cand.events is not None:
        text = cand.events.get((event.video, event.event_id))
        if text is None:
            sel.missing_events[name] += 1
        return text
    gen = cand.find(event.video)
    assert gen is not None  # videos missing from the candidate were set aside by the caller
    if check_coverage and not covers(gen, event.begin, event.end):
        sel.not_covered[name] += 1
        return None
    return text_in(gen, event.begin, event.end)


def _match(sel: Selection, a: Candidate, b: Candidate) -> dict[str, tuple[Generation, Generation]]:
    """Generations of both candidates per reference video; missing videos are recorded, not dropped."""
    found = {}
    for video in sel.videos:
        gen_a, gen_b = a.find(video), b.find(video)
        if gen_a is None:
            sel.missing["a"].append(video)
        if gen_b is None:
            sel.missing["b"].append(video)
        if gen_a is not None and gen_b is not None:
            found[video] = (gen_a, gen_b)
    return found


def _both_cover(sel: Selection, gen_a: Generation, gen_b: Generation, start: float, end: float) -> bool:
    out_a, out_b = not covers(gen_a, start, end), not covers(gen_b, start, end)
    sel.not_covered["a"] += out_a
    sel.not_covered["b"] += out_b
    return not (out_a or out_b)
