"""Null means "not given": optional fields of an OpenAI chat request sent as ``null`` are dropped.

OpenAI's SDKs send them: turn 2 of a conversation appends the assistant message as ``model_dump()`` writes
it (``"tool_calls": null, "function_call": null, "refusal": null, "audio": null, "annotations": null``), and
many clients serialise unset parameters as ``null`` (``"tools": null``, ``"stream": null``). OpenAI's API
treats an optional field sent as null as absent; so do we.

Where the rule comes from: ``openai_chat_request.schema.json`` beside this module, a JSON Schema of the
request written from OpenAI's API reference (CreateChatCompletionRequest and the message, content-part,
tool and response-format types). :func:`drop_optional_nulls` walks a parsed body *along that schema*:

* a key whose value is ``null`` is removed when the schema lists it as an optional property of the object
  it is in (not in ``required``);
* except where the schema marks the property ``"x-null-meaningful": true``: an assistant message's
  ``content`` is null when the message carries ``tool_calls``, and providers expect to see it;
* it never descends into free-form objects (tool ``parameters``, a ``response_format`` schema, ``metadata``,
  ``logit_bias``): a ``"default": null`` inside a client's JSON Schema is the client's, not ours;
* keys the schema does not name are left alone (a provider-specific extra passes through as sent), except
  a message field OpenAI defines for another role (``"name": null`` on a tool message, ``"tool_calls":
  null`` on a user message, as generic message builders write them): null there is "not given" too.

Why drop rather than tolerate: after this step the classifier's validation, tiering, token estimate and
everything downstream (LiteLLM, our hooks, the provider) see one form of "not given", so none of them has
to know that null may stand for absent. The walk follows the schema, so its depth is the schema's (a few
levels), never the client's nesting.

The function is pure apart from editing the body it is given in place (the freshly parsed request, owned by
the caller); it returns the paths it dropped, for tests and the trail.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

SCHEMA_PATH: Final = Path(__file__).with_name("openai_chat_request.schema.json")
_KEEP: Final = "x-null-meaningful"


@functools.cache
def request_schema() -> dict[str, Any]:
    """The OpenAI chat request schema (read once, on first use)."""
    doc: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return doc


def resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow ``$ref`` (only local ``#/$defs/...`` references are used in the schema)."""
    while "$ref" in node:
        name = str(node["$ref"]).removeprefix("#/$defs/")
        node = root["$defs"][name]
    return node


# Per schema node (by identity; the schema is read once and never changes): its object variants with
# their discriminators, and an array node's item schema. Resolving ``$ref`` and ``anyOf`` once per node
# instead of once per message keeps the walk at about a microsecond per message.
_VARIANTS: dict[int, tuple[tuple[Mapping[str, Any], tuple[tuple[str, Any], ...]], ...]] = {}
_ITEMS: dict[int, Mapping[str, Any] | None] = {}


def _variants(
    node: Mapping[str, Any], root: Mapping[str, Any]
) -> tuple[tuple[Mapping[str, Any], tuple[tuple[str, Any], ...]], ...]:
    """Every object schema reachable from ``node`` through ``$ref``/``anyOf``, with its ``const``
    properties (``role``, ``type``), in schema order."""
    cached = _VARIANTS.get(id(node))
    if cached is not None:
        return cached
    found: list[tuple[Mapping[str, Any], tuple[tuple[str, Any], ...]]] = []
    resolved = resolve(node, root)
    if "anyOf" in resolved:
        for branch in resolved["anyOf"]:
            found.extend(_variants(branch, root))
    elif resolved.get("type") == "object":
        props = resolved.get("properties") or {}
        consts = tuple((k, sub["const"]) for k, sub in props.items() if "const" in sub)
        found.append((resolved, consts))
    result = tuple(found)
    _VARIANTS[id(node)] = result
    return result


def object_variant(
    node: Mapping[str, Any], value: Mapping[str, Any], root: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The object schema that describes ``value`` at ``node``: the node itself, or the ``anyOf`` branch
    whose discriminators (``role``, ``type``) match. ``None`` when no object branch fits."""
    for variant, consts in _variants(node, root):
        for key, const in consts:
            if value.get(key) != const:
                break
        else:
            return variant
    return None


def _array_items(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any] | None:
    key = id(node)
    if key in _ITEMS:
        return _ITEMS[key]
    resolved = resolve(node, root)
    items: Mapping[str, Any] | None = None
    if resolved.get("type") == "array":
        candidate = resolved.get("items")
        items = candidate if isinstance(candidate, Mapping) else None
    else:
        for branch in resolved.get("anyOf", ()):
            items = _array_items(branch, root)
            if items is not None:
                break
    _ITEMS[key] = items
    return items


_Path = tuple[Any, str | int] | None  # (parent path, key or index): built as a chain, formatted on a drop


def _format(path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        path, step = path
        parts.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return "".join(reversed(parts)).lstrip(".")


def _message_fields(root: Mapping[str, Any]) -> frozenset[str]:
    """Every field some role's message has besides ``role`` and ``content`` (``name``, ``tool_calls``,
    ``tool_call_id``...)."""
    message = (root.get("$defs") or {}).get("message") or {}
    fields: set[str] = set()
    for branch in message.get("anyOf") or ():
        fields.update(resolve(branch, root).get("properties") or {})
    return frozenset(fields - {"role", "content"})


def drop_optional_nulls(body: dict[str, Any], schema: Mapping[str, Any] | None = None) -> list[str]:
    """Remove, in place, every optional field of ``body`` that is ``null`` (see the module docstring).

    ``schema`` defaults to :func:`request_schema`. Returns the dropped paths (``messages[1].tool_calls``),
    in walk order. Never raises on a malformed body: a part that fits no schema variant is left as it is,
    for validation to answer."""
    root = schema if schema is not None else request_schema()
    other_roles = _message_fields(root)
    dropped: list[str] = []
    # An explicit stack instead of recursion: the walk is as deep as the schema, but stays flat anyway.
    # Only objects and arrays go on it; a path is a (parent, step) chain, formatted only for a drop.
    stack: list[tuple[Any, Mapping[str, Any], _Path]] = [(body, root, None)]
    while stack:
        value, node, path = stack.pop()
        if isinstance(value, dict):
            variant = object_variant(node, value, root)
            if variant is None:
                continue
            props: Mapping[str, Any] = variant.get("properties") or {}
            if not props:
                continue  # free-form: the client's own structure
            required = variant.get("required") or ()
            for key in list(value):
                sub = props.get(key)
                child = value[key]
                if sub is None:
                    # A message field of another role, sent as null: "not given" as well.
                    if child is None and key in other_roles and "role" in props:
                        del value[key]
                        dropped.append(_format((path, key)))
                    continue
                if child is None:
                    if key not in required and not sub.get(_KEEP, False):
                        del value[key]
                        dropped.append(_format((path, key)))
                elif isinstance(child, dict | list):
                    stack.append((child, sub, (path, key)))
        elif isinstance(value, list):
            items = _array_items(node, root)
            if items is None:
                continue
            for index in range(len(value) - 1, -1, -1):  # reversed: pops come out in order
                child = value[index]
                if isinstance(child, dict | list):
                    stack.append((child, items, (path, index)))
    return dropped
