"""Who sent a request and what it asked for: the first step of the request path.

This module owns the vocabulary a caller can name in the body's ``model`` field (the LiteLLM model groups and
``auto``) and the rules for agent ids. It is pure: it reads values, never the environment.

Exceptions::

    ValueError
     └── IdentityError    an agent id or model field the router refuses (the HTTP edge answers 400)

How a request is identified:

* ``X-Agent-Id`` (looked up case-insensitively) is authoritative. An empty or blank header counts as absent,
  because proxies sometimes forward empty headers; a non-empty invalid one is rejected.
* The body ``model`` field, stripped and compared case-insensitively:

  ==========================  ===========================================================================
  ``auto``, ``""``, missing   no request: the router picks the group
  a known group (``code``)    ``requested_group``
  ``agent:group``             agent id (used only when there is no header) and ``requested_group``;
                              ``agent:auto`` and ``agent:`` name the agent only. The colon form is
                              recognised only when the part after the last colon is a group or ``auto``,
                              so Ollama-style names such as ``qwen3:8b`` are not mistaken for agents
  anything else (``gpt-4o``)  ``requested_model``: not a name this module knows. Before identity is asked,
                              :func:`torchrouter_core.aliases.resolve_model` has replaced an operator's alias
                              (``gpt-4o`` -> ``balanced``) and refused any other unknown name (404
                              ``model_not_found`` in :func:`torchrouter_core.decide.decide`)
  ==========================  ===========================================================================

Agent ids are case-insensitive (stored lower-case), 1 to 128 characters of ``a-z 0-9 . _ -`` starting with
a letter or digit: safe in a log line, a JSONL event and a file name, and free of the body form's ``:``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from multidict import CIMultiDict, CIMultiDictProxy

LOCAL_GROUPS: Final = ("balanced", "fast-chat", "code")
CLOUD_GROUPS: Final = ("cloud-balanced", "cloud-fast", "cloud-code")
GROUPS: Final = frozenset(LOCAL_GROUPS + CLOUD_GROUPS)
AUTO_MODEL: Final = "auto"

AGENT_ID_HEADER: Final = "x-agent-id"
AGENT_ID_MAX_LEN: Final = 128
MODEL_MAX_LEN: Final = 256
_AGENT_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]*")


class IdentityError(ValueError):
    """An agent id or model field that the router refuses; the message says which and why, ``param`` names
    the field (``model``) or the header (``X-Agent-Id``) at fault."""

    def __init__(self, message: str, *, param: str = "model") -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Identity:
    agent_id: str | None
    source: Literal["header", "body", "anonymous"]
    requested_group: str | None
    requested_model: str | None


def sanitize_agent_id(raw: str, *, where: str = "agent id") -> str:
    """Return the canonical (stripped, lower-case) agent id or raise IdentityError naming ``where``."""
    agent_id = raw.strip().lower()
    if not agent_id:
        raise IdentityError(f"{where} is empty")
    if len(agent_id) > AGENT_ID_MAX_LEN:
        raise IdentityError(f"{where} is longer than {AGENT_ID_MAX_LEN} characters")
    if not _AGENT_ID_RE.fullmatch(agent_id):
        raise IdentityError(
            f"{where} {agent_id[:40]!r} is invalid: use letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return agent_id


def _header(headers: Mapping[str, str], name: str) -> str | None:
    if isinstance(headers, CIMultiDictProxy | CIMultiDict):  # aiohttp's request headers: case-insensitive
        values = headers.getall(name, ())
        if len(values) > 1 and len({v.strip().lower() for v in values}) > 1:
            # Two different identities in one request: taking either silently would misattribute it.
            raise IdentityError(
                f"X-Agent-Id is sent {len(values)} times with different values", param="X-Agent-Id"
            )
        return values[0] if values else None
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def identify(headers: Mapping[str, str], body_model: object) -> Identity:
    """Identify the caller from its headers and the body's ``model`` field (see the module docstring)."""
    header_value = _header(headers, AGENT_ID_HEADER)
    if (body_model is None or isinstance(body_model, str)) and (
        len(body_model or "") <= _MEMO_MAX_LEN and len(header_value or "") <= _MEMO_MAX_LEN
    ):
        return _identify_memo(header_value, body_model)
    return _identify(header_value, body_model)


# Requests repeat a few (header, model) pairs: the identity of each is worked out once. Only short values are
# remembered (a valid agent id is at most 128 characters and a model 256, before stripping), and a refusal is
# never remembered (lru_cache keeps results, not exceptions), so the memo stays small whatever clients send.
_MEMO_MAX_LEN: Final = 512


@functools.lru_cache(maxsize=1024)
def _identify_memo(header_value: str | None, body_model: str | None) -> Identity:
    return _identify(header_value, body_model)


def _identify(header_value: str | None, body_model: object) -> Identity:
    header_agent = None
    if header_value is not None and header_value.strip():
        try:
            header_agent = sanitize_agent_id(header_value, where="X-Agent-Id header")
        except IdentityError as exc:
            raise IdentityError(str(exc), param="X-Agent-Id") from None

    if body_model is None:
        model = ""
    elif isinstance(body_model, str):
        model = body_model.strip()
    else:
        raise IdentityError(f"model must be a string, got {type(body_model).__name__}")
    if len(model) > MODEL_MAX_LEN or not model.isprintable():
        raise IdentityError(f"model must be at most {MODEL_MAX_LEN} printable characters")

    body_agent: str | None = None
    requested_group: str | None = None
    requested_model: str | None = None
    lowered = model.lower()
    agent_part, colon, group_part = lowered.rpartition(":")
    if lowered in ("", AUTO_MODEL):
        pass
    elif lowered in GROUPS:
        requested_group = lowered
    elif colon and agent_part and group_part in GROUPS | {AUTO_MODEL, ""}:
        requested_group = group_part if group_part in GROUPS else None
        if header_agent is None:  # the header wins; a body agent is not even validated then
            body_agent = sanitize_agent_id(agent_part, where="agent in model field")
    else:
        requested_model = model

    if header_agent is not None:
        return Identity(header_agent, "header", requested_group, requested_model)
    if body_agent is not None:
        return Identity(body_agent, "body", requested_group, requested_model)
    return Identity(None, "anonymous", requested_group, requested_model)
