"""What a chat request needs of a deployment, worked out once, in the classifier (pure).

The hooks receive it through :mod:`torchrouter_core.contract` instead of working it out again from the
body LiteLLM hands them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from torchrouter_core.ranker.interfaces import RequestNeeds
from torchrouter_core.tiering import RequestFeatures, approx_prompt_tokens

# OpenAI content-part type -> the modality a model must read for it.
PART_MODALITIES: Final = {
    "text": "text",
    "refusal": "text",
    "image_url": "image",
    "input_audio": "audio",
    "file": "file",
}
TEXT_ONLY: Final = frozenset({"text"})
_TEXT_WHERE: Final = MappingProxyType({"text": "messages"})


def input_modalities(messages: object) -> tuple[frozenset[str], Mapping[str, str]]:
    """The modalities a request's messages need, and where each first appears (``messages[0].content[1]``,
    for an error's ``param``). Text is always needed. Only each message's ``content`` list is looked at (one
    level): bounded by the body's size, never its nesting. An unknown part type counts as text (the
    provider will say what it thinks)."""
    found: dict[str, str] | None = None
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            content = message.get("content") if isinstance(message, Mapping) else None
            if not isinstance(content, list):
                continue  # a string: text (most messages; no allocation for them)
            if found is None:
                found = {"text": "messages"}
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, Mapping) else None
                modality = PART_MODALITIES.get(kind, "text") if isinstance(kind, str) else "text"
                if modality not in found:
                    found[modality] = f"messages[{i}].content[{j}]"
    if found is None:
        return TEXT_ONLY, _TEXT_WHERE
    return frozenset(found), found


def output_tokens(body: Mapping[str, Any]) -> int | None:
    """The output a request may ask for: ``max_completion_tokens`` (OpenAI's current name) wins over the
    legacy ``max_tokens``; a missing, zero, negative or non-integer value counts as not given (``None``).
    The one precedence rule: the queue's service-time price and the ranker's context-window filter use it.

    A float with no fractional part (``5e6``, ``5000000.0``) counts as that integer: JSON Schema's
    ``integer`` (which the body validation uses) accepts it, and orjson parses an integer past 64 bits
    (``1`` followed by 30 zeros) as a float; read as "not given", such a request would skip the
    context-window check and reach the provider."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def offered_tools(body: Mapping[str, Any]) -> list[Any] | None:
    """``tools``, else the legacy ``functions`` (OpenAI's older name for the same thing); ``None`` if neither
    is a non-empty list."""
    tools = body.get("tools") or body.get("functions")
    return tools if isinstance(tools, list) and tools else None


def request_needs(body: Mapping[str, Any], features: RequestFeatures | None = None) -> RequestNeeds:
    """``features`` (tiering's, when it read the body) saves a second walk over the messages."""
    tools = offered_tools(body)
    if features is None and tools is None:
        prompt_tokens = _plain_text_tokens(body.get("messages"))
        if prompt_tokens is not None:  # text only and no tool calls: one walk gives everything
            return RequestNeeds(
                prompt_tokens=prompt_tokens,
                max_output_tokens=output_tokens(body) or 0,
                needs_tools=False,
                modalities=TEXT_ONLY,
            )
    if features is not None:
        prompt_tokens = features.approx_prompt_tokens
    else:
        prompt_tokens = approx_prompt_tokens(body.get("messages"), tools)
    return RequestNeeds(
        prompt_tokens=prompt_tokens,
        max_output_tokens=output_tokens(body) or 0,
        needs_tools=tools is not None,
        modalities=input_modalities(body.get("messages"))[0],
    )


def _plain_text_tokens(messages: object) -> int | None:
    """``approx_prompt_tokens(messages)`` when every message's content is a string and none called a tool
    (most requests); ``None`` for anything else, which the general walks then read."""
    if type(messages) is not list:
        return None
    chars = 0
    for message in messages:
        if type(message) is not dict:
            return None
        content = message.get("content")
        if type(content) is not str or message.get("tool_calls") or message.get("function_call"):
            return None
        chars += len(content)
    return math.ceil(chars / 4)
