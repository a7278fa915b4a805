"""Ollama's timings of a call read from its answer (torchrouter_core/ollama_timings.py): what a success
teaches the ranker (the service time, the prompt pace, a cold load), and every answer that teaches none."""

from __future__ import annotations

import orjson
import pytest

from torchrouter_core.ollama_timings import OllamaRun, parse_ollama_run


def answer(**timings: object) -> str:
    """An Ollama /api/chat final answer (non-streamed) with ``timings`` (ns, tokens) among its fields."""
    head = {"model": "m", "message": {"role": "assistant", "content": "x"}, "done": True}
    return orjson.dumps({**head, "total_duration": 9_000_000_000, **timings}).decode()


_RUN = {"prompt_eval_duration": 500_000_000, "eval_duration": 2_000_000_000}


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        (answer(load_duration=4 * 10**9, prompt_eval_count=1000, **_RUN), OllamaRun(2.5, (1000, 0.5), 4.0)),
        (answer(load_duration=4e9, **_RUN), OllamaRun(2.5, None, None)),  # a load that is not a count
        (answer(load_duration=3600 * 10**9 + 1, **_RUN), OllamaRun(2.5, None, None)),  # over an hour
        # prompt_eval_count includes the tokens read from the cache; the duration times the others only
        (answer(prompt_eval_count=1000, prompt_eval_cached_count=800, **_RUN), OllamaRun(2.5, (200, 0.5))),
        (answer(prompt_eval_count=10, prompt_eval_cached_count=11, **_RUN), OllamaRun(2.5, None)),  # more
        (answer(**_RUN), OllamaRun(2.5, None)),  # no prompt_eval_count: a run time, no prompt sample
        (answer(prompt_eval_count=7.5, **_RUN), OllamaRun(2.5, None)),  # a count that is not one
        # omitempty: a prompt read whole from the cache has no prompt_eval_duration (0 ns)
        (
            answer(prompt_eval_count=900, prompt_eval_cached_count=900, eval_duration=10**9),
            OllamaRun(1.0, (0, 0.0)),
        ),
        (answer(prompt_eval_duration=0, eval_duration=0), OllamaRun(0.0, None)),  # zero: the caller's call
        (answer(prompt_eval_duration=10**9, eval_duration=10**9).encode(), OllamaRun(2.0, None)),  # bytes
        (answer(prompt_eval_duration=3600 * 10**9, eval_duration=0), OllamaRun(3600.0, None)),  # an hour
        (answer(prompt_eval_duration=3600 * 10**9 + 1, eval_duration=0), None),  # over: not a run's
        ('{"done": true, "prompt_eval_duration": 18446744073709551615, "eval_duration": 1}', None),  # u64
        ('{"done": true, "prompt_eval_duration": 1000000000000000000000000000000, "eval_duration": 1}', None),
        ('{"done": true, "prompt_eval_duration": 1e400, "eval_duration": 1}', None),  # not JSON to orjson
        (answer(prompt_eval_duration=500), None),  # no eval_duration: not a final answer's timings
        (answer(done=False, **_RUN), None),  # a stream's chunk, not the final answer
        (answer(prompt_eval_duration=-1, eval_duration=2_000_000_000), None),  # negative
        (answer(prompt_eval_duration=1.5, eval_duration=2_000_000_000), None),  # not a count of ns
        (answer(prompt_eval_duration=True, eval_duration=2_000_000_000), None),  # bool is not a count
        (answer(prompt_eval_duration="1", eval_duration="2"), None),  # strings
        ('{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":3}}', None),  # a cloud (OpenAI) answer
        ("first stream response received", None),  # LiteLLM's placeholder for a stream
        ("redacted-by-litellm", None),  # message logging turned off
        ("[1, 2]", None),  # JSON, not an object
        ("data: {not json", None),
        (b"\xff\xfe{", None),  # not UTF-8
        ("", None),
        (None, None),
        ({"done": True, "eval_duration": 1}, None),  # a dict is not a raw body
        (17, None),
        (answer(eval_duration=1, pad="x" * (1 << 20)), None),  # longer than MAX_LEN
    ],
)
def test_a_success_s_service_time_is_ollama_s_run_time(original: object, expected: OllamaRun | None) -> None:
    assert parse_ollama_run(original) == expected


@pytest.mark.parametrize(
    ("run_s", "wall_s", "expected"),
    [
        (2.5, 9.0, 2.5),  # waited 6.5 s in Ollama's line: the run on the slot is the service time
        (2.5, 2.0, 2.0),  # never longer than the whole call (clocks apart)
        (2.5, None, 2.5),  # no wall time from LiteLLM: the run
        (0.0, 9.0, 9.0),  # nothing Ollama timed: the wall time
        (0.0, None, None),
    ],
)
def test_the_service_time_learnt_is_the_run_on_a_slot_never_longer_than_the_call(
    run_s: float, wall_s: float | None, expected: float | None
) -> None:
    assert OllamaRun(run_s, None).service_s(wall_s) == expected
