"""Every knob of the stream world in one dataclass: the match, the picture and the commentary.

Geometry is in field units (the field is 1 x 1, Red defends x = 0, Blue defends x = 1) so the same
seed plays the same match at any frame size; only `size` and `fps` concern pixels and frames.
"""

from dataclasses import asdict, dataclass, fields

from streamvlm.errors import StreamvlmError

#: The game clock: it moves in half-second steps, so every event lands exactly on a frame.
STEPS_PER_S = 2
STEP_S = 1.0 / STEPS_PER_S
MIN_SIZE = 28  # below this the paddles and the ball no longer fit as distinct shapes


#: The options a model is trained for, kept in its `streamvlm.json` "world" entry (`for_model`).
MODEL_OPTIONS = ("nicknames", "score_on_serve", "goal_light", "score_change")


@dataclass
class WorldConfig:
    seed: int = 0
    # picture
    fps: int = 2  # frames per second; a multiple of STEPS_PER_S
    size: int = 112  # square field, pixels (even, for H.264's 4:2:0 chroma)
    # match (times in game steps of STEP_S seconds)
    points_to_win: int = 11  # a game ends there and the next one starts at 0-0 (keeps numbers small)
    flight_steps_min: int = 3  # a shot crosses the field in 1.5 ...
    flight_steps_max: int = 5  # ... to 2.5 s
    miss_probability: float = 0.19  # per reception; ~4 returns per rally, a point every ~13 s
    #: Each game, each team's miss probability is drawn from `miss_probability` +- this (uniform, its own
    #: generator: at 0 the matches are unchanged). A training-data option: lopsided games ("Red one Blue
    #: eight") become common, so a model cannot guess a score number from the usual run of a game.
    skill_spread: float = 0.0
    pause_steps: int = 3  # no ball in play between the ball sitting in the goal and the next serve
    first_serve_step: int = 2  # the stream opens with 1 s of empty field
    max_shot_dy: float = 1.2  # vertical travel of one shot, field units (> 1 means wall bounces)
    # geometry, field units
    paddle_x: float = 0.07  # distance of each paddle's centre from its own goal line
    paddle_height: float = 0.2
    paddle_width: float = 0.035
    ball_size: float = 0.035
    # commentary
    nicknames: bool = True  # team nicknames, named only in the opening text, used in point lines
    score_on_serve: bool = False  # also announce the score with every serve
    #: A point line first repeats the score before the point, then says the scorer's new count
    #: ("Blue scores! Red three Blue three now Blue four"): the running score is still carried from
    #: earlier commentary, but the increment is made next to the number it raises.
    score_change: bool = False
    # picture of a point: from the point to the next serve the conceding goal line glows in the scorer's
    # colour (a broadcast's goal graphic), so a point cannot pass for a near return; the score itself
    # is still never drawn
    goal_light: bool = False
    #: Draw the ball once it is in the goal (the point's own frame). Off hides it there: a training
    #: augmentation (calls replay, `world.replay`) after which the goal light's onset is the cue.
    goal_ball: bool = True
    #: Say numbers as words ("Red three Blue four"): each is one token, never confused with the digits
    #: of the time stamps around it (with digits, a tiny model did not learn to carry the score).
    number_words: bool = True
    query: str = "Commentate on this match."

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        checks = [
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (
                self.fps >= STEPS_PER_S and self.fps % STEPS_PER_S == 0,
                f"fps must be a positive multiple of {STEPS_PER_S} (every half-second game step lands "
                f"on a frame), got {self.fps}",
            ),
            (
                self.size >= MIN_SIZE and self.size % 2 == 0,
                f"size must be an even number of pixels >= {MIN_SIZE}, got {self.size}",
            ),
            (self.points_to_win >= 1, f"points to win must be >= 1, got {self.points_to_win}"),
            (not self.number_words or self.points_to_win <= 20, "number words go up to twenty points"),
            # two steps (1 s) between any two events keeps every second to at most one event
            (
                2 <= self.flight_steps_min <= self.flight_steps_max,
                f"flight steps must satisfy 2 <= min <= max, got {self.flight_steps_min}, "
                f"{self.flight_steps_max}",
            ),
            (self.pause_steps >= 1, f"pause steps must be >= 1, got {self.pause_steps}"),
            (self.first_serve_step >= 0, f"first serve step must be >= 0, got {self.first_serve_step}"),
            (
                0.0 <= self.miss_probability <= 1.0,
                f"miss probability must be in [0, 1], got {self.miss_probability}",
            ),
            (
                self.miss_probability - self.skill_spread >= 0.0
                and self.skill_spread >= 0.0
                and self.miss_probability + self.skill_spread < 1.0,
                f"skill spread must keep miss probability +- spread in [0, 1), got {self.skill_spread} "
                f"around {self.miss_probability}",
            ),
            (self.max_shot_dy >= 0.0, f"max shot dy must be >= 0, got {self.max_shot_dy}"),
            (
                0 < self.paddle_height < 0.5 and 0 < self.paddle_width < 0.2 and 0 < self.ball_size < 0.2,
                "paddle height must be in (0, 0.5), paddle width and ball size in (0, 0.2)",
            ),
            (  # a missing paddle stays a ball's width clear of the ball: both sides cannot be blocked
                2 * self.paddle_height + 3 * self.ball_size < 1,
                "paddles too tall for the ball size: need 2 * paddle height + 3 * ball size < 1",
            ),
            (
                self.paddle_width / 2 < self.paddle_x < 0.3,
                f"paddle x must leave the paddle inside the field and the middle free, got {self.paddle_x}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise StreamvlmError(message)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_model(cls, world_defaults: dict, seed: int, **overrides) -> "WorldConfig":
        """The world a model was trained on (the "world" entry of its `streamvlm.json`), at `seed`."""
        said = {k: world_defaults[k] for k in MODEL_OPTIONS if k in world_defaults}
        return cls(seed=seed, **{**said, **overrides})

    @classmethod
    def from_dict(cls, data: dict) -> "WorldConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise StreamvlmError(f"unknown world option(s): {', '.join(unknown)}")
        return cls(**data)
