"""How deep a client's JSON may nest: one bound, checked once, so that no later walk can be driven deep.

Why a bound at all: a chat body is walked by the classifier (validation, tiering's features, the token
estimate), re-encoded by orjson to forward it (orjson refuses to encode past 255 levels, and to decode past
1024), parsed and deep-copied by LiteLLM (recursive, Python's stack), and walked again by our hooks. A tool
whose ``parameters`` schema nests 130 objects is a 5 KB body and used to end in a 500 somewhere on that path.

The bound, :data:`MAX_JSON_DEPTH` = 128 levels (the body object is level 1), is far beyond real requests:
OpenAI's structured outputs allow at most 10 levels of schema nesting (its API reference, "Supported
schemas"), and a tool schema nests about two JSON levels per schema level. Every step downstream is tested
at exactly this depth. A deeper body is a 400 naming the bound and the top-level field it is under.
A JSON *string* is not nested structure: ``tool_calls[].function.arguments`` may hold any depth.

Pure and iterative (no recursion, so the check itself cannot overflow a stack).
"""

from __future__ import annotations

from typing import Any, Final

MAX_JSON_DEPTH: Final = 128


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> str | None:
    """``None`` when ``value`` nests at most ``limit`` levels, else the top-level key (or ``"body"``) under
    which it goes deeper. Visits each container at most once and stops at the first too-deep one."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "body")]
    while stack:
        node, depth, top = stack.pop()
        if depth > limit:
            return top
        if isinstance(node, dict):
            for key, child in node.items():
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1, str(key) if depth == 1 else top))
        elif isinstance(node, list):
            for child in node:
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1, top))
    return None


def may_be_too_deep(raw_len: int, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text of ``raw_len`` bytes can nest past ``limit`` at all: each level costs at least
    two bytes (``[`` and ``]``), so short bodies (almost every chat turn) skip the walk."""
    return raw_len > 2 * limit
