"""Command-line flags derived from a config dataclass: each field is declared once, with its comment.

    add_options(parser, StreamConfig, only=POLICY_FIELDS)   # --vision-window, --text-sink, ...

A field `vision_window: int = 16  # seconds of vision tokens kept` becomes `--vision-window N` with
that comment as its help (a `#:` comment block above the field works too, as in litgpt's configs).
Booleans get `--x / --no-x`; `T | None` takes T. With `unset=True` every flag defaults to None, so
a caller can tell "not given" from a value (e.g. to let a checkpoint's or a file's values apply).
"""

import argparse
import ast
import inspect
import io
import textwrap
import tokenize
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path


def read_yaml_options(path: str, what: str) -> dict:
    """The mapping of options in the YAML file `path` (`what` names the file in the error)."""
    import yaml

    from .errors import StreamvlmError

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise StreamvlmError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise StreamvlmError(f"{path}: expected a mapping of options")
    return data


def field_comments(cls) -> dict[str, str]:
    """Each field's comment in the source of `cls` and of the dataclasses it inherits from: the `#`
    comment after it, else the `#:` lines right above it."""
    out = {}
    for klass in reversed(cls.__mro__):
        if "__dataclass_fields__" in vars(klass):
            out.update({k: v for k, v in _own_comments(klass).items() if v})  # a preset keeps the help
    return out


def _own_comments(cls) -> dict[str, str]:
    source = textwrap.dedent(inspect.getsource(cls))
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body[0].body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        above, line = [], node.lineno - 1
        while line >= 1 and lines[line - 1].strip().startswith("#:"):
            above.insert(0, comments[line].lstrip(":").strip())
            line -= 1
        out[node.target.id] = comments.get(node.end_lineno, "") or " ".join(above)
    return out


def _base_type(annotation):
    """int for `int`, `int | None` or "int | None"; None for anything a flag cannot take."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing))  # noqa: S307 (a dataclass annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 and args[0] in (int, float, str, bool) else None
    return annotation if annotation in (int, float, str, bool) else None


def add_options(
    parser,
    cls,
    only: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
    unset: bool = False,
    types_: dict | None = None,
    choices: dict | None = None,
    first: str | None = None,
) -> list[str]:
    """Add a flag per field of `cls` (those in `only`, in its order, minus `exclude`); returns the
    field names added. `types_` / `choices` override a field's argparse type / choices; `first`
    names where an unset flag's value comes from before the field's default (e.g. "the model's")."""
    helps = field_comments(cls)
    names = []
    by_name = {f.name: f for f in fields(cls)}
    for name in only or tuple(by_name):
        f = by_name[name]
        kind = _base_type(f.type)
        if name in exclude or kind is None:
            continue
        default = f.default if f.default is not MISSING else None
        help_text = helps.get(name, "")
        shown = "" if default in (None, "") else f"default {default}"
        if first:
            shown = f"default: {first}" + (f", else {default}" if shown else "")
        help_text = f"{help_text} ({shown})" if help_text and shown else help_text or shown
        kwargs = {"default": None if unset else default, "help": help_text.replace("%", "%%")}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = (types_ or {}).get(name, kind)
            kwargs["metavar"] = {int: "N", float: "X", str: "TEXT"}[kind]
            if choices and name in choices:
                kwargs["choices"] = choices[name]
                del kwargs["metavar"]
        parser.add_argument("--" + name.replace("_", "-"), **kwargs)
        names.append(name)
    return names
