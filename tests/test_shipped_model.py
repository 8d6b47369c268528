"""The shipped world model on a short match it never saw: a regression guard.

Thresholds come from measurements of the shipped checkpoint (model card: 300 s held-out match),
set a margin below them; a retrained model that does worse fails here.
"""

import json

import pytest

from streamvlm import StreamConfig
from streamvlm.models import load_model
from streamvlm.models.default import default_model_dir
from streamvlm_world.config import WorldConfig
from streamvlm_world.eval import stream_world
from streamvlm_world.plugin import shipped_model_dir
from streamvlm_world.recipe import EVAL_SEED

HELD_OUT_SEED = EVAL_SEED + 7  # neither a training seed nor the model card's evaluation seed

#: Measured on the shipped checkpoint, 150 s of seed EVAL_SEED + 7 (and + 8): exact, silence, every F1,
#: the announced, counted and stepped score all 1.0 (on + 8 the model shipped before showed what one
#: slip does: an increment missed at 9 s, every later score one short, announced 0.07). On 20-minute
#: streams the announced score is right 94.7 % of the time on average over 36 held-out matches, at
#: least 90 % on 34 of them (docs/world.md).
THRESHOLDS = {
    "exact": 0.9,
    "silence_accuracy": 0.95,
    "serve_f1": 0.95,
    "return_f1": 0.95,
    "point_f1": 0.95,
    "score_accuracy": 0.8,
    "stepped_score_accuracy": 0.9,
}


@pytest.fixture(scope="module")
def shipped():
    path = shipped_model_dir()
    assert path is not None, "the shipped model (src/streamvlm_world/assets/world-model) is missing"
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
    assert m["score_accuracy"] >= THRESHOLDS["score_accuracy"], m
