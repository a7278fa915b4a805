"""A front door real OpenAI clients can rely on, request side (issue #8 kinds 1, 4, 5, 6, 7, 8).

Every case goes through the real stack: a classifier on its own runner (conftest), the session's real
LiteLLM proxy with our hooks, and the simulated fleet. The ``openai`` SDK sends what it can produce; raw
HTTP (aiohttp, or a raw socket for malformed header sections) sends what it cannot. Each kind is tested
with siblings of the field example: other fields, encodings, nesting paths, modalities and names.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import logging
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import brotli
import openai
import pytest
import yaml
from backports import zstd
from multidict import CIMultiDict
from openai import AsyncOpenAI

from classifier.nesting import MAX_JSON_DEPTH
from classifier.nulls import object_variant, request_schema, resolve
from tests.conftest import ClassifierFactory, Stack
from tests.harness import wait_for_event

ROUTING_HEADERS = (
    "X-Router-Request-Id",
    "X-Router-Tier",
    "X-Router-Group",
    "X-Router-Model",
    "X-Router-Fallback",
    "X-Router-Timing-Total-Ms",
)
USER = [{"role": "user", "content": "Add a title to: a bear walked in the forest."}]
CHAT = "/v1/chat/completions"


def sdk(url: str, agent: str | None = "inbox-triage") -> AsyncOpenAI:
    headers = {"X-Agent-Id": agent} if agent else {}
    return AsyncOpenAI(base_url=url + "/v1", api_key="unused", default_headers=headers, max_retries=0)


async def post(
    url: str,
    body: Any,
    *,
    headers: Mapping[str, str] | CIMultiDict[str] | None = None,
    agent: str | None = "inbox-triage",
) -> tuple[int, CIMultiDict[str], Any]:
    """POST a chat body (a dict as JSON, or bytes as they are); the answer's JSON, or its text."""
    sent: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/json"})
    if agent:
        sent["X-Agent-Id"] = agent
    if headers is not None:
        for key in {k.lower() for k in headers}:
            sent.popall(key, None)
        sent.extend(headers)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.post(url + CHAT, data=data, headers=sent) as resp,
    ):
        raw = await resp.read()
        status, got = resp.status, CIMultiDict(resp.headers)
    text = raw.decode(errors="replace")
    try:
        return status, got, json.loads(text)
    except ValueError:
        return status, got, text


def assert_openai_error(
    status: int, headers: Mapping[str, str], payload: Any, expected: int
) -> dict[str, Any]:
    assert status == expected, (status, payload)
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    return dict(error)


async def completed(stack: Stack, headers: Mapping[str, str]) -> dict[str, Any]:
    """The request's ``request_completed`` trail line; its routing headers are there too."""
    for name in ROUTING_HEADERS:
        assert headers.get(name), f"missing {name}"
    return await wait_for_event(stack.events_path, headers["X-Router-Request-Id"], "request_completed")


# --- kind 1: null means "not given" -------------------------------------------------------------------------
def _full_base() -> dict[str, Any]:
    """A servable request holding every object of the request schema that a local lane can carry, so
    that every optional property at every level has a place to be set to null."""
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "look a word up",
            "parameters": {"type": "object", "properties": {"word": {"type": "string", "default": None}}},
            "strict": False,
        },
    }
    return {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "Be brief.", "name": "sys"},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}], "name": "dev"},
            {"role": "user", "content": [{"type": "text", "text": "Define bear."}], "name": "u"},
            {
                "role": "assistant",
                "content": None,
                "name": "a",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
                ],
                "function_call": {"name": "lookup", "arguments": "{}"},
                "audio": {"id": "audio_1"},
                "refusal": "",
                "annotations": [],
            },
            {"role": "tool", "content": "a large mammal", "tool_call_id": "call_1"},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "Noted."}, {"type": "refusal", "refusal": ""}],
            },
            {"role": "function", "content": "a large mammal", "name": "lookup"},
            {"role": "user", "content": "And a title?"},
        ],
        "tools": [tool],
        "functions": [tool["function"]],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "function_call": {"name": "lookup"},
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "title",
                "description": "d",
                "schema": {"type": "object"},
                "strict": False,
            },
        },
        "prediction": {"type": "content", "content": [{"type": "text", "text": "A title"}]},
        "web_search_options": {
            "search_context_size": "low",
            "user_location": {"type": "approximate", "approximate": {"city": "Oslo", "country": "NO"}},
        },
        "stream": False,
        "max_tokens": 16,
    }


def _media_base() -> dict[str, Any]:
    """Content parts only a cloud lane reads (image, file): the same rule one level down."""
    return {
        "model": "auto",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                    },
                    {
                        "type": "file",
                        "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
                    },
                ],
            }
        ],
    }


def _streaming_base() -> dict[str, Any]:
    return {"model": "auto", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}


Path_ = tuple[str | int, ...]


def null_cases(body: Any, node: Mapping[str, Any], path: Path_ = ()) -> Iterator[tuple[Path_, int, str]]:
    """Every optional property the schema allows at every object of ``body``: (path, schema node id, key)."""
    root = request_schema()
    if isinstance(body, dict):
        variant = object_variant(node, body, root)
        if variant is None:
            return
        required = variant.get("required") or ()
        for key, sub in (variant.get("properties") or {}).items():
            if key not in required and not sub.get("x-null-meaningful"):
                yield (*path, key), id(variant), key
            if body.get(key) is not None:
                yield from null_cases(body[key], sub, (*path, key))
    elif isinstance(body, list):
        resolved = resolve(node, root)
        items = resolved.get("items")
        if items is None:  # an anyOf of string | array
            items = next(
                (
                    resolve(b, root).get("items")
                    for b in resolved.get("anyOf", ())
                    if "items" in resolve(b, root)
                ),
                None,
            )
        if items is not None:
            for i, item in enumerate(body):
                yield from null_cases(item, items, (*path, i))


def schema_optional_properties() -> set[tuple[int, str]]:
    """Every (object node, optional key) in the schema, found by walking the schema document itself."""
    found: set[tuple[int, str]] = set()
    stack: list[Any] = [request_schema()]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "object" and node.get("properties"):
                required = node.get("required") or ()
                for key, sub in node["properties"].items():
                    if key not in required and not sub.get("x-null-meaningful"):
                        found.add((id(node), key))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


BASES = {"full": _full_base, "media": _media_base, "streaming": _streaming_base}


def all_null_cases() -> list[tuple[str, Path_]]:
    seen: dict[tuple[int, str], tuple[str, Path_]] = {}
    for name, make in BASES.items():
        for path, node_id, key in null_cases(make(), request_schema()):
            seen.setdefault((node_id, key), (name, path))
    return sorted(set(seen.values()), key=str)


def with_null(body: dict[str, Any], path: Path_) -> dict[str, Any]:
    out = copy.deepcopy(body)
    target: Any = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = None
    return out


def test_null_cases_cover_every_optional_property_of_the_schema() -> None:
    covered: set[tuple[int, str]] = set()
    for make in BASES.values():
        covered |= {(node_id, key) for _, node_id, key in null_cases(make(), request_schema())}
    missing = schema_optional_properties() - covered
    names = sorted(key for _, key in missing)
    assert not missing, f"optional properties with no null case (extend a base request): {names}"


async def test_every_base_request_is_served(stack: Stack, classifier_url: str) -> None:
    for name, make in BASES.items():
        status, _, payload = await post(classifier_url, make())
        assert status == 200, (name, payload)


NULL_CASES = all_null_cases()


@pytest.mark.parametrize(
    ("base", "path"), NULL_CASES, ids=[".".join(map(str, p)) + f"@{b}" for b, p in NULL_CASES]
)
async def test_an_optional_field_sent_as_null_is_not_given(
    stack: Stack, classifier_url: str, base: str, path: Path_
) -> None:
    status, headers, payload = await post(classifier_url, with_null(BASES[base](), path))
    assert status == 200, (path, payload)
    assert (await completed(stack, headers))["outcome"] == "ok"


async def test_all_nulls_at_once_and_the_field_cases(stack: Stack, classifier_url: str) -> None:
    body = _full_base()
    for _, path in NULL_CASES:
        if (path and path[0] in body) or len(path) == 1:
            try:
                body = with_null(body, path)
            except (KeyError, IndexError, TypeError):
                continue  # a parent already nulled
    status, _, payload = await post(classifier_url, body)
    assert status == 200, payload
    # The field cases, verbatim: the assistant echo and the top-level nulls.
    echo = {
        "role": "assistant",
        "content": "Hello!",
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": None,
    }
    messages = [{"role": "user", "content": "hi"}, echo, {"role": "user", "content": "and again"}]
    assert (await post(classifier_url, {"model": "auto", "messages": messages}))[0] == 200
    extra = {
        "stream_options": None,
        "functions": None,
        "function_call": None,
        "tools": None,
        "tool_choice": None,
    }
    assert (await post(classifier_url, {"model": "auto", "messages": USER, "stream": None, **extra}))[
        0
    ] == 200


async def test_sdk_turn_two_appends_the_model_dump_of_turn_one(classifier_url: str) -> None:
    """What every SDK conversation does: append ``message.model_dump()`` (nulls and all) and ask again."""
    tools: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    async with sdk(classifier_url) as oa:
        first = await oa.chat.completions.create(model="auto", messages=USER, tools=tools)  # type: ignore[arg-type]
        echoed = first.choices[0].message.model_dump()
        assert None in echoed.values() and "refusal" in echoed  # the nulls a real echo carries
        messages: Any = [*USER, echoed, {"role": "user", "content": "Shorter, please."}]
        second = await oa.chat.completions.create(
            model="auto", messages=messages, extra_body={"tools": None, "tool_choice": None}
        )
    assert second.choices[0].message.content


# --- kind 4: bodies and headers at the protocol edge --------------------------------------------------------
PLAIN = json.dumps({"model": "auto", "messages": USER}).encode()


def _zstd_single_segment(data: bytes) -> bytes:
    """The field case's hand-made frame: a raw block, single segment (what a minimal encoder writes)."""
    header = b"\x28\xb5\x2f\xfd" + bytes([0x20, len(data)])
    return header + (1 | (len(data) << 3)).to_bytes(3, "little") + data


ENCODED = {
    "gzip": gzip.compress(PLAIN),
    "x-gzip": gzip.compress(PLAIN),
    "deflate": zlib.compress(PLAIN),
    "deflate-raw": zlib.compress(PLAIN)[2:-4],
    "br": brotli.compress(PLAIN),
    "zstd": zstd.compress(PLAIN),
    "zstd-frame": _zstd_single_segment(PLAIN),
    "gzip, br": brotli.compress(gzip.compress(PLAIN)),
    "identity": PLAIN,
}


@pytest.mark.parametrize("label", list(ENCODED))
async def test_compressed_bodies_are_decoded(stack: Stack, classifier_url: str, label: str) -> None:
    encoding = label.split("-")[0] if label in ("deflate-raw", "zstd-frame") else label
    status, headers, payload = await post(
        classifier_url, ENCODED[label], headers={"Content-Encoding": encoding}
    )
    assert status == 200, payload
    assert (await completed(stack, headers))["outcome"] == "ok"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
@pytest.mark.parametrize("body", [b"not-compressed", PLAIN], ids=["garbage", "plain-json"])
async def test_a_body_that_is_not_its_encoding_is_a_400(
    stack: Stack, classifier_url: str, encoding: str, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        status, headers, payload = await post(classifier_url, body, headers={"Content-Encoding": encoding})
    assert not [r for r in caplog.records if r.exc_info], "a client's bad body logged a traceback"
    error = assert_openai_error(status, headers, payload, 400)
    assert error["code"] == "invalid_content_encoding" and encoding in error["message"]
    assert (await completed(stack, headers))["status"] == 400


async def test_truncated_streams_are_a_400(classifier_url: str) -> None:
    for encoding, data in [
        ("gzip", ENCODED["gzip"][:-6]),
        ("zstd", ENCODED["zstd"][:-3]),
        ("br", ENCODED["br"][:-2]),
    ]:
        status, headers, payload = await post(classifier_url, data, headers={"Content-Encoding": encoding})
        assert assert_openai_error(status, headers, payload, 400)["code"] == "invalid_content_encoding"


@pytest.mark.parametrize("encoding", ["compress", "lz4", "gzip, snappy"])
async def test_an_unknown_encoding_is_a_415(stack: Stack, classifier_url: str, encoding: str) -> None:
    status, headers, payload = await post(classifier_url, PLAIN, headers={"Content-Encoding": encoding})
    error = assert_openai_error(status, headers, payload, 415)
    assert error["param"] == "Content-Encoding"
    await completed(stack, headers)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
async def test_a_decompression_bomb_is_a_413(make_classifier: ClassifierFactory, encoding: str) -> None:
    url = await make_classifier(max_body_bytes=64 * 1024)
    inflated = b'{"messages": [{"role": "user", "content": "' + b"0" * 50_000_000 + b'"}]}'
    compress = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress, "zstd": zstd.compress}
    data = compress[encoding](inflated)
    assert len(data) < 64 * 1024  # the compressed body is within the limit: only decoding can tell
    status, headers, payload = await post(url, data, headers={"Content-Encoding": encoding})
    assert assert_openai_error(status, headers, payload, 413)["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("text/plain", PLAIN, 200),
        ("application/x-www-form-urlencoded", PLAIN, 200),  # what curl -d sends
        ("application/octet-stream", PLAIN, 200),
        ("application/json; charset=utf-8", PLAIN, 200),
        ("text/plain", b"model=auto&messages=hi", 415),
        ("application/x-www-form-urlencoded", b"model=auto", 415),
        ("application/json", b"model=auto", 400),
    ],
)
async def test_content_type_decides_only_for_a_body_that_is_not_json(
    classifier_url: str, content_type: str, body: bytes, expected: int
) -> None:
    status, headers, payload = await post(classifier_url, body, headers={"Content-Type": content_type})
    if expected == 200:
        assert status == 200, payload
    else:
        assert_openai_error(status, headers, payload, expected)


async def raw_exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes on a socket; read the status, headers and body of the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)
        }
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length)
    finally:
        writer.close()
    return status, headers, body


def _request(head: bytes, body: bytes = PLAIN, *, length: bool = True) -> bytes:
    lines = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + head
    if length:
        lines += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    return lines + b"\r\n" + body


MALFORMED = {
    "bare CR in X-Agent-Id": (_request(b"X-Agent-Id: web\rmaster\r\n"), 400),
    "bare LF inside a header value": (_request(b"X-Agent-Id: web\nmaster: x\x01\r\n"), 400),
    "header line over 8190 bytes": (_request(b"X-Agent-Id: " + b"a" * 9000 + b"\r\n"), 431),
    "129 header lines": (_request(b"".join(b"X-Pad-%d: 1\r\n" % i for i in range(130))), 431),
    "NUL in a header name": (_request(b"X-Ag\x00ent: x\r\n"), 400),
    "bad chunk size": (
        _request(b"Transfer-Encoding: chunked\r\n", b"zz\r\n" + PLAIN + b"\r\n0\r\n\r\n", length=False),
        400,
    ),
    "Content-Length and chunked": (
        _request(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n", length=False),
        400,
    ),
    "request line not HTTP": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400),
    # aiohttp answers an expectation it does not know before any middleware runs (its expect handler)
    "an Expect other than 100-continue": (_request(b"Expect: 200-ok\r\n"), 417),
    "an Expect on a GET route": (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nExpect: x\r\n\r\n", 417),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_what_aiohttp_cannot_parse_is_openai_json_without_a_traceback(
    classifier_url: str, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    request, expected = MALFORMED[case]
    with caplog.at_level(logging.DEBUG):
        status, headers, body = await raw_exchange(classifier_url, request)
    assert status == expected, body
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert not [r for r in caplog.records if r.exc_info], "a client's bad input logged a traceback"


async def test_expect_100_continue_still_continues(classifier_url: str) -> None:
    # curl sends it for a body over 1 MB: the classifier's own expect handler must keep answering it.
    host, port = classifier_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = _request(b"Expect: 100-continue\r\nConnection: close\r\n")
        writer.write(head[: -len(PLAIN)])
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(PLAIN)
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def test_a_well_formed_chunked_body_is_fine(classifier_url: str) -> None:
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(PLAIN), PLAIN)
    status, _, body = await raw_exchange(
        classifier_url,
        _request(b"Transfer-Encoding: chunked\r\nConnection: close\r\n", chunked, length=False),
    )
    assert status == 200, body


# --- kind 5: deep structures never cause a 500 --------------------------------------------------------------
def deep_body(where: str, levels: int) -> bytes:
    """The body as JSON text, built as text: Python's own encoder cannot write 1,000 levels."""
    schema = '{"type":"object","properties":{"p":' * levels + '{"type":"string"}' + "}}" * levels
    nested = "[" * levels + '"leaf"' + "]" * levels
    deep = {"tool parameters": schema, "content part": nested, "response_format schema": schema}.get(where)
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "fill the form"}]}
    if where == "tool parameters":
        body["tools"] = [{"type": "function", "function": {"name": "fill", "parameters": "@DEEP@"}}]
    elif where == "content part":
        body["messages"] = [{"role": "user", "content": [{"type": "text", "text": "x", "extra": "@DEEP@"}]}]
    elif where == "response_format schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "s", "schema": "@DEEP@"}}
    elif where == "tool_calls arguments":  # a string: any depth is fine
        call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": nested}}
        body["messages"] = [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "done", "tool_call_id": "c1"},
        ]
    text = json.dumps(body)
    return text.replace('"@DEEP@"', deep).encode() if deep else text.encode()


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("agent", ["webmaster", None], ids=["known agent", "unknown agent"])
@pytest.mark.parametrize("levels", [130, 300, 1100])
@pytest.mark.parametrize(
    "where", ["tool parameters", "content part", "response_format schema", "tool_calls arguments"]
)
async def test_deep_structures_are_a_200_or_a_400_with_headers_and_a_trail(
    stack: Stack, classifier_url: str, where: str, levels: int, agent: str | None
) -> None:
    status, headers, payload = await post(classifier_url, deep_body(where, levels), agent=agent)
    event = await completed(stack, headers)
    if where == "tool_calls arguments":
        assert status == 200, payload
        assert event["outcome"] == "ok"
        return
    error = assert_openai_error(status, headers, payload, 400)
    assert error["code"] == "nesting_too_deep" and str(MAX_JSON_DEPTH) in error["message"]
    assert event["status"] == 400 and event["outcome"] == "bad_request"


@pytest.mark.parametrize("agent", ["webmaster", None], ids=["known agent", "unknown agent"])
async def test_the_deepest_allowed_body_goes_all_the_way(
    stack: Stack, classifier_url: str, agent: str | None
) -> None:
    """At the bound itself every step downstream (orjson, LiteLLM, the hooks, the fleet) copes."""
    levels = (MAX_JSON_DEPTH - 5) // 2
    body = deep_body("tool parameters", levels)
    assert MAX_JSON_DEPTH - 1 <= depth_of(json.loads(body)) <= MAX_JSON_DEPTH
    status, headers, payload = await post(classifier_url, body, agent=agent)
    assert status == 200, payload
    assert (await completed(stack, headers))["outcome"] == "ok"
    status, _, payload = await post(classifier_url, deep_body("tool parameters", levels + 1), agent=agent)
    assert status == 400 and payload["error"]["code"] == "nesting_too_deep"


# --- kind 6: modalities -------------------------------------------------------------------------------------
PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
PARTS: dict[str, dict[str, Any]] = {
    "image": {"type": "image_url", "image_url": {"url": PNG}},
    "file": {
        "type": "file",
        "file": {"file_data": "data:application/pdf;base64,JVBERi0xLjQK", "filename": "x.pdf"},
    },
    "audio": {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
}


def with_part(kind: str, model: str = "auto") -> dict[str, Any]:
    content = [{"type": "text", "text": "What is in this?"}, PARTS[kind]]
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def profiles(stack: Stack) -> dict[str, Any]:
    return dict(yaml.safe_load(stack.matrix_path.read_text())["profiles"])


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"text": "no type"}, "messages[0].content[0]"),
        ({"type": None, "text": "x"}, "messages[0].content[0].type"),
        ({"type": "video_url", "video_url": {"url": "x"}}, "messages[0].content[0].type"),
        ({"type": "text"}, "messages[0].content[0]"),
        ({"type": "text", "text": 5}, "messages[0].content[0].text"),
        ({"type": "image_url"}, "messages[0].content[0]"),
        ({"type": "image_url", "image_url": {"detail": "low"}}, "messages[0].content[0].image_url"),
        ({"type": "input_audio", "input_audio": "UklGRg=="}, "messages[0].content[0].input_audio"),
        ({"type": "file"}, "messages[0].content[0]"),
        ({"type": "refusal", "refusal": "no"}, "messages[0].content[0].type"),  # assistant messages only
        ("a bare string", "messages[0].content[0]"),
        (None, "messages[0].content[0]"),
    ],
)
async def test_a_malformed_content_part_is_a_400_naming_it(
    stack: Stack, classifier_url: str, part: Any, param: str
) -> None:
    # Each of these used to reach LiteLLM: a 500 (APIConnectionError), a 400 carrying LiteLLM's traceback,
    # or (a text part whose text is not a string) a local failure and a LiteLLM fallback to the paid cloud.
    body = {"messages": [{"role": "user", "content": [part]}]}
    status, headers, payload = await post(classifier_url, body, agent="webmaster")
    error = assert_openai_error(status, headers, payload, 400)
    assert error["code"] == "invalid_request" and error["param"] == param, error
    assert (await completed(stack, headers))["outcome"] == "bad_request"


_TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def _called(function: Any) -> list[dict[str, Any]]:
    call = {"id": "c1", "type": "function", "function": function}
    return [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": ["lookup"]}, "tools[0]"),
        ({"tools": [{"type": "function", "function": None}]}, "tools[0].function"),
        ({"tools": [{"type": "function", "function": {"parameters": {}}}]}, "tools[0].function"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [_TOOL], "tool_choice": {"type": "function", "function": None}}, "tool_choice.function"),
        ({"tools": [_TOOL], "tool_choice": {"type": "function"}}, "tool_choice"),
        (
            {"messages": _called({"name": "lookup", "arguments": {"q": 1}})},
            "messages[1].tool_calls[0].function.arguments",
        ),
        ({"messages": _called({"arguments": "{}"})}, "messages[1].tool_calls[0].function"),
        ({"messages": _called(None)}, "messages[1].tool_calls[0].function"),
    ],
)
async def test_a_malformed_tool_structure_is_a_400_naming_it(
    stack: Stack, classifier_url: str, extra: dict[str, Any], param: str
) -> None:
    # Each used to reach LiteLLM: a 500 (an invalid tool_choice), LiteLLM's own 400 text, a local model that
    # ignored it, or (arguments as an object) a local failure that LiteLLM's fallback carried to the cloud.
    body = {"messages": [{"role": "user", "content": "hi"}], **extra}
    status, headers, payload = await post(classifier_url, body, agent="webmaster")
    error = assert_openai_error(status, headers, payload, 400)
    assert error["code"] == "invalid_request" and error["param"] == param, error
    assert (await completed(stack, headers))["outcome"] == "bad_request"


@pytest.mark.parametrize("kind", ["image", "file"])
@pytest.mark.parametrize(
    ("agent", "model"), [("webmaster", "auto"), ("inbox-triage", "auto"), (None, "code")]
)
async def test_a_part_only_cloud_models_read_goes_to_one_that_reads_it(
    stack: Stack, classifier_url: str, kind: str, agent: str | None, model: str
) -> None:
    status, headers, payload = await post(classifier_url, with_part(kind, model), agent=agent)
    assert status == 200, payload
    served = profiles(stack)[headers["X-Router-Model"]]
    assert kind in served["input_modalities"], (headers["X-Router-Model"], served)
    event = await wait_for_event(stack.events_path, headers["X-Router-Request-Id"], "request_classified")
    assert event["infeasible"] and all(why == f"modality:{kind}" for why in event["infeasible"].values())


@pytest.mark.parametrize("kind", ["image", "file"])
async def test_local_only_with_an_image_is_a_400_naming_the_modality(
    stack: Stack, make_classifier: ClassifierFactory, kind: str
) -> None:
    url = await make_classifier(routing_mode="local-only")
    status, headers, payload = await post(url, with_part(kind), agent="webmaster")
    error = assert_openai_error(status, headers, payload, 400)
    assert error["code"] == "unsupported_modality" and f"accepts {kind} input" in error["message"]
    assert error["param"] == "messages[0].content[1]"
    assert (await completed(stack, headers))["status"] == 400


async def test_audio_no_deployment_reads_is_a_400_naming_audio(stack: Stack, classifier_url: str) -> None:
    async with sdk(classifier_url) as oa:
        with pytest.raises(openai.BadRequestError) as caught:
            await oa.chat.completions.create(model="auto", messages=with_part("audio")["messages"])
    assert caught.value.code == "unsupported_modality" and "audio" in caught.value.message


async def test_the_ranker_never_hands_an_image_to_a_text_model(
    stack: Stack, make_classifier: ClassifierFactory
) -> None:
    """With the classifier's own check bypassed (a matrix copy that claims every model reads images),
    the hooks still filter: LiteLLM then has no deployment, and the client gets a 400, not a 429."""
    doc = yaml.safe_load(stack.matrix_path.read_text())
    for profile in doc["profiles"].values():
        profile["input_modalities"] = ["text", "image"]
    lying = stack.dir / "matrix-all-vision.yaml"
    lying.write_text(yaml.safe_dump(doc))
    url = await make_classifier(matrix_path=lying, routing_mode="local-only")
    status, headers, payload = await post(url, with_part("image"), agent="webmaster")
    error = assert_openai_error(status, headers, payload, 400)
    assert "modality:image" in error["message"] and "Retry-After" not in headers
    selected = await wait_for_event(stack.events_path, headers["X-Router-Request-Id"], "route_selected")
    assert selected["deployment"] is None and set(selected["rejected"].values()) == {"modality:image"}


# --- kind 7: impossible is not busy -------------------------------------------------------------------------
async def test_max_tokens_beyond_every_window_is_a_400_not_a_429(stack: Stack, classifier_url: str) -> None:
    async with sdk(classifier_url) as oa:
        with pytest.raises(openai.BadRequestError) as caught:
            await oa.chat.completions.create(model="auto", messages=USER, max_tokens=10_000_000)  # type: ignore[arg-type]
    error = caught.value
    assert error.code == "context_length_exceeded" and error.param == "max_tokens"
    assert "1,047,576" in error.message  # the largest window on the route, named
    assert error.response.headers.get("Retry-After") is None
    for field in ("max_tokens", "max_completion_tokens"):
        status, headers, payload = await post(classifier_url, {"messages": USER, field: 5_000_000})
        assert assert_openai_error(status, headers, payload, 400)["code"] == "context_length_exceeded"
        assert (await completed(stack, headers))["status"] == 400
    # Numbers the validator takes for integers but JSON parsers give as floats: 5e6 and 5000000.0 are as
    # impossible as 5_000_000; an integer past 64 bits (orjson parses it as a float) is out of range.
    for literal in (b"5e6", b"5000000.0", b"1" + b"0" * 30):
        raw = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + literal + b"}"
        status, headers, payload = await post(classifier_url, raw)
        refused = assert_openai_error(status, headers, payload, 400)
        expected = "invalid_request" if len(literal) > 20 else "context_length_exceeded"
        assert refused["code"] == expected and refused["param"] == "max_tokens", literal
        assert len(refused["message"]) < 300, refused


async def test_a_prompt_too_long_for_local_lanes(stack: Stack, make_classifier: ClassifierFactory) -> None:
    long_prompt = [
        {"role": "user", "content": "word " * 40_000}
    ]  # about 50,000 tokens: over every local window
    local = await make_classifier(routing_mode="local-only")
    status, headers, payload = await post(local, {"messages": long_prompt})
    error = assert_openai_error(status, headers, payload, 400)
    assert error["code"] == "context_length_exceeded" and "40,960" in error["message"]
    # local-first: the local steps are dropped and the cloud step serves it at once.
    first = await make_classifier()
    status, headers, payload = await post(first, {"messages": long_prompt})
    assert status == 200, payload
    assert headers["X-Router-Group"].startswith("cloud-")


def _long_tool_call_history(where: str) -> list[dict[str, Any]]:
    """A coding agent's history whose bulk (about 50,000 tokens) is in what the assistant called, not in any
    message's content: a file written through a tool call, or the legacy function_call."""
    call = {"name": "write_file", "arguments": json.dumps({"path": "a.py", "text": "word " * 40_000})}
    assistant: dict[str, Any] = {"role": "assistant", "content": None}
    if where == "tool_calls":
        assistant["tool_calls"] = [{"id": "c1", "type": "function", "function": call}]
        result: dict[str, Any] = {"role": "tool", "tool_call_id": "c1", "content": "written"}
    else:
        assistant["function_call"] = call
        result = {"role": "function", "name": "write_file", "content": "written"}
    return [{"role": "user", "content": "write it"}, assistant, result]


@pytest.mark.parametrize("where", ["tool_calls", "function_call"])
async def test_tool_call_arguments_count_towards_the_prompt(
    stack: Stack, make_classifier: ClassifierFactory, where: str
) -> None:
    # They used to count for nothing: such a history went to a 40,960-token local lane, which failed, and
    # LiteLLM's fallback carried it on to the cloud (a real Ollama host silently truncates the context).
    local = await make_classifier(routing_mode="local-only")
    status, headers, payload = await post(local, {"messages": _long_tool_call_history(where)})
    error = assert_openai_error(status, headers, payload, 400)
    assert error["code"] == "context_length_exceeded" and "40,960" in error["message"]
    first = await make_classifier()
    status, headers, payload = await post(first, {"messages": _long_tool_call_history(where)})
    assert status == 200, payload
    assert headers["X-Router-Group"].startswith("cloud-") and headers["X-Router-Fallback"] == "none"


async def test_litellm_no_deployments_for_a_size_is_a_400(
    stack: Stack, make_classifier: ClassifierFactory
) -> None:
    """A classifier whose matrix believes in bigger windows than the hooks' lets the request through;
    LiteLLM's 429 "No deployments available" comes back and is told as what it is."""
    doc = yaml.safe_load(stack.matrix_path.read_text())
    for profile in doc["profiles"].values():
        profile["context_window"] = 50_000_000
    bigger = stack.dir / "matrix-big-windows.yaml"
    bigger.write_text(yaml.safe_dump(doc))
    url = await make_classifier(matrix_path=bigger, routing_mode="local-only")
    status, headers, payload = await post(url, {"messages": USER, "max_tokens": 1_000_000})
    error = assert_openai_error(status, headers, payload, 400)
    assert error["code"] == "context_length_exceeded" and "Retry-After" not in headers
    assert "cooldown" not in error["message"] and "No deployments" not in error["message"]


# --- kind 8: model names say what they mean -----------------------------------------------------------------
async def test_an_alias_is_served_as_its_target(stack: Stack, classifier_url: str) -> None:
    async with sdk(classifier_url, agent=None) as oa:
        raw = await oa.chat.completions.with_raw_response.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
        assert raw.headers["x-router-group"] == "balanced"
        raw = await oa.chat.completions.with_raw_response.create(model="GPT-4o-Mini", messages=USER)  # type: ignore[arg-type]
        assert raw.headers["x-router-group"] == "fast-chat"


@pytest.mark.parametrize(
    ("model", "suggestion"),
    [
        ("gpt-5", None),
        ("qwen3:8b", None),
        ("webmaster", "webmaster:auto"),
        ("webmaster:balance", "webmaster:balanced"),
        ("webmaster:no-such-group", None),
        ("agent:no-such-group", None),
    ],
)
async def test_an_unknown_model_is_a_404_listing_what_is_valid(
    stack: Stack, classifier_url: str, model: str, suggestion: str | None
) -> None:
    async with sdk(classifier_url, agent=None) as oa:
        with pytest.raises(openai.NotFoundError) as caught:
            await oa.chat.completions.create(model=model, messages=USER)  # type: ignore[arg-type]
    error = caught.value
    assert error.code == "model_not_found" and error.param == "model"
    for valid in ("auto", "balanced", "cloud-code", "gpt-4o", "<agent>:<group>"):
        assert valid in error.message
    if suggestion:
        assert f"Did you mean {suggestion!r}" in error.message
    assert (await completed(stack, error.response.headers))["status"] == 404


@pytest.mark.parametrize(
    "model", ["webmaster:balanced", "someone-new:code", "webmaster:auto", "codex-runner:"]
)
async def test_agent_and_group_forms_are_served(classifier_url: str, model: str) -> None:
    status, _, payload = await post(classifier_url, {"model": model, "messages": USER}, agent=None)
    assert status == 200, payload


async def test_models_endpoints_as_openai_serves_them(classifier_url: str) -> None:
    async with sdk(classifier_url) as oa:
        listed = {m.id for m in (await oa.models.list()).data}
        assert {"auto", "balanced", "cloud-fast", "gpt-4o", "gpt-4o-mini"} <= listed
        one = await oa.models.retrieve("gpt-4o")
        assert one.id == "gpt-4o" and one.object == "model"
        assert (await oa.models.retrieve("fast-chat")).id == "fast-chat"
        with pytest.raises(openai.NotFoundError) as caught:
            await oa.models.retrieve("gpt-5")
    assert caught.value.code == "model_not_found"


async def test_aliases_reload_without_a_restart(make_classifier: ClassifierFactory, tmp_path: Path) -> None:
    path = tmp_path / "aliases.yaml"
    path.write_text("aliases:\n  gpt-4o: balanced\n")
    url = await make_classifier(aliases_path=path)
    status, _, _ = await post(url, {"model": "my-model", "messages": USER})
    assert status == 404
    path.write_text("aliases:\n  gpt-4o: balanced\n  my-model: code\n")
    for _ in range(200):
        status, headers, _ = await post(url, {"model": "my-model", "messages": USER})
        if status == 200:
            break
        await asyncio.sleep(0.05)  # polling a hot reload: the file watcher runs about once a second
    assert status == 200 and headers["X-Router-Group"] == "code"
    path.write_text("aliases:\n  my-model: no-such-group\n")  # invalid: the last good map stays
    await asyncio.sleep(1.5)
    assert (await post(url, {"model": "my-model", "messages": USER}))[0] == 200


@pytest.mark.parametrize("value", ["bad id!", "x" * 200, "web\tmaster"])
async def test_a_bad_agent_header_names_the_header(stack: Stack, classifier_url: str, value: str) -> None:
    status, headers, payload = await post(classifier_url, {"messages": USER}, headers={"X-Agent-Id": value})
    error = assert_openai_error(status, headers, payload, 400)
    assert error["param"] == "X-Agent-Id"
    await completed(stack, headers)


async def test_two_agent_headers(classifier_url: str) -> None:
    two = CIMultiDict([("X-Agent-Id", "webmaster"), ("X-Agent-Id", "inbox-triage")])
    status, headers, payload = await post(classifier_url, {"messages": USER}, headers=two, agent=None)
    error = assert_openai_error(status, headers, payload, 400)
    assert error["param"] == "X-Agent-Id" and "2 times" in error["message"]
    same = CIMultiDict([("X-Agent-Id", "webmaster"), ("x-agent-id", "WebMaster")])
    status, headers, payload = await post(classifier_url, {"messages": USER}, headers=same, agent=None)
    assert status == 200 and headers["X-Router-Tier"] == "H", payload


# --- fields LiteLLM refuses, refusals keep the agent, bounded numbers and declared lengths ---------------
PRIVILEGED_CASES: dict[str, dict[str, Any]] = {
    "api_base": {"api_base": "http://127.0.0.1:9"},
    "user_config": {"user_config": {"model_list": []}},
    "api_key": {"api_key": "sk-mine"},
    "mock_response": {"mock_response": "free answer"},
    "fallbacks": {"fallbacks": ["cloud-balanced"]},
    "langfuse_host": {"langfuse_host": "http://127.0.0.1:9"},
    "input_cost_per_token": {"input_cost_per_token": 0},
    "metadata.api_base": {"metadata": {"api_base": "http://127.0.0.1:9"}},
    "extra_body.base_url": {"extra_body": {"base_url": "http://127.0.0.1:9"}},
}


@pytest.mark.parametrize("param", list(PRIVILEGED_CASES))
async def test_a_field_litellm_refuses_is_a_400_naming_it(
    stack: Stack, classifier_url: str, param: str
) -> None:
    status, headers, payload = await post(classifier_url, {"messages": USER, **PRIVILEGED_CASES[param]})
    error = assert_openai_error(status, headers, payload, 400)
    assert error["param"] == param and error["code"] == "field_not_allowed", error
    event = await completed(stack, headers)
    assert (event["outcome"], event["agent_id"], event["deployment"]) == ("bad_request", "inbox-triage", None)


REFUSED_BEFORE_ROUTING = {
    "not JSON": ({}, b"{not json"),
    "empty": ({}, b""),
    "not an object": ({}, b"[1, 2]"),
    "bad encoding": ({"Content-Encoding": "gzip"}, b"not gzip"),
    "unknown encoding": ({"Content-Encoding": "lz4"}, b"xx"),
    "schema": ({}, b'{"messages": []}'),
    "unknown model": ({}, b'{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}'),
    "bad model field": ({}, b'{"model": 3, "messages": [{"role": "user", "content": "hi"}]}'),
}


@pytest.mark.parametrize("case", list(REFUSED_BEFORE_ROUTING))
async def test_a_request_refused_before_routing_keeps_its_agent(
    stack: Stack, classifier_url: str, case: str
) -> None:
    extra, body = REFUSED_BEFORE_ROUTING[case]
    status, headers, payload = await post(classifier_url, body, headers=extra)
    assert 400 <= status < 500, payload
    event = await completed(stack, headers)
    assert event["outcome"] == "bad_request" and event["status"] == status
    assert event["agent_id"] == "inbox-triage" and event["deployment"] is None, event


async def test_the_agent_in_the_model_field_is_kept_on_a_refusal(stack: Stack, classifier_url: str) -> None:
    status, headers, _ = await post(
        classifier_url, {"model": "webmaster:auto", "messages": USER, "max_tokens": 2**31 - 1}, agent=None
    )
    assert status == 400
    assert (await completed(stack, headers))["agent_id"] == "webmaster"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_a_huge_max_tokens_is_a_short_400(stack: Stack, classifier_url: str, field: str) -> None:
    body = b'{"messages": [{"role": "user", "content": "hi"}], "%s": 1e308}' % field.encode()
    status, headers, payload = await post(classifier_url, body)
    error = assert_openai_error(status, headers, payload, 400)
    assert error["param"] == field and len(json.dumps(payload)) < 300, payload


async def test_a_declared_length_over_the_limit_is_a_413_at_once(classifier_url: str) -> None:
    request = _request(b"X-Agent-Id: inbox-triage\r\nContent-Length: 20000000\r\n", PLAIN, length=False)
    status, _, body = await asyncio.wait_for(raw_exchange(classifier_url, request), 3)
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
