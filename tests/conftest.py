"""Session-wide real parts (simulated fleet, LiteLLM proxy) and a per-test classifier factory."""

from __future__ import annotations

import os

# The tests that import LiteLLM in this process (the hooks' units) run offline as the proxy does: without
# this, importing litellm tries to fetch its cost map from GitHub (three attempts) before using its copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from capability_matrix.probe import Probe
from classifier.app import create_app
from classifier.settings import Secret, Settings
from tests.harness import SimThread, free_ports, read_events, render_fleet_files, served
from tests.redis_server import RedisServer
from torchrouter.litellm_process import LiteLLMProcess
from torchrouter.sim import fleet_spec_from_matrix
from torchrouter_core import trail

SIM_TIME_SCALE = 0.02
CLOUD_KEY = "sim-test-cloud-key"


@dataclass
class Stack:
    dir: Path
    matrix_path: Path
    config_path: Path
    events_path: Path
    sim: SimThread
    litellm: LiteLLMProcess
    master_key: str
    startup_s: float
    mark: int = 0  # a test's bookmark in the trail (events before it belong to earlier tests)

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.events_path)


@contextlib.contextmanager
def running_stack(
    root: Path,
    env_extra: dict[str, str] | None = None,
    edit_matrix: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[Stack]:
    """A simulated fleet and a real LiteLLM proxy with our hooks, on free ports under ``root``;
    ``env_extra`` adds to LiteLLM's environment (breaker and time-budget settings, say); ``edit_matrix``
    changes the matrix copy (as an operator would) before anything starts."""
    render_fleet_files(root)
    matrix_path, config_path = root / "matrix.yaml", root / "litellm_config.yaml"
    if edit_matrix is not None:
        doc = yaml.safe_load(matrix_path.read_text())
        edit_matrix(doc)
        matrix_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    events_path = root / "events.jsonl"
    spec = fleet_spec_from_matrix(
        yaml.safe_load(matrix_path.read_text()), cloud_api_key=CLOUD_KEY, seed=7, time_scale=SIM_TIME_SCALE
    )
    sim = SimThread(spec)
    sim.start()
    master_key = "sk-test-" + secrets.token_hex(12)
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": master_key,
        "TORCHROUTER_CLOUD_API_KEY": CLOUD_KEY,
        "TORCHROUTER_CAPABILITY_MATRIX_PATH": str(matrix_path),
        "TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH": str(events_path),
        **(env_extra or {}),
    }
    litellm = LiteLLMProcess.start(config_path, port=free_ports(1)[0], env=env, log_path=root / "litellm.log")
    try:
        startup_s = litellm.wait_ready()
        yield Stack(root, matrix_path, config_path, events_path, sim, litellm, master_key, startup_s)
    finally:
        litellm.stop()
        sim.stop()
    # The trail is a product: every event the tests made the stack write matches the published schema.
    wrong = trail.problems(read_events(events_path))
    assert not wrong, f"{len(wrong)} trail events break event_schemas/events.schema.json:\n" + "\n".join(
        wrong[:20]
    )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free port for the whole session (fails, never skips, when missing)."""
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def flushed(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A client of the session's Redis with its database emptied first (state shared across tests)."""
    client: aioredis.Redis = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


ClassifierFactory = Callable[..., Awaitable[str]]


@contextlib.asynccontextmanager
async def classifiers_for(stack: Stack) -> AsyncIterator[ClassifierFactory]:
    """Start classifiers (real aiohttp servers on free ports) against ``stack``'s LiteLLM; ``probe``
    replaces a classifier's fleet probe (the real one polls the stack's simulated fleet), overrides its
    settings."""
    async with contextlib.AsyncExitStack() as servers:

        async def factory(*, probe: Probe | None = None, **overrides: Any) -> str:
            base: dict[str, Any] = {
                "litellm_url": stack.litellm.url,
                "master_key": Secret(stack.master_key),
                "matrix_path": stack.matrix_path,
                "event_path": str(stack.events_path),
            }
            settings = Settings(**{**base, **overrides})
            app: web.Application = create_app(settings, probe=probe, registry=CollectorRegistry())
            return await servers.enter_async_context(served(app, classifier=True, handler_cancellation=True))

        yield factory


@pytest.fixture
async def make_classifier(stack: Stack) -> AsyncIterator[ClassifierFactory]:
    async with classifiers_for(stack) as factory:
        yield factory


@pytest.fixture
async def classifier_url(make_classifier: ClassifierFactory) -> str:
    return await make_classifier()
