"""Tiers: which kind of work a request is (H high-judgment, R routine, C coding) and why.

This module owns the agent directory (operator-edited YAML: agent -> tier, tier -> first lane, wait
budget and failure fallbacks), the request features read from an OpenAI chat body, and the ``classify``
rule. It is pure: callers read files and pass the parsed document in.

Exceptions::

    ValueError
     └── DirectoryError    an invalid agents document; the message names the entry

Classification: a known agent gets its configured tier (signal ``agent:<id>``; ids come from the directory,
so that set is closed too). Anyone else is tiered by content, in this order:

1. any code signal -> C
2. an explicit reasoning ask, or a prompt of at least ``long_prompt_tokens`` -> H
3. otherwise -> R (signal ``content:routine``)

With a learned model (:mod:`torchrouter_core.tier_model`; the features were read with ``model=``), the certain
signals still decide first: a code fence or a stack trace -> C; ``reasoning_effort`` or a long prompt -> H.
Everything else is the model's: its tier (signal ``model:<tier>``) when its confidence is at least
``min_confidence``, else ``uncertain_tier`` (signal ``model:low_confidence``). The decision then carries the
confidence and the model's strongest (named) features.

Content signals are short stable strings from :data:`CONTENT_SIGNALS`, fit for events and metric labels.
Features are read from the last user message only (the current ask, not the history or a boilerplate system
prompt). Of a long message only the first 6,000 and last 2,000 characters are scanned (the ask sits at
either end of a pasted log), and each rule checks cheap substrings before its regular expression, so
classification costs microseconds for a chat turn and stays well under a millisecond for a huge paste.
Token counts are approximate: characters / 4, rounded up, over all message text and tool definitions.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, Generic, Literal, TypeVar

import yaml

from torchrouter_core.identity import GROUPS, LOCAL_GROUPS, Identity, IdentityError, sanitize_agent_id
from torchrouter_core.strict_yaml import describe_yaml_error, safe_load_strict
from torchrouter_core.tier_model import TierModel, TierScore

SCAN_HEAD_CHARS: Final = 6_000
SCAN_TAIL_CHARS: Final = 2_000
LONG_PROMPT_TOKENS: Final = 8_000
MAX_WAIT_BUDGET_MS: Final = 600_000


class Tier(StrEnum):
    H = "H"  # high-judgment
    R = "R"  # routine
    C = "C"  # coding


class DirectoryError(ValueError):
    """The agents document is invalid; the message names the offending entry."""


# Where a failed attempt goes next, per tier, when the agents file names no ``fallbacks`` for it: up to the
# tier's cloud group first (a local failure escalates to cloud), then back to the local lanes of the tier's
# ladder (a cloud failure drops to the tier's local group). :mod:`torchrouter_core.fallbacks` applies them.
DEFAULT_FALLBACKS: Final[Mapping[Tier, tuple[str, ...]]] = MappingProxyType(
    {
        Tier.H: ("cloud-balanced", "balanced", "code"),
        Tier.R: ("cloud-fast", "fast-chat", "balanced"),
        Tier.C: ("cloud-code", "code", "balanced"),
    }
)


@dataclass(frozen=True, slots=True)
class TierPolicy:
    tier: Tier
    first_lane: str
    wait_budget_ms: int
    # The failure chain: groups a request of this tier may fall back to after an attempt fails, in order.
    fallbacks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentDirectory:
    agents: Mapping[str, Tier]
    tiers: Mapping[Tier, TierPolicy]

    def tier_of(self, agent_id: str | None) -> Tier | None:
        return None if agent_id is None else self.agents.get(agent_id)

    def first_lane(self, tier: Tier) -> str:
        return self.tiers[tier].first_lane

    def wait_budget_ms(self, tier: Tier) -> int:
        return self.tiers[tier].wait_budget_ms

    def fallbacks(self, tier: Tier) -> tuple[str, ...]:
        """The tier's failure chain as configured (``tiers.<T>.fallbacks``), before the routing mode, the
        budget and the request shape it (:func:`torchrouter_core.fallbacks.failure_chain`)."""
        return self.tiers[tier].fallbacks


def _tier(value: object, where: str) -> Tier:
    if isinstance(value, str) and value.strip().upper() in Tier.__members__:
        return Tier(value.strip().upper())
    raise DirectoryError(f"{where}: tier must be one of H, R, C, got {value!r}")


def _tier_policy(tier: Tier, entry: object) -> TierPolicy:
    where = f"tiers.{tier}"
    if not isinstance(entry, Mapping):
        raise DirectoryError(
            f"{where}: expected a mapping with first_lane, wait_budget_ms and (optional) fallbacks"
        )
    unknown = set(entry) - {"first_lane", "wait_budget_ms", "fallbacks"}
    if unknown:
        raise DirectoryError(f"{where}: unknown keys {sorted(map(str, unknown))}")
    lane = entry.get("first_lane")
    if not isinstance(lane, str) or lane not in LOCAL_GROUPS:
        raise DirectoryError(f"{where}.first_lane: must be one of {', '.join(LOCAL_GROUPS)}, got {lane!r}")
    budget = entry.get("wait_budget_ms")
    if isinstance(budget, bool) or not isinstance(budget, int) or not 0 <= budget <= MAX_WAIT_BUDGET_MS:
        raise DirectoryError(
            f"{where}.wait_budget_ms: must be an integer 0..{MAX_WAIT_BUDGET_MS}, got {budget!r}"
        )
    fallbacks = _fallbacks(entry.get("fallbacks", DEFAULT_FALLBACKS[tier]), f"{where}.fallbacks")
    return TierPolicy(tier, lane, budget, fallbacks)


def _fallbacks(value: object, where: str) -> tuple[str, ...]:
    """A failure chain: a list of distinct group names (possibly empty: no failure fallbacks)."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise DirectoryError(f"{where}: expected a list of groups in fallback order, got {value!r}")
    chain: list[str] = []
    for index, group in enumerate(value):
        if not isinstance(group, str) or group not in GROUPS:
            raise DirectoryError(
                f"{where}[{index}]: {group!r} is not a group; groups are {', '.join(sorted(GROUPS))}"
            )
        if group in chain:
            raise DirectoryError(f"{where}[{index}]: {group!r} is listed twice (each group is tried once)")
        chain.append(group)
    return tuple(chain)


def parse_agent_directory(doc: object) -> AgentDirectory:
    """Validate a parsed agents document (``{"tiers": {...}, "agents": {...}}``) into an AgentDirectory."""
    if not isinstance(doc, Mapping):
        raise DirectoryError("agents document: expected a mapping with 'tiers' and 'agents'")
    unknown = set(doc) - {"tiers", "agents"}
    if unknown:
        raise DirectoryError(f"agents document: unknown top-level keys {sorted(map(str, unknown))}")

    raw_tiers = doc.get("tiers")
    if not isinstance(raw_tiers, Mapping):
        raise DirectoryError(
            "tiers: expected a mapping of H, R and C to {first_lane, wait_budget_ms, fallbacks (optional)}"
        )
    tiers: dict[Tier, TierPolicy] = {}
    for key, entry in raw_tiers.items():
        tier = _tier(key, f"tiers.{key}")
        if tier in tiers:
            raise DirectoryError(f"tiers.{key}: tier {tier} is listed twice")
        tiers[tier] = _tier_policy(tier, entry)
    missing = [str(t) for t in Tier if t not in tiers]
    if missing:
        raise DirectoryError(f"tiers: missing {', '.join(missing)}")

    raw_agents = doc.get("agents") or {}
    if not isinstance(raw_agents, Mapping):
        raise DirectoryError("agents: expected a mapping of agent id to tier")
    agents: dict[str, Tier] = {}
    for key, value in raw_agents.items():
        where = f"agents.{key}"
        if not isinstance(key, str):
            raise DirectoryError(f"{where}: agent id must be a string")
        try:
            agent_id = sanitize_agent_id(key, where=where)
        except IdentityError as exc:
            raise DirectoryError(str(exc)) from None
        if agent_id in agents:
            raise DirectoryError(f"{where}: agent {agent_id!r} is listed twice (ids are case-insensitive)")
        agents[agent_id] = _tier(value, where)
    return AgentDirectory(MappingProxyType(agents), MappingProxyType(tiers))


def parse_agent_directory_yaml(text: str) -> AgentDirectory:
    """Parse the YAML text of an agents file (see ``classifier/agents.yaml``)."""
    try:
        doc = safe_load_strict(text)
    except yaml.YAMLError as exc:
        raise DirectoryError(f"agents document: invalid YAML: {describe_yaml_error(exc)}") from None
    return parse_agent_directory(doc)


# --- request features --------------------------------------------------------------------------------------

CodeSignal = Literal["code:fence", "code:stack_trace", "code:file_path", "code:syntax", "code:vocabulary"]
ReasoningSignal = Literal[
    "reasoning:effort",
    "reasoning:step_by_step",
    "reasoning:tradeoffs",
    "reasoning:proof",
    "reasoning:analysis",
]
_S = TypeVar("_S", bound=str)
PROMPT_LONG: Final = "prompt:long"
CONTENT_ROUTINE: Final = "content:routine"
MODEL_LOW_CONFIDENCE: Final = "model:low_confidence"
# Signals certain enough to override the learned model (the rest of the keyword rules are its inputs' job).
CERTAIN_CODE_SIGNALS: Final = frozenset({"code:fence", "code:stack_trace"})
DEFAULT_MIN_CONFIDENCE: Final = 0.4  # chosen by cross-validation on the training part (BENCHMARKS.md)


@dataclass(frozen=True, slots=True)
class _Rule(Generic[_S]):
    """A signal fires when one of its lower-case anchors occurs in the text and, if given, the pattern
    matches. Anchors are plain substring checks that spare most text the far slower regular expression."""

    signal: _S
    anchors: tuple[str, ...]
    pattern: re.Pattern[str] | None = None

    def fires(self, text: str, lowered: str) -> bool:
        if not any(anchor in lowered for anchor in self.anchors):
            return False
        return self.pattern is None or self.pattern.search(text) is not None


_M = re.MULTILINE
_I = re.IGNORECASE
_CODE_EXTENSIONS: Final = (
    "py|pyi|ipynb|js|mjs|ts|tsx|jsx|go|rs|java|kt|swift|c|cc|cpp|h|hpp|cs|rb|php|sh|sql|scala|lua"
    "|toml|yaml|yml"
)


def _anchors(alternatives: str, prefix: str = "") -> tuple[str, ...]:
    return tuple(prefix + word for word in alternatives.split("|"))


_CODE_RULES: Final[tuple[_Rule[CodeSignal], ...]] = (
    _Rule("code:fence", ("```", "~~~")),
    _Rule("code:stack_trace", ("traceback (most recent call last)", "exception in thread")),
    _Rule("code:stack_trace", ('file "',), re.compile(r'^\s*File "[^"]+", line \d+', _M)),
    _Rule("code:stack_trace", ("\tat ", "  at "), re.compile(r"^\s+at [\w$.<>]+\([^)]*:\d+\)", _M)),
    _Rule("code:stack_trace", ("panic: ",), re.compile(r"^panic: ", _M)),
    _Rule(
        "code:stack_trace", ("error: ", "exception: "), re.compile(r"^\w+(?:\.\w+)*(?:Error|Exception): ", _M)
    ),
    _Rule(
        "code:file_path",
        _anchors(_CODE_EXTENSIONS, prefix="."),
        re.compile(rf"(?<![\w.])[\w./-]*\w\.(?:{_CODE_EXTENSIONS})\b(?!\.\w)"),
    ),
    _Rule("code:file_path", ("dockerfile", "makefile"), re.compile(r"\b(?:Dockerfile|Makefile)\b")),
    _Rule("code:syntax", ("def ",), re.compile(r"^\s*def\s+\w+\s*\(", _M)),
    _Rule("code:syntax", ("class ",), re.compile(r"^\s*class\s+[A-Z]\w*\s*[(:{<]", _M)),
    _Rule(
        "code:syntax", ("fn ", "func ", "function "), re.compile(r"^\s*(?:fn|func|function)\s+\w+\s*[(<]", _M)
    ),
    _Rule(
        "code:syntax",
        ("import ",),
        re.compile(
            r"^\s*import\s+[\w.]+\s*(?:$|as\s|,)|^\s*from\s+[\w.]+\s+import\s|^\s*import\s.*\sfrom\s+['\"]",
            _M,
        ),
    ),
    _Rule("code:syntax", ("#include",), re.compile(r'^\s*#include\s*[<"]', _M)),
    _Rule("code:syntax", ("console.log(", "public static void")),
    _Rule("code:syntax", ("const ", "var "), re.compile(r"^\s*(?:const|var)\s+\w+\s*=", _M)),
    _Rule("code:syntax", ("select",), re.compile(r"\bSELECT\b.+\bFROM\b")),
    _Rule("code:syntax", ("=>", "{"), re.compile(r"\w+\([^()]*\)\s*(?:=>|\{)")),
    _Rule(
        "code:syntax",
        ("pip ", "npm ", "cargo ", "git "),
        re.compile(
            r"^\s*(?:\$\s*)?(?:pip|npm|cargo|git)\s+(?:install|run|build|add|commit|push|pull|clone|test)\b",
            _M,
        ),
    ),
    _Rule(
        "code:vocabulary",
        _anchors(
            "refactor|unit test|unit-test|bug|compil|stack trace|stacktrace|segfault|regex|pull request"
            "|code review|linter|syntax error|null pointer|typeerror|type error|write a |write the "
        ),
        re.compile(
            r"\b(?:refactor\w*|unit[- ]tests?|bugs?|debug\w*|compil(?:e|er|ation) errors?|stack ?trace"
            r"|segfault|regex|pull request|code review|linter|syntax error|null pointer|type ?error"
            r"|write (?:a|the) (?:python|bash|shell|rust|go|java|typescript|javascript|sql)"
            r" (?:script|function|query|program))\b",
            _I,
        ),
    ),
)

_REASONING_RULES: Final[tuple[_Rule[ReasoningSignal], ...]] = (
    _Rule("reasoning:step_by_step", ("step by step", "step-by-step")),
    _Rule(
        "reasoning:tradeoffs",
        ("trade", "pros and cons", "compare and contrast", "weigh "),
        re.compile(
            r"\btrade[- ]?offs?\b|\bpros and cons\b|\bcompare and contrast\b|\bweigh (?:up )?the\b", _I
        ),
    ),
    _Rule(
        "reasoning:proof",
        ("prove", "proof", "derive", "formally verify"),
        re.compile(r"\bprove\b|\bproof\b|\bderive\b|\bformally verify\b", _I),
    ),
    _Rule(
        "reasoning:analysis",
        ("think ", "analy", "in-depth", "root cause", "critically", "reason "),
        re.compile(
            r"\bthink (?:carefully|hard|deeply|it through)\b|\banaly[sz]e (?:in depth|deeply|carefully)\b"
            r"|\bin-depth analysis\b|\broot cause\b|\bcritically (?:evaluate|assess)\b"
            r"|\breason (?:about|through)\b",
            _I,
        ),
    ),
)

CONTENT_SIGNALS: Final = frozenset(
    [rule.signal for rule in _CODE_RULES]
    + [rule.signal for rule in _REASONING_RULES]
    + ["reasoning:effort", PROMPT_LONG, CONTENT_ROUTINE, MODEL_LOW_CONFIDENCE]
    + [f"model:{tier}" for tier in "HRC"]
)

# reasoning_effort values that are not a request for more thought.
_NO_EFFORT: Final = frozenset({"none", "minimal"})


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    has_tools: bool
    approx_prompt_tokens: int
    last_user_chars: int
    code_signals: tuple[CodeSignal, ...] = ()
    reasoning_signals: tuple[ReasoningSignal, ...] = ()
    model_score: TierScore | None = None  # the learned model's verdict, when it was asked

    @property
    def looks_like_code(self) -> bool:
        return bool(self.code_signals)

    @property
    def asks_reasoning(self) -> bool:
        return bool(self.reasoning_signals)


def _text(content: object) -> str:
    """Text of a message's content: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (part.get("text") for part in content if isinstance(part, Mapping))
        return "\n".join(text for text in parts if isinstance(text, str))
    return ""


def _chars(value: object) -> int:
    """Characters of every string and key in a JSON-like value: tool schemas cost prompt tokens too.
    Iterative (an explicit stack), so a client's deep nesting cannot exhaust Python's stack, here or in
    the hooks, which run this on bodies that did not pass through the classifier too."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, Mapping):
            total += sum(len(str(k)) for k in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def _scan_window(text: str) -> str:
    """The part of a message that is scanned: its head and its tail, where a pasted log's question goes."""
    if len(text) <= SCAN_HEAD_CHARS + SCAN_TAIL_CHARS:
        return text
    return text[:SCAN_HEAD_CHARS] + "\n" + text[-SCAN_TAIL_CHARS:]


def _signals(rules: Iterable[_Rule[_S]], text: str) -> tuple[_S, ...]:
    """Signals that fire, once each, in rule order."""
    lowered = text.lower()
    found: dict[_S, None] = {}
    for rule in rules:
        if rule.signal not in found and rule.fires(text, lowered):
            found[rule.signal] = None
    return tuple(found)


def approx_prompt_tokens(messages: object, tools: object = None) -> int:
    """Characters / 4, rounded up, over all message text, what assistant messages called (``tool_calls``
    and the legacy ``function_call``: names and arguments, which a coding agent's history is mostly made of)
    and tool definitions. The one estimator both the classifier (tiering, canary, feasibility) and the
    hooks (context-window filter) use."""
    items = messages if isinstance(messages, list) else []
    chars = 0
    for m in items:
        if isinstance(m, Mapping):
            chars += len(_text(m.get("content")))
            for called in (m.get("tool_calls"), m.get("function_call")):
                if called:
                    chars += _chars(called)
    if isinstance(tools, list):
        chars += _chars(tools)
    return math.ceil(chars / 4)


def extract_features(body: Mapping[str, Any], *, model: TierModel | None = None) -> RequestFeatures:
    """Read routing features from an OpenAI chat body. Tolerant: the HTTP edge validates the shape, and any
    malformed part here counts as empty. With ``model``, the learned model scores the body too."""
    raw_messages = body.get("messages")
    messages = [m for m in raw_messages if isinstance(m, Mapping)] if isinstance(raw_messages, list) else []
    tools = body.get("tools") or body.get("functions")
    has_tools = isinstance(tools, list) and len(tools) > 0

    last_user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    scanned = _scan_window(last_user)

    reasoning: tuple[ReasoningSignal, ...] = ()
    effort = body.get("reasoning_effort")
    nested = body.get("reasoning")
    if isinstance(nested, Mapping) and effort is None:
        effort = nested.get("effort")
    if isinstance(effort, str) and effort.strip().lower() not in _NO_EFFORT:
        reasoning = ("reasoning:effort",)
    reasoning += _signals(_REASONING_RULES, scanned)

    return RequestFeatures(
        has_tools=has_tools,
        approx_prompt_tokens=approx_prompt_tokens(messages, tools if has_tools else None),
        last_user_chars=len(last_user),
        code_signals=_signals(_CODE_RULES, scanned),
        reasoning_signals=reasoning,
        model_score=None if model is None else model.score(body),
    )


# --- classification ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TierDecision:
    tier: Tier
    source: Literal["agent", "content"]
    signals: tuple[str, ...]
    confidence: float | None = None  # the learned model's probability of its top tier, when it decided
    model_features: tuple[str, ...] = ()  # its strongest named features, strongest first


@dataclass(frozen=True, slots=True)
class LearnedTiering:
    """The learned model and when to trust it (settings ``TORCHROUTER_TIER_*``)."""

    model: TierModel
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    uncertain_tier: Tier = Tier.H


@functools.lru_cache(maxsize=1024)
def _agent_decision(tier: Tier, agent_id: str) -> TierDecision:
    """A known agent's decision, the same on every request (ids come from the directory: a closed set)."""
    return TierDecision(tier, "agent", (f"agent:{agent_id}",))


def classify(
    identity: Identity,
    features: RequestFeatures,
    directory: AgentDirectory,
    *,
    long_prompt_tokens: int = LONG_PROMPT_TOKENS,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    uncertain_tier: Tier = Tier.H,
) -> TierDecision:
    """Tier a request: a known agent's configured tier, else by content (the module docstring): the learned
    model when ``features`` carry its score, else the keyword rules."""
    agent_id = identity.agent_id
    agent_tier = directory.tier_of(agent_id)
    if agent_tier is not None and agent_id is not None:
        return _agent_decision(agent_tier, agent_id)
    heavy: tuple[str, ...] = features.reasoning_signals
    if features.approx_prompt_tokens >= long_prompt_tokens:
        heavy += (PROMPT_LONG,)
    score = features.model_score
    if score is not None:
        certain_code = tuple(s for s in features.code_signals if s in CERTAIN_CODE_SIGNALS)
        if certain_code:
            return TierDecision(Tier.C, "content", certain_code)
        certain_heavy = tuple(s for s in heavy if s in ("reasoning:effort", PROMPT_LONG))
        if certain_heavy:
            return TierDecision(Tier.H, "content", certain_heavy)
        if score.confidence >= min_confidence and score.tier in Tier.__members__:
            tier, signal = Tier(score.tier), f"model:{score.tier}"
        else:
            tier, signal = uncertain_tier, MODEL_LOW_CONFIDENCE
        return TierDecision(tier, "content", (signal,), round(score.confidence, 4), score.features)
    if features.code_signals:
        return TierDecision(Tier.C, "content", features.code_signals)
    if heavy:
        return TierDecision(Tier.H, "content", heavy)
    return TierDecision(Tier.R, "content", (CONTENT_ROUTINE,))
