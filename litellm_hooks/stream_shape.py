"""OpenAI's chat-completion chunk shape for every stream LiteLLM sends, whatever the lane: pure, no I/O.

LiteLLM 1.102.4 does not keep that shape on every lane. With ``ollama_chat/`` deployments every chunk of
one stream carries a fresh bare UUID as ``id`` (clients that merge chunks by id split one answer into
many), ``created`` is re-read per chunk, ``finish_reason`` is left out of chunks that have none (OpenAI
sends ``null``), and the ``stream_options.include_usage`` chunk carries ``"choices": [{"index": 0,
"delta": {}}]`` where OpenAI sends ``"choices": []``. The cloud lane keeps one ``chatcmpl-`` id.

The shape we hold every stream to (OpenAI API reference, "The chat completion chunk object",
https://platform.openai.com/docs/api-reference/chat-streaming/streaming; written down as a JSON Schema
in ``tests/schemas/chat_completion_chunk.json``):

- one ``id`` (``chatcmpl-`` prefix), one ``created`` and one ``model`` for every chunk of a stream;
- ``object`` is ``"chat.completion.chunk"``; each choice has ``index``, ``delta`` and ``finish_reason``
  (``null`` until the last);
- with ``include_usage`` the last chunk before ``[DONE]`` has ``"choices": []`` and ``usage``; a chunk
  that carries both content and usage is split into the content chunk and the usage chunk; without it
  no chunk carries ``usage`` (LiteLLM asks some providers for usage on its own account).

``model``, stream or not, is the *group* the classifier forwarded the request to (``fast-chat``,
``cloud-code``, ...), the same on every lane and after a LiteLLM fallback; the deployment that answered is
in the ``X-Router-Model`` header.

Where it runs: in LiteLLM's ``async_post_call_streaming_iterator_hook`` (litellm_hooks/hooks.py), which
hands LiteLLM each shaped chunk as SSE bytes. Chosen by measured cost per chunk
(``benchmarks/bench_stream_shape.py``, BENCHMARKS.md): serializing there replaces LiteLLM's own
serializer for the chunk (+1 us a chunk), where rewriting the SSE events in the classifier's relay
costs +6.5 us a chunk and mutating LiteLLM's chunk objects +4.5 us (and cannot write
``"finish_reason": null``, since LiteLLM serializes without nulls).
"""

from __future__ import annotations

from typing import Any

import orjson

CHUNK_OBJECT = "chat.completion.chunk"
ID_PREFIX = "chatcmpl-"


def stream_id(upstream_id: object) -> str:
    """The stream's id as OpenAI spells it: the upstream id with the ``chatcmpl-`` prefix added if missing."""
    text = upstream_id if isinstance(upstream_id, str) and upstream_id else "missing"
    return text if text.startswith(ID_PREFIX) else ID_PREFIX + text


def _empty_choice(choice: object) -> bool:
    """A choice that says nothing: no delta values, no finish_reason, no logprobs."""
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta")
    if isinstance(delta, dict) and any(v is not None for v in delta.values()):
        return False
    return choice.get("finish_reason") is None and choice.get("logprobs") is None


def _shape_choices(choices: list[Any]) -> None:
    for i, choice in enumerate(choices):
        if isinstance(choice, dict):
            if "index" not in choice:
                choice["index"] = i
            if not isinstance(choice.get("delta"), dict):
                choice["delta"] = {}
            if "finish_reason" not in choice:
                choice["finish_reason"] = None


class ChunkShaper:
    """Holds one stream's identity and rewrites its chunks (parsed JSON objects) to OpenAI's shape.

    ``model``: what every chunk says in ``model`` (the group). ``include_usage``: whether the client asked
    for the usage chunk (``stream_options.include_usage``)."""

    def __init__(self, model: str, *, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id: str | None = None
        self.created: int | None = None

    def shape(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks to send for one upstream chunk (changed in place): usually one; two when content
        and usage share it; none for a usage-only chunk the client did not ask for."""
        if self.id is None:
            self.id = stream_id(chunk.get("id"))
            created = chunk.get("created")
            self.created = created if isinstance(created, int) and not isinstance(created, bool) else 0
        chunk["id"], chunk["object"], chunk["created"], chunk["model"] = (
            self.id,
            CHUNK_OBJECT,
            self.created,
            self.model,
        )
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            choices = chunk["choices"] = []
        _shape_choices(choices)
        usage = chunk.pop("usage", None)
        said_nothing = all(_empty_choice(c) for c in choices)
        if usage is None or not self.include_usage:
            return [] if usage is not None and said_nothing else [chunk]
        if said_nothing:
            chunk["choices"], chunk["usage"] = [], usage
            return [chunk]
        return [chunk, {**chunk, "choices": [], "usage": usage}]


def shaper_for(request_data: dict[str, Any]) -> ChunkShaper | None:
    """The shaper for one proxied chat request (LiteLLM's ``request_data``), or None when it names no model.

    The client asked for usage when ``stream_options.include_usage`` is true and LiteLLM did not add it on
    its own account (it then marks the request ``_litellm_strip_stream_usage``)."""
    model = request_data.get("model")
    if not isinstance(model, str) or not model:
        return None
    options = request_data.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    return ChunkShaper(model, include_usage=asked and not request_data.get("_litellm_strip_stream_usage"))


def sse_event(chunk: dict[str, Any]) -> bytes:
    """One chunk as an SSE ``data:`` event."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"
