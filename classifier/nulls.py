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
* keys the schema does not name are left alone (a provider-specific extra passes through as sent).

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


def _matches(branch: Mapping[str, Any], value: Mapping[str, Any]) -> bool:
    """Whether an object variant fits ``value``: every ``const`` property (role, type) agrees."""
    for key, sub in (branch.get("properties") or {}).items():
        if "const" in sub and value.get(key) != sub["const"]:
            return False
    return True


def object_variant(
    node: Mapping[str, Any], value: Mapping[str, Any], root: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The object schema that describes ``value`` at ``node``: the node itself, or the ``anyOf`` branch
    whose discriminators (``role``, ``type``) match. ``None`` when no object branch fits."""
    node = resolve(node, root)
    if "anyOf" in node:
        for branch in node["anyOf"]:
            found = object_variant(branch, value, root)
            if found is not None:
                return found
        return None
    if node.get("type") == "object" and _matches(node, value):
        return node
    return None


def _array_items(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any] | None:
    node = resolve(node, root)
    if node.get("type") == "array":
        items = node.get("items")
        return items if isinstance(items, Mapping) else None
    for branch in node.get("anyOf", ()):
        items = _array_items(branch, root)
        if items is not None:
            return items
    return None


def drop_optional_nulls(body: dict[str, Any], schema: Mapping[str, Any] | None = None) -> list[str]:
    """Remove, in place, every optional field of ``body`` that is ``null`` (see the module docstring).

    ``schema`` defaults to :func:`request_schema`. Returns the dropped paths (``messages[1].tool_calls``),
    in walk order. Never raises on a malformed body: a part that fits no schema variant is left as it is,
    for validation to answer."""
    root = schema if schema is not None else request_schema()
    dropped: list[str] = []
    # An explicit stack instead of recursion: the walk is as deep as the schema, but stays flat anyway.
    stack: list[tuple[Any, Mapping[str, Any], str]] = [(body, root, "")]
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
                if sub is None:
                    continue
                child = value[key]
                where = f"{path}.{key}" if path else key
                if child is None:
                    if key not in required and not sub.get(_KEEP, False):
                        del value[key]
                        dropped.append(where)
                else:
                    stack.append((child, sub, where))
        elif isinstance(value, list):
            items = _array_items(node, root)
            if items is None:
                continue
            for index in range(len(value) - 1, -1, -1):  # reversed: pops come out in order
                stack.append((value[index], items, f"{path}[{index}]"))
    return dropped
