"""Scoring commentary against world truth (pure functions: constructed cases with known answers)."""

import pytest

from streamvlm_world.commentary import NUMBER_WORDS
from streamvlm_world.config import WorldConfig
from streamvlm_world.evaluate import parse, score_lines
from streamvlm_world.stream import World


def test_perfect_commentary_scores_perfectly():
    world = World(WorldConfig(seed=5))
    rows = list(world.rows(240))
    result = score_lines([r["text"] for r in rows], rows, world.nicknames)
    assert result["exact"] == 1.0 and result["silence_accuracy"] == 1.0
    for kind in ("serve", "return", "point"):
        assert result[kind]["f1"] == 1.0 and result[kind]["truth"] > 0
    assert result["score_accuracy"] == 1.0 and result["nickname_accuracy"] == 1.0


def test_late_wrong_team_and_wrong_score_are_told_apart():
    world = World(WorldConfig(seed=5))
    rows = list(world.rows(240))
    texts = [r["text"] for r in rows]
    points = [i for i, r in enumerate(rows) if any(e["kind"] == "point" for e in r["events"])]
    a, b, c, d = points[:4]
    texts[a + 1], texts[a] = texts[a], ""  # one second late: still matched (tolerance 1 s)
    other = {v: k for k, v in world.nicknames.items()}
    name = texts[b].split()[0]
    wrong_team = world.nicknames["blue" if other[name] == "red" else "red"]
    texts[b] = texts[b].replace(name, wrong_team, 1)  # right second, wrong team: a miss and a false alarm
    texts[c] = texts[c].replace(" Blue ", " Blue 1", 1)  # right team, wrong score
    texts[d] = ""  # missed point
    result = score_lines(texts, rows, world.nicknames)
    n = result["point"]["truth"]
    assert result["point"]["recall"] == (n - 2) / n
    assert result["point"]["precision"] == (n - 2) / (n - 1)
    assert result["score_accuracy"] == (n - 3) / (n - 2)


def test_parse_lines():
    nick = {"red": "Foxes", "blue": "Owls"}
    assert parse("Owls score! Red 3 Blue 4", 10, nick)[0].team == "blue"
    assert parse("Blue scores! Red 3 Blue 4", 10, None)[0].score == (3, 4)
    assert parse("Bears score! Red 3 Blue 4", 10, nick)[0].team == "?"
    assert parse("Red serves", 1, None)[0].kind == "serve"
    assert parse("", 1, None) == [] and parse("garbage words", 1, None) == []
    said = parse("Blue scores! Red three Blue four now Blue five", 10, None)[0]  # score_change
    assert (said.team, said.score) == ("blue", (3, 5))
    assert parse("Owls score! Red 3 Blue 4 now Red 4 Owls win the game!", 10, nick)[0].score == (4, 4)


@pytest.mark.parametrize("score_change", [False, True])
def test_a_world_said_with_its_score_change_scores_perfectly_against_itself(score_change):
    world = World(WorldConfig(seed=5, points_to_win=3, nicknames=False, score_change=score_change))
    rows = list(world.rows(300))
    texts = [r["text"] for r in rows]
    changes = sum(" now " in t for t in texts)
    assert changes >= 10 if score_change else changes == 0
    result = score_lines(texts, rows, None, points_to_win=3)
    assert result["point"]["f1"] == 1.0
    assert result["score_accuracy"] == result["stepped_score_accuracy"] == 1.0
    points = [i for i, t in enumerate(texts) if "scores!" in t]
    # a wrong count said for the second point: its score is wrong
    said = texts[points[1]]
    wrong = said.rsplit(" ", 1)[0] + " ten" if score_change else said.split("!")[0] + "! Red 9 Blue 9"
    texts[points[1]] = wrong
    result = score_lines(texts, rows, None, points_to_win=3)
    assert result["score_accuracy"] == (len(points) - 1) / len(points)


def test_scores_announced_with_serves_are_scored_too():
    world = World(WorldConfig(seed=5, score_on_serve=True, nicknames=False))
    rows = list(world.rows(240))
    texts = [r["text"] for r in rows]
    serves = [i for i, r in enumerate(rows) if any(e["kind"] == "serve" for e in r["events"])]
    assert texts[serves[1]].startswith(("Red serves. Red ", "Blue serves. Red "))
    assert parse(texts[serves[1]], 1, None)[0].score == tuple(rows[serves[1]]["score"])
    texts[serves[1]] = texts[serves[1]].split(".")[0]  # a serve without its score: right event, wrong score
    result = score_lines(texts, rows, None)
    n = result["serve"]["truth"]
    assert result["serve"]["f1"] == 1.0 and result["serve_score_accuracy"] == (n - 1) / n
    assert result["score_accuracy"] == 1.0
    plain = World(WorldConfig(seed=5, nicknames=False))  # serves without scores: no serve score number
    assert "serve_score_accuracy" not in score_lines([r["text"] for r in plain.rows(240)], rows, None)


@pytest.mark.parametrize("score_on_serve", [False, True])
def test_counted_and_stepped_scores_restart_with_each_game_of_the_world(score_on_serve):
    world = World(WorldConfig(seed=5, points_to_win=3, nicknames=False, score_on_serve=score_on_serve))
    rows = list(world.rows(300))
    texts = [r["text"] for r in rows]
    assert sum("wins the game" in t for t in texts) >= 3  # the count must restart at 0-0 each game
    result = score_lines(texts, rows, None, points_to_win=3)
    assert result["counted_score_accuracy"] == 1.0 and result["stepped_score_accuracy"] == 1.0
    assert "counted_score_accuracy" not in score_lines(texts, rows, None)  # asked for whole streams only


def _games_to_two():
    """Point lines of games to 2: R R | B B | R, one every other second."""
    said = [("red", (1, 0)), ("red", (2, 0)), ("blue", (0, 1)), ("blue", (0, 2)), ("red", (1, 0))]
    rows, texts = [], []
    for i, (team, score) in enumerate(said):
        for t, text in (
            (2 * i, f"{team.capitalize()} scores! Red {score[0]} Blue {score[1]}"),
            (2 * i + 1, ""),
        ):
            events = [{"kind": "point", "team": team}] if text else []
            rows.append(
                {"start": float(t), "end": t + 1.0, "text": text, "events": events, "score": list(score)}
            )
            texts.append(text)
    return rows, texts


def test_one_missed_point_spoils_the_counted_score_past_its_game():
    """Missing the first point, an exact count of the lines said reads 1-0 (truth 2-0, game over),
    1-1 (0-1), 1-2 (0-2: game over for both), then 1-0 (1-0). Stepped from the lines said: 2-0 after
    nothing is a jump (wrong), then 0-1 after a game's end, 0-2, 1-0 after a game's end (right)."""
    rows, texts = _games_to_two()
    texts[0] = ""
    result = score_lines(texts, rows, None, points_to_win=2)
    assert result["score_accuracy"] == 1.0  # every announced score is still right ...
    assert result["counted_score_accuracy"] == 1 / 4  # ... but counting the calls is right once in 4
    assert result["stepped_score_accuracy"] == 3 / 4


def test_stepped_score_follows_the_models_own_announcements():
    """The second point said as 1-1 (a wrong step), then the truth again: 0-1 does not follow from
    1-1 (wrong); 0-2 follows 0-1 and 1-0 a game's end (right)."""
    rows, texts = _games_to_two()
    texts[2] = "Red scores! Red 1 Blue 1"
    result = score_lines(texts, rows, None, points_to_win=2)
    assert result["score_accuracy"] == 4 / 5 and result["counted_score_accuracy"] == 1.0
    assert result["stepped_score_accuracy"] == 3 / 5


def test_stepped_score_counts_a_serve_that_does_not_repeat_the_last_score():
    world = World(WorldConfig(seed=5, points_to_win=3, nicknames=False, score_on_serve=True))
    rows = list(world.rows(300))
    texts = [r["text"] for r in rows]
    serves = [i for i, r in enumerate(rows) if any(e["kind"] == "serve" for e in r["events"])]
    red, blue = rows[serves[1]]["score"]
    assert (red, blue) != (0, 0)  # a serve inside a game: it should repeat the last point's score
    texts[serves[1]] = (
        texts[serves[1]].split(".")[0] + f". Red {NUMBER_WORDS[red]} Blue {NUMBER_WORDS[blue + 1]}"
    )
    result = score_lines(texts, rows, None, points_to_win=3)
    announced = result["point"]["truth"] + result["serve"]["truth"]
    # the serve is a wrong step and so is the next (true) point line, which does not follow from it
    assert result["stepped_score_accuracy"] == (announced - 2) / announced
    assert result["score_accuracy"] == 1.0
