"""One simulated Ollama host as an aiohttp app, plus the HTTP pieces the simulated cloud reuses.

Owns the wire formats: Ollama's native API (`/api/chat`, `/api/ps`, `/api/tags`, `/api/show`, `/api/version`,
`/`), its OpenAI-compatible `/v1/chat/completions`, and the admin API under `/sim/` (state, faults, external
memory, reset). Scheduling decisions come from `scheduler.HostScheduler`; this module only waits, sleeps and
writes.

Replies are deterministic for (seed, request) and start with `sim:<host_id>:<model>` so a test can tell who
answered. Run the app with `handler_cancellation=True` (SimFleet does) so a client that goes away frees its
slot at once instead of when its answer would have ended.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from torchrouter.sim.answer import (
    ToolCall,
    cut_at_stop,
    logprobs_request,
    pick_tool_call,
    stop_strings,
    token_logprob,
)
from torchrouter.sim.scheduler import (
    DEFAULT_KEEP_ALIVE_S,
    NEVER,
    Counters,
    HostScheduler,
    Start,
    parse_keep_alive,
)
from torchrouter.sim.spec import HostSpec

Clock = Callable[[], float]

DEFAULT_REPLY_TOKENS = 24
THINKING_TOKENS = 16
PROMPT_SPEEDUP = 20.0  # prompt evaluation runs this many times faster than generation
GIB = 1024**3  # sizes in /api/ps and /api/tags are bytes; the specs' "gb" are GiB, like GPU memory
OLLAMA_VERSION = "0.12.6"
# Faults enforced at the listening socket (torchrouter.sim.fleet), where requests cannot be counted:
# "refuse" (nothing listens) and "blackhole" (a SYN is never answered). They last until cleared.
SOCKET_FAULTS = frozenset({"refuse", "blackhole"})
HOST_FAULTS = frozenset({"none", "error_500", "hang", "cut_stream"}) | SOCKET_FAULTS
_LOREM = (
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "routing",
    "fleet",
    "warm",
    "cold",
    "slot",
    "token",
    "lane",
    "queue",
    "budget",
)


# -- faults -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    mode: str
    after_chunks: int = 2


@dataclass
class FaultPlan:
    """The injected fault: a mode for the next `remaining` requests (None: until cleared)."""

    mode: str = "none"
    remaining: int | None = None
    after_chunks: int = 2

    def take(self) -> Fault:
        """The fault for one arriving request; counts it against `remaining`."""
        fault = Fault(self.mode, self.after_chunks)
        # A socket fault cannot count requests, so it lasts until cleared.
        if self.mode != "none" and self.mode not in SOCKET_FAULTS and self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.mode, self.remaining = "none", None
        return fault

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "remaining": self.remaining, "after_chunks": self.after_chunks}


# -- deterministic replies ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    thinking: tuple[str, ...]
    content: tuple[str, ...]  # for a tool call: the arguments' JSON in pieces (timed, never sent as text)
    prompt_tokens: int
    done_reason: str = "stop"  # "stop" or "length" (torchrouter.sim.answer)
    tool_call: ToolCall | None = None

    @property
    def text(self) -> str:
        return "".join(self.content)

    @property
    def thinking_text(self) -> str:
        return "".join(self.thinking)

    @property
    def eval_count(self) -> int:
        return len(self.thinking) + len(self.content)


def message_text(message: Any) -> str:
    """The text of a chat message whose content is a string or a list of OpenAI content parts."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def make_reply(
    seed: int, source: str, model: str, messages: list[Any], *, budget: int | None, thinking: bool
) -> Reply:
    """The same request and seed always give the same reply; `budget` (num_predict) caps all tokens."""
    digest = hashlib.sha256(orjson.dumps([seed, source, model, messages], option=orjson.OPT_SORT_KEYS))
    rng = random.Random(digest.digest())
    if budget is None:
        n_think, n_content = (THINKING_TOKENS if thinking else 0), DEFAULT_REPLY_TOKENS
    else:  # thinking eats into num_predict as on Ollama, but always leaves the tagged first token
        n_think = min(THINKING_TOKENS, budget - 1) if thinking else 0
        n_content = budget - n_think
    last_user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    snippet = " ".join(message_text(last_user).split())
    snippet = snippet[:40] + "…" if len(snippet) > 40 else snippet
    head = [f"sim:{source}:{model}", " reply", " to", f" '{snippet}'"]
    content = (head + [" " + rng.choice(_LOREM) for _ in range(n_content)])[:n_content]
    think_toks = ["Considering"] + [" " + rng.choice(_LOREM) for _ in range(max(0, n_think - 1))]
    prompt = sum(4 + math.ceil(len(message_text(m)) / 4) for m in messages)
    # Given a budget, the simulated model always has more to say: it is cut, as Ollama says, by "length".
    done_reason = "stop" if budget is None else "length"
    return Reply(tuple(think_toks[:n_think]), tuple(content), max(1, prompt), done_reason)


def job_reply(seed: int, source: str, job: Job, *, thinking: bool) -> Reply:
    """The reply for a job: a tool call, or text cut at a stop string (rules in torchrouter.sim.answer)."""
    reply = make_reply(seed, source, job.model, job.messages, budget=job.budget, thinking=thinking)
    if job.tool_call is not None:
        text = orjson.dumps(job.tool_call.arguments).decode()
        pieces = tuple(text[i : i + 4] for i in range(0, len(text), 4))
        return Reply((), pieces, reply.prompt_tokens, "stop", job.tool_call)
    content, stopped = cut_at_stop(reply.content, job.stops)
    if stopped:
        return Reply(reply.thinking, content, reply.prompt_tokens, "stop")
    return reply


# -- one request's run, independent of the wire format -------------------------------------------------------
@dataclass(frozen=True)
class Job:
    model: str
    messages: list[Any]
    budget: int | None
    think: object  # the request's value as sent: True, False, None (absent) or a level string
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    tool_call: ToolCall | None = None  # decided at arrival (torchrouter.sim.answer.pick_tool_call)
    stops: tuple[str, ...] = ()
    logprobs: int | None = None  # top log probabilities per token; None: not asked for


LABEL_CHARS = 64


def job_label(job: Job) -> str:
    """How the host's request history names a request: the start of its last user message (a benchmark puts
    its own request id there to find its requests again)."""
    last_user = next(
        (m for m in reversed(job.messages) if isinstance(m, dict) and m.get("role") == "user"), None
    )
    return message_text(last_user)[:LABEL_CHARS]


def wants_thinking(think: object, reasoning: bool) -> bool:
    if think is None:
        return reasoning  # a reasoning model thinks unless told not to
    if isinstance(think, str):
        return think.lower() not in ("", "false", "none")
    return bool(think)


@dataclass
class Run:
    """A started request: its reply and how fast it may be written out."""

    reply: Reply
    tokens_per_s: float
    time_scale: float
    clock: Clock
    arrived: float
    load_s: float  # time spent waiting for the model to load (or the cloud's first-token latency)
    prompt_s: float = field(init=False)
    eval_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.prompt_s = self.reply.prompt_tokens / (self.tokens_per_s * PROMPT_SPEEDUP) * self.time_scale
        self.eval_s = self.reply.eval_count / self.tokens_per_s * self.time_scale

    async def tokens(self) -> AsyncIterator[tuple[bool, str]]:
        """(is_thinking, token) at the simulated pace: sleeps to per-token deadlines, so no drift."""
        per_token = self.time_scale / self.tokens_per_s
        deadline = self.clock() + self.prompt_s
        tokens = [(True, t) for t in self.reply.thinking] + [(False, t) for t in self.reply.content]
        for thinking, tok in tokens:
            deadline += per_token
            delay = deadline - self.clock()
            if delay > 0.002:  # below that, batching sleeps keeps the event loop cheap at small time scales
                await asyncio.sleep(delay)
            yield thinking, tok

    async def finish(self) -> None:
        async for _ in self.tokens():
            pass


class SimRuntime(ABC):
    """What the apps share: source name, seed and clock, fault plan, counters, and the socket hook."""

    modes: frozenset[str] = HOST_FAULTS

    def __init__(self, source: str, *, seed: int, time_scale: float, clock: Clock) -> None:
        self.source = source
        self.seed = seed
        self.time_scale = time_scale
        self.clock = clock
        self.faults = FaultPlan()
        # Set by SimFleet: applies a fault mode at the listening socket (closes it, black-holes it, or
        # reopens it for any other mode). None when the app runs on its own.
        self.socket_hook: Callable[[str], Awaitable[None]] | None = None

    @property
    @abstractmethod
    def counters(self) -> Counters: ...

    @abstractmethod
    def knows(self, model: str) -> bool: ...

    def unknown_model_message(self, model: str) -> str:
        return f'model "{model}" not found, try pulling it first'

    def authorized(self, request: web.Request) -> bool:
        return True

    @abstractmethod
    def run(self, job: Job) -> AbstractAsyncContextManager[Run]:
        """Wait for capacity, then yield the started Run; always frees what it took."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """The /sim/state document."""

    def reset(self) -> None:
        self.faults = FaultPlan()

    def set_fault(self, mode: str, count: int | None = None, after_chunks: int = 2) -> None:
        if mode not in self.modes:
            raise ValueError(f"unknown fault mode {mode!r}; one of {sorted(self.modes)}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1")
        if after_chunks < 0:
            raise ValueError("after_chunks must not be negative")
        self.faults = FaultPlan(mode, None if mode == "none" else count, after_chunks)


class HostRuntime(SimRuntime):
    def __init__(self, spec: HostSpec, *, seed: int, time_scale: float, clock: Clock) -> None:
        super().__init__(spec.host_id, seed=seed, time_scale=time_scale, clock=clock)
        self.spec = spec
        self.sched = HostScheduler(spec, time_scale=time_scale)
        self._changed = asyncio.Event()

    @property
    def counters(self) -> Counters:
        return self.sched.counters

    def knows(self, model: str) -> bool:
        return self.spec.model(model) is not None

    def notify(self) -> None:
        """Wake every waiting request to re-ask the scheduler; called after any change to its state."""
        self._changed.set()
        self._changed = asyncio.Event()

    @asynccontextmanager
    async def _started(
        self, model: str, keep_alive_s: float, label: str
    ) -> AsyncIterator[tuple[Start, float, float]]:
        """A slot of ``model`` as the scheduler hands it out: wait for it (memory, slots, loads in arrival
        order), then for the load; yields ``(decision, arrived, seconds waited for the load)``; gives the
        slot back however the caller ends."""
        arrived = self.clock()
        ticket = self.sched.submit(model, arrived, keep_alive_s=keep_alive_s, label=label)
        try:
            while not isinstance(decision := self.sched.try_start(ticket, self.clock()), Start):
                await self._changed.wait()
            self.notify()  # a start can unblock later tickets for the same model
            ready_in = decision.ready_at - self.clock()
            if ready_in > 0:
                await asyncio.sleep(ready_in)
            yield decision, arrived, max(0.0, ready_in)
        finally:
            self.sched.release(ticket, self.clock())
            self.notify()

    @asynccontextmanager
    async def run(self, job: Job) -> AsyncIterator[Run]:
        async with self._started(job.model, job.keep_alive_s, job_label(job)) as (decision, arrived, load_s):
            model = self.spec.model(job.model)
            assert model is not None
            reply = job_reply(
                self.seed, self.source, job, thinking=wants_thinking(job.think, model.reasoning)
            )
            yield Run(
                reply,
                model.tokens_per_s * decision.speed_factor,
                self.time_scale,
                self.clock,
                arrived,
                load_s,
            )

    async def load(self, model: str, keep_alive_s: float) -> float:
        """Load ``model`` without running anything, as Ollama's ``/api/chat`` with no messages does: wait
        for memory (the scheduler's rules), then for the load; seconds waited for the load (0: resident)."""
        async with self._started(model, keep_alive_s, "") as (_, _, load_s):
            return load_s

    def state(self) -> dict[str, Any]:
        now, wall = self.clock(), time.time()
        snap = self.sched.snapshot(now)
        for r in snap["resident"]:
            r["expires_at"] = rfc3339(wall + (NEVER if r["expires_in_s"] is None else r["expires_in_s"]))
        snap["think"] = snap["counters"].pop("think")
        snap["fault"] = self.faults.as_dict()
        return snap

    def reset(self) -> None:
        super().reset()
        self.sched.reset()
        self.notify()


# -- HTTP helpers -------------------------------------------------------------------------------------------
RUNTIME = web.AppKey("sim_runtime", SimRuntime)
HOST = web.AppKey("sim_host", HostRuntime)


class BadRequest(Exception):
    pass


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def ollama_error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
}


def openai_error(status: int, message: str) -> web.Response:
    type_, code = _OPENAI_ERRORS.get(status, ("server_error", None))
    headers = {"Retry-After": "1"} if status == 429 else None
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return json_response(body, status, headers)


def rfc3339(ts: float) -> str:
    # "Never" shows about 292 years ahead, as Ollama's maximum duration does.
    ts = min(ts, time.time() + 292 * 365.25 * 86400)
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def read_json(request: web.Request) -> dict[str, Any]:
    # LiteLLM's ollama_chat provider sends application/octet-stream, so the content type is not checked.
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _budget(value: object, context_window: int) -> int | None:
    """num_predict / max_tokens: a positive int caps the reply; absent, 0 or -1/-2 mean the default."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return min(int(value), context_window)


def _parse_common(body: dict[str, Any]) -> tuple[str, list[Any]]:
    model, messages = body.get("model"), body.get("messages", [])
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required")
    if not isinstance(messages, list):
        raise BadRequest("messages must be a list")
    return model, messages


def _cut(request: web.Request) -> None:
    """Drop the connection mid-answer, as a host that dies or a proxy that times out would."""
    if request.transport is not None:
        request.transport.abort()


async def _apply_fault(fault: Fault, error: Callable[[int, str], web.Response]) -> web.Response | None:
    if fault.mode == "error_500":
        return error(500, "simulated internal error")
    if fault.mode == "error_429":
        return error(429, "Rate limit reached (simulated)")
    if fault.mode == "auth":
        return error(401, "Incorrect API key provided (simulated)")
    if fault.mode == "hang":
        await asyncio.Event().wait()  # until the client goes away and aiohttp cancels this handler
    return None


@web.middleware
async def _sim_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    if request.path.startswith("/sim/"):
        return await handler(request)
    try:
        resp = await handler(request)
    except (asyncio.CancelledError, ConnectionResetError):
        rt.counters.cancelled += 1
        raise
    except web.HTTPException as exc:  # e.g. aiohttp's own 413 for an oversized body
        rt.counters.errors += int(exc.status >= 400)
        raise
    if resp.status >= 400:
        rt.counters.errors += 1
    return resp


# -- Ollama's native API ------------------------------------------------------------------------------------
def _created_at() -> str:
    return rfc3339(time.time())


async def ollama_chat(request: web.Request) -> web.StreamResponse:
    rt = request.app[HOST]
    try:
        body = await read_json(request)
        model, messages = _parse_common(body)
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise BadRequest("options must be an object")
        spec = rt.spec.model(model)
        if spec is None:
            return ollama_error(404, rt.unknown_model_message(model))
        job = Job(
            model,
            messages,
            _budget(options.get("num_predict"), spec.context_window),
            body.get("think"),
            parse_keep_alive_or_400(body.get("keep_alive")),
            # Ollama's /api/chat has no tool_choice: the model calls a tool it is offered when it wants to.
            tool_call=pick_tool_call(body.get("tools"), None, messages),
            stops=stop_strings(options.get("stop")),
            logprobs=logprobs_request(body.get("logprobs"), body.get("top_logprobs")),
        )
    except BadRequest as exc:
        return ollama_error(400, str(exc))
    stream = body.get("stream", True) is not False  # Ollama streams unless told not to
    if messages:  # a load alone (below) is not a request
        rt.counters.note_request(model, job.think)
    fault = rt.faults.take()  # a host's fault meets a load alone too
    if (failed := await _apply_fault(fault, ollama_error)) is not None:
        return failed
    if not messages:  # Ollama's API reference, "Load a model": no messages loads the model and answers
        await rt.load(model, job.keep_alive_s)
        loaded = {"role": "assistant", "content": ""}
        done = {"done_reason": "load", "done": True}
        return json_response({"model": model, "created_at": _created_at(), "message": loaded, **done})

    async with rt.run(job) as run:
        if not stream:
            if fault.mode == "cut_stream":
                rt.counters.errors += 1
                _cut(request)
                return web.Response()  # never reaches the client
            await run.finish()
            message: dict[str, Any] = _ollama_message(run.reply)
            if run.reply.thinking:
                message["thinking"] = run.reply.thinking_text
            answer = {"model": model, "created_at": _created_at(), "message": message, **_final_fields(run)}
            if job.logprobs is not None and run.reply.tool_call is None:
                answer["logprobs"] = [_logprob_entry(rt, t, job.logprobs) for t in run.reply.content]
            return json_response(answer)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        sent = 0
        async for thinking, tok in run.tokens():
            if fault.mode == "cut_stream" and sent >= fault.after_chunks:
                rt.counters.errors += 1
                _cut(request)
                return resp
            if run.reply.tool_call is not None:
                continue  # Ollama sends a tool call whole, once the model has written it
            key = "thinking" if thinking else "content"
            chunk: dict[str, Any] = {
                "model": model,
                "created_at": _created_at(),
                "message": {"role": "assistant", "content": "", key: tok},
                "done": False,
            }
            if job.logprobs is not None and not thinking:
                chunk["logprobs"] = [_logprob_entry(rt, tok, job.logprobs)]
            await resp.write(orjson.dumps(chunk) + b"\n")
            sent += 1
        if run.reply.tool_call is not None:
            call = {"model": model, "created_at": _created_at(), "message": _ollama_message(run.reply)}
            await resp.write(orjson.dumps({**call, "done": False}) + b"\n")
        final = {
            "model": model,
            "created_at": _created_at(),
            "message": {"role": "assistant", "content": ""},
            **_final_fields(run),
        }
        await resp.write(orjson.dumps(final) + b"\n")
        await resp.write_eof()
        return resp


def parse_keep_alive_or_400(value: object) -> float:
    try:
        return parse_keep_alive(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def _ollama_message(reply: Reply) -> dict[str, Any]:
    """The assistant message of Ollama's /api/chat: text, or a tool call with arguments as an object."""
    if reply.tool_call is None:
        return {"role": "assistant", "content": reply.text}
    call = {"function": {"name": reply.tool_call.name, "arguments": reply.tool_call.arguments}}
    return {"role": "assistant", "content": "", "tool_calls": [call]}


def _logprob_entry(rt: SimRuntime, token: str, top: int) -> dict[str, Any]:
    return token_logprob(rt.seed, token, top)


def _final_fields(run: Run) -> dict[str, Any]:
    ns = 1_000_000_000
    return {
        "done": True,
        "done_reason": run.reply.done_reason,
        "total_duration": int((run.clock() - run.arrived) * ns),
        "load_duration": int(run.load_s * ns),
        "prompt_eval_count": run.reply.prompt_tokens,
        "prompt_eval_duration": int(run.prompt_s * ns),
        "eval_count": run.reply.eval_count,
        "eval_duration": int(run.eval_s * ns),
    }


def _model_entry(spec: HostSpec, name: str) -> dict[str, Any]:
    model = spec.model(name)
    assert model is not None
    base, _, tag = name.partition(":")
    family = base.split("-")[0]
    return {
        "name": name,
        "model": name,
        "size": int(model.size_gb * GIB),
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": tag.upper() if tag[:1].isdigit() else "",
            "quantization_level": "Q4_K_M",
        },
    }


async def ollama_ps(request: web.Request) -> web.Response:
    rt = request.app[HOST]
    now, wall = rt.clock(), time.time()
    models = []
    for r in rt.sched.loaded(now):
        entry = _model_entry(rt.spec, r.model.name)
        entry["expires_at"] = rfc3339(wall + r.expires_in(now))
        entry["size_vram"] = int(r.vram_gb * GIB)
        entry["context_length"] = r.model.context_window
        models.append(entry)
    return json_response({"models": models})


async def ollama_tags(request: web.Request) -> web.Response:
    spec = request.app[HOST].spec
    modified = rfc3339(0)
    return json_response(
        {"models": [_model_entry(spec, m.name) | {"modified_at": modified} for m in spec.models]}
    )


async def ollama_show(request: web.Request) -> web.Response:
    # LiteLLM calls this (synchronously!) the first time it logs a call to a model, for context length and
    # whether the template mentions tools.
    rt = request.app[HOST]
    try:
        body = await read_json(request)
    except BadRequest as exc:
        return ollama_error(400, str(exc))
    name = body.get("model") or body.get("name")
    model = rt.spec.model(name) if isinstance(name, str) else None
    if model is None:
        return ollama_error(404, f"model '{name}' not found")
    entry = _model_entry(rt.spec, model.name)
    family = entry["details"]["family"]
    return json_response(
        {
            "modelfile": f"# simulated {model.name}\nFROM {model.name}\n",
            "parameters": "",
            "template": "{{- if .Tools }}{{ .Tools }}{{ end }}{{ range .Messages }}{{ .Content }}{{ end }}",
            "details": entry["details"],
            "model_info": {"general.architecture": family, f"{family}.context_length": model.context_window},
            "capabilities": ["completion", "tools"] + (["thinking"] if model.reasoning else []),
            "modified_at": rfc3339(0),
        }
    )


async def ollama_version(request: web.Request) -> web.Response:
    return json_response({"version": OLLAMA_VERSION})


async def ollama_root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


# -- OpenAI-compatible chat, shared with the cloud ----------------------------------------------------------
def _openai_think(body: dict[str, Any]) -> object:
    # Ollama's /v1 maps reasoning_effort to think; a top-level "think" is not part of that API and is ignored.
    effort = body.get("reasoning_effort")
    if effort is None:
        return None
    return effort not in ("none", "")


async def openai_chat(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    if not rt.authorized(request):
        return openai_error(401, "Incorrect API key provided.")
    try:
        body = await read_json(request)
        model, messages = _parse_common(body)
    except BadRequest as exc:
        return openai_error(400, str(exc))
    if not rt.knows(model):
        return openai_error(404, rt.unknown_model_message(model))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    job = Job(
        model,
        messages,
        _budget(max_tokens, 1 << 20),
        _openai_think(body),
        tool_call=pick_tool_call(body.get("tools"), body.get("tool_choice"), messages),
        stops=stop_strings(body.get("stop")),
        logprobs=logprobs_request(body.get("logprobs"), body.get("top_logprobs")),
    )
    rt.counters.note_request(model, job.think)
    fault = rt.faults.take()
    if (failed := await _apply_fault(fault, openai_error)) is not None:
        return failed

    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    async with rt.run(job) as run:
        usage = {
            "prompt_tokens": run.reply.prompt_tokens,
            "completion_tokens": run.reply.eval_count,
            "total_tokens": run.reply.prompt_tokens + run.reply.eval_count,
        }
        call = _openai_tool_call(run.reply.tool_call)
        finish = "tool_calls" if call is not None else run.reply.done_reason
        if not body.get("stream"):
            if fault.mode == "cut_stream":
                rt.counters.errors += 1
                _cut(request)
                return web.Response()
            await run.finish()
            message: dict[str, Any] = {"role": "assistant", "content": run.reply.text}
            if run.reply.thinking:
                message["reasoning"] = run.reply.thinking_text
            if call is not None:
                message = {"role": "assistant", "content": None, "tool_calls": [call]}
            logprobs = None
            if job.logprobs is not None and call is None:
                logprobs = {"content": [_logprob_entry(rt, t, job.logprobs) for t in run.reply.content]}
            choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": logprobs}
            return json_response(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                }
            )

        def chunk(delta: dict[str, Any], finish: str | None = None, token: str | None = None) -> bytes:
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            if token is not None and job.logprobs is not None:
                choice["logprobs"] = {"content": [_logprob_entry(rt, token, job.logprobs)]}
            data = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
            }
            return b"data: " + orjson.dumps(data) + b"\n\n"

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await resp.write(chunk({"role": "assistant", "content": ""}))
        sent = 0
        async for thinking, tok in run.tokens():
            if fault.mode == "cut_stream" and sent >= fault.after_chunks:
                rt.counters.errors += 1
                _cut(request)
                return resp
            if call is not None:
                continue  # the call goes out whole once written, as one delta
            await resp.write(chunk({"reasoning": tok} if thinking else {"content": tok}, None, tok))
            sent += 1
        if call is not None:
            await resp.write(chunk({"tool_calls": [{"index": 0, **call}]}))
        await resp.write(chunk({}, finish))
        stream_options = body.get("stream_options")
        if isinstance(stream_options, dict) and stream_options.get("include_usage"):
            data = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await resp.write(b"data: " + orjson.dumps(data) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _openai_tool_call(call: ToolCall | None) -> dict[str, Any] | None:
    """OpenAI's tool_calls entry: arguments as a JSON string, an id the client echoes in its tool message."""
    if call is None:
        return None
    args = orjson.dumps(call.arguments).decode()
    call_id = "call_" + hashlib.sha256(f"{call.name}:{args}".encode()).hexdigest()[:24]
    return {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": args}}


# -- /sim/ admin API ----------------------------------------------------------------------------------------
async def sim_state(request: web.Request) -> web.Response:
    return json_response(request.app[RUNTIME].state())


async def sim_fault(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    try:
        body = await read_json(request)
        mode = body.get("mode", "none")
        count, after = body.get("count"), body.get("after_chunks", 2)
        valid = isinstance(mode, str) and (count is None or isinstance(count, int)) and isinstance(after, int)
        if not valid:
            raise BadRequest("expected {mode: str, count?: int, after_chunks?: int}")
        if mode in SOCKET_FAULTS and rt.socket_hook is None:
            raise BadRequest(f"{mode} needs the app to run under SimFleet, which owns the listening socket")
        rt.set_fault(mode, count, after)
    except (BadRequest, ValueError) as exc:
        return ollama_error(400, str(exc))
    resp = json_response({"fault": rt.faults.as_dict()})
    if mode in SOCKET_FAULTS and rt.socket_hook is not None:
        # Answer first, then close the listener (and this connection with it, so that the client does not
        # pool it). Only the Python API (SimFleet.set_fault) can clear it: the app does not listen any more.
        resp.force_close()
        await resp.prepare(request)
        await resp.write_eof()
        await rt.socket_hook(mode)
    return resp


async def sim_reset(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    rt.reset()
    return json_response(rt.state())


async def sim_external(request: web.Request) -> web.Response:
    rt = request.app[HOST]
    try:
        gb = (await read_json(request)).get("gb")
        if isinstance(gb, bool) or not isinstance(gb, int | float):
            raise BadRequest('expected {"gb": <number>}')
    except BadRequest as exc:
        return ollama_error(400, str(exc))
    rt.sched.set_external(float(gb))
    rt.notify()  # freed memory may let a waiting load start
    return json_response(rt.state())


def sim_app(rt: SimRuntime) -> web.Application:
    """An app carrying the runtime and the /sim/ admin routes; the caller adds the product routes."""
    app = web.Application(middlewares=[_sim_middleware], client_max_size=64 * 1024 * 1024)
    app[RUNTIME] = rt
    app.router.add_get("/sim/state", sim_state)
    app.router.add_post("/sim/fault", sim_fault)
    app.router.add_post("/sim/reset", sim_reset)
    return app


def create_host_app(
    spec: HostSpec, *, seed: int = 0, time_scale: float = 1.0, clock: Clock = time.monotonic
) -> web.Application:
    """A simulated Ollama host. `clock` must advance in real time; it is injectable to share a time base."""
    rt = HostRuntime(spec, seed=seed, time_scale=time_scale, clock=clock)
    app = sim_app(rt)
    app[HOST] = rt
    app.router.add_post("/api/chat", ollama_chat)
    app.router.add_get("/api/ps", ollama_ps)
    app.router.add_get("/api/tags", ollama_tags)
    app.router.add_post("/api/show", ollama_show)
    app.router.add_get("/api/version", ollama_version)
    app.router.add_get("/", ollama_root)
    app.router.add_post("/v1/chat/completions", openai_chat)
    app.router.add_post("/sim/external", sim_external)
    return app
