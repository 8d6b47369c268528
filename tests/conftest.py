import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """The default model is written to a per-run cache, never to the user's home."""
    os.environ["STREAMVLM_CACHE"] = str(tmp_path_factory.mktemp("streamvlm-cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach for the network


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from streamvlm.models import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    from streamvlm.models import load_model

    return load_model(str(tiny_dir))


@pytest.fixture(scope="session")
def tiny_one_layer(tmp_path_factory):
    """One text layer: every cached K/V depends only on its own token (or second) and position."""
    from streamvlm.models import TinySpec, load_model, write_tiny_checkpoint

    return load_model(
        str(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny1"), seed=1, spec=TinySpec(layers=1)))
    )


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    """A 12 s generated H.264 clip, 2 fps, 112x84."""
    from streamvlm.sources import synthetic_frames, write_video

    return write_video(
        tmp_path_factory.mktemp("clip") / "clip.mp4", synthetic_frames(12, 2, (84, 112)), fps=2
    )
