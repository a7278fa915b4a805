"""Where to put the stream's OpenAI shape: per-chunk cost of each candidate layer, against pass-through.

Issue 8, kind 2. Every candidate fixes the same things on a local (``ollama_chat/``) stream: one ``id``
with the ``chatcmpl-`` prefix, one ``created``, the ``include_usage`` chunk's ``"choices": []``. Measured
on the chunks LiteLLM 1.102.4 really produces: its own Ollama stream parser
(``OllamaChatCompletionResponseIterator.chunk_parser``) turns Ollama ``/api/chat`` lines into
``ModelResponseStream`` objects, and its proxy serializer writes them as SSE.

Inside LiteLLM (per chunk, in LiteLLM's process):

- ``litellm pass-through``: LiteLLM's own per-chunk work with no iterator hook (async generator hop,
  ``_serialize_streaming_chunk``, SSE framing): the baseline;
- ``litellm hook, mutate``: an ``async_post_call_streaming_iterator_hook`` that sets ``id``, ``created``
  and the usage chunk's ``choices`` on the objects, wrapped as LiteLLM wraps an overriding hook
  (``ProxyLogging._wrap_streaming_iterator_with_enrichment``). It cannot make LiteLLM write
  ``"finish_reason": null`` (LiteLLM serializes with ``exclude_none``);
- ``litellm hook, own JSON``: the shipped hook (``RouterHooks.async_post_call_streaming_iterator_hook``)
  serializes each chunk itself (``model_dump`` + :class:`litellm_hooks.stream_shape.ChunkShaper` +
  orjson) and hands LiteLLM the SSE bytes, which LiteLLM passes through: the full shape.

In the classifier (per chunk, in the classifier's process, the bytes LiteLLM sent):

- ``classifier pass-through``: what the relay did before (note the chunk for the ``[DONE]`` check);
- ``classifier SseShaper``: parse each SSE event, rewrite it with the same ``ChunkShaper``, re-encode.

Run: ``python -m benchmarks.bench_stream_shape`` (``BENCH_CHUNKS``, default 20000 chunks per candidate;
``BENCH_ROUNDS`` alternating rounds, default 9;
the best and the median run reported).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # importing litellm must not go online

import orjson
from litellm.llms.ollama.chat.transformation import OllamaChatCompletionResponseIterator
from litellm.proxy.proxy_server import _format_streaming_sse_chunk, _serialize_streaming_chunk
from litellm.proxy.utils import ProxyLogging

from classifier.relay import Relay
from litellm_hooks.hooks import RouterHooks
from litellm_hooks.stream_shape import ChunkShaper

TOKENS = ["sim:host:qwen3:8b", " reply", " to", " 'hi'", " lorem", " ipsum", " dolor", " sit"]


def ollama_lines(n: int) -> list[dict[str, Any]]:
    """n Ollama /api/chat stream lines: content tokens, then the done line with usage."""
    lines: list[dict[str, Any]] = [
        {
            "model": "qwen3:8b",
            "created_at": "2026-11-29T21:00:00Z",
            "message": {"role": "assistant", "content": TOKENS[i % len(TOKENS)]},
            "done": False,
        }
        for i in range(n - 1)
    ]
    lines.append(
        {
            "model": "qwen3:8b",
            "created_at": "2026-11-29T21:00:01Z",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 5,
            "eval_count": n - 1,
        }
    )
    return lines


def litellm_chunks(n: int) -> list[Any]:
    parser = OllamaChatCompletionResponseIterator(streaming_response=iter(()), sync_stream=True)
    chunks = [parser.chunk_parser(line) for line in ollama_lines(n)]
    for c in chunks:
        c.model = "fast-chat"  # LiteLLM restamps the client's model name before serializing
    return chunks


async def _source(chunks: list[Any]) -> AsyncGenerator[Any, None]:
    for c in chunks:
        yield c


async def _hook_mutate(response: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    first_id: str | None = None
    created = 0
    async for chunk in response:
        if first_id is None:
            first_id = chunk.id if chunk.id.startswith("chatcmpl-") else "chatcmpl-" + chunk.id
            created = chunk.created
        chunk.id, chunk.created = first_id, created
        if getattr(chunk, "usage", None) is not None and not chunk.choices[0].delta.content:
            chunk.choices = []
        yield chunk


class SseShaper:
    """The classifier-side candidate: rewrite each SSE event of LiteLLM's byte stream (one event per read
    here, as LiteLLM writes them; a split event would be buffered by the real thing)."""

    def __init__(self, model: str) -> None:
        self.chunks = ChunkShaper(model, include_usage=True)

    def feed(self, data: bytes) -> bytes:
        payload = data[5:].strip()
        if not payload.startswith(b"{"):
            return data
        chunk = orjson.loads(payload)
        if not isinstance(chunk, dict) or "choices" not in chunk:
            return data
        return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in self.chunks.shape(chunk))


def _serialize(chunk: Any) -> Any:
    if isinstance(chunk, bytes):
        return chunk  # LiteLLM passes an SSE-framed bytes chunk through as it is
    return _format_streaming_sse_chunk(_serialize_streaming_chunk(chunk))


async def run_litellm(chunks: list[Any], variant: str) -> float:
    """Seconds for LiteLLM's per-chunk path over ``chunks`` with the given hook variant."""
    stream: AsyncGenerator[Any, None] = _source(chunks)
    if variant == "mutate":
        stream = ProxyLogging._wrap_streaming_iterator_with_enrichment(object(), _hook_mutate(stream))
    elif variant == "own_json":  # the real hook, as shipped
        hooks = RouterHooks()
        request_data = {"model": "fast-chat", "stream": True, "stream_options": {"include_usage": True}}
        stream = ProxyLogging._wrap_streaming_iterator_with_enrichment(
            hooks, hooks.async_post_call_streaming_iterator_hook(None, stream, request_data)
        )
    t0 = time.perf_counter()
    async for chunk in stream:
        _serialize(chunk)
    return time.perf_counter() - t0


def sse_bytes(chunks: list[Any]) -> list[bytes]:
    out = []
    for c in chunks:
        s = _serialize(c)
        out.append(s if isinstance(s, bytes) else s.encode())
    out.append(b"data: [DONE]\n\n")
    return out


def run_classifier(events: list[bytes], shape: bool) -> float:
    relay = Relay()
    t0 = time.perf_counter()
    if shape:
        shaper = SseShaper("fast-chat")
        for e in events:
            out = shaper.feed(e)
            relay.saw(out)
    else:
        for e in events:
            relay.saw(e)
    return time.perf_counter() - t0


def per_chunk_us(samples: list[float], n: int) -> tuple[float, float]:
    """(best, median) microseconds per chunk: on a shared machine the best run is the work itself."""
    return min(samples) / n * 1e6, statistics.median(samples) / n * 1e6


async def main() -> None:
    n = int(os.environ.get("BENCH_CHUNKS", "20000"))
    chunks_factory: Callable[[], list[Any]] = lambda: litellm_chunks(n)  # noqa: E731
    events = sse_bytes(litellm_chunks(n))
    rounds = int(os.environ.get("BENCH_ROUNDS", "9"))
    results: dict[str, list[float]] = {}

    def timed(name: str, seconds: float) -> None:
        results.setdefault(name, []).append(seconds)

    runs: list[tuple[str, Callable[[], Coroutine[Any, Any, float]]]] = []
    for variant in ("pass", "mutate", "own_json"):

        async def go(v: str = variant) -> float:
            return await run_litellm(chunks_factory(), v)

        runs.append((f"litellm {variant}", go))
    for _ in range(rounds):
        for name, fn in runs:
            timed(name, await fn())
        timed("classifier pass", run_classifier(events, False))
        timed("classifier shaper", run_classifier(events, True))

    base_l = per_chunk_us(results["litellm pass"], n)[0]
    base_c = per_chunk_us(results["classifier pass"], n + 1)[0]
    print(f"chunks per run: {n}, rounds: {rounds}; best run (median run) per chunk")
    print(f"{'candidate':<36}{'best us':>9}{'median us':>11}{'added us':>10}{'x baseline':>12}")
    for name, label, base, count in (
        ("litellm pass", "litellm pass-through (baseline)", base_l, n),
        ("litellm mutate", "litellm hook, mutate objects", base_l, n),
        ("litellm own_json", "litellm hook, own JSON", base_l, n),
        ("classifier pass", "classifier pass-through (baseline)", base_c, n + 1),
        ("classifier shaper", "classifier SseShaper", base_c, n + 1),
    ):
        best, med = per_chunk_us(results[name], count)
        print(f"{label:<36}{best:>9.2f}{med:>11.2f}{best - base:>10.2f}{best / base:>12.2f}")


if __name__ == "__main__":
    asyncio.run(main())
