"""Session-wide real parts (simulated fleet, LiteLLM proxy) and a per-test classifier factory."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner
from prometheus_client import CollectorRegistry

from classifier.app import create_app
from classifier.protocol_edge import ClassifierRunner
from classifier.settings import Secret, Settings
from tests.harness import SimThread, read_events, render_fleet_files
from torchrouter.litellm_process import LiteLLMProcess
from torchrouter.sim import fleet_spec_from_matrix

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

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.events_path)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    render_fleet_files(root)
    matrix_path, config_path = root / "matrix.yaml", root / "litellm_config.yaml"
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
    }
    from tests.harness import free_ports

    litellm = LiteLLMProcess.start(config_path, port=free_ports(1)[0], env=env, log_path=root / "litellm.log")
    try:
        startup_s = litellm.wait_ready()
        yield Stack(root, matrix_path, config_path, events_path, sim, litellm, master_key, startup_s)
    finally:
        litellm.stop()
        sim.stop()


ClassifierFactory = Callable[..., Awaitable[str]]


class ClassifierTestServer(TestServer):
    """TestServer on the classifier's own runner (aiohttp's protocol errors as OpenAI JSON), as
    ``torchrouter serve`` and ``up`` run it."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return ClassifierRunner(self.app, **kwargs)


@pytest.fixture
async def make_classifier(stack: Stack) -> AsyncIterator[ClassifierFactory]:
    """Start a classifier (real aiohttp server on a free port) against the session's LiteLLM."""
    servers: list[TestServer] = []

    async def factory(**overrides: Any) -> str:
        base: dict[str, Any] = {
            "litellm_url": stack.litellm.url,
            "master_key": Secret(stack.master_key),
            "matrix_path": stack.matrix_path,
            "event_path": str(stack.events_path),
        }
        app: web.Application = create_app(Settings(**{**base, **overrides}), registry=CollectorRegistry())
        server = ClassifierTestServer(app, host="127.0.0.1", handler_cancellation=True)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield factory
    for server in servers:
        await server.close()


@pytest.fixture
async def classifier_url(make_classifier: ClassifierFactory) -> str:
    return await make_classifier()
