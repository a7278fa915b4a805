"""YAML as operators write it: a safe loader that refuses a repeated mapping key instead of keeping the last.

PyYAML's ``safe_load`` resolves ``fallbacks: [...]`` given twice in one mapping by silently dropping the
first; an operator who edits the wrong copy then sees no effect and no error. :func:`safe_load_strict`
(and :class:`StrictSafeLoader`) raise :class:`DuplicateKeyError`, a ``yaml.YAMLError`` naming the key and
both lines, so every caller that already turns a YAML error into a one-line refusal refuses this too.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

try:  # libyaml when PyYAML was built with it (faster); the same behaviour either way
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names the same key twice; ``str()`` is one line giving the key and both lines."""

    def __str__(self) -> str:
        return str(self.problem)


def duplicate_key_message(key: object, line: int, first_line: int) -> str:
    return (
        f"line {line}: key {key!r} is repeated (first at line {first_line}); "
        "YAML would silently keep only the last one"
    )


class StrictSafeLoader(_BaseLoader):
    """``yaml.SafeLoader`` (libyaml's when available) that raises :class:`DuplicateKeyError` on a repeated
    mapping key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        first_line: dict[object, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key: the base loader says so
                continue
            if seen is not None:
                raise DuplicateKeyError(
                    None, None, duplicate_key_message(key, line, seen), key_node.start_mark
                )
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def safe_load_strict(text: str | bytes) -> Any:
    """``yaml.safe_load`` that refuses duplicate mapping keys (:class:`DuplicateKeyError`)."""
    loader = StrictSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """One line for any YAML error: a repeated key as :class:`DuplicateKeyError` words it, a syntax error
    with its line and column."""
    if isinstance(exc, DuplicateKeyError):
        return str(exc)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    what = ": ".join(str(s) for s in (getattr(exc, "context", None), getattr(exc, "problem", None)) if s)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"YAML syntax error{where}: {what or str(exc).splitlines()[0]}"
