"""``torchrouter up``: the whole stack in the foreground on one machine.

Before anything starts: the matrix is checked, then every port the stack will bind (classifier, LiteLLM,
and the simulated hosts unless an already-running simulated fleet is shared on purpose); a taken one is
refused in one line naming it. Then, in order: the simulated fleet (in this process, unless one is already
serving the matrix's ports, as when a dev stack shares the fleet with a running prod stack), the LiteLLM
proxy (child process), then the classifier (in this process). Stopping runs the same list backwards;
nothing is left behind. ``--free-ports`` puts all of it on free ports (copies of the matrix and LiteLLM
config, with the simulated fleet's ports moved, are written to the state directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from capability_matrix import DEFAULT_MATRIX_PATH, load_matrix
from classifier.app import create_app
from classifier.protocol_edge import ClassifierRunner
from classifier.settings import PACKAGE_ROOT, Settings
from torchrouter.litellm_process import LiteLLMExited, LiteLLMProcess
from torchrouter.ports import check_ports, free_ports, render_fleet_files
from torchrouter.sim import SimFleet, fleet_spec_from_matrix
from torchrouter.sim.spec import SIM_CLOUD_KEY
from torchrouter_core.hooks_settings import HooksSettings
from torchrouter_core.strict_yaml import safe_load_strict

PROD_PORTS = (4001, 4000)  # classifier, LiteLLM
DEV_PORTS = (4002, 4003)


@dataclass(frozen=True)
class StackOptions:
    dev: bool = False
    sim: bool = True
    time_scale: float = 1.0
    seed: int = 0
    config_path: Path = PACKAGE_ROOT / "litellm_config.yaml"
    matrix_path: Path = DEFAULT_MATRIX_PATH
    state_dir: Path = field(default_factory=lambda: Path("var"))
    classifier_port: int | None = None  # None: 4001 (4002 with dev), or a free one with free_ports
    litellm_port: int | None = None  # None: 4000 (4003 with dev), or a free one with free_ports
    free_ports: bool = False  # every port not given explicitly is a free one, simulated fleet included

    @property
    def ports(self) -> tuple[int, int]:
        """(classifier, LiteLLM) as asked; with ``free_ports``, unset ones are chosen at start."""
        classifier, litellm = DEV_PORTS if self.dev else PROD_PORTS
        return (self.classifier_port or classifier, self.litellm_port or litellm)


def _resolve(opts: StackOptions) -> StackOptions:
    """Choose the free ports (and write the fleet files with moved ports) that ``free_ports`` asks for."""
    if not opts.free_ports:
        return opts
    classifier, litellm = free_ports(2)
    matrix_path, config_path = opts.matrix_path, opts.config_path
    if opts.sim:
        fleet_dir = opts.state_dir / f"fleet-{'dev' if opts.dev else 'prod'}"
        render_fleet_files(opts.matrix_path, opts.config_path, fleet_dir)
        matrix_path, config_path = fleet_dir / "matrix.yaml", fleet_dir / "litellm_config.yaml"
    return dataclasses.replace(
        opts,
        classifier_port=opts.classifier_port or classifier,
        litellm_port=opts.litellm_port or litellm,
        matrix_path=matrix_path,
        config_path=config_path,
    )


def _sim_already_serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/sim/state", timeout=1) as resp:
            return "host_id" in json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check_environment(env: Mapping[str, str]) -> None:
    """Parse the settings both processes will read from ``env`` (the hooks' in LiteLLM, the classifier's);
    raise :class:`~torchrouter_core.env.SettingsError` naming the first bad variable."""
    HooksSettings.from_env(env)
    Settings.from_env(env)


async def run_stack(opts: StackOptions, stop: asyncio.Event, say: Callable[[str], None] = print) -> None:
    t0 = time.monotonic()
    # The hooks' settings as LiteLLM will read them, before anything starts: a bad value is one SettingsError
    # line here, not a started fleet and a LiteLLM that dies with a traceback.
    check_environment(os.environ)
    # A matrix the classifier would reject fails here, before anything starts (MatrixError lists why).
    load_matrix(opts.matrix_path)
    opts = _resolve(opts)
    env = dict(os.environ)
    if not env.get("LITELLM_MASTER_KEY"):  # unset or empty: LiteLLM would run without a key
        env["LITELLM_MASTER_KEY"] = "sk-torchrouter-" + secrets.token_hex(16)
    env.setdefault("TORCHROUTER_CLOUD_API_KEY", SIM_CLOUD_KEY)
    env.setdefault("TORCHROUTER_CAPABILITY_MATRIX_PATH", str(opts.matrix_path))
    if opts.free_ports and opts.sim:  # the hooks must read the copy whose ports the fleet listens on
        env["TORCHROUTER_CAPABILITY_MATRIX_PATH"] = str(opts.matrix_path)
    env.setdefault("TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH", str(opts.state_dir / "routing-events.jsonl"))
    env.setdefault("TORCHROUTER_SPEND_PATH", str(opts.state_dir / "spend.json"))
    classifier_port, litellm_port = opts.ports
    name = "dev" if opts.dev else "prod"
    check_environment(env)  # again with what the stack sets (the matrix copy, the trail, the spend book)

    spec = None
    shared_sim = False
    wanted = [(classifier_port, "classifier"), (litellm_port, "LiteLLM")]
    if opts.sim:
        doc = safe_load_strict(opts.matrix_path.read_text(encoding="utf-8"))
        spec = fleet_spec_from_matrix(
            doc,
            cloud_api_key=env["TORCHROUTER_CLOUD_API_KEY"],
            seed=opts.seed,
            time_scale=opts.time_scale,
        )
        first_url = f"http://{spec.host}:{spec.hosts[0].port}"
        shared_sim = _sim_already_serving(first_url)
        if not shared_sim:
            wanted += [(h.port, f"simulated host {h.host_id}") for h in spec.hosts]
            if spec.cloud is not None:
                wanted.append((spec.cloud.port, "simulated cloud"))
    check_ports(wanted)  # every port, before anything starts: PortInUse names the first taken one
    async with contextlib.AsyncExitStack() as stack:
        if spec is not None:
            if shared_sim:
                say(f"simulated fleet: already serving on {first_url} (shared; this stack will not stop it)")
            else:
                fleet = SimFleet(spec)
                await fleet.start()
                stack.push_async_callback(fleet.stop)
                for host_id, url in fleet.host_urls.items():
                    say(f"simulated host  {host_id:28s} {url}")
                if fleet.cloud_url:
                    say(f"simulated cloud {'(OpenAI-compatible)':28s} {fleet.cloud_url}")

        litellm = LiteLLMProcess.start(
            opts.config_path, port=litellm_port, env=env, log_path=opts.state_dir / f"litellm-{name}.log"
        )
        # Stopped in a thread: its drain must not freeze this loop (the fleet it drains to runs here).
        stack.push_async_callback(asyncio.to_thread, litellm.stop)
        ready = asyncio.ensure_future(asyncio.to_thread(litellm.wait_ready))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():  # Ctrl-C while LiteLLM starts: stop it now rather than after its start-up
            stopping.cancel()
            litellm.stop()
            await asyncio.gather(ready, return_exceptions=True)
            say("stopped before the stack was up.")
            return
        stopping.cancel()
        waited = ready.result()
        say(f"LiteLLM proxy   {litellm.url}  (ready in {waited:.1f} s; log {litellm.log_path})")

        settings = Settings.from_env(
            env, litellm_url=litellm.url, host="127.0.0.1", port=classifier_port, matrix_path=opts.matrix_path
        )
        # Ctrl-C gives requests in flight 1 s (aiohttp's default is 60 s): then their handlers are cancelled,
        # the connection to LiteLLM closes, and LiteLLM (cancel_on_disconnect) stops the model's work.
        runner = ClassifierRunner(
            create_app(settings), access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, settings.host, settings.port).start()
        say(f"classifier      http://127.0.0.1:{classifier_port}")
        say(f"event trail     {env['TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH']}")
        say(f"stack ({name}) up in {time.monotonic() - t0:.1f} s. Try:")
        say(
            f"  curl -s http://127.0.0.1:{classifier_port}/v1/chat/completions "
            "-H 'Content-Type: application/json' "
            "-H 'X-Agent-Id: webmaster' "
            '-d \'{"model":"auto","messages":[{"role":"user","content":"Summarize the routing policy."}]}\''
        )
        say("Ctrl-C stops everything.")
        stopping = asyncio.ensure_future(stop.wait())
        # A thread waits on the process (it returns once the exit stack stops LiteLLM, if nothing else).
        exited = asyncio.ensure_future(asyncio.to_thread(litellm.proc.wait))
        await asyncio.wait({stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not stopping.done():  # LiteLLM died under a running stack: stop rather than answer 502s
            stopping.cancel()
            raise LiteLLMExited(
                f"LiteLLM exited with code {litellm.proc.returncode} while the stack ran; stopping the "
                f"stack. Log tail ({litellm.log_path}):\n{litellm.log_tail()}"
            )
        say("stopping...")
    say("stopped.")
