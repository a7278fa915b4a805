"""The learned tier model at run time: features, hashing, scoring, the file format, and how tiering combines
the model with the certain signals (pure; models here are written by hand so every number is known)."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from torchrouter_core.identity import Identity
from torchrouter_core.tier_model import (
    DEFAULT_MODEL_PATH,
    HEAD_CHARS,
    MAX_CONTEXT_TOKENS,
    MAX_TOKENS,
    MAX_TOOL_WORDS,
    MAX_TOOLS,
    MODEL_FORMAT,
    OTHER_SCRIPT_CHARS,
    TAIL_CHARS,
    UNFOLDED,
    TierModelError,
    feature_buckets,
    load_tier_model,
    parse_tier_model,
    request_buckets,
    request_features,
)
from torchrouter_core.tiering import (
    CONTENT_SIGNALS,
    AgentDirectory,
    Tier,
    TierPolicy,
    classify,
    extract_features,
)

BUCKETS = 1 << 18
ANONYMOUS = Identity(None, "anonymous", None, None)
DIRECTORY = AgentDirectory(
    {"planner": Tier.R},
    {
        t: TierPolicy(t, lane, 0)
        for t, lane in ((Tier.H, "balanced"), (Tier.R, "fast-chat"), (Tier.C, "code"))
    },
)


# At most: twice as many features per text as letter runs allowed; the tools' names and words; three
# markers (the module docstring).
MOST_FEATURES = 2 * MAX_TOKENS + 2 * (1 + 2 * MAX_CONTEXT_TOKENS) + 1 + MAX_TOOLS * (1 + MAX_TOOL_WORDS) + 1
_noise = random.Random(3)
CJK_NOISE = "".join(_noise.choice("数据库索引请帮我检查为什么查询这么慢\uff0c。 ") for _ in range(5_000))
MARK_NOISE = "".join(_noise.choice("ab!@#$%^&*()-+=[]{};:,.<>/?| ") for _ in range(5_000))


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def bucket(feature: str) -> int:
    (only,) = feature_buckets([feature], BUCKETS)
    return only


def model_doc(weights: dict[str, list[float]], names: list[str] | None = None) -> dict[str, Any]:
    """A hand-written model over labels C, H, R: ``weights`` maps a feature string to its three weights."""
    return {
        "format": MODEL_FORMAT,
        "labels": ["C", "H", "R"],
        "buckets": BUCKETS,
        "bias": [0.0, 0.0, 0.0],
        "weights": {str(bucket(f)): w for f, w in weights.items()},
        "names": {str(bucket(f)): f for f in (names if names is not None else list(weights))},
    }


# --- features ----------------------------------------------------------------------------------------------


def test_hashing_is_crc32_not_the_process_hash() -> None:
    # Pinned values: Python's hash() is salted per process, so a model trained in one process would score
    # garbage in another; CRC-32 of the UTF-8 bytes is the same everywhere.
    assert feature_buckets(["refactor"], BUCKETS) == {223077}
    assert feature_buckets(["déjà"], 1000) == {328}


def test_features_of_a_plain_message() -> None:
    features = request_features(chat("Please REFACTOR the billing module, 3 times!"))
    # Letter runs in text order, then their stems, then the mark runs.
    assert features[:6] == ["please", "refactor", "the", "billing", "module", "times"]
    assert features[6:10] == ["~refac", "~billi", ",", "!"]  # 7+ letters: a 5-letter stem
    assert "3" not in features  # digits are skipped
    assert features[-1] == f"#len:{(len('Please REFACTOR the billing module, 3 times!') // 64).bit_length()}"
    assert not {"#sys", "#turns", "#tools"} & set(features)


def test_features_read_system_turns_and_tools() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are a strict reviewer."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer we do not read"},
            {"role": "user", "content": [{"type": "text", "text": "and now?"}, {"type": "image_url"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "run_Tests"}}, "junk", {"name": "legacy_fn"}],
    }
    features = set(request_features(body))
    assert {"#sys", "strict", "reviewer", "#turns", "first", "question", "and", "now", "?"} <= features
    assert {"#tools", "#tool:run_tests", "#tw:run", "#tw:tests", "#tool:legacy_fn"} <= features
    assert "answer" not in features


def test_cjk_text_gives_character_pairs() -> None:
    features = request_features(chat("数据库索引"))
    assert {"数据库索引", "数据", "据库", "库索", "索引"} <= set(features)


@pytest.mark.parametrize(
    "body",
    [
        chat("word " * 2_000_000),
        chat(" ".join(f"w{i}x" for i in range(200_000)) + " ```"),
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "part " * 50_000}] * 10_000}]},
        {"messages": [{"role": "user", "content": "hi"}] * 200_000},
        {"messages": [{"role": "system", "content": "rule " * 100_000}, {"role": "user", "content": "x"}]},
        {"messages": [{"role": "user", "content": "x"}], "tools": [{"name": "t" * 10_000}] * 10_000},
        {
            "messages": [
                {"role": "system", "content": CJK_NOISE},
                *[{"role": "user", "content": CJK_NOISE}] * 2,
            ],
            "tools": [{"name": "_".join(["lookup"] * 30)}] * 50,
        },
        {
            "messages": [
                {"role": "system", "content": MARK_NOISE},
                *[{"role": "user", "content": MARK_NOISE}] * 2,
            ]
        },
    ],
    ids=[
        "huge text",
        "many distinct words",
        "many parts",
        "many messages",
        "huge system",
        "many tools",
        "CJK everywhere",
        "marks everywhere",
    ],
)
def test_work_is_bounded_whatever_the_input(body: dict[str, Any]) -> None:
    # The bound in features (not time: no timing assertions): head and tail tokens, context tokens, tools.
    features = request_features(body)
    assert len(features) <= 2 * MAX_TOKENS + 4 * MAX_CONTEXT_TOKENS + 300
    assert len(features) <= MOST_FEATURES
    assert all(len(f) <= 80 for f in features if not f.startswith("#"))


def test_a_long_prompt_is_read_at_its_head_and_tail_only() -> None:
    # What lies between the first HEAD_CHARS and the last TAIL_CHARS characters is never examined: two
    # prompts that differ only there have the same features (the length marker included).
    def long(middle: str) -> dict[str, Any]:
        return chat("Write the memo for the board. " + "filler " * 200 + middle * 5_000 + " ok" * 200)

    features = request_features(long("zebra "))
    assert features == request_features(long("quail "))
    assert "memo" in features and "zebra" not in features and "ok" in features
    assert len(long("zebra ")["messages"][0]["content"]) > 20 * (HEAD_CHARS + TAIL_CHARS)
    assert len(features) <= 2 * MAX_TOKENS + 1  # letter runs, stems and marks of head and tail; the length
    # And the model still decides it (30,000 characters: under the certain prompt:long signal).
    assert decide("Write the memo. " + "filler " * 4_000).signals == ("model:H",)


def test_runs_with_other_characters_are_read_again_up_to_a_cap() -> None:
    # Non-ASCII runs go through the (costly) regular expressions: at most OTHER_SCRIPT_CHARS characters of
    # them per letter run allowed, whatever the ASCII words around them.
    words = ["d\u00e9veloppement"] * (OTHER_SCRIPT_CHARS * MAX_TOKENS // 13 + 1) + ["z\u00e8bre", "zebra"]
    features = request_features(chat(" ".join(words)))
    assert "d\u00e9veloppement" in features and "zebra" in features and "z\u00e8bre" not in features


@pytest.mark.parametrize("seed", range(5))
def test_ascii_text_gives_what_the_regular_expressions_find(seed: int) -> None:
    # ASCII text is tokenised on bytes with two tables; they must say what the documented classes say.
    rng = random.Random(seed)
    text = "".join(rng.choice([chr(c) for c in range(128)] + [" "] * 20) for _ in range(600))
    low = text.lower()
    letters = re.findall(r"[^\W\d_]+", low)[:MAX_TOKENS]
    marks = [run[:3] for run in re.findall(r"[^\w\s]+", low)][: MAX_TOKENS // 4]
    stems = ["~" + word[:5] for word in letters if len(word) >= 7]
    assert request_features(chat(text))[:-1] == letters + stems + marks


def test_text_in_other_scripts_gives_what_the_regular_expressions_find() -> None:
    # Runs of ASCII letters and non-ASCII characters are cut on bytes; the latter are read again by the
    # expressions. Mark runs are cut where ASCII marks meet others ("»," gives "»" and ",").
    text = "Prüfe bitte die Größe (maximal 3 Sätze): «schnell», don\u2019t wait—ok?"
    features = request_features(chat(text))
    low = text.lower()
    letters = re.findall(r"[^\W\d_]+", low)
    marks = re.findall(r"[^\w\s\x80-\U0010ffff]+|[^\w\s\x00-\x7f]+", low)
    assert sorted(features[:-1]) == sorted(
        letters + ["~" + word[:5] for word in letters if len(word) >= 7] + [run[:3] for run in marks]
    )
    assert "~schne" in features and "»" in features and "\u2019" in features  # 5 characters, not 5 bytes


@pytest.mark.parametrize(
    "body",
    [
        chat("Please REFACTOR the billing module, 3 times!"),
        chat("数据库索引为什么这么慢\uff1f请给出建议。" * 3, tools=[{"name": "查询_db"}]),
        chat("Größe " * 400 + "ende"),
        {
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "x" * 2_000 + " then the tail?"},
            ],
            "functions": [{"name": "get-weather.now"}],
        },
    ],
)
def test_scoring_hashes_exactly_the_features(body: dict[str, Any]) -> None:
    # request_buckets (scoring and training) skips the round trip through str that request_features makes,
    # and the modulo when the CRC is unfolded.
    for buckets in (BUCKETS, UNFOLDED):
        assert request_buckets(body, buckets) == feature_buckets(request_features(body), buckets)


@pytest.mark.parametrize("body", [{}, {"messages": "hi"}, {"messages": [5, {"role": "user", "content": 7}]}])
def test_features_of_malformed_bodies(body: dict[str, Any]) -> None:
    assert request_features(body) == ["#len:0"]


def test_a_lone_surrogate_is_no_error() -> None:
    # json.loads lets one through (orjson, the classifier's parser, does not): it reads as a mark.
    body = chat("caf\u00e9 \ud800 ok", tools=[{"name": "x\udfff"}])
    assert {"caf\u00e9", "?", "ok", "#tool:x?"} <= set(request_features(body))


# --- scoring -----------------------------------------------------------------------------------------------


def test_score_is_a_softmax_over_unit_length_vectors() -> None:
    model = parse_tier_model(model_doc({"schema": [3.0, 0.0, 0.0], "weigh": [0.0, 2.0, 0.0]}))
    body = chat("schema")  # features: "schema" and the length marker (weight 0): n = 2
    score = model.score(body)
    logit = 3.0 / math.sqrt(2)
    assert score.tier == "C"
    assert score.confidence == pytest.approx(math.exp(logit) / (math.exp(logit) + 2))
    assert score.features == ("schema",)


def test_strongest_features_come_only_from_the_models_names() -> None:
    # "sk-live-123" has a weight (a collision in a real model) but no name: it is never reported.
    doc = model_doc(
        {"memo": [0.0, 2.0, 0.0], "sk": [0.0, 5.0, 0.0], "decide": [0.0, 1.0, 0.0]}, ["memo", "decide"]
    )
    score = parse_tier_model(doc).score(chat("decide memo sk-live-123"))
    assert score.tier == "H"
    assert score.features == ("memo", "decide")


def test_features_that_argue_against_the_winner_are_not_reported() -> None:
    doc = model_doc({"memo": [0.0, 4.0, 0.0], "please": [0.0, 0.0, 1.0]})
    assert parse_tier_model(doc).score(chat("memo please")).features == ("memo",)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "not a torchrouter-tier-model/2"),
        ({"format": "other"}, "not a torchrouter-tier-model/2"),
        ({**model_doc({}), "format": "torchrouter-tier-model/1"}, "no longer reads .* retrain it"),
        ({**model_doc({}), "labels": ["C"]}, "labels"),
        ({**model_doc({}), "buckets": 0}, "buckets"),
        ({**model_doc({}), "bias": [0.0]}, "bias"),
        ({**model_doc({}), "weights": []}, "weights and names"),
        ({**model_doc({}), "weights": {"x": [1, 2, 3]}}, "malformed"),
        ({**model_doc({}), "weights": {str(BUCKETS): [1, 2, 3]}}, "malformed"),
        ({**model_doc({}), "weights": {"1": [1, 2]}}, "malformed"),
    ],
)
def test_bad_model_documents_are_refused(doc: object, message: str) -> None:
    with pytest.raises(TierModelError, match=message):
        parse_tier_model(doc)


def test_load_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(TierModelError, match=r"missing\.json: cannot read it"):
        load_tier_model(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(TierModelError, match=r"bad\.json: invalid JSON"):
        load_tier_model(tmp_path / "bad.json")
    (tmp_path / "ok.json").write_bytes(orjson.dumps(model_doc({"a": [1.0, 0.0, 0.0]})))
    assert load_tier_model(tmp_path / "ok.json").score(chat("a")).tier == "C"


def test_the_shipped_model_loads() -> None:
    model = load_tier_model(DEFAULT_MODEL_PATH)
    assert set(model.labels) == {"H", "R", "C"}
    assert model.info["trained_on"] > 400 and model.names and model.buckets == UNFOLDED


# --- combined with the certain signals (torchrouter_core.tiering) -------------------------------------

# A model that is sure of its tier for these words (and knows nothing else).
SURE = parse_tier_model(
    model_doc(
        {"memo": [0.0, 9.0, 0.0], "schema": [9.0, 0.0, 0.0], "hello": [0.0, 0.0, 9.0], "maybe": [0.1, 0, 0]}
    )
)


def decide(text: str, *, agent: str | None = None, min_confidence: float = 0.5, **body: Any) -> Any:
    identity = Identity(agent, "header", None, None) if agent else ANONYMOUS
    features = extract_features(chat(text, **body), model=SURE)
    return classify(identity, features, DIRECTORY, min_confidence=min_confidence, uncertain_tier=Tier.H)


@pytest.mark.parametrize(
    ("text", "body", "tier", "signals"),
    [
        ("write the memo", {}, Tier.H, ("model:H",)),
        ("design the schema", {}, Tier.C, ("model:C",)),
        ("hello there", {}, Tier.R, ("model:R",)),
        # Certain signals decide before the model, whatever it says.
        ("memo\n```\nx = 1\n```", {}, Tier.C, ("code:fence",)),
        (
            'hello\nTraceback (most recent call last):\n  File "a.py", line 1',
            {},
            Tier.C,
            ("code:stack_trace",),
        ),
        ("hello", {"reasoning_effort": "high"}, Tier.H, ("reasoning:effort",)),
        ("hello " * 9000, {}, Tier.H, ("prompt:long",)),
        # Keyword rules that are not certain no longer decide: the model does.
        ("hello, refactor is my favourite word", {}, Tier.R, ("model:R",)),
        ("hello, think step by step", {}, Tier.R, ("model:R",)),
        # Unsure: the configured default tier.
        ("maybe", {}, Tier.H, ("model:low_confidence",)),
    ],
)
def test_model_and_certain_signals(
    text: str, body: dict[str, Any], tier: Tier, signals: tuple[str, ...]
) -> None:
    decision = decide(text, **body)
    assert (decision.tier, decision.signals) == (tier, signals)
    assert set(decision.signals) <= CONTENT_SIGNALS
    if signals[0].startswith("model:"):
        assert decision.confidence is not None
    else:
        assert decision.confidence is None and decision.model_features == ()


def test_decision_carries_confidence_and_features() -> None:
    decision = decide("the memo")
    assert decision.confidence == pytest.approx(SURE.score(chat("the memo")).confidence, abs=1e-4)
    assert decision.confidence > 0.98 and decision.model_features == ("memo",)


def test_the_threshold_is_a_parameter() -> None:
    assert decide("maybe", min_confidence=0.0).tier is Tier.C
    assert decide("the memo", min_confidence=1.0).signals == ("model:low_confidence",)


def test_a_known_agent_is_not_scored() -> None:
    decision = decide("design the schema", agent="planner")
    assert (decision.tier, decision.signals, decision.confidence) == (Tier.R, ("agent:planner",), None)
