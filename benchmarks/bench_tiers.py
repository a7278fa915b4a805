"""What does the learned tier model cost per request? Content tiering with the model against the keyword
rules alone, on the same requests, in the same run, one core (this process, no threads).

Measured: ``extract_features`` + ``classify`` as ``decide()`` runs them for an unknown agent, with the
shipped model (``torchrouter_core/tier_model.json``) and without (the rules), plus the model's ``score``
alone.
Requests: every example of the corpus (short to long, tools, multi-turn, several languages) and, for the
bound ("huge max"), three synthetic huge ones (a 1 MB paste, 10,000 messages, a 5,000-part content list),
an agent-shaped one (an 8 KB system prompt, 60 turns, 20 tools, a 6 KB last message, all of corpus text)
and two made to hit every cap of the model's features (5,000 random letters and marks, or CJK characters
and marks, in the system prompt and the last two user messages; 50 tools with long names).

Run: ``python -m benchmarks.bench_tiers`` (``BENCH_REPEAT`` passes over the corpus, default 5).
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

from torchrouter.tiers import _NO_AGENTS, DEFAULT_CORPUS_PATH, load_corpus
from torchrouter_core.identity import Identity
from torchrouter_core.tier_model import load_tier_model
from torchrouter_core.tiering import classify, extract_features

ANONYMOUS = Identity(None, "anonymous", None, None)
HUGE: list[Mapping[str, Any]] = [
    {"messages": [{"role": "user", "content": "2026-01-01 ERROR worker reset by peer\n" * 27_000}]},
    {
        "messages": [{"role": "user", "content": "a short turn"}, {"role": "assistant", "content": "ok"}]
        * 5_000
    },
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "part of a long paste"}] * 5_000}]},
]


HUGE_NAMES = ("1 MB paste", "10,000 messages", "5,000 parts", "agent-shaped", "noise ASCII", "noise CJK")


def bound_bodies(texts: list[str]) -> list[Mapping[str, Any]]:
    """The agent-shaped request (from corpus text) and the two that hit every cap (module docstring)."""
    prose = " ".join(texts)
    agent = {
        "messages": [
            {"role": "system", "content": prose[:8_000]},
            *(
                {"role": "user", "content": prose[8_000 + i * 500 : 8_500 + i * 500]}
                if i % 2 == 0
                else {"role": "assistant", "content": prose[i * 300 : i * 300 + 300]}
                for i in range(60)
            ),
            {"role": "user", "content": prose[40_000:46_000]},
        ],
        "tools": [{"type": "function", "function": {"name": f"tool_{i}_fetch_record"}} for i in range(20)],
    }
    rng = random.Random(0)

    def noise(alphabet: str) -> dict[str, Any]:
        text = "".join(rng.choice(alphabet) for _ in range(5_000))
        roles = ("system", "user", "assistant", "user")
        return {
            "messages": [{"role": role, "content": text} for role in roles],
            "tools": [{"name": "_".join(rng.choice(["get", "list", "record"]) for _ in range(20))}] * 50,
        }

    return [
        agent,
        noise("abcdefghijklmnopqrstuvwxyz!@#$%^&*()-+=[]{};:,.<>/?| "),
        noise("\u6570\u636e\u5e93\u7d22\u5f15\u8bf7\u5e2e\u6211\u68c0\u67e5\u4e3a\u4ec0\u4e48\uff0c\u3002 "),
    ]


def per_call_us(
    fn: Callable[[Mapping[str, Any]], object], bodies: list[Mapping[str, Any]], repeat: int
) -> list[float]:
    """Microseconds per call for each body: the best of ``repeat`` timed passes (the least disturbed)."""
    best = [float("inf")] * len(bodies)
    for _ in range(repeat):
        for i, body in enumerate(bodies):
            start = time.perf_counter_ns()
            fn(body)
            best[i] = min(best[i], (time.perf_counter_ns() - start) / 1000)
    return best


def main() -> None:
    repeat = int(os.environ.get("BENCH_REPEAT", "5"))
    model = load_tier_model()
    examples = load_corpus(DEFAULT_CORPUS_PATH)
    bodies = [e.body for e in examples]
    texts = [m["content"] for e in examples for m in e.body["messages"] if isinstance(m.get("content"), str)]
    huge_bodies = [*HUGE, *bound_bodies(texts)]

    def rules(body: Mapping[str, Any]) -> object:
        return classify(ANONYMOUS, extract_features(body), _NO_AGENTS)

    def learned(body: Mapping[str, Any]) -> object:
        return classify(ANONYMOUS, extract_features(body, model=model), _NO_AGENTS)

    gc.disable()  # collections would land on random calls; both paths allocate alike
    print(f"{len(bodies)} corpus requests, best of {repeat} passes each; microseconds per request")
    print(f"{'path':<28}{'median':>9}{'p90':>9}{'p99':>9}{'max':>9}{'huge max':>10}")
    results = {}
    for name, fn in [
        ("rules only (baseline)", rules),
        ("rules + model (shipped)", learned),
        ("model.score alone", model.score),
    ]:
        times = sorted(per_call_us(fn, bodies, repeat))
        huge = max(per_call_us(fn, huge_bodies, repeat))
        results[name] = times
        q = statistics.quantiles(times, n=100)
        print(f"{name:<28}{q[49]:>9.1f}{q[89]:>9.1f}{q[98]:>9.1f}{times[-1]:>9.1f}{huge:>10.1f}")
    bound = per_call_us(model.score, huge_bodies, repeat)
    each = ", ".join(f"{n} {t:.0f}" for n, t in zip(HUGE_NAMES, bound, strict=True))
    print(f"model.score on each bound request: {each}")
    base = statistics.median(results["rules only (baseline)"])
    with_model = statistics.median(results["rules + model (shipped)"])
    print(f"ratio, median (rules + model) / rules: {with_model / base:.2f}")
    gc.enable()


if __name__ == "__main__":
    main()
