"""The prewarm's one call to a host: load a model without running a request (the rule that decides when and
where is :mod:`torchrouter_core.prewarm`; the hooks reserve its memory in the VRAM ledger around this call).

Ollama's API reference, "Load a model": ``POST /api/chat`` with ``model`` and an empty ``messages`` array
loads the model and answers once it is loaded, ``{"done": true, "done_reason": "load", ...}``;
``keep_alive`` applies as for any request (the deployment's own, so a prewarmed copy stays as long as a
used one would).
"""

from __future__ import annotations

import aiohttp
import orjson

from torchrouter_core.hooks_settings import redacted_url

MAX_ERROR_CHARS = 300  # of a host's error text kept in the event


class LoadFailed(Exception):
    """The host did not load the model: its status and error text, or why no answer came."""


async def load_model(api_base: str, model: str, keep_alive: object, timeout_s: float) -> None:
    """Load ``model`` on the Ollama at ``api_base`` and return once it is loaded (within ``timeout_s``
    seconds). ``keep_alive``: Ollama's (seconds, or a duration such as ``"5m"``; ``None``: the host's
    default). Raises :class:`LoadFailed`."""
    body: dict[str, object] = {"model": model, "messages": [], "stream": False}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    url = api_base.rstrip("/") + "/api/chat"
    shown = redacted_url(url)  # what messages name: a password in api_base never reaches the trail

    def said(text: str) -> str:
        return text.replace(url, shown).replace(api_base, redacted_url(api_base))[:MAX_ERROR_CHARS]

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}) as resp,
        ):
            text = await resp.text(errors="replace")
    except TimeoutError:
        raise LoadFailed(f"no answer from {shown} within {timeout_s:g} s") from None
    except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a URL aiohttp cannot use
        raise LoadFailed(said(f"{type(exc).__name__} from {shown}: {exc}")) from None
    if resp.status != 200:
        raise LoadFailed(said(f"HTTP {resp.status} from {shown}: {text}"))
    try:
        answer = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise LoadFailed(said(f"not Ollama's answer from {shown}: {text[:80]!r}")) from None
    if not isinstance(answer, dict) or answer.get("done") is not True:
        raise LoadFailed(said(f"not Ollama's answer from {shown}: {text[:80]!r}"))
