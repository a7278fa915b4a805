"""The ``torchrouter`` command: up, serve, sim, validate, tiers, explain."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from capability_matrix import DEFAULT_MATRIX_PATH
from classifier.settings import PACKAGE_ROOT, Settings, SettingsError
from torchrouter.sim.spec import SIM_CLOUD_KEY
from torchrouter.tiers import add_parser as add_tiers_parser


def _run_until_signal(main: object) -> int:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)  # type: ignore[operator]

    asyncio.run(runner())
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from torchrouter.stack import StackOptions, run_stack

    opts = StackOptions(
        dev=args.dev,
        sim=not args.no_sim,
        time_scale=args.time_scale,
        seed=args.seed,
        config_path=args.config,
        matrix_path=args.matrix,
        state_dir=args.state_dir,
        classifier_port=args.classifier_port,
        litellm_port=args.litellm_port,
        free_ports=args.free_ports,
    )
    from capability_matrix import MatrixError
    from torchrouter.litellm_process import LiteLLMStartError
    from torchrouter.ports import PortInUse
    from torchrouter.sim import SimFleetError

    try:
        return _run_until_signal(lambda stop: run_stack(opts, stop, lambda line: print(line, flush=True)))
    except SettingsError as exc:  # before anything started: one line, as `serve` says it
        print(f"torchrouter up: {exc}", file=sys.stderr)
        return 2
    except (SimFleetError, LiteLLMStartError, MatrixError, PortInUse, OSError) as exc:
        # Everything started so far has been stopped by the stack's exit stack; say why in one place.
        print(f"torchrouter up: {exc}", file=sys.stderr)
        return 1


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from classifier.app import create_app
    from classifier.protocol_edge import serve

    overrides: dict[str, object] = {"host": args.host}
    if args.port is not None:
        overrides["port"] = args.port
    settings = Settings.from_env(**overrides)
    app = create_app(settings)
    # Everything built so far lives as long as the process: park it outside the collector's reach, so the
    # periodic full collections scan only what requests allocate (measured: see BENCHMARKS.md).
    gc.freeze()
    # handler_cancellation: a client that goes away cancels its handler, so a queued request leaves the line.
    # serve(): aiohttp's own protocol errors answered as OpenAI JSON (classifier.protocol_edge).
    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):
        asyncio.run(serve(app, settings.host, settings.port, access_log=None, handler_cancellation=True))
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from torchrouter.sim import fleet_spec_from_matrix, serve_forever
    from torchrouter_core.strict_yaml import safe_load_strict

    doc = safe_load_strict(args.matrix.read_text(encoding="utf-8"))
    spec = fleet_spec_from_matrix(
        doc, cloud_api_key=args.cloud_key, seed=args.seed, time_scale=args.time_scale
    )

    async def main(stop: asyncio.Event) -> None:
        task = asyncio.create_task(serve_forever(spec))
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return _run_until_signal(main)


def cmd_validate(args: argparse.Namespace) -> int:
    from capability_matrix import validate_files

    problems = [
        *validate_files(args.matrix, args.config),
        *_agents_problems(args.agents, args.config),
        *_environment_problems(),
    ]
    for line in problems:
        print(line)
    if problems:
        print(
            f"{len(problems)} problem(s) in {args.matrix} / {args.config} / {args.agents} / the environment",
            file=sys.stderr,
        )
        return 1
    print(f"ok: {args.matrix}, {args.config} and {args.agents} agree; the TORCHROUTER_* environment parses")
    return 0


def _environment_problems() -> list[str]:
    """The TORCHROUTER_* settings as the hooks (inside LiteLLM) and the classifier would read them now."""
    import os

    from torchrouter.stack import check_environment

    try:
        check_environment(os.environ)
    except SettingsError as exc:
        return [f"environment: {exc}"]
    return []


def _agents_problems(agents_path: Path, config_path: Path) -> list[str]:
    """The agents file (tiers, first lanes, failure chains, agents) parsed as the classifier does, and every
    group it names checked against the LiteLLM config's model groups; one line per problem."""
    import yaml

    from torchrouter_core.fallbacks import chain_problems
    from torchrouter_core.strict_yaml import safe_load_strict
    from torchrouter_core.tiering import DirectoryError, parse_agent_directory_yaml

    try:
        directory = parse_agent_directory_yaml(agents_path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [f"{agents_path}: cannot read: {exc.strerror or exc}"]
    except (DirectoryError, UnicodeDecodeError) as exc:
        return [f"{agents_path}: {exc}"]
    try:
        config = safe_load_strict(config_path.read_bytes())
    except (OSError, yaml.YAMLError):
        return []  # validate_files has said what is wrong with the config
    model_list = config.get("model_list") if isinstance(config, dict) else None
    groups = {str(d.get("model_name")) for d in model_list or [] if isinstance(d, dict)}
    return [f"{agents_path}: {line}" for line in chain_problems(directory, groups)]


def cmd_explain(args: argparse.Namespace) -> int:
    import json
    import os

    import orjson

    from torchrouter_core import trail

    path = Path(
        args.events
        or os.environ.get("TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH")
        or "var/routing-events.jsonl"
    )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        print(f"torchrouter explain: cannot read the trail {path}: {exc.strerror}", file=sys.stderr)
        return 1
    if args.last and args.request_id:
        print("torchrouter explain: give a REQUEST_ID or --last, not both", file=sys.stderr)
        return 2
    if not args.last and not args.request_id:
        print("torchrouter explain: give a REQUEST_ID (X-Router-Request-Id) or --last", file=sys.stderr)
        return 2
    events, skipped = [], 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            event = None  # a line being written right now, or a torn one: the rest still tells the story
        if isinstance(event, dict):
            events.append(event)
        else:
            skipped += 1
    if skipped:
        print(f"note: skipped {skipped} trail line(s) that are not JSON objects", file=sys.stderr)
    request_id = trail.last_request_id(events) if args.last else args.request_id
    if not request_id:
        print(f"torchrouter explain: the trail {path} has no requests", file=sys.stderr)
        return 1
    # Only lines of this request that match the trail's published schema tell its story: a line edited
    # by hand (a list where the schema has an object, a number where it has a name) is noted and left out.
    mine = [e for e in events if e.get("request_id") == request_id]
    valid = [e for e in mine if not trail.problems([e])]
    if len(valid) < len(mine):
        print(
            f"note: skipped {len(mine) - len(valid)} line(s) of this request that do not match the trail's "
            f"schema (torchrouter_core/event_schemas/events.schema.json)",
            file=sys.stderr,
        )
    story = trail.story(valid, request_id)
    if mine and not valid:
        story["found"] = False
    try:
        print(json.dumps(story, indent=2, sort_keys=True) if args.json else trail.render(story))
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has gone; say nothing more (and nothing at exit)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0 if story["found"] else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchrouter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    default_matrix = DEFAULT_MATRIX_PATH
    default_config = PACKAGE_ROOT / "litellm_config.yaml"

    up = sub.add_parser(
        "up", help="run the whole stack (simulated fleet, LiteLLM, classifier) in the foreground"
    )
    up.add_argument("--dev", action="store_true", help="dev ports: classifier 4002, LiteLLM 4003")
    up.add_argument("--classifier-port", type=int, default=None, help="instead of 4001 (4002 with --dev)")
    up.add_argument("--litellm-port", type=int, default=None, help="instead of 4000 (4003 with --dev)")
    up.add_argument(
        "--free-ports",
        action="store_true",
        help="every port not given is a free one, the simulated fleet's too (its matrix and LiteLLM config "
        "copies go to the state dir): a second stack beside a running one",
    )
    up.add_argument("--no-sim", action="store_true", help="do not start the simulated fleet (real hosts)")
    up.add_argument("--time-scale", type=float, default=1.0, help="simulated durations multiplier")
    up.add_argument("--seed", type=int, default=0)
    up.add_argument("--config", type=Path, default=default_config)
    up.add_argument("--matrix", type=Path, default=default_matrix)
    up.add_argument("--state-dir", type=Path, default=Path("var"), help="logs and the default event trail")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="run the classifier alone (configured by environment variables)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=cmd_serve)

    sim = sub.add_parser("sim", help="run the simulated fleet alone")
    sim.add_argument("--matrix", type=Path, default=default_matrix)
    sim.add_argument("--time-scale", type=float, default=1.0)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--cloud-key", default=SIM_CLOUD_KEY)
    sim.set_defaults(func=cmd_sim)

    validate = sub.add_parser(
        "validate",
        help="check the matrix against its schema and litellm_config.yaml, and the agents file's tiers "
        "(first lanes, failure fallbacks) against the config's groups",
    )
    validate.add_argument("--matrix", type=Path, default=default_matrix)
    validate.add_argument("--config", type=Path, default=default_config)
    validate.add_argument("--agents", type=Path, default=PACKAGE_ROOT / "classifier" / "agents.yaml")
    validate.set_defaults(func=cmd_validate)
    add_tiers_parser(sub)  # torchrouter tiers train|eval (torchrouter/tiers.py)

    explain = sub.add_parser("explain", help="one request's story from the trail (X-Router-Request-Id)")
    explain.add_argument("request_id", nargs="?", help="the request's X-Router-Request-Id")
    explain.add_argument("--last", action="store_true", help="the newest request in the trail")
    explain.add_argument("--json", action="store_true", help="the story as JSON")
    explain.add_argument(
        "--events",
        type=Path,
        default=None,
        help="the trail (default: TORCHROUTER_ROUTING_CONTINUITY_EVENT_PATH, else var/routing-events.jsonl)",
    )
    explain.set_defaults(func=cmd_explain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"torchrouter: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
