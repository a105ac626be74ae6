"""Configuration errors an operator can act on: each names its file and line, the key,
what is wrong, and for a misspelt key or id the closest valid one ("did you mean ...?").

Used by every TOML file the service reads (the configuration, the registry, the rules).
TOML parsers keep no positions, so the line is found again in the file's text: the line
of the key itself, or of the nearest enclosing table or inline table that holds it.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]

_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_TABLE = re.compile(rf"^\s*\[\s*({_DOTTED_KEY})\s*\]")
_ARRAY_TABLE = re.compile(rf"^\s*\[\[\s*({_DOTTED_KEY})\s*\]\]")
_ASSIGNMENT = re.compile(rf"^\s*({_DOTTED_KEY})\s*=")
_PARTS = re.compile(r"""([A-Za-z0-9_-]+)|"((?:[^"\\]|\\.)*)"|'([^']*)'""")


@dataclass(frozen=True)
class Problem:
    loc: Loc
    message: str


def _key_parts(dotted: str) -> tuple[str, ...]:
    return tuple(bare or double or single for bare, double, single in _PARTS.findall(dotted))


def toml_lines(text: str) -> dict[Loc, int]:
    """Each table and key of a TOML text, as a path (array-of-tables entries by their
    index), and the 1-based line where it is written."""
    found: dict[Loc, int] = {}
    table: Loc = ()
    entries: dict[Loc, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        if match := _ARRAY_TABLE.match(line):
            path = _key_parts(match.group(1))
            index = entries[path] = entries.get(path, -1) + 1
            table = (*path, index)
            found.setdefault(table, number)
        elif match := _TABLE.match(line):
            table = _key_parts(match.group(1))
            found.setdefault(table, number)
        elif match := _ASSIGNMENT.match(line):
            found.setdefault((*table, *_key_parts(match.group(1))), number)
    return found


def line_of(text: str, loc: Loc) -> int | None:
    """The line of ``loc``, or of the deepest table or key above it written in the text."""
    lines = toml_lines(text)
    for depth in range(len(loc), 0, -1):
        if loc[:depth] in lines:
            return lines[loc[:depth]]
    return None


def _model_of(annotation: Any) -> Any:
    """The annotation without Annotated[...] and Optional[...] around it."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            models = [a for a in members if isinstance(a, type) and issubclass(a, BaseModel)]
            annotation = (models or members)[0]
        else:
            return annotation


def keys_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys a table at ``loc`` may hold under ``model`` (none where any key goes)."""
    annotation: Any = model
    for part in loc:
        annotation = _model_of(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif get_origin(annotation) in (list, tuple, set, frozenset) and isinstance(part, int):
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return []
    annotation = _model_of(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """ "; did you mean 'x'?" for the closest choice, or nothing when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def validation_problems(exc: ValidationError, model: type[BaseModel]) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc: Loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            message = "unknown key" + did_you_mean(str(loc[-1]), keys_at(model, loc[:-1]))
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(Problem(loc, message))
    return problems


def describe(heading: str, problems: Sequence[Problem], path: Path | None) -> str:
    """The heading, then one ``file:line: key: message`` line per problem."""
    text = None
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = None
    lines = [heading]
    for problem in problems:
        key = ".".join(str(part) for part in problem.loc) or "(top level)"
        line = line_of(text, problem.loc) if text is not None else None
        where = f"{path}:{line}: " if line is not None else ""
        lines.append(f"  {where}{key}: {problem.message}")
    return "\n".join(lines)
