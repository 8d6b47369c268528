"""The ground-truth commentary: one fixed line per event, timed word by word inside its second.

    Red serves                          a serve ("Red serves. Red 3 Blue 4" with score_on_serve)
    Blue returns                        a return
    Owls score! Red three Blue four     a point, by nickname ("Blue scores! ..." without nicknames)
    Owls score! Red seven Blue eleven Owls win the game!    a game's last point; the next is at 0-0
    Blue scores! Red three Blue three now Blue four        a point with `score_change`

The nicknames are said once, in the opening text ("Red are the Foxes. Blue are the Owls."), so a
point line needs a memory of the stream's very start (the text sink); the running score is only in
earlier point lines (the text window). Numbers are said as words (`number_words`, default) or as
digits; either way each stands alone so a loss weight can find it. A line's words start at its
event and end by `SPEECH_END_S` into the
second, so the second a word belongs to (the one its end time falls in) is never ambiguous.
"""

import numpy as np

from streamvlm.words import NUMBER_WORDS

from .config import WorldConfig
from .game import BLUE, POINT, RED, SERVE, Event

NICKNAMES = ("Foxes", "Owls", "Bears", "Wolves", "Hawks", "Sharks", "Tigers", "Eagles")
SPEECH_END_S = 0.95  # last word of a second ends here (relative to the second's start)


def pick_nicknames(config: WorldConfig) -> dict[str, str] | None:
    """Two distinct nicknames drawn by the seed (independently of the match), or None when off."""
    if not config.nicknames:
        return None
    rng = np.random.default_rng([config.seed, 1])  # its own stream: the match is the same either way
    red, blue = rng.choice(len(NICKNAMES), size=2, replace=False)
    return {RED: NICKNAMES[red], BLUE: NICKNAMES[blue]}


def opening_text(nicknames: dict[str, str] | None) -> str:
    """The stream's opening context (the `previous` text): who is who. Empty without nicknames."""
    if nicknames is None:
        return ""
    return " ".join(f"{team.capitalize()} are the {name}." for team, name in nicknames.items())


def number(n: int, config: WorldConfig) -> str:
    return NUMBER_WORDS[n] if config.number_words else str(n)


def score_words(score: tuple[int, int], config: WorldConfig) -> str:
    return f"Red {number(score[0], config)} Blue {number(score[1], config)}"


def line(event: Event, config: WorldConfig, nicknames: dict[str, str] | None) -> str:
    team = event.team.capitalize()
    if event.kind == SERVE:
        return (
            f"{team} serves. {score_words(event.score, config)}"
            if config.score_on_serve
            else f"{team} serves"
        )
    if event.kind == POINT:
        said = score_words(event.score, config)
        if config.score_change:  # the score before the point, then the scorer's new count
            index = 0 if event.team == RED else 1
            before = tuple(n - (i == index) for i, n in enumerate(event.score))
            said = f"{score_words(before, config)} now {team} {number(event.score[index], config)}"
        if nicknames is None:
            said = f"{team} scores! {said}"
            return f"{said} {team} wins the game!" if event.game_over else said
        name = nicknames[event.team]
        said = f"{name} score! {said}"
        return f"{said} {name} win the game!" if event.game_over else said
    return f"{team} returns"


def timed_words(events: list[Event], second: int, config: WorldConfig, nicknames) -> list[list]:
    """[[start_s, end_s, word], ...] for the events of one second, evenly spread from the first event
    to `SPEECH_END_S` into the second (times rounded to the millisecond, strictly increasing)."""
    words = [w for event in events for w in line(event, config, nicknames).split()]
    if not words:
        return []
    begin, end = events[0].time_s, second + SPEECH_END_S
    step = (end - begin) / len(words)
    return [
        [round(begin + i * step, 3), round(begin + (i + 1) * step, 3), word] for i, word in enumerate(words)
    ]


def vocabulary(config: WorldConfig) -> list[str]:
    """Every word the commentary and the opening text can contain under `config`, sorted."""
    words = {"Red", "Blue", "serves", "returns"}
    words |= {number(n, config) for n in range(config.points_to_win + 1)}
    if config.score_on_serve:
        words.add("serves.")
    if config.score_change:
        words.add("now")
    if config.nicknames:
        words |= {"score!", "win", "the", "game!", "are"}
        words |= set(NICKNAMES) | {f"{name}." for name in NICKNAMES}
    else:
        words |= {"scores!", "wins", "the", "game!"}
    return sorted(words)
