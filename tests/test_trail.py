"""The trail's published schema and ``torchrouter explain`` (pure parts: events in, checks and text out)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from torchrouter import cli
from torchrouter_core import trail
from torchrouter_core.events import EventKind, build_event

RID = "r-1"


def ev(kind: str, **fields: Any) -> dict[str, Any]:
    who = {"request_id": RID, "agent_id": "a", "tier": "R", "group": "fast-chat"}
    return {"event": kind, "ts": 1.0, **who, **fields}


STORY = [
    ev(
        "request_classified",
        client_request_id=None,
        identity_source="header",
        tier_source="content",
        signals=["content:routine"],
        canary=False,
        ladder=["fast-chat", "balanced", "cloud-fast"],
        infeasible=None,
        stream=False,
    ),
    ev(
        "degradation_ladder_step",
        from_group="fast-chat",
        to_group="balanced",
        reason="no_capacity",
        estimated_wait_ms=None,
    ),
    ev(
        "route_selected",
        group="balanced",
        outcome="routed",
        deployment="h1/ollama/m",
        host_id="h1",
        model="m",
        warm_state="cold",
        candidates=2,
        scores={"h1/ollama/m": 0.6, "h2/ollama/m": 0.5},
        rejected={"h3/ollama/m": "breaker_open"},
        unknown_deployments=[],
        score_ms=0.1,
    ),
    ev("attempt_failed", group="balanced", deployment="h1/ollama/m", failure="timeout", status=408),
    ev(
        "breaker_changed",
        group=None,
        scope="deployment",
        target="h1/ollama/m",
        from_state="closed",
        to_state="open",
        reason="2_in_a_row:timeout",
    ),
    ev(
        "fallback_selected", group="balanced", from_group="balanced", to_group="cloud-balanced", planned=False
    ),
    ev(
        "route_selected",
        group="cloud-balanced",
        outcome="routed",
        deployment="c/openai/x",
        host_id="c",
        model="x",
        warm_state="warm",
        candidates=1,
        scores={"c/openai/x": 0.9},
        rejected={},
        unknown_deployments=[],
        score_ms=0.1,
    ),
    ev(
        "request_completed",
        outcome="ok",
        status=200,
        deployment="c/openai/x",
        fallback="ladder:fast-chat->balanced;fallback:balanced->cloud-balanced",
        total_ms=2100.0,
        ttft_ms=2099.0,
        queue_ms=0.2,
        warm_state="warm",
        estimated_wait_ms=0.0,
        service_estimate_ms=900.0,
    ),
]


def test_the_schema_is_valid_and_covers_every_event_kind() -> None:
    schema = trail.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["$defs"]) == {k.value for k in EventKind}
    assert set(schema["properties"]["event"]["enum"]) == {k.value for k in EventKind}


def test_good_events_pass_and_bad_ones_are_named() -> None:
    assert trail.problems(STORY) == []
    built = json.loads(
        build_event(
            "hooks_started",
            request_id=None,
            agent_id=None,
            tier=None,
            group=None,
            ts=2.0,
            fields={
                "matrix_path": "m.yaml",
                "probe_interval_s": 2.0,
                "daily_budget_usd": None,
                "started_by": "litellm_startup",
            },
        )
    )
    assert trail.problems([built]) == []
    bad = [
        {**STORY[-1], "outcome": "upstream_unavailable_maybe"},
        {k: v for k, v in STORY[0].items() if k != "ladder"},
        {**STORY[4], "to_state": "ajar"},
        {"event": "made_up", "ts": 1.0},
    ]
    found = trail.problems(bad)
    assert [line.split(":")[0] for line in found] == [
        "1 request_completed",
        "2 request_classified",
        "3 breaker_changed",
        "4 made_up",
    ], found


def test_story_and_render() -> None:
    story = trail.story([*STORY, ev("route_selected", request_id="other")], RID)
    assert (
        story["found"]
        and len(story["attempts"]) == 2
        and story["breakers_met"] == [{"deployment": "h3/ollama/m", "why": "breaker_open"}]
    )
    text = trail.render(story)
    for line in (
        "tier R (content; signals: content:routine)",
        "ladder: fast-chat -> balanced -> cloud-fast",
        "ladder step: fast-chat -> balanced (no_capacity; estimated wait n/a)",
        "queue: waited 0.2 ms against an estimate of 0.0 ms",
        "attempt 1 in balanced: h1/ollama/m (cold)",
        "candidate h1/ollama/m: score 0.600",
        "rejected h3/ollama/m: breaker_open",
        "failed: timeout",
        "breaker deployment h1/ollama/m: closed -> open (2_in_a_row:timeout)",
        "fallback: balanced -> cloud-balanced (not planned)",
        "attempt 2 in cloud-balanced: c/openai/x (warm)",
        "outcome: ok (status 200) from c/openai/x",
        "timings: total 2100.0 ms, first token 2099.0 ms",
    ):
        assert line in text, line
    assert trail.render(trail.story(STORY, "nope")) == "request nope: not in the trail"
    assert trail.last_request_id(STORY) == RID


def test_a_wait_a_hop_and_the_failure_chain_are_told() -> None:
    wait = ev(
        "degradation_ladder_step",
        group="fast-chat",
        from_group="balanced",
        to_group="balanced",
        reason="slots_busy",
        estimated_wait_ms=1200.0,
        step="wait",
        slots=1,
        busy=1,
        ahead=0,
        wait_budget_ms=5000,
    )
    hop = ev(
        "fallback_selected",
        group="balanced",
        from_group="balanced",
        to_group="cloud-fast",
        planned=True,
        hop=1,
        reason="attempt_failed:timeout",
    )
    done = {**STORY[-1], "fallbacks": ["cloud-fast", "code"]}
    events = [*STORY[:2], wait, *STORY[2:5], hop, *STORY[6:-1], done]  # the hop replaces the old fallback
    assert trail.problems([wait, hop, done]) == []
    assert trail.problems([{**wait, "slots": -1}, {**hop, "hop": 0}]) != []
    text = trail.render(trail.story(events, RID))
    for line in (
        "ladder step: wait for balanced (slots_busy: 1 of 1 slots busy, 0 ahead; estimated wait 1200.0 ms, "
        "budget 5000.0 ms)",
        "failure chain: cloud-fast -> code",
        "fallback: balanced -> cloud-fast (hop 1, planned, after attempt_failed:timeout)",
    ):
        assert line in text, text
    assert "(not planned)" not in text


def test_explain_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in STORY) + '{"torn": ')
    assert cli.main(["explain", "--last", "--events", str(path)]) == 0
    assert "fallback: balanced -> cloud-balanced" in capsys.readouterr().out
    assert cli.main(["explain", RID, "--json", "--events", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["completed"]["outcome"] == "ok"
    assert cli.main(["explain", "unknown-id", "--events", str(path)]) == 1
    assert cli.main(["explain", "--events", str(path)]) == 2
    assert cli.main(["explain", "x", "--events", str(tmp_path / "missing.jsonl")]) == 1


REFUSED = {
    "event": "request_completed",
    "ts": 3.0,
    "request_id": "refused-1",
    "agent_id": "inbox-triage",
    "tier": None,
    "group": None,
    "outcome": "bad_request",
    "status": 400,
    "code": "field_not_allowed",
    "param": "api_base",
    "deployment": None,
    "fallback": "none",
    "total_ms": 0.4,
    "ttft_ms": None,
    "queue_ms": 0.0,
}


def _trail(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_explain_skips_lines_that_are_not_objects_and_says_how_many(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _trail(tmp_path, ["[1, 2]", '"str"', "3", "null", *(json.dumps(e) for e in STORY), "{torn"])
    assert cli.main(["explain", RID, "--events", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "outcome: ok" in out and "skipped 5 trail line(s)" in err and "Traceback" not in err


def test_explain_last_on_an_empty_trail_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _trail(tmp_path, [])
    assert cli.main(["explain", "--last", "--events", str(path)]) == 1
    assert "has no requests" in capsys.readouterr().err


def test_explain_last_finds_a_request_refused_before_classification_and_tells_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert trail.problems([REFUSED]) == []
    path = _trail(tmp_path, [*(json.dumps(e) for e in STORY), json.dumps(REFUSED)])
    assert cli.main(["explain", "--last", "--events", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("request refused-1")
    assert "outcome: bad_request (status 400, code field_not_allowed, param api_base)" in out, out
    assert "n/a in None" not in out and "from none" not in out and "from None" not in out, out


def test_explain_refuses_last_with_an_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _trail(tmp_path, [json.dumps(e) for e in STORY])
    assert cli.main(["explain", "--last", RID, "--events", str(path)]) == 2
    assert "not both" in capsys.readouterr().err


def test_explain_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    path = _trail(tmp_path, [json.dumps(e) for e in STORY])
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head` does once it has its lines
    try:
        done = subprocess.run(
            [sys.executable, "-m", "torchrouter.cli", "explain", "--last", "--events", str(path)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 0 and b"Traceback" not in done.stderr and b"BrokenPipe" not in done.stderr, (
        done.stderr
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"event": "route_selected", "group": "fast-chat", "rejected": ["x"]},  # a list for an object
        {"event": "route_selected", "group": "fast-chat", "scores": {"a": "x"}},  # a name for a number
        {"event": "attempt_failed", "group": "fast-chat", "deployment": ["a"]},
    ],
)
def test_explain_leaves_out_lines_that_do_not_match_the_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: dict[str, object]
) -> None:
    """A line edited by hand with the wrong types is noted and left out; the rest tells the story (text and
    --json), never a traceback."""
    path = _trail(
        tmp_path, [*(json.dumps(e) for e in STORY), json.dumps({**bad, "ts": 9.0, "request_id": RID})]
    )
    for extra in ([], ["--json"]):
        assert cli.main(["explain", RID, "--events", str(path), *extra]) == 0
        out, err = capsys.readouterr()
        assert "skipped 1 line(s) of this request that do not match the trail's schema" in err, err
        assert "Traceback" not in err and ("outcome: ok" in out or '"outcome": "ok"' in out)


def test_explain_last_passes_over_a_request_id_that_is_not_a_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = {**REFUSED, "request_id": 42, "ts": 99.0}
    path = _trail(tmp_path, [*(json.dumps(e) for e in STORY), json.dumps(odd)])
    assert cli.main(["explain", "--last", "--events", str(path)]) == 0
    assert RID in capsys.readouterr().out
