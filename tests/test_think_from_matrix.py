"""``think: false`` comes from the matrix, not the LiteLLM config: the hooks add it for profiles with
``requires_think_false``, read live, so an edit of the matrix changes the very next call."""

from __future__ import annotations

import aiohttp
import yaml

from tests.conftest import Stack


async def _ask_fast_chat(stack: Stack) -> tuple[str, str]:
    body = {"model": "fast-chat", "messages": [{"role": "user", "content": "think?"}], "max_tokens": 4}
    headers = {"Authorization": f"Bearer {stack.master_key}"}
    url = stack.litellm.url + "/v1/chat/completions"
    async with aiohttp.ClientSession() as session, session.post(url, json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        host_id, _, model = r.headers["x-torchrouter-deployment"].split("/", 2)
        return host_id, model


def _think(stack: Stack, host_id: str, model: str) -> dict[str, int]:
    return dict(stack.sim.state()[host_id]["think"].get(model, {}))


async def test_a_matrix_edit_of_requires_think_false_takes_effect_on_the_next_call(stack: Stack) -> None:
    original = stack.matrix_path.read_text()
    host_id, model = await _ask_fast_chat(stack)
    before = _think(stack, host_id, model)
    host_id2, model2 = await _ask_fast_chat(stack)
    assert (host_id2, model2) == (host_id, model)  # warm now: the same deployment again
    assert _think(stack, host_id, model).get("false", 0) == before.get("false", 0) + 1
    matrix = yaml.safe_load(original)
    for profile in matrix["profiles"].values():
        profile["requires_think_false"] = False
    try:
        stack.matrix_path.write_text(yaml.safe_dump(matrix, sort_keys=False))
        mid = _think(stack, host_id, model)
        assert await _ask_fast_chat(stack) == (host_id, model)
        after = _think(stack, host_id, model)
        assert after.get("false", 0) == mid.get("false", 0)
        assert after.get("absent", 0) == mid.get("absent", 0) + 1
    finally:
        stack.matrix_path.write_text(original)
