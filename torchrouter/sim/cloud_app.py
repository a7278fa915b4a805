"""The simulated cloud provider: an OpenAI-compatible API with a bearer key, for the router's fallback path.

Owns what differs from a simulated Ollama host: API-key checks, OpenAI-style errors (401, 404, 429), the
model list, and unlimited concurrency (a cloud has no slots or GPU memory to model). Chat formatting, faults
and the /sim/ admin API are shared with `ollama_app`. Replies start with `sim:cloud:<model>`.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from torchrouter.sim.ollama_app import (
    HOST_FAULTS,
    RUNTIME,
    Clock,
    Job,
    Run,
    SimRuntime,
    job_reply,
    json_response,
    openai_chat,
    openai_error,
    sim_app,
)
from torchrouter.sim.scheduler import Counters
from torchrouter.sim.spec import CloudSpec

FIRST_TOKEN_S = 0.25  # network and queueing latency before a cloud model's first token, before time_scale


class CloudRuntime(SimRuntime):
    modes = HOST_FAULTS | {"error_429", "auth"}

    def __init__(self, spec: CloudSpec, *, seed: int, time_scale: float, clock: Clock) -> None:
        super().__init__("cloud", seed=seed, time_scale=time_scale, clock=clock)
        self.spec = spec
        self._counters = Counters()
        self.in_flight = 0

    @property
    def counters(self) -> Counters:
        return self._counters

    def knows(self, model: str) -> bool:
        return model in self.spec.models

    def unknown_model_message(self, model: str) -> str:
        return f"The model `{model}` does not exist or you do not have access to it."

    def authorized(self, request: web.Request) -> bool:
        # Constant-time compare; the key is never echoed back, not even masked.
        header = request.headers.get("Authorization", "")
        return hmac.compare_digest(header.encode(), f"Bearer {self.spec.api_key}".encode())

    @asynccontextmanager
    async def run(self, job: Job) -> AsyncIterator[Run]:
        arrived = self.clock()
        self.in_flight += 1
        try:
            latency = FIRST_TOKEN_S * self.time_scale
            await asyncio.sleep(latency)
            reply = job_reply(self.seed, self.source, job, thinking=False)
            yield Run(reply, self.spec.tokens_per_s, self.time_scale, self.clock, arrived, latency)
        finally:
            self.in_flight -= 1

    def state(self) -> dict[str, Any]:
        counters = self._counters.as_dict()
        return {
            "host_id": "cloud",
            "models": list(self.spec.models),
            "in_flight": self.in_flight,
            "think": counters.pop("think"),
            "counters": counters,
            "fault": self.faults.as_dict(),
        }

    def reset(self) -> None:
        super().reset()
        self._counters = Counters()


async def list_models(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    assert isinstance(rt, CloudRuntime)
    if not rt.authorized(request):
        return openai_error(401, "Incorrect API key provided.")
    created = int(time.time())
    data = [{"id": m, "object": "model", "created": created, "owned_by": "sim"} for m in rt.spec.models]
    return json_response({"object": "list", "data": data})


def create_cloud_app(
    spec: CloudSpec, *, seed: int = 0, time_scale: float = 1.0, clock: Clock = time.monotonic
) -> web.Application:
    app = sim_app(CloudRuntime(spec, seed=seed, time_scale=time_scale, clock=clock))
    app.router.add_post("/v1/chat/completions", openai_chat)
    app.router.add_get("/v1/models", list_models)
    return app
