"""TorchRouter's plugins inside the LiteLLM proxy.

``router_hooks`` is the instance litellm_config.yaml registers (``litellm_hooks.router_hooks``).
Creating it does no I/O; state is built on first use.
"""

from litellm_hooks.hooks import RouterHooks

router_hooks = RouterHooks()

__all__ = ["RouterHooks", "router_hooks"]
