"""The stream world: determinism, flat memory, frames that agree with the truth, the off-screen score,
commentary statistics and timing, the dataset files, and `streamvlm world ...` end to end."""

import json
import pickle
import re
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

from streamvlm.cli import main
from streamvlm.errors import StreamvlmError
from streamvlm.sources import VideoFileSource
from streamvlm_world import (
    BLUE,
    NICKNAMES,
    POINT,
    RED,
    RETURN,
    SERVE,
    STEPS_PER_S,
    Match,
    Painter,
    World,
    WorldConfig,
    video_seed,
    vocabulary,
    write_dataset,
)
from streamvlm_world.commentary import NUMBER_WORDS, number
from streamvlm_world.render import BALL, BLUE_PADDLE, RED_PADDLE

TEAM_INDEX = {RED: 0, BLUE: 1}
PADDLE_COLOR = {RED: RED_PADDLE, BLUE: BLUE_PADDLE}


def stream(config: WorldConfig, seconds: int):
    frames, rows = zip(*World(config).seconds(seconds), strict=True)
    return np.stack(frames), list(rows)


def box(frame: np.ndarray, color) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) inclusive pixel bounds of `color` in `frame`, None if absent."""
    ys, xs = np.nonzero(np.all(frame == np.array(color, np.uint8), axis=-1))
    return None if len(ys) == 0 else (ys.min(), ys.max(), xs.min(), xs.max())


# -- determinism and memory -----------------------------------------------------------------------
def test_same_seed_same_stream_different_seeds_differ():
    frames_a, rows_a = stream(WorldConfig(seed=5, size=56), 60)
    frames_b, rows_b = stream(WorldConfig(seed=5, size=56), 60)
    assert frames_a.shape == (60, 2, 56, 56, 3) and frames_a.dtype == np.uint8
    assert np.array_equal(frames_a, frames_b) and rows_a == rows_b
    frames_c, rows_c = stream(WorldConfig(seed=6, size=56), 60)
    assert not np.array_equal(frames_a, frames_c)
    assert [r["text"] for r in rows_a] != [r["text"] for r in rows_c]
    world = World(WorldConfig(seed=5))  # iterating again replays from the start
    assert list(world.rows(60)) == list(world.rows(60)) == rows_a  # size 112 here: same match


def test_match_is_independent_of_picture_size_and_fps():
    frames2, rows2 = stream(WorldConfig(seed=8, size=56, fps=2), 90)
    frames4, rows4 = stream(WorldConfig(seed=8, size=56, fps=4), 90)
    assert rows2 == rows4 == list(World(WorldConfig(seed=8, size=112)).rows(90))
    assert np.array_equal(frames4[:, ::2], frames2)  # the extra frames lie between the game steps
    assert not np.array_equal(frames4[:, 1::2], frames2)


def test_endless_stream_keeps_memory_flat():
    match = Match(WorldConfig(seed=1))
    sizes = []
    for minutes in (1, 10, 200):
        match.advance_to(minutes * 60 * STEPS_PER_S)
        sizes.append(len(pickle.dumps(match)))
    assert max(sizes) - min(sizes) < 64, sizes

    seconds = World(WorldConfig(seed=2, size=56)).seconds()  # endless, with frames
    for _ in range(50):
        next(seconds)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            next(seconds)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 100_000, f"{grown} bytes more after 1000 s"


# -- the simulation and the frames agree with the truth --------------------------------------------
def test_ball_at_a_paddle_is_a_return_or_a_clean_miss_and_points_happen_at_the_goal_line():
    config = WorldConfig(seed=7)
    match = Match(config)
    half_ball, half_paddle = config.ball_size / 2, config.paddle_height / 2
    contact = {RED: config.paddle_x + config.paddle_width / 2 + half_ball}
    contact[BLUE] = 1 - contact[RED]
    goal = {RED: half_ball, BLUE: 1 - half_ball}
    in_goal_before, missed_by, counts = False, None, {SERVE: 0, RETURN: 0, POINT: 0, "miss": 0}
    for step in range(10 * 60 * STEPS_PER_S):
        events = match.advance_to(step)
        state = match.state_at(step)
        kinds = {e.kind: e for e in events}
        for e in events:
            counts[e.kind] += 1
        if state.ball is None:
            assert not events  # no ball in play: nothing happens
            in_goal_before = False
            continue
        x, y = state.ball
        assert goal[RED] - 1e-9 <= x <= goal[BLUE] + 1e-9  # never beyond a goal line
        for team in (RED, BLUE):
            if abs(x - contact[team]) < 1e-9:
                gap = abs(state.paddles[TEAM_INDEX[team]] - y)
                if RETURN in kinds or SERVE in kinds:
                    assert events[0].team == team and gap <= half_paddle
                else:  # the paddle is clearly away from the ball and the ball goes on
                    assert gap > half_paddle + half_ball
                    missed_by, counts["miss"] = team, counts["miss"] + 1
        in_goal = abs(x - goal[RED]) < 1e-9 or abs(x - goal[BLUE]) < 1e-9
        arrived = in_goal and not in_goal_before
        assert (POINT in kinds) == arrived, (step, state, events)
        if arrived:
            conceding = RED if x < 0.5 else BLUE
            assert missed_by == conceding and kinds[POINT].team != conceding
            missed_by = None
        in_goal_before = in_goal
    assert counts[POINT] == counts["miss"] >= 20 and counts[RETURN] > 2 * counts[POINT]


def test_frames_show_serves_and_returns_at_the_paddle_and_points_in_the_goal():
    config = WorldConfig(seed=11, size=112)
    frames, rows = stream(config, 150)
    flat = frames.reshape(-1, *frames.shape[2:])
    seen = set()
    for row in rows:
        for event in row["events"]:
            index = round(event["time"] * config.fps)
            ball = box(flat[index], BALL)
            assert ball is not None
            top, bottom, left, right = ball
            if event["kind"] in (SERVE, RETURN):
                p_top, p_bottom, p_left, p_right = box(flat[index], PADDLE_COLOR[event["team"]])
                gap = left - p_right - 1 if event["team"] == RED else p_left - right - 1
                assert -1 <= gap <= 1, (event, ball)  # touching the paddle's face
                assert top <= p_bottom and bottom >= p_top
            else:  # the ball sits at the edge of the conceding team's side
                assert (right == config.size - 1) if event["team"] == RED else (left == 0), (event, ball)
            if event["kind"] == SERVE:
                assert box(flat[index - 1], BALL) is None  # the field was empty before the serve
            seen.add(event["kind"])
    assert seen == {SERVE, RETURN, POINT}


@pytest.mark.parametrize("goal_light", [False, True])
def test_the_score_is_never_drawn(goal_light):
    config = WorldConfig(seed=3, size=56, goal_light=goal_light)
    renderer = Painter(config)
    plain, scored = Match(config), Match(config)
    scored.score = (7, 3)  # same play, different off-screen state
    for step in range(2 * 120):
        plain.advance_to(step)
        scored.advance_to(step)
        a, b = plain.state_at(step), scored.state_at(step)
        assert a.score != b.score
        assert np.array_equal(renderer.frame(a), renderer.frame(b))


def test_goal_light_glows_in_the_scorers_colour_from_a_point_to_the_next_serve():
    config = WorldConfig(seed=11, size=56, goal_light=True)
    frames, rows = stream(config, 150)
    plain, _ = stream(replace(config, goal_light=False), 150)
    flat, plain = frames.reshape(-1, *frames.shape[2:]), plain.reshape(-1, *plain.shape[2:])
    lit = {}  # frame index -> scorer, from the truth events: a point up to (not including) the next serve
    scorer = None
    events = sorted((e for r in rows for e in r["events"]), key=lambda e: e["time"])
    for i in range(len(flat)):
        for e in (e for e in events if round(e["time"] * config.fps) == i):
            scorer = e["team"] if e["kind"] == POINT else None if e["kind"] == SERVE else scorer
        if scorer is not None:
            lit[i] = scorer
    assert len(set(lit.values())) == 2 and len(lit) < len(flat) / 3
    for i, frame in enumerate(flat):
        if i not in lit:
            assert np.array_equal(frame, plain[i]), i  # the option changes only the pause after a point
            continue
        left, right = frame[:, :2], frame[:, -2:]
        glow = np.array(PADDLE_COLOR[lit[i]], np.uint8)
        conceding, other = (right, left) if lit[i] == RED else (left, right)
        glowing = np.all(conceding == glow, axis=-1)
        ball = np.all(conceding == np.array(BALL, np.uint8), axis=-1)  # where the ball sits on it
        assert np.all(glowing | ball), i
        assert glowing.mean() > 0.9, i
        assert not np.any(np.all(other == glow, axis=-1)), i
    with pytest.raises(StreamvlmError):
        WorldConfig.from_dict({"goal_light": True, "no_such_option": 1})
    assert WorldConfig.for_model({"goal_light": True}, seed=3).goal_light


def test_score_changes_only_at_points_and_every_point_line_announces_it():
    config = WorldConfig(seed=4, points_to_win=5)  # short games: several resets in 15 minutes
    score, pending_new_game, games = [0, 0], False, 0
    for row in World(config).rows(15 * 60):
        for event in row["events"]:
            if event["kind"] == SERVE:
                assert event.get("new_game", False) == pending_new_game
                if pending_new_game:
                    score, pending_new_game = [0, 0], False
            if event["kind"] == POINT:
                score[TEAM_INDEX[event["team"]]] += 1
                assert event.get("game_over", False) == (max(score) == config.points_to_win)
                pending_new_game = event.get("game_over", False)
                games += pending_new_game
                announced = re.findall(r"Red (\w+) Blue (\w+)", row["text"])
                assert [[NUMBER_WORDS.index(n) for n in a] for a in announced] == [score]
        assert row["score"] == score
        if not any(e["kind"] == POINT for e in row["events"]):  # numbers only in point lines
            assert not set(row["text"].split()) & set(NUMBER_WORDS)
    assert games >= 2


# -- commentary ---------------------------------------------------------------------------------------
def test_silence_and_event_rates_are_in_the_target_ranges():
    totals = {"seconds": 0, "silent": 0, SERVE: 0, RETURN: 0, POINT: 0}
    for seed in range(5):
        for row in World(WorldConfig(seed=seed)).rows(10 * 60):
            assert len(row["events"]) <= 1  # one event at most per second
            totals["seconds"] += 1
            totals["silent"] += row["text"] == ""
            assert (row["text"] == "") == (row["events"] == [])
            for event in row["events"]:
                totals[event["kind"]] += 1
    n = totals["seconds"]
    assert 0.40 <= totals["silent"] / n <= 0.65
    assert 3.5 <= totals[POINT] * 60 / n <= 6.5  # a point every ~13 s
    assert abs(totals[SERVE] - totals[POINT]) <= 5
    assert 0.2 <= totals[RETURN] / n <= 0.45


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"nicknames": False},
        {"score_on_serve": True},
        {"score_change": True},
        {"points_to_win": 20},
        {"number_words": False},
    ],
)
def test_vocabulary_is_small_and_closed(options):
    config = WorldConfig(**options)
    vocab = set(vocabulary(config))
    assert len(vocab) <= 60
    assert {number(n, config) for n in range(config.points_to_win + 1)} <= vocab
    used = set()
    for seed in range(3):
        world = World(replace(config, seed=seed))
        used |= set(world.opening_text.split())
        for row in world.rows(20 * 60):
            used |= {w for _, _, w in row["words"]}
    assert used <= vocab, used - vocab
    assert len(used) >= 15


def test_nicknames_appear_only_in_the_opening_text_and_the_point_lines():
    pairs = set()
    for seed in range(20):
        world = World(WorldConfig(seed=seed))
        red, blue = world.nicknames[RED], world.nicknames[BLUE]
        assert red != blue and {red, blue} <= set(NICKNAMES)
        assert world.opening_text == f"Red are the {red}. Blue are the {blue}."
        pairs.add((red, blue))
        if seed < 3:
            for row in world.rows(5 * 60):
                for event in row["events"]:
                    name = world.nicknames[event["team"]]
                    if event["kind"] == POINT:
                        assert row["text"].startswith(f"{name} score! ")
                    else:
                        assert not set(row["text"].split()) & set(NICKNAMES)
    assert len(pairs) >= 10
    plain = World(WorldConfig(seed=0, nicknames=False))
    assert plain.nicknames is None and plain.opening_text == ""
    lines = [r["text"] for r in plain.rows(120) if any(e["kind"] == POINT for e in r["events"])]
    assert lines and all(re.fullmatch(r"(Red|Blue) scores! Red [a-z]+ Blue [a-z]+", t) for t in lines)
    digits = [
        r["text"] for r in World(WorldConfig(number_words=False)).rows(120) if r["text"].count(" Blue ")
    ]
    assert digits and all(re.search(r"Red \d+ Blue \d+$", t) for t in digits)
    served = [r for r in World(WorldConfig(score_on_serve=True)).rows(120) if r["events"]]
    for row in served:
        if row["events"][0]["kind"] == SERVE:
            said = f"Red {NUMBER_WORDS[row['score'][0]]} Blue {NUMBER_WORDS[row['score'][1]]}"
            assert row["text"].endswith(f"serves. {said}")


@pytest.mark.parametrize("nicknames", [False, True])
def test_score_change_lines_say_the_score_before_the_point_then_the_scorers_new_count(nicknames):
    config = WorldConfig(seed=7, nicknames=nicknames, score_change=True, points_to_win=5)
    world = World(config)
    plain = World(replace(config, score_change=False))  # the same match, said the usual way
    before, games = (0, 0), 0
    for row, usual in zip(world.rows(15 * 60), plain.rows(15 * 60), strict=True):
        assert row["events"] == usual["events"] and row["score"] == usual["score"]
        if not row["events"] or row["events"][0]["kind"] != POINT:
            assert row["text"] == usual["text"]
            continue
        team = row["events"][0]["team"]
        red, blue = row["score"]
        words = NUMBER_WORDS
        said = f"Red {words[before[0]]} Blue {words[before[1]]} now {team.capitalize()} "
        said += words[red if team == RED else blue]
        name = world.nicknames[team] if nicknames else team.capitalize()
        assert row["text"].startswith(f"{name} score{'' if nicknames else 's'}! {said}"), row["text"]
        assert row["text"].endswith("game!") == (max(red, blue) == 5)
        games += max(red, blue) == 5
        before = (0, 0) if max(red, blue) == 5 else (red, blue)
    assert games >= 2  # the score before the point restarts at 0-0 with each game


def test_words_join_to_the_text_and_end_inside_their_second():
    last_end = -1.0
    for row in World(WorldConfig(seed=12)).rows(10 * 60):
        words = row["words"]
        assert row["text"] == " ".join(w for _, _, w in words)
        if row["events"]:
            assert words and words[0][0] == row["events"][0]["time"]
        for start, end, word in words:
            assert word and " " not in word
            assert row["start"] <= start < end <= row["start"] + 0.95 + 1e-9
            assert end > last_end  # the words of the stream are in order
            last_end = end


@pytest.mark.parametrize(
    "options",
    [
        {"size": 57},
        {"size": 20},
        {"fps": 3},
        {"fps": 0},
        {"seed": -1},
        {"points_to_win": 0},
        {"flight_steps_min": 1},
        {"miss_probability": 1.5},
        {"skill_spread": 0.2},
        {"skill_spread": -0.1},
        {"paddle_height": 0.45},
    ],
)
def test_bad_config_is_a_one_line_error(options):
    with pytest.raises(StreamvlmError) as info:
        WorldConfig(**options)
    assert "\n" not in str(info.value)


def test_skill_spread_varies_each_teams_misses_game_by_game_and_makes_lopsided_scores_common():
    def games(spread: float) -> list[tuple[dict, tuple[int, int]]]:
        """(each team's miss probability, final score) of every finished game of 20 matches x 20 min."""
        out = []
        for seed in range(20):
            match = Match(WorldConfig(seed=300 + seed, skill_spread=spread))
            miss = match.miss
            for step in range(2400):  # step by step: a new game's skills are drawn at its first serve
                for event in match.advance_to(step):
                    if event.kind == SERVE and event.new_game:
                        miss = match.miss
                    if event.kind == POINT and event.game_over:
                        out.append((miss, event.score))
        return out

    even, spread = games(0.0), games(0.15)
    assert all(m == {RED: 0.19, BLUE: 0.19} for m, _ in even)
    misses = [m[team] for m, _ in spread for team in (RED, BLUE)]
    assert all(0.04 <= p <= 0.34 for p in misses) and len(set(misses)) == len(misses)
    assert max(misses) - min(misses) > 0.25  # the whole range is used
    # the worse team of a game scores fewer points; and the loser's final count is lower on average
    worse_loses = [(m[RED] > m[BLUE]) == (s[0] < s[1]) for m, s in spread if abs(m[RED] - m[BLUE]) > 0.15]
    assert sum(worse_loses) > 0.8 * len(worse_loses)
    loser = {name: np.mean([min(s) for _, s in g]) for name, g in (("even", even), ("spread", spread))}
    assert loser["spread"] < loser["even"] - 1.0
    # the same seed plays the same match; spread 0 is the default match
    rows = list(World(WorldConfig(seed=3, skill_spread=0.15)).rows(300))
    assert rows == list(World(WorldConfig(seed=3, skill_spread=0.15)).rows(300))
    default = list(World(WorldConfig(seed=3)).rows(300))
    assert rows != default
    assert list(World(WorldConfig(seed=3, skill_spread=0.0)).rows(300)) == default


# -- files ---------------------------------------------------------------------------------------------
def test_dataset_written_by_several_processes_is_the_same(tmp_path):
    """Annotations and truth byte for byte; the videos decode to the same frames up to codec noise
    (x264 need not give the same bytes twice for the same frames, even in one process)."""

    class Bar:
        def __init__(self):
            self.updates = []

        def update(self, n):
            self.updates.append(n)

    config = WorldConfig(seed=4, size=56)
    bars = Bar(), Bar()
    one = write_dataset(tmp_path / "one", videos=3, seconds=4, config=config, progress=bars[0]).parent
    two = write_dataset(tmp_path / "two", videos=3, seconds=4, config=config, workers=2, progress=bars[1])
    two = two.parent
    assert bars[0].updates == [1] * 12 and bars[1].updates == [4] * 3  # by second here, by video there
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert len(files) == 3 + 3 * 2  # annotations, seeks, manifest; a video and a truth file each
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    for name in files:
        if name.suffix != ".mp4":
            assert (one / name).read_bytes() == (two / name).read_bytes(), name
            continue
        a, b = ([c.frames for c in VideoFileSource(root / name, fps=2)] for root in (one, two))
        assert len(a) == len(b) == 4
        for x, y in zip(a, b, strict=True):
            assert np.abs(x.astype(int) - y.astype(int)).mean() < 2, name
    with pytest.raises(StreamvlmError, match="workers"):
        write_dataset(tmp_path / "bad", videos=1, seconds=1, config=config, workers=0)


def test_dataset_round_trips(tmp_path):
    config = WorldConfig(seed=3, size=56)
    annotations = write_dataset(tmp_path / "ds", videos=2, seconds=5, config=config)
    data = annotations.read_bytes()
    with open(tmp_path / "ds" / "annotations_seeks.jsonl") as f:
        seeks = json.load(f)
    assert len(seeks) == 2 and seeks[0] == 0 and len(data.splitlines()) == 2
    decoded_videos = []
    for index, offset in enumerate(seeks):
        assert offset == 0 or data[offset - 1 : offset] == b"\n"  # a line start
        with open(annotations) as f:
            f.seek(offset)
            user, assistant = json.loads(f.readline())
        world = World(replace(config, seed=video_seed(config.seed, index)))
        assert user["role"] == "user" and assistant["role"] == "assistant"
        video, query = user["content"]
        assert video["type"] == "video" and (video["video_start"], video["video_end"]) == (0.0, 5.0)
        assert query == {"type": "text", "text": config.query, "previous": world.opening_text}
        (stream_,) = assistant["content"]
        assert stream_["type"] == "text_stream"
        path = annotations.parent / video["video"]  # relative to the annotation file
        truth = [json.loads(line) for line in path.with_suffix(".truth.jsonl").read_text().splitlines()]
        assert truth == list(world.rows(5))
        assert stream_["text_stream"] == [w for row in truth for w in row["words"]]
        chunks = list(VideoFileSource(path, fps=2))
        assert [c.start for c in chunks] == [0.0, 1.0, 2.0, 3.0, 4.0]
        decoded = np.stack([c.frames for c in chunks])
        rendered, _ = stream(world.config, 5)
        assert decoded.shape == rendered.shape == (5, 2, 56, 56, 3)
        assert np.abs(decoded.astype(int) - rendered).mean() < 6  # H.264 is lossy but close
        decoded_videos.append(decoded)
    assert not np.array_equal(*decoded_videos)
    manifest = json.loads((tmp_path / "ds" / "world.json").read_text())
    assert [e["seed"] for e in manifest["entries"]] == [video_seed(3, 0), video_seed(3, 1)]
    assert WorldConfig.from_dict(manifest["config"]) == config
    # the project's reader of the public format sees the same seconds of commentary
    from streamvlm.data.formats import read_annotations

    for index, record in enumerate(read_annotations(annotations)):
        truth = World(replace(config, seed=video_seed(config.seed, index))).rows(5)
        assert record.second_texts() == [row["text"] for row in truth]
        assert record.video_path().is_file()


def test_text_only_dataset_is_the_same_commentary_without_videos(tmp_path):
    config = WorldConfig(seed=4, size=56)
    rendered = write_dataset(tmp_path / "v", videos=2, seconds=40, config=config)
    text = write_dataset(tmp_path / "t", videos=2, seconds=40, config=config, render=False)
    assert text.read_bytes() == rendered.read_bytes()  # same annotations, byte for byte
    assert (tmp_path / "t" / "annotations_seeks.jsonl").read_text() == (
        tmp_path / "v" / "annotations_seeks.jsonl"
    ).read_text()
    assert not (tmp_path / "t" / "videos").exists()
    manifest = json.loads((tmp_path / "t" / "world.json").read_text())
    assert manifest["videos_written"] is False
    assert json.loads((tmp_path / "v" / "world.json").read_text())["videos_written"] is True


def test_cli_video_dataset_and_stats(tmp_path, capsys):
    out, truth = tmp_path / "m.mp4", tmp_path / "m.jsonl"
    args = ["world", "video", str(out), "--seconds", "4", "--size", "56", "--seed", "9"]
    assert main([*args, "--truth", str(truth)]) == 0
    assert str(out) in capsys.readouterr().out
    assert len(list(VideoFileSource(out, fps=2))) == 4
    rows = [json.loads(line) for line in truth.read_text().splitlines()]
    assert rows == list(World(WorldConfig(seed=9, size=56)).rows(4))
    assert {"start", "end", "text", "events", "score"} <= set(rows[0])

    assert (
        main(["world", "dataset", str(tmp_path / "ds"), "--videos", "1", "--seconds", "3", "--size", "56"])
        == 0
    )
    assert (tmp_path / "ds" / "annotations.jsonl").exists()
    assert (tmp_path / "ds" / "videos" / "world_0000.mp4").exists()
    lit = tmp_path / "lit"
    assert (
        main(
            ["world", "dataset", str(lit), "--videos", "1", "--seconds", "3", "--size", "56", "--goal-light"]
        )
        == 0
    )
    assert json.loads((lit / "world.json").read_text())["config"]["goal_light"] is True
    lopsided = tmp_path / "lopsided"
    argv = ["world", "dataset", str(lopsided), "--videos", "1", "--seconds", "3", "--skill-spread", "0.1"]
    assert main([*argv, "--text-only"]) == 0
    assert json.loads((lopsided / "world.json").read_text())["config"]["skill_spread"] == 0.1
    assert json.loads((tmp_path / "ds" / "world.json").read_text())["config"]["goal_light"] is False
    capsys.readouterr()

    assert main(["world", "stats", "--seconds", "300", "--no-nicknames"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert 0.3 < stats["silent_fraction"] < 0.8 and stats["points_per_minute"] > 0


@pytest.mark.parametrize(
    "argv",
    [
        ["video", "{tmp}/a.mp4", "--seconds", "0"],
        ["video", "{tmp}/a.mp4", "--seconds", "3", "--size", "57"],
        ["video", "{tmp}/a.mp4", "--seconds", "3", "--fps", "3"],
        ["video", "{tmp}/a.mp4", "--seconds", "3", "--seed", "-2"],
        ["video", "{tmp}/file.txt/a.mp4", "--seconds", "3"],
        ["video", "{tmp}", "--seconds", "3"],
        ["video", "{tmp}/a.unknown", "--seconds", "3"],
        ["video", "{tmp}/a.mp4", "--seconds", "3", "--truth", "{tmp}/file.txt/t.jsonl"],
        ["dataset", "{tmp}/ds", "--videos", "0", "--seconds", "3"],
        ["dataset", "{tmp}/file.txt", "--videos", "1", "--seconds", "3"],
        ["stats", "--seconds", "-5"],
        ["stats", "--skill-spread", "0.5"],
    ],
)
def test_cli_bad_input_exits_2_with_one_line(argv, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("not a directory")
    code = main(["world", *(a.format(tmp=tmp_path) for a in argv)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("streamvlm: error: ") and err.count("\n") == 1, err


def test_cli_debug_raises_and_missing_subcommand_exits_2(tmp_path):
    with pytest.raises(StreamvlmError):
        main(["world", "video", str(tmp_path / "a.mp4"), "--seconds", "0", "--debug"])
    with pytest.raises(SystemExit) as info:
        main(["world"])
    assert info.value.code == 2
