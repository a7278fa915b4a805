"""Ollama's own timings of one call, read from its /api/chat answer (pure: text in, values out).

The hooks learn a deployment's service time, prompt pace and cold-load time from them
(:class:`~torchrouter_core.ranker.observed.ObservedTimes`) rather than from the call's wall time, which
counts the wait in Ollama's line and, for an answer not streamed, the whole call as its time to first token.
LiteLLM 1.102.4 hands the raw body to its success log as ``original_response`` (a stream's is a
placeholder, which :func:`parse_ollama_run` turns down).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

MAX_LEN = 1 << 20  # a longer raw answer (chars, or bytes) is not parsed again for its timings
MAX_NS = 3600 * 10**9  # a duration over an hour is not a run's: a broken upstream, not learnt


@dataclass(frozen=True, slots=True)
class OllamaRun:
    """What Ollama's own timings say of one call (/api/chat's final answer, Ollama's API reference,
    "Generate a chat completion"): ``run_s``, seconds it ran on its slot (``prompt_eval_duration`` +
    ``eval_duration``: the wait for a slot and any load left out, unlike its wall time); ``prompt``,
    (tokens evaluated, seconds) of its prompt, or None when the count is missing; ``load_s``, seconds it
    waited for its model to load (``load_duration``, None when absent: nothing was loaded). Ollama's
    ``prompt_eval_count`` includes the tokens read from its prompt cache (``llm/llama_server.go``: cached +
    evaluated) while ``prompt_eval_duration`` times only those evaluated, so the cached ones
    (``prompt_eval_cached_count``, in Ollama's ``api.Metrics``; absent when none, or from an Ollama that
    does not report it) are taken off the count."""

    run_s: float
    prompt: tuple[int, float] | None
    load_s: float | None = None

    def service_s(self, wall_s: float | None) -> float | None:
        """The service time to learn from this call: its run on a slot, never longer than the call's wall
        time ``wall_s`` (s); ``wall_s`` itself when the run is 0 (nothing Ollama timed)."""
        if self.run_s <= 0:
            return wall_s
        return self.run_s if wall_s is None else min(self.run_s, wall_s)


def _count(value: object) -> int | None:
    """A JSON count (ns, tokens): a non-negative int, not a bool."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse_ollama_run(original: object) -> OllamaRun | None:
    """:class:`OllamaRun` of LiteLLM's ``original_response`` (the upstream's raw body; str). None when it is
    not Ollama's final answer (``done`` true) with an ``eval_duration`` (a cloud deployment's, a stream's
    placeholder, an answer longer than ``MAX_LEN``), or a duration is not a count or over
    ``MAX_NS``. Ollama leaves out a zero field (``omitempty``): a prompt served whole from
    its cache has no ``prompt_eval_duration``, taken as 0. Raises nothing."""
    if not isinstance(original, str | bytes) or not original or len(original) > MAX_LEN:
        return None
    try:
        body = orjson.loads(original)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("done") is not True or "eval_duration" not in body:
        return None
    prompt_ns, eval_ns = _count(body.get("prompt_eval_duration", 0)), _count(body["eval_duration"])
    if prompt_ns is None or eval_ns is None or max(prompt_ns, eval_ns) > MAX_NS:
        return None
    tokens, cached = _count(body.get("prompt_eval_count")), _count(body.get("prompt_eval_cached_count", 0))
    evaluated = None if tokens is None or cached is None or cached > tokens else tokens - cached
    load_ns = _count(body.get("load_duration"))
    return OllamaRun(
        (prompt_ns + eval_ns) / 1e9,
        None if evaluated is None else (evaluated, prompt_ns / 1e9),
        None if load_ns is None or load_ns > MAX_NS else load_ns / 1e9,
    )
