"""Request bodies as clients send them: Content-Encoding decoded with a bound, Content-Type judged.

Pure (bytes in, bytes out); the HTTP edge (:mod:`classifier.protocol_edge`) maps the errors to statuses.

Exception tree::

    BodyDecodeError (ValueError)
     +-- NotEncodedAs          400: the body claims an encoding (gzip, deflate, br, zstd) it is not in
     +-- UnknownEncoding       415: a Content-Encoding we do not decode (``compress``, ``lz4``, ...)
     +-- DecodedTooLarge       413: the decoded body would pass ``max_bytes`` (a zip bomb stops here)
     +-- NotJson               415: a Content-Type that is not JSON, on a body that is not JSON either

Encodings (RFC 9110 section 8.4; ``br`` RFC 7932, ``zstd`` RFC 8878): ``gzip`` (and ``x-gzip``),
``deflate`` (the zlib format the RFC names; a raw deflate stream, which some clients send instead, is
accepted too, as aiohttp and browsers do), ``br``, ``zstd`` and ``identity``. A list (``gzip, br``) was
applied in order, so it is undone in reverse. Decompression is incremental with an output cap of
``max_bytes + 1``: memory stays bounded whatever the compression ratio. A stream that ends early, has
trailing garbage, or is not in the format is :class:`NotEncodedAs`.

Content-Type: the body is parsed as JSON whatever the type says (``curl -d`` sends
``application/x-www-form-urlencoded``; LiteLLM's own client sends ``application/octet-stream``), because
refusing a readable JSON body for its label helps nobody. Only when the body is *not* JSON and the label is
not JSON either is the label the better explanation: :func:`judge_content_type` then gives 415.
"""

from __future__ import annotations

import zlib
from typing import Final

import brotli
from backports import zstd


class BodyDecodeError(ValueError):
    """A body the classifier cannot read; ``status`` is the HTTP answer."""

    status = 400

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class NotEncodedAs(BodyDecodeError):
    status = 400


class UnknownEncoding(BodyDecodeError):
    status = 415


class DecodedTooLarge(BodyDecodeError):
    status = 413


class NotJson(BodyDecodeError):
    status = 415


SUPPORTED_ENCODINGS: Final = ("gzip", "deflate", "br", "zstd", "identity")
_ALIASES: Final = {"x-gzip": "gzip"}


def parse_content_encoding(header: str | None) -> list[str]:
    """The codings of a Content-Encoding header in the order they were applied, ``identity`` dropped.

    Raises :class:`UnknownEncoding` naming the first coding we do not decode."""
    if not header:
        return []
    codings = []
    for token in header.split(","):
        coding = token.strip().lower()
        coding = _ALIASES.get(coding, coding)
        if coding in ("", "identity"):
            continue
        if coding not in SUPPORTED_ENCODINGS:
            shown = coding[:40]
            raise UnknownEncoding(
                f"Content-Encoding {shown!r} is not supported; send gzip, deflate, br, zstd or identity",
                code="unsupported_content_encoding",
            )
        codings.append(coding)
    return codings


def _too_large(coding: str, max_bytes: int) -> DecodedTooLarge:
    return DecodedTooLarge(
        f"request body decoded from {coding} exceeds the limit of {max_bytes} bytes",
        code="payload_too_large",
    )


def _not(coding: str, why: str) -> NotEncodedAs:
    return NotEncodedAs(
        f"request body is labelled Content-Encoding: {coding} but is not valid {coding} ({why})",
        code="invalid_content_encoding",
    )


def _zlib(data: bytes, wbits: int, coding: str, max_bytes: int) -> bytes:
    out = bytearray()
    rest = data
    while True:
        d = zlib.decompressobj(wbits=wbits)
        try:
            out += d.decompress(rest, max_bytes + 1 - len(out))
        except zlib.error as exc:
            raise _not(coding, str(exc)) from None
        if len(out) > max_bytes or d.unconsumed_tail:
            raise _too_large(coding, max_bytes)
        if not d.eof:
            raise _not(coding, "the stream ends early")
        rest = d.unused_data
        # gzip allows several members one after another (RFC 1952 section 2.2); zlib does not.
        if not rest or wbits != 16 + zlib.MAX_WBITS:
            break
    if rest:
        raise _not(coding, "trailing bytes after the stream")
    return bytes(out)


def _deflate(data: bytes, max_bytes: int) -> bytes:
    try:
        return _zlib(data, zlib.MAX_WBITS, "deflate", max_bytes)
    except NotEncodedAs:
        # Not zlib-wrapped: some clients send a raw deflate stream under this name.
        return _zlib(data, -zlib.MAX_WBITS, "deflate", max_bytes)


def _brotli(data: bytes, max_bytes: int) -> bytes:
    d = brotli.Decompressor()
    try:
        out = d.process(data, output_buffer_limit=max_bytes + 1)
    except brotli.error as exc:
        raise _not("br", str(exc) or "corrupt stream") from None
    if len(out) > max_bytes:
        raise _too_large("br", max_bytes)
    if not d.is_finished():
        raise _not("br", "the stream ends early")
    return bytes(out)


def _zstd(data: bytes, max_bytes: int) -> bytes:
    out = bytearray()
    rest = data
    while rest:  # a zstd body may hold several frames (RFC 8878 section 3.1)
        d = zstd.ZstdDecompressor()
        try:
            out += d.decompress(rest, max_length=max_bytes + 1 - len(out))
        except zstd.ZstdError as exc:
            raise _not("zstd", str(exc)) from None
        if len(out) > max_bytes:
            raise _too_large("zstd", max_bytes)
        if not d.eof:
            raise _not("zstd", "the stream ends early")
        rest = d.unused_data
    return bytes(out)


def decode_body(raw: bytes, content_encoding: str | None, *, max_bytes: int) -> bytes:
    """Undo ``content_encoding`` on ``raw``; the result is at most ``max_bytes`` long.

    Raises :class:`UnknownEncoding`, :class:`NotEncodedAs` or :class:`DecodedTooLarge`."""
    data = raw
    for coding in reversed(parse_content_encoding(content_encoding)):
        if coding == "gzip":
            data = _zlib(data, 16 + zlib.MAX_WBITS, "gzip", max_bytes)
        elif coding == "deflate":
            data = _deflate(data, max_bytes)
        elif coding == "br":
            data = _brotli(data, max_bytes)
        else:
            data = _zstd(data, max_bytes)
    return data


def is_json_type(content_type: str | None) -> bool:
    """``application/json``, ``application/<x>+json`` or no type at all."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def judge_content_type(content_type: str | None) -> NotJson | None:
    """For a body that failed to parse as JSON: the 415 to answer instead of 400 when the label says it
    was never meant to be JSON (see the module docstring); ``None`` when the label claims JSON."""
    if is_json_type(content_type):
        return None
    shown = (content_type or "").split(";", 1)[0].strip()[:60]
    return NotJson(
        f"Content-Type {shown!r} is not JSON and the body is not JSON; send application/json",
        code="unsupported_media_type",
    )
