"""Frames of the match: a fixed backdrop plus two paddles and a ball, painted by numpy slicing.

Only positions are drawn (never the score, the nicknames or who has the ball), so what the text
memory must carry cannot be read off the picture; with `goal_light`, also who just scored (the
conceding goal line glows in the scorer's colour until the next serve). A frame costs one small copy
and a few slice assignments.
"""

import numpy as np

from .config import WorldConfig
from .game import RED, State

FIELD = (20, 84, 44)
LINE = (64, 132, 84)
RED_PADDLE = (228, 48, 40)
BLUE_PADDLE = (48, 96, 236)
BALL = (250, 250, 250)


class Painter:
    def __init__(self, config: WorldConfig):
        self.size = n = config.size
        self.paddle_x = config.paddle_x
        self.paddle_w_px = max(2, round(config.paddle_width * n))
        self.paddle_h_px = max(2, round(config.paddle_height * n))
        self.ball_px = max(2, round(config.ball_size * n))
        self.goal_light = config.goal_light
        self.goal_ball = config.goal_ball
        self.light_px = max(2, n // 8)  # wide enough to fill much of a vision patch column
        self.background = self._background()

    def _background(self) -> np.ndarray:
        n = self.size
        frame = np.empty((n, n, 3), np.uint8)
        frame[:] = FIELD
        dash = max(2, n // 28)
        mid = n // 2
        for top in range(0, n, 2 * dash):  # dashed centre line, two pixels wide
            frame[top : top + dash, mid - 1 : mid + 1] = LINE
        return frame

    def frame(self, state: State) -> np.ndarray:
        """(size, size, 3) uint8 RGB picture of `state`."""
        frame = self.background.copy()
        if self.goal_light and state.scorer is not None:  # the goal the ball went into, other side's
            goal = slice(self.size - self.light_px, None) if state.scorer == RED else slice(0, self.light_px)
            frame[:, goal] = RED_PADDLE if state.scorer == RED else BLUE_PADDLE
        red_y, blue_y = state.paddles
        self._paint(frame, self.paddle_x, red_y, self.paddle_w_px, self.paddle_h_px, RED_PADDLE)
        self._paint(frame, 1.0 - self.paddle_x, blue_y, self.paddle_w_px, self.paddle_h_px, BLUE_PADDLE)
        if state.ball is not None and (self.goal_ball or state.scorer is None):
            x, y = state.ball
            self._paint(frame, x, y, self.ball_px, self.ball_px, BALL)
        return frame

    def _paint(self, frame: np.ndarray, x: float, y: float, w_px: int, h_px: int, color) -> None:
        """A w x h rectangle centred at field point (x, y), clipped to the picture."""
        left = int(np.floor(x * self.size - w_px / 2 + 0.5))
        top = int(np.floor(y * self.size - h_px / 2 + 0.5))
        frame[max(top, 0) : max(top + h_px, 0), max(left, 0) : max(left + w_px, 0)] = color
