"""Options declared once: flags derived from config dataclasses (`streamvlm.options`), and the cache
windows declared only in `cache.policy.Windows`."""

import argparse
import ast
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

import streamvlm
from streamvlm.cache.policy import Windows
from streamvlm.config import StreamConfig
from streamvlm.data.sample import RenderOptions
from streamvlm.options import add_options, field_comments
from streamvlm.train.config import TrainConfig


@dataclass
class Base:
    size: int = 3  # how big
    #: a long explanation
    #: on two lines
    ratio: float | None = None


@dataclass
class Child(Base):
    size: int = 5
    on: bool = True  # whether it is on
    name: str = "x"
    items: tuple[str, ...] = ()


def test_flags_come_from_the_fields_and_their_comments():
    assert field_comments(Child) == {
        "size": "how big",  # the preset keeps its parent's help
        "ratio": "a long explanation on two lines",
        "on": "whether it is on",
    }
    parser = argparse.ArgumentParser()
    added = add_options(parser, Child)
    assert added == ["size", "ratio", "on", "name"]  # a tuple cannot be a flag
    args = parser.parse_args([])
    assert (args.size, args.ratio, args.on, args.name) == (5, None, True, "x")
    args = parser.parse_args(["--size", "7", "--ratio", "0.5", "--no-on", "--name", "y"])
    assert (args.size, args.ratio, args.on, args.name) == (7, 0.5, False, "y")
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["size"] == "how big (default 5)" and helps["ratio"] == "a long explanation on two lines"
    unset = argparse.ArgumentParser()
    add_options(unset, Child, only=("on", "size"), unset=True)
    assert vars(unset.parse_args([])) == {"on": None, "size": None}
    with pytest.raises(SystemExit):
        unset.parse_args(["--name", "y"])


def test_every_stream_option_is_a_run_flag():
    from streamvlm.cli import build_parser

    run = build_parser()._subparsers._group_actions[0].choices["run"]
    flags = {a.dest for a in run._actions}
    assert {f.name for f in fields(StreamConfig)} - {"ignore_eos"} <= flags
    args = run.parse_args(["x.mp4", "--text-sink", "7", "--vision-window", "3", "--no-greedy"])
    assert (args.text_sink, args.vision_window, args.greedy, args.text_window) == (7, 3, False, None)


def test_the_cache_windows_are_declared_once():
    knobs = [f.name for f in fields(Windows)]
    assert knobs == ["vision_window", "text_rounds", "text_sink", "text_window"]
    for config in (StreamConfig, TrainConfig, RenderOptions):
        assert issubclass(config, Windows)
    where = {}
    for path in Path(streamvlm.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                names = [
                    f.target.id
                    for f in node.body
                    if isinstance(f, ast.AnnAssign)
                    and isinstance(f.target, ast.Name)
                    and f.target.id in knobs
                ]
                if names:
                    where[f"{path.relative_to(Path(streamvlm.__file__).parent)}:{node.name}"] = names
    assert where == {"cache/policy.py:Windows": knobs}  # no class declares them again
