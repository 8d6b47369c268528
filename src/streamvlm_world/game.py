"""The deterministic match: Red (left) and Blue (right) play a paddle-and-ball game on a 1 x 1 field.

Play is planned as a chain of straight-line segments on a clock of half-second steps, so every
event (serve, return, point) happens exactly at a step and therefore exactly on a frame:

    wait (no ball) -> serve -> flight -> return -> flight -> ... -> flight (missed) -> overrun
    -> point (ball sits in the goal for one step) -> wait -> serve -> ...

A segment is drawn from the seeded generator when the previous one ends, so the state is a few
numbers however long the stream runs. Positions inside a segment are exact at any time (the
vertical motion folds at the walls), which lets frames between steps (fps > 2) show true positions.
The score lives here and in the commentary only; it is never part of what is drawn.
"""

import math
from dataclasses import dataclass

import numpy as np

from .config import STEP_S, WorldConfig

RED, BLUE = "red", "blue"
TEAMS = (RED, BLUE)
SERVE, RETURN, POINT = "serve", "return", "point"


def other(team: str) -> str:
    return BLUE if team == RED else RED


@dataclass(frozen=True)
class Event:
    step: int  # game step it happens at; time = step * STEP_S
    kind: str  # SERVE, RETURN or POINT
    team: str  # who serves, returns or scores
    score: tuple[int, int]  # (red, blue) right after the event
    game_over: bool = False  # a point that wins the game
    new_game: bool = False  # a serve that opens a new game (score back to 0-0)

    @property
    def time_s(self) -> float:
        return self.step * STEP_S


@dataclass(frozen=True)
class State:
    """What is true at one instant. Everything but `score` and `possession` is drawn (`scorer` only
    with the goal light)."""

    time_s: float
    ball: tuple[float, float] | None  # centre (x, y) in field units; None while no ball is in play
    paddles: tuple[float, float]  # centre heights of the Red and Blue paddles, field units
    score: tuple[int, int]
    possession: str | None  # the team that hit the ball last, while it is in play
    scorer: str | None = None  # from a point to the next serve: who scored it


@dataclass(frozen=True)
class Segment:
    kind: str  # "wait", "flight", "overrun" or "goal"
    start_step: int
    steps: int
    ball_from: tuple[float, float] | None
    ball_delta: tuple[float, float]  # over the whole segment; dy is unfolded (walls fold it)
    paddles_from: tuple[float, float]
    paddles_to: tuple[float, float]
    hitter: str | None = None  # flights: who hit the ball
    returned: bool = False  # flights: whether the receiver gets to it

    @property
    def end_step(self) -> int:
        return self.start_step + self.steps


class Match:
    """An endless match for one seed. Move forward with `advance_to`, look with `state_at`."""

    def __init__(self, config: WorldConfig):
        c = self.config = config
        self.rng = np.random.default_rng(c.seed)
        self.skill_rng = np.random.default_rng([c.seed, 2])  # its own stream: spread 0 changes nothing
        self.miss = self._draw_miss()  # per team, for the current game
        self.score = (0, 0)
        self.game_over = False  # the last point won a game; the next serve resets the score
        self.server = TEAMS[int(self.rng.integers(2))]
        self.possession: str | None = None
        self.scorer: str | None = None  # who scored the last point, until the next serve
        half = c.ball_size / 2
        self.wall = (half, 1.0 - half)  # range of the ball's centre height
        reach = c.paddle_x + c.paddle_width / 2 + half
        self.contact_x = {RED: reach, BLUE: 1.0 - reach}  # ball centre touching a paddle's face
        self.goal_x = {RED: half, BLUE: 1.0 - half}  # ball centre in a team's goal (at the edge)
        self.segment = Segment("wait", 0, c.first_serve_step, None, (0.0, 0.0), (0.5, 0.5), (0.5, 0.5))

    # -- looking ------------------------------------------------------------------------------
    def advance_to(self, step: float) -> list[Event]:
        """Play up to time `step` (in steps, never backwards); the events at times <= `step`."""
        events = []
        while step >= self.segment.end_step:
            event = self._next_segment()
            if event is not None:
                events.append(event)
        return events

    def state_at(self, step: float) -> State:
        """The state at `step`, which must lie in the current segment (call `advance_to` first)."""
        seg = self.segment
        if not seg.start_step <= step < seg.end_step:
            raise ValueError(f"step {step} is outside the current segment [{seg.start_step}, {seg.end_step})")
        u = (step - seg.start_step) / seg.steps
        paddles = tuple(a + u * (b - a) for a, b in zip(seg.paddles_from, seg.paddles_to, strict=True))
        return State(step * STEP_S, self._ball(seg, u), paddles, self.score, self.possession, self.scorer)

    def _ball(self, seg: Segment, u: float) -> tuple[float, float] | None:
        if seg.ball_from is None:
            return None
        (x, y), (dx, dy) = seg.ball_from, seg.ball_delta
        return x + u * dx, self._fold(y + u * dy)

    def _fold(self, y: float) -> float:
        """Reflect an unfolded height into the field (the ball bounces off the top and bottom walls)."""
        lo, hi = self.wall
        span = hi - lo
        z = (y - lo) % (2 * span)
        return lo + (z if z <= span else 2 * span - z)

    def _draw_miss(self) -> dict[str, float]:
        c = self.config
        if not c.skill_spread:
            return dict.fromkeys(TEAMS, c.miss_probability)
        spread = self.skill_rng.uniform(-c.skill_spread, c.skill_spread, size=2)
        return {team: c.miss_probability + float(d) for team, d in zip(TEAMS, spread, strict=True)}

    # -- planning -----------------------------------------------------------------------------
    def _next_segment(self) -> Event | None:
        """Replace the finished segment with the next one; the event at the boundary, if any."""
        seg = self.segment
        end = seg.end_step
        if seg.kind == "wait":
            new_game = self.game_over
            if new_game:
                self.score, self.game_over = (0, 0), False
                self.miss = self._draw_miss()
            server = self.server
            ball = (self.contact_x[server], seg.paddles_to[TEAMS.index(server)])
            self.segment = self._flight(end, server, ball, seg.paddles_to)
            self.possession, self.scorer = server, None
            return Event(end, SERVE, server, self.score, new_game=new_game)
        if seg.kind == "flight":
            ball = self._ball(seg, 1.0)
            receiver = other(seg.hitter)
            if seg.returned:
                self.segment = self._flight(end, receiver, ball, seg.paddles_to)
                self.possession = receiver
                return Event(end, RETURN, receiver, self.score)
            # missed: the ball keeps its course to the receiver's goal line
            vx, vy = seg.ball_delta[0] / seg.steps, seg.ball_delta[1] / seg.steps
            dx = self.goal_x[receiver] - ball[0]
            steps = max(1, math.ceil(abs(dx) / abs(vx) - 1e-9))
            self.segment = Segment(
                "overrun", end, steps, ball, (dx, vy * steps), seg.paddles_to, seg.paddles_to
            )
            return None
        if seg.kind == "overrun":
            conceding = RED if seg.ball_delta[0] < 0 else BLUE
            scorer = other(conceding)
            red, blue = self.score
            self.score = (red + 1, blue) if scorer == RED else (red, blue + 1)
            self.game_over = max(self.score) >= self.config.points_to_win
            self.server, self.possession, self.scorer = conceding, None, scorer
            ball = self._ball(seg, 1.0)
            self.segment = Segment("goal", end, 1, ball, (0.0, 0.0), seg.paddles_to, seg.paddles_to)
            return Event(end, POINT, scorer, self.score, game_over=self.game_over)
        # goal -> wait: the server takes a random height, the receiver goes back to the middle
        half = self.config.paddle_height / 2
        height = float(self.rng.uniform(half, 1.0 - half))
        target = (height, 0.5) if self.server == RED else (0.5, height)
        self.segment = Segment("wait", end, self.config.pause_steps, None, (0.0, 0.0), seg.paddles_to, target)
        return None

    def _flight(
        self, start: int, hitter: str, ball: tuple[float, float], paddles: tuple[float, float]
    ) -> Segment:
        c, rng = self.config, self.rng
        # the same draws in the same order whatever happens, so the stream depends only on the seed
        steps = int(rng.integers(c.flight_steps_min, c.flight_steps_max + 1))
        dy = float(rng.uniform(-c.max_shot_dy, c.max_shot_dy))
        receiver = other(hitter)
        returned = bool(rng.random() >= self.miss[receiver])
        jitter = float(rng.uniform(-0.6, 0.6))
        x_to = self.contact_x[receiver]
        y_to = self._fold(ball[1] + dy)
        half = c.paddle_height / 2
        current = paddles[TEAMS.index(receiver)]
        if returned:  # the ball meets the paddle within 60 % of its half height
            reach = float(np.clip(y_to + jitter * half, half, 1.0 - half))
        else:  # the paddle stops a ball's width short of the ball, on the side it came from
            gap = half + 1.5 * c.ball_size
            options = [y for y in (y_to - gap, y_to + gap) if half <= y <= 1.0 - half]
            reach = min(options, key=lambda y: abs(y - current))
        hitter_y = paddles[TEAMS.index(hitter)]
        hitter_to = hitter_y + 0.5 * (0.5 - hitter_y)  # drifts back towards the middle
        to = (hitter_to, reach) if hitter == RED else (reach, hitter_to)
        return Segment("flight", start, steps, ball, (x_to - ball[0], dy), paddles, to, hitter, returned)
