"""The product (`src/streamvlm`) never imports the demo world (`src/streamvlm_world`): the world
plugs in through the `streamvlm.plugins` entry point, and the product works without it."""

import ast
from pathlib import Path

import pytest

import streamvlm
import streamvlm_world
from streamvlm import cli, plugins

PRODUCT = Path(streamvlm.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_product_never_imports_the_world():
    files = sorted(PRODUCT.rglob("*.py"))
    assert len(files) > 50
    offenders = {
        str(f.relative_to(PRODUCT)): sorted(
            m for m in imported_modules(f) if m.split(".")[0] == "streamvlm_world"
        )
        for f in files
    }
    assert {f: m for f, m in offenders.items() if m} == {}
    assert not (PRODUCT / "world").exists() and not (PRODUCT / "assets").exists()


def test_the_world_is_found_as_a_plugin_and_adds_its_commands():
    found = plugins.plugins()  # loads the plugin module: `streamvlm_world.plugin` exists only then
    assert streamvlm_world.plugin in found
    parser = cli.build_parser()
    assert parser.parse_args(["world", "stats"]).world_command == "stats"
    assert parser.parse_args(["eval", "world"]).eval_command == "world"
    assert parser.parse_args(["eval", "numbers", "x.jsonl"]).eval_command == "numbers"
    from streamvlm.models.default import default_model_dir

    assert default_model_dir() == streamvlm_world.plugin.SHIPPED


def test_the_product_works_without_plugins(monkeypatch, tmp_path):
    monkeypatch.setattr(plugins, "plugins", lambda: ())
    monkeypatch.setenv("STREAMVLM_CACHE", str(tmp_path))
    parser = cli.build_parser()
    for argv in (["world", "stats"], ["eval", "world"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    assert parser.parse_args(["run", "x.mp4"]).command == "run"
    from streamvlm.models.default import default_model_dir, is_random_default

    assert is_random_default(default_model_dir())
