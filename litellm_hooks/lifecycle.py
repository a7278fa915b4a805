"""Start-up entry point for LiteLLM: ``LITELLM_WORKER_STARTUP_HOOKS=litellm_hooks.lifecycle:start``.

LiteLLM 1.102.4 awaits each ``module:function`` named there inside its lifespan start-up, on the loop it
then serves requests on (``proxy_server.proxy_startup_event``), before it loads the config that
imports ``litellm_hooks.router_hooks``, the same instance. So the fleet probe runs, and has usually
finished its first round, before the first request is ranked.
"""

from __future__ import annotations

from litellm_hooks import router_hooks


async def start() -> None:
    await router_hooks.start()
