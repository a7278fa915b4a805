"""What a simulated model answers besides text, decided deterministically: pure, no I/O.

Owns the rules tests rely on (issue 8, kind 10), the same for the simulated Ollama hosts and the simulated
cloud:

- **Tool calls.** A request that offers ``tools`` gets a call when ``tool_choice`` asks for one
  (``"required"``: the first tool; ``{"type": "function", "function": {"name": N}}``: tool N), never with
  ``"none"``, and with ``"auto"`` or no ``tool_choice`` only when the conversation ends with a user message
  that names the tool (its function name appears in the text). After a ``tool`` message the model answers
  in text, so a round trip ends. Arguments hold every *required* property of the tool's ``parameters``
  schema, with a value of its type (first ``enum`` value; string ``"sim"``, integer ``1``, number ``1.5``,
  boolean ``true``, array ``[]``, object ``{}``). Ollama's native ``/api/chat`` has no ``tool_choice``
  (https://docs.ollama.com/api/chat), so there only the ``auto`` rule applies.
- **Stop sequences.** The content ends just before the first occurrence of any ``stop`` string (OpenAI
  ``stop``, Ollama ``options.stop``), with ``done_reason``/``finish_reason`` ``"stop"``.
- **Length.** A simulated model always has more to say than ``max_tokens``/``num_predict`` allows: given
  one, it writes exactly that many tokens and ends with ``"length"``; without, 24 tokens and ``"stop"``.
- **Log probabilities.** Ollama's ``/api/chat`` takes ``logprobs: true`` and ``top_logprobs: n`` (added to
  Ollama in November 2025; see ollama/ollama-python PR #601 "client/types: add logprobs support", whose
  ``examples/chat-logprobs.py`` reads ``response["logprobs"]``) and answers each token with
  ``{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}, ...]}`` in a top-level
  ``logprobs`` list (per streamed line, or for the whole answer). The OpenAI-compatible endpoint answers
  OpenAI's ``choices[].logprobs.content`` with the same entries. Values are deterministic for the token
  and seed; the chosen token is always the most likely.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

_ALTERNATIVES = ("the", " a", " and", ".", ",", " of")
_DEFAULTS: dict[str, Any] = {"string": "sim", "integer": 1, "number": 1.5, "boolean": True}


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


def _tool_name(tool: object) -> str | None:
    fn = tool.get("function") if isinstance(tool, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    return name if isinstance(name, str) and name else None


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def pick_tool_call(tools: object, tool_choice: object, messages: object) -> ToolCall | None:
    """The call the simulated model makes for this request, or None to answer in text (rules above)."""
    if not isinstance(tools, list) or not tools or tool_choice == "none":
        return None
    named = [(name, t) for t in tools if (name := _tool_name(t)) is not None]
    if not named:
        return None
    chosen: tuple[str, Any] | None = None
    if tool_choice == "required":
        chosen = named[0]
    elif isinstance(tool_choice, dict):
        want = _tool_name(tool_choice)
        chosen = next((n for n in named if n[0] == want), None)
    else:  # "auto", absent, or a value we do not know
        last = messages[-1] if isinstance(messages, list) and messages else None
        if isinstance(last, dict) and last.get("role") == "user":
            text = _message_text(last)
            chosen = next((n for n in named if n[0] in text), None)
    if chosen is None:
        return None
    name, tool = chosen
    return ToolCall(name, arguments_for(tool["function"].get("parameters")))


def arguments_for(schema: object, depth: int = 0) -> dict[str, Any]:
    """Arguments holding every required property of a JSON Schema object, each with a value of its type."""
    if not isinstance(schema, dict) or depth > 8:
        return {}
    props = schema.get("properties")
    required = schema.get("required")
    if not isinstance(props, dict):
        props = {}
    out: dict[str, Any] = {}
    for key in required if isinstance(required, list) else []:
        if isinstance(key, str):
            out[key] = _value_for(props.get(key), depth + 1)
    return out


def _value_for(schema: object, depth: int) -> Any:
    if not isinstance(schema, dict):
        return "sim"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        return arguments_for(schema, depth)
    if kind == "array":
        return []
    return _DEFAULTS.get(kind if isinstance(kind, str) else "string", "sim")


def stop_strings(value: object) -> tuple[str, ...]:
    """OpenAI's ``stop`` (a string or a list of strings) or Ollama's ``options.stop`` as a tuple."""
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list):
        return tuple(s for s in value if isinstance(s, str) and s)
    return ()


def cut_at_stop(tokens: tuple[str, ...], stops: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    """The tokens up to (not including) the first stop string, the last one cut mid-token if need be, and
    whether a stop string was met."""
    if not stops:
        return tokens, False
    text = "".join(tokens)
    cut = min((i for s in stops if (i := text.find(s)) >= 0), default=-1)
    if cut < 0:
        return tokens, False
    out: list[str] = []
    used = 0
    for tok in tokens:
        if used + len(tok) >= cut:
            if cut - used > 0:
                out.append(tok[: cut - used])
            break
        out.append(tok)
        used += len(tok)
    return tuple(out), True


def _logprob(seed: int, token: str, rank: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{rank}:{token}".encode(), digest_size=2).digest()
    spread = int.from_bytes(digest, "big") / 65535.0
    return -round(0.05 + rank * 1.5 + spread, 4)


def token_logprob(seed: int, token: str, top: int) -> dict[str, Any]:
    """One token's entry: its log probability and bytes, and the ``top`` most likely tokens (itself first)."""
    entry: dict[str, Any] = {
        "token": token,
        "logprob": _logprob(seed, token, 0),
        "bytes": list(token.encode()),
    }
    alts = [a for a in _ALTERNATIVES if a != token][: max(0, top - 1)]
    entry["top_logprobs"] = [
        {"token": token, "logprob": entry["logprob"], "bytes": entry["bytes"]},
        *(
            {"token": a, "logprob": _logprob(seed, a, i + 1), "bytes": list(a.encode())}
            for i, a in enumerate(alts)
        ),
    ][: max(0, top)]
    return entry


def logprobs_request(enabled: object, top: object) -> int | None:
    """How many top log probabilities per token the request asked for; None when it asked for none."""
    if enabled is not True:
        return None
    return max(0, min(20, top)) if isinstance(top, int) and not isinstance(top, bool) else 0
