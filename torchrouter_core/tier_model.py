"""The learned tier model at run time: one feature function, a weight file, a score. Pure and stdlib-only.

This module owns the *feature function* that training (:mod:`torchrouter.tiers`, scikit-learn, a
development dependency) and the classifier share, so a model is always scored on exactly the features it
was trained on, and the reader of the exported weights (:func:`load_tier_model`, a small JSON file; no
numpy, no download).

Exceptions::

    ValueError
     └── TierModelError    the weight file is unreadable or not a tier model; the message says why

Features (:func:`request_features`), all read from a bounded part of the request so a huge or deeply
nested body costs no more than a short one:

- the last user message: its first :data:`HEAD_CHARS` and last :data:`TAIL_CHARS` characters; the first
  :data:`CONTEXT_CHARS` of the system prompt and of the previous user message (a multi-turn follow-up
  leans on it); the names of at most :data:`MAX_TOOLS` tools;
- tokens: runs of letters and runs of 1-3 punctuation marks (digits are skipped), in lower case;
  at most :data:`MAX_TOKENS` tokens of the last user message (its head and its tail) and
  :data:`MAX_CONTEXT_TOKENS` of each context part;
- per token: the token; for a letter token of 7+ characters its 5-character prefix (``"~refac"``: a
  cheap stem that also helps inflected languages); for a run of CJK letters its character pairs. (Word
  pairs were tried and cross-validated worse on this corpus: 0.882 against 0.902.)
- shape markers: ``#sys`` (has a system prompt), ``#turns`` (earlier turns), ``#tools``, ``#tool:<name>``
  (the tool's name, lower case) and ``#tw:<word>`` for each word of it (``run_tests``: ``run``,
  ``tests``), ``#len:<k>`` (k = bit length of the last message's length / 64).

Each feature string is hashed with CRC-32 of its UTF-8 bytes (stable across processes and Python builds,
unlike ``hash()``), modulo the model's bucket count. A request's vector is binary over the distinct buckets,
scaled to unit length (each present bucket weighs ``1 / sqrt(n)``). The model is a multinomial logistic
regression: ``score_k = bias_k + sum(weights_k[b]) / sqrt(n)``, softmax over the tiers; confidence is the
top probability.

The strongest features reported for a decision come only from the model's ``names`` (feature strings taken
from its training corpus and shipped in the file), so an event never repeats caller text it was not trained
on: a secret in a prompt cannot become a reported feature. A bucket is named by the training feature that
weighs most in it; an unseen string that collides with it is reported under that name.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise, repeat
from pathlib import Path
from typing import Any, Final

import orjson

MODEL_FORMAT: Final = "torchrouter-tier-model/1"
DEFAULT_MODEL_PATH: Final = Path(__file__).resolve().parent / "tier_model.json"

HEAD_CHARS: Final = 1_000
TAIL_CHARS: Final = 300
CONTEXT_CHARS: Final = 240
MAX_TOKENS: Final = 128
MAX_CONTEXT_TOKENS: Final = 32
MAX_TOOLS: Final = 8
MAX_MESSAGES_SCANNED: Final = 64  # from the end: where the last user message and its context are
MAX_PARTS: Final = 16  # content-part list entries read from one message
TOP_FEATURES: Final = 3

_TOKEN = re.compile(r"[^\W\d_]+|[^\w\s]{1,3}")
_CJK = re.compile("[\u2e80-\U0002ffff]")
_CJK_START: Final = "\u2e80"  # CJK radicals onward: scripts written without spaces


class TierModelError(ValueError):
    """The tier model file cannot be used; the message names the file and the problem."""


def _text(content: object, limit: int) -> str:
    """Text of a message's content (a string or content parts), at most ``limit`` characters read."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out: list[str] = []
        size = 0
        for part in content[:MAX_PARTS]:
            text = part.get("text") if isinstance(part, Mapping) else None
            if isinstance(text, str):
                out.append(text[: max(0, limit - size)])
                size += len(text)
                if size >= limit:
                    break
        return "\n".join(out)
    return ""


def _tokens(text: str, limit: int) -> list[str]:
    return _TOKEN.findall(text.lower())[:limit]


def _word_features(tokens: list[str], out: list[str]) -> None:
    out += tokens
    # Punctuation runs are at most 3 long, so a 7+ token is letters.
    out += ["~" + token[:5] for token in tokens if len(token) >= 7]
    if _CJK.search("".join(tokens)) is not None:
        for token in tokens:
            if token[0] >= _CJK_START and len(token) > 1:
                out += map("".join, pairwise(token[:17]))


def request_features(body: Mapping[str, Any]) -> list[str]:
    """The feature strings of an OpenAI chat body (see the module docstring); tolerant of any shape.

    Returns a list (duplicates possible; the model counts each distinct bucket once). Work is bounded by
    the constants above whatever the body's size or nesting.
    """
    raw = body.get("messages")
    messages = (
        [m for m in raw[-MAX_MESSAGES_SCANNED:] if isinstance(m, Mapping)] if isinstance(raw, list) else []
    )
    last = ""
    previous = ""
    system = ""
    found_last = False
    earlier = False
    for message in reversed(messages):
        role = message.get("role")
        if role == "user":
            if not found_last:
                last = _text(message.get("content"), HEAD_CHARS + 65_536)
                found_last = True
            elif not previous:
                previous = _text(message.get("content"), CONTEXT_CHARS)[:CONTEXT_CHARS]
                earlier = True
        elif role in ("system", "developer"):
            system = _text(message.get("content"), CONTEXT_CHARS)[:CONTEXT_CHARS]
        elif found_last:
            earlier = True

    out: list[str] = []
    if len(last) > HEAD_CHARS + TAIL_CHARS:
        head = _tokens(last[:HEAD_CHARS], MAX_TOKENS - MAX_TOKENS // 4)
        tail = _tokens(last[-TAIL_CHARS:], MAX_TOKENS // 4)
        _word_features(head, out)
        _word_features(tail, out)
    else:
        _word_features(_tokens(last, MAX_TOKENS), out)
    if system:
        out.append("#sys")
        _word_features(_tokens(system, MAX_CONTEXT_TOKENS), out)
    if earlier:
        out.append("#turns")
    if previous:
        _word_features(_tokens(previous, MAX_CONTEXT_TOKENS), out)
    tools = body.get("tools") or body.get("functions")
    if isinstance(tools, list) and tools:
        out.append("#tools")
        for tool in tools[:MAX_TOOLS]:
            spec = tool.get("function", tool) if isinstance(tool, Mapping) else None
            name = spec.get("name") if isinstance(spec, Mapping) else None
            if isinstance(name, str):
                lowered = name[:64].lower()
                out.append("#tool:" + lowered)
                out += ["#tw:" + word for word in _TOKEN.findall(lowered)]
    out.append(f"#len:{min(len(last) // 64, 1 << 20).bit_length()}")
    return out


def feature_buckets(features: Sequence[str], buckets: int) -> set[int]:
    """The distinct buckets of feature strings: CRC-32 of the UTF-8 bytes, modulo ``buckets``."""
    return set(map(buckets.__rmod__, map(zlib.crc32, map(str.encode, features))))  # h % buckets


@dataclass(frozen=True, slots=True)
class TierScore:
    """A model's verdict: the tier (a label of the model, e.g. ``"H"``), its probability (0..1), and the
    named features that pushed hardest towards it, strongest first (at most :data:`TOP_FEATURES`)."""

    tier: str
    confidence: float
    features: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TierModel:
    """Weights of a multinomial logistic regression over hashed features (the module docstring).

    ``weights[k][b]`` is label ``k``'s weight of bucket ``b`` (absent: 0); ``names`` maps some buckets to
    the feature string they stand for in events; ``info`` is the training record (corpus, sizes, accuracy).
    """

    labels: tuple[str, ...]
    buckets: int
    bias: tuple[float, ...]
    weights: tuple[dict[int, float], ...]
    names: Mapping[int, str]
    info: Mapping[str, Any]
    lifts: tuple[dict[int, float], ...]  # per label, named bucket -> lift (derived at load from the above)

    def score(self, body: Mapping[str, Any]) -> TierScore:
        """Score an OpenAI chat body. Bounded work; never raises on a malformed body."""
        present = feature_buckets(request_features(body), self.buckets)
        scale = 1.0 / math.sqrt(len(present))  # never empty: the length marker is always there
        logits = [
            b + sum(map(w.get, present, repeat(0.0))) * scale
            for b, w in zip(self.bias, self.weights, strict=True)
        ]
        top = max(range(len(logits)), key=logits.__getitem__)
        peak = logits[top]
        total = sum(math.exp(x - peak) for x in logits)
        # Strongest: named buckets present, by how much they favour the winner over the mean of the rest.
        lifts = self.lifts[top]
        named = [b for b in present if b in lifts]
        strongest = sorted(named, key=lifts.__getitem__, reverse=True)[:TOP_FEATURES]
        return TierScore(
            self.labels[top], 1.0 / total, tuple(self.names[b] for b in strongest if lifts[b] > 0)
        )


def _lifts(weights: tuple[dict[int, float], ...], names: Mapping[int, str]) -> tuple[dict[int, float], ...]:
    """Per label, for each named bucket: its weight minus the mean of the other labels' weights."""
    rest = len(weights) - 1
    out: tuple[dict[int, float], ...] = tuple({} for _ in weights)
    for b in names:
        row = [w.get(b, 0.0) for w in weights]
        total = sum(row)
        for k, mine in enumerate(row):
            out[k][b] = mine - (total - mine) / rest
    return out


def parse_tier_model(doc: object, *, where: str = "tier model") -> TierModel:
    """Validate a parsed model document (the format :func:`torchrouter.tiers.export_model` writes)."""
    if not isinstance(doc, Mapping) or doc.get("format") != MODEL_FORMAT:
        raise TierModelError(f"{where}: not a {MODEL_FORMAT} document")
    labels = doc.get("labels")
    buckets = doc.get("buckets")
    bias = doc.get("bias")
    weights = doc.get("weights")
    names = doc.get("names", {})
    if not (isinstance(labels, list) and len(labels) >= 2 and all(isinstance(x, str) for x in labels)):
        raise TierModelError(f"{where}: labels must be a list of at least two strings")
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= 1 << 22:
        raise TierModelError(f"{where}: buckets must be an integer 1..{1 << 22}")
    if not (isinstance(bias, list) and len(bias) == len(labels)):
        raise TierModelError(f"{where}: bias must have one number per label")
    if not isinstance(weights, Mapping) or not isinstance(names, Mapping):
        raise TierModelError(f"{where}: weights and names must be mappings keyed by bucket")
    sparse: tuple[dict[int, float], ...] = tuple({} for _ in labels)
    try:
        for key, row in weights.items():
            bucket = int(key)
            if not 0 <= bucket < buckets or len(row) != len(labels):
                raise ValueError(key)
            for k, value in enumerate(row):
                if value:
                    sparse[k][bucket] = float(value)
        named = {int(k): str(v) for k, v in names.items() if 0 <= int(k) < buckets}
        bias_values = tuple(float(x) for x in bias)
    except (TypeError, ValueError) as exc:
        raise TierModelError(f"{where}: a weight row is malformed ({exc})") from None
    info = doc.get("info")
    return TierModel(
        labels=tuple(labels),
        buckets=buckets,
        bias=bias_values,
        weights=sparse,
        names=named,
        info=info if isinstance(info, Mapping) else {},
        lifts=_lifts(sparse, named),
    )


def load_tier_model(path: str | Path = DEFAULT_MODEL_PATH) -> TierModel:
    """Read and validate a model file; :class:`TierModelError` names the file when it cannot be used."""
    shown = str(path)
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise TierModelError(f"{shown}: cannot read it: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise TierModelError(f"{shown}: invalid JSON: {exc}") from None
    return parse_tier_model(doc, where=shown)
