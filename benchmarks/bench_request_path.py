"""CPU cost of the classifier's pure request path per request: body checks and the route decision.

Measured with ``time.thread_time`` (best of ``repeat`` runs of ``number`` calls), so other processes on a
shared machine do not count. The baseline in the same run is ``orjson.loads`` of the same body: the floor
any JSON endpoint pays. Bodies: the overhead benchmark's one-line chat turn; an SDK turn 2 with the
assistant echo's nulls; a compressed (zstd) body; an image part (the feasibility check's slow path).

Run: ``python -m benchmarks.bench_request_path``. To compare two commits, run it in each checkout
(``PYTHONPATH=<checkout>``), alternately.
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable

import orjson
from backports import zstd
from multidict import CIMultiDict, CIMultiDictProxy

from capability_matrix import DEFAULT_MATRIX_PATH, load_matrix
from classifier.body_decode import decode_body
from classifier.chat_body import parse_chat_body
from classifier.settings import DEFAULT_AGENTS_PATH, DEFAULT_ALIASES_PATH
from torchrouter_core.aliases import AliasesStore
from torchrouter_core.decide import AgentsStore, decide

USER = [{"role": "user", "content": "Status in one line?"}]
ECHO = {"role": "assistant", "content": "Hello!", "refusal": None, "annotations": None, "tool_calls": None}
IMAGE = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "data:x"}}]
BODIES: dict[str, bytes] = {
    "one-line turn": orjson.dumps({"model": "auto", "messages": USER, "max_tokens": 8}),
    "turn 2 with nulls": orjson.dumps({"model": "auto", "messages": [*USER, ECHO, *USER], "tools": None}),
    "image part": orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": IMAGE}]}),
}
ZSTD = zstd.compress(BODIES["one-line turn"])


def cpu_us(fn: Callable[[], object], number: int = 4000, repeat: int = 30) -> float:
    return min(timeit.Timer(fn, timer=time.thread_time).repeat(number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    agents = AgentsStore(DEFAULT_AGENTS_PATH).current
    aliases = AliasesStore(DEFAULT_ALIASES_PATH).current
    matrix = load_matrix(DEFAULT_MATRIX_PATH)
    print("| body | agent | orjson.loads (baseline) us | parse + decide us | ratio |")
    print("|---|---|---|---|---|")
    for name, raw in BODIES.items():
        for agent in ("inbox-triage", None):
            headers = CIMultiDictProxy(CIMultiDict({"X-Agent-Id": agent} if agent else {}))

            def path(raw: bytes = raw, headers: CIMultiDictProxy[str] = headers) -> None:
                body = parse_chat_body(raw, "application/json")
                decide(
                    headers,
                    body,
                    agents=agents,
                    matrix=matrix,
                    routing_mode="local-first",
                    canary_share=0.0,
                    request_id="r",
                    now=time.time(),
                    aliases=aliases,
                )

            base = cpu_us(lambda raw=raw: orjson.loads(raw))  # type: ignore[misc]
            cost = cpu_us(path)
            who = agent or "unknown"
            print(f"| {name} | {who} | {base:.2f} | {cost:.2f} | {cost / base:.1f} |")
    dec = cpu_us(lambda: decode_body(ZSTD, "zstd", max_bytes=8 << 20))
    print(f"\nzstd decode of the one-line turn ({len(ZSTD)} bytes): {dec:.2f} us")


if __name__ == "__main__":
    main()
