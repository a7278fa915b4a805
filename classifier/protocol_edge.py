"""The HTTP edge below the handlers: what aiohttp answers before (or while) a handler reads the request.

aiohttp 3.14 answers a request it cannot parse (a header line with a bare CR, an over-long line, too many
headers, a bad request line) from ``RequestHandler.handle_error`` with a plain-text body and a logged
traceback, before any middleware runs; and it decompresses bodies itself, where an encoding it lacks or a
corrupt stream surfaces as a plain-text 400 or a 500. This module makes every one of those an OpenAI-style
JSON error with the right status, logged in one line without a traceback:

* :class:`JsonErrorRequestHandler` overrides ``handle_error`` (the one place aiohttp renders those errors);
* :class:`ClassifierRunner` is an ``AppRunner`` whose server builds that handler (``torchrouter serve``,
  ``torchrouter up`` and the tests use it);
* :data:`HANDLER_ARGS` (``web.Application(handler_args=...)``) turns aiohttp's own decompression off, so
  bodies arrive as sent and :mod:`classifier.body_decode` decodes them with a size bound;
* :func:`read_body` reads and decodes a request body, mapping every failure to an :class:`ApiError`.

Why a runner rather than something in ``create_app``: aiohttp calls ``handle_error`` on the protocol
handler, which its ``Server`` creates; an application has no say in it. The runner swaps the class of the
``Server`` its base built for a subclass that differs only in which handler class it instantiates, so no
private state is copied (``AppRunner._make_server`` is the one non-public name used; checked on 3.14.5).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from aiohttp import HttpVersion11, hdrs, http_exceptions, web
from aiohttp.web_request import BaseRequest

from classifier.body_decode import BodyDecodeError, DecodedTooLarge, UnknownEncoding, decode_body
from classifier.http_errors import error_response, http_error_response
from torchrouter_core.errors import (
    ApiError,
    BadRequest,
    HeaderFieldsTooLarge,
    PayloadTooLarge,
    UnsupportedMediaType,
)

log = logging.getLogger("torchrouter.classifier")

HANDLER_ARGS: Final[dict[str, Any]] = {"auto_decompress": False}


def _protocol_error(exc: BaseException | None, status: int) -> ApiError | None:
    """The client-facing error for what aiohttp's parser refused. Messages are ours, not the parser's:
    its text can quote the offending header line, and a header line may hold a key."""
    if status >= 500:
        return None
    if isinstance(exc, http_exceptions.LineTooLong):
        return HeaderFieldsTooLarge("a header line or the request line is too long (limit 8190 bytes)")
    if isinstance(exc, http_exceptions.BadHttpMessage) and "too many headers" in str(exc).lower():
        return HeaderFieldsTooLarge("too many header lines (limit 128)")
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return BadRequest("the request line is not HTTP (unknown method)", code="bad_http_request")
    if isinstance(exc, http_exceptions.TransferEncodingError):
        return BadRequest("the chunked body is malformed", code="bad_http_request")
    if isinstance(exc, http_exceptions.ContentLengthError):
        return BadRequest("the body is shorter than its Content-Length", code="bad_http_request")
    kind = type(exc).__name__ if exc is not None else "HTTP error"
    return BadRequest(
        f"the request could not be parsed ({kind}): a header line with a bare CR or LF, a character not "
        "allowed in a header, or a conflicting Content-Length / Transfer-Encoding",
        code="bad_http_request",
    )


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """aiohttp's default ``Expect`` handling, with its refusal as OpenAI JSON: ``Expect: 100-continue``
    (curl sends it for bodies over 1 MB) gets ``100 Continue``; any other expectation a 417. aiohttp runs a
    route's expect handler before the application's middlewares, so its default (a plain-text 417) never
    reaches :func:`classifier.app.openai_errors`. Every route is added with this one."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version != HttpVersion11:
        return None
    if expect.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the main response has not started (as aiohttp's own handler does)
        return None
    response = http_error_response(417, "unknown Expect header; only 'Expect: 100-continue' is supported")
    response.force_close()  # the body was never read
    return response


class JsonErrorRequestHandler(web.RequestHandler):
    """aiohttp's protocol handler, answering its own errors as OpenAI JSON (see the module docstring)."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        error = _protocol_error(exc, status)
        if isinstance(exc, ConnectionResetError):
            # The client left while its answer was being written: the chat handler recorded it
            # (``cancelled``); there is no one to answer and nothing went wrong here.
            log.debug("client %s left while its answer was being written", request.remote)
        elif error is None:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        else:
            # A client's malformed input: one line, no traceback, and none of its bytes.
            log.info(
                "refused a request aiohttp could not parse from %s: %s %d",
                request.remote,
                type(exc).__name__ if exc is not None else "-",
                error.status,
            )
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        response = (
            error_response(error)
            if error is not None
            else http_error_response(500, "internal error in the classifier; see its log")
        )
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class ClassifierRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer aiohttp's own errors as OpenAI JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        if type(server) is not web.Server:  # pragma: no cover - an aiohttp upgrade changed the factory
            raise RuntimeError(f"unexpected aiohttp server type {type(server).__name__}")
        server.__class__ = _JsonErrorServer
        return server


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, Content-Encoding undone, at most ``max_bytes`` long (before and after decoding).

    Raises :class:`PayloadTooLarge` (413), :class:`UnsupportedMediaType` (415) or :class:`BadRequest`."""
    declared = request.content_length
    if declared is not None and declared > max_bytes:  # answer now, not after waiting for the body
        raise PayloadTooLarge(f"Content-Length exceeds the limit of {max_bytes} bytes for a request body")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes") from None
    except web.RequestPayloadError as exc:
        log.info("refused a request body that could not be read: %s", type(exc.__cause__ or exc).__name__)
        raise BadRequest(
            "the request body could not be read (bad chunked encoding)", code="bad_http_request"
        ) from None
    encoding = request.headers.get("Content-Encoding")
    if not encoding:  # nearly every body: nothing to undo
        return raw
    try:
        return decode_body(raw, encoding, max_bytes=max_bytes)
    except DecodedTooLarge as exc:
        raise PayloadTooLarge(exc.message) from None
    except UnknownEncoding as exc:
        raise UnsupportedMediaType(exc.message, code=exc.code, param="Content-Encoding") from None
    except BodyDecodeError as exc:
        raise BadRequest(exc.message, code=exc.code, param="Content-Encoding") from None


async def serve(app: web.Application, host: str, port: int, **runner_kwargs: Any) -> None:
    """Serve ``app`` with :class:`ClassifierRunner` until SIGINT/SIGTERM (``web.run_app``'s job, which
    cannot take a runner)."""
    runner = ClassifierRunner(app, handle_signals=True, **runner_kwargs)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("classifier listening on http://%s:%d", host, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
