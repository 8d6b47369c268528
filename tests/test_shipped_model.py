"""The shipped world model on a short match it never saw: a regression guard.

Thresholds come from measurements of the shipped checkpoint (model card: 300 s held-out match),
set a margin below them; a retrained model that does worse fails here.
"""

import json

import pytest

from streamvlm import StreamConfig
from streamvlm.eval.world import stream_world
from streamvlm.models import load_model
from streamvlm.models.default import default_model_dir, shipped_model_dir
from streamvlm.world.config import WorldConfig
from streamvlm.world.recipe import EVAL_SEED

HELD_OUT_SEED = EVAL_SEED + 7  # neither a training seed nor the model card's evaluation seed

#: Measured on the shipped checkpoint, 150 s of seeds EVAL_SEED + 7/8/9: exact 0.79-0.85 (serve lines
#: carry the score, so a wrong score is an inexact second), silence 0.99-1.0, serve F1 1.0, return F1
#: 0.99-1.0, point F1 1.0 (so the counted score is 1.0), stepped score 0.55-0.66. The announced score is
#: right 6-21 % of the time (32 % on the card's 300 s match), so it has no floor here: it is the open
#: problem; the stepped floor guards the part of it the model has.
THRESHOLDS = {
    "exact": 0.75,
    "silence_accuracy": 0.97,
    "serve_f1": 0.95,
    "return_f1": 0.95,
    "point_f1": 0.95,
    "stepped_score_accuracy": 0.4,
}


@pytest.fixture(scope="module")
def shipped():
    path = shipped_model_dir()
    assert path is not None, "the shipped model (src/streamvlm/assets/world-model) is missing"
    return load_model(str(path))


def test_shipped_model_is_the_default_and_small(shipped):
    assert default_model_dir() == shipped.path
    assert (shipped.path / "model.safetensors").stat().st_size <= 25 * 2**20
    card = (shipped.path / "README.md").read_text()
    assert "streamvlm world train-model" in card
    metrics = json.loads((shipped.path / "metrics.json").read_text())
    assert metrics["held_out"]["seed"] == EVAL_SEED


def test_shipped_model_comments_a_match_it_never_saw(shipped):
    defaults = shipped.defaults
    config = StreamConfig.from_dict(defaults["stream"])
    world = WorldConfig.for_model(defaults["world"], HELD_OUT_SEED)
    run = stream_world(shipped, config, world, seconds=150)
    m = run["metrics"]
    assert m["silence_accuracy"] >= THRESHOLDS["silence_accuracy"], m
    assert m["return"]["f1"] >= THRESHOLDS["return_f1"], m
    assert m["serve"]["f1"] >= THRESHOLDS["serve_f1"], m
    assert m["point"]["f1"] >= THRESHOLDS["point_f1"], m
    assert m["exact"] >= THRESHOLDS["exact"], m
    assert m["stepped_score_accuracy"] >= THRESHOLDS["stepped_score_accuracy"], m
