"""The learned tier model at run time: one feature function, a weight file, a score. Pure and stdlib-only.

This module owns the *feature function* that training (:mod:`torchrouter.tiers`, scikit-learn, a
development dependency) and the classifier share, so a model is always scored on exactly the features it
was trained on, and the reader of the exported weights (:func:`load_tier_model`, a small JSON file; no
numpy, no download).

Exceptions::

    ValueError
     └── TierModelError    the weight file is unreadable or not a tier model; the message says why

Features (:func:`request_features`; :func:`request_buckets` is what scoring and training hash), all read
from a bounded part of the request, so that a huge or deeply nested body costs no more than a short one:

- the texts examined: the last user message whole when it has at most :data:`HEAD_CHARS` +
  :data:`TAIL_CHARS` characters, else its first :data:`HEAD_CHARS` and last :data:`TAIL_CHARS`; the first
  :data:`CONTEXT_CHARS` of the system prompt (the first message, when its role is system or developer) and
  of the previous user message (a multi-turn follow-up leans on it); the first :data:`TOOL_NAME_CHARS` of
  the names of at most :data:`MAX_TOOLS` tools. At most 1,780 characters of messages and 512 of tool
  names, whatever the size of the request;
- tokens of a text, in lower case: runs of letters, and runs of punctuation marks cut to their first
  :data:`MARK_RUN` (digits, ``_`` and white space separate them): the first :data:`MAX_TOKENS` letter runs
  of the last message (:data:`TAIL_TOKENS` of them from its tail when it is cut) and
  :data:`MAX_CONTEXT_TOKENS` of each context text, repeats counted, and a quarter as many mark runs.
  Runs are cut on the UTF-8 bytes: runs of ASCII letters, and runs that hold non-ASCII characters, which
  are read again with the regular expressions (their first :data:`OTHER_SCRIPT_CHARS` characters per
  letter run allowed; ASCII letter runs count first, and an ASCII mark run and a non-ASCII one are two);
- per token: the token; for a letter token of 7+ characters its 5-character prefix (``"~refac"``: a
  cheap stem that also helps inflected languages); for a token that starts in the CJK blocks (U+2E80 on:
  scripts written without spaces) the character pairs of its first :data:`PAIR_CHARS` characters, at most
  half as many pairs as letter runs allowed; and at most twice as many features per text as letter runs
  allowed. (Word pairs were tried and cross-validated worse on this corpus: 0.882 against 0.902.)
- shape markers: ``#sys`` (has a system prompt), ``#turns`` (earlier turns), ``#tools``, ``#tool:<name>``
  (the tool's name, lower case) and ``#tw:<word>`` for the first :data:`MAX_TOOL_WORDS` letter runs of it
  (``run_tests``: ``run``, ``tests``), ``#len:<k>`` (k = bit length of the last message's length / 64).

So a request has at most 268 features however long it is (about 200 for a long English request with
tools; the corpus median is 31): that bound, not the request, sets the worst-case cost (BENCHMARKS.md,
"Cost per request").

Cost: ASCII text (nearly every prompt) is tokenised on its UTF-8 bytes with two 256-byte tables,
:meth:`bytes.translate` and :meth:`bytes.split` (the same classes as the regular expressions
``[^\\W\\d_]+`` and ``[^\\w\\s]+``, which cost about ten times more per character here), and its features
stay bytes until they are hashed; only the runs with other characters go through the expressions and
:meth:`str.lower`. Format 1 of the model file read other features (one expression over up to 1,300
characters, letters and marks interleaved, 128 tokens, CRC modulo 2**18) and is refused: retrain it.

Each feature string is hashed with CRC-32 of its UTF-8 bytes (stable across processes and Python builds,
unlike ``hash()``), modulo the model's bucket count: 2**32 (:data:`UNFOLDED`) for the shipped model, so
the CRC itself, which leaves no collisions among the few thousand features it was trained on and spares
the modulo (as costly as the CRC here); the file keeps weights only for those. A request's vector is
binary over the distinct buckets, scaled to unit length (each present bucket weighs ``1 / sqrt(n)``). The
model is a multinomial logistic regression: ``score_k = bias_k + sum(weights_k[b]) / sqrt(n)``, softmax
over the tiers; confidence is the top probability.

The strongest features reported for a decision come only from the model's ``names`` (feature strings taken
from its training corpus and shipped in the file), so an event never repeats caller text it was not trained
on: a secret in a prompt cannot become a reported feature. A bucket is named by the training feature seen
most often in it (unfolded, the only one); an unseen string that collides with it is reported under that
name. Nothing of the caller's text outlives a call (no cache).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, compress, islice, pairwise, repeat
from operator import itemgetter, not_
from pathlib import Path
from typing import Any, Final

import orjson

MODEL_FORMAT: Final = "torchrouter-tier-model/2"
OLD_FORMATS: Final = ("torchrouter-tier-model/1",)  # other features: refused with "retrain it"
DEFAULT_MODEL_PATH: Final = Path(__file__).resolve().parent / "tier_model.json"

HEAD_CHARS: Final = 1_000
TAIL_CHARS: Final = 300
CONTEXT_CHARS: Final = 240
MAX_TOKENS: Final = 64  # letter runs of the last user message (and a quarter as many mark runs)
TAIL_TOKENS: Final = 16  # of them from its tail, when it is cut
MAX_CONTEXT_TOKENS: Final = 24  # of the system prompt, of the previous user message
MAX_TOOL_WORDS: Final = 4  # letter runs of a tool's name
OTHER_SCRIPT_CHARS: Final = 4  # runs with non-ASCII characters: 4 characters read per letter run allowed
MARK_RUN: Final = 3  # a run of punctuation marks counts by its first 3 (``"```"``, ``"->"``, ``"();"``)
PAIR_CHARS: Final = 17  # CJK: pairs of a token's first 17 characters
MAX_TOOLS: Final = 8
TOOL_NAME_CHARS: Final = 64
MAX_MESSAGES_SCANNED: Final = 64  # from the end: where the last user message and its context are
MAX_PARTS: Final = 16  # content-part list entries read from one message
TOP_FEATURES: Final = 3
UNFOLDED: Final = 1 << 32  # as many buckets as CRC-32 values: the CRC is the bucket

_LETTERS = re.compile(r"[^\W\d_]+")
_MARKS = re.compile(r"[^\w\s]+")
# The two classes for ASCII, as 256-byte tables for bytes.translate (what str.isalpha, isalnum and isspace
# say, as the patterns do): every other byte becomes a space, and bytes.split cuts out the runs. The run
# table also keeps every byte of a non-ASCII character: such runs are read again by the expressions.
_ASCII = [chr(c) for c in range(128)]
_RUN_TABLE: Final = bytes(ord(c) if c.isalpha() else 32 for c in _ASCII) + bytes(range(128, 256))
_MARK_TABLE: Final = bytes(32 if c.isalnum() or c == "_" or c.isspace() else ord(c) for c in _ASCII).ljust(
    256, b" "
)
_cut_run = itemgetter(slice(MARK_RUN))
_CJK_START: Final = "\u2e80"  # CJK radicals onward: scripts written without spaces
_SYSTEM_ROLES: Final = ("system", "developer")


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
            text = part.get("text") if type(part) is dict or isinstance(part, Mapping) else None
            if isinstance(text, str):
                out.append(text[: max(0, limit - size)])
                size += len(text)
                if size >= limit:
                    break
        return "\n".join(out)
    return ""


def _text_features(text: str, limit: int) -> list[bytes]:
    """Features of one text (the module docstring), UTF-8 encoded: at most ``limit`` letter runs, their
    stems and CJK pairs, and at most ``limit // 4`` mark runs; at most ``2 * limit`` in all."""
    plain = text.isascii()  # nearly every prompt: bytes all the way, no regular expression, no encoding
    # bytes.lower: ASCII letters only; the other runs are lowered below. "replace": a lone surrogate (JSON
    # allows one; orjson refuses it) becomes "?" rather than an error.
    raw = text.encode("utf-8", "replace").lower()
    # split(None, n): at most n cuts, so the work past the first n runs is one copy of the rest.
    runs = raw.translate(_RUN_TABLE).split(None, limit)[:limit]
    marks = raw.translate(_MARK_TABLE).split(None, limit // 4)[: limit // 4]
    if plain:
        words = runs
        other: list[str] = []
    else:  # runs with other characters (whole UTF-8 sequences: only ASCII bytes cut) are read again
        ascii_run = list(map(bytes.isascii, runs))
        words = list(compress(runs, ascii_run))
        odd = b" ".join(compress(runs, map(not_, ascii_run))).decode()[: OTHER_SCRIPT_CHARS * limit].lower()
        letters = _LETTERS.findall(odd)[: limit - len(words)]
        other = letters + ["~" + word[:5] for word in letters if len(word) >= 7]
        cjk = [word[:PAIR_CHARS] for word in letters if word[0] >= _CJK_START and len(word) > 1]
        if cjk:  # their pairs, made only as far as the cap: half as many as letter runs allowed
            other += islice(chain.from_iterable(map(_pairs, cjk)), limit // 2)
        other += map(_cut_run, _MARKS.findall(odd)[: limit // 4 - len(marks)])
    out = words + [b"~" + word[:5] for word in words if len(word) >= 7]
    if marks:
        out += map(_cut_run, marks)
    if other:
        out += map(str.encode, other)
    return out[: 2 * limit]


def _pairs(word: str) -> Iterator[str]:
    return map("".join, pairwise(word))


def _features(body: Mapping[str, Any]) -> list[bytes]:
    """:func:`request_features`, UTF-8 encoded: what the model hashes."""
    raw = body.get("messages")
    messages: list[Any] = raw if isinstance(raw, list) else []
    system = ""
    first = messages[0] if messages else None
    if (type(first) is dict or isinstance(first, Mapping)) and first.get("role") in _SYSTEM_ROLES:
        system = _text(first.get("content"), CONTEXT_CHARS)[:CONTEXT_CHARS]
    last = ""
    previous = ""
    found_last = False
    earlier = False
    for message in reversed(messages[-MAX_MESSAGES_SCANNED:]):
        # type() first: isinstance(x, Mapping) is an ABC check, several times slower for the usual dict.
        if not (type(message) is dict or isinstance(message, Mapping)):
            continue
        role = message.get("role")
        if role == "user":
            if not found_last:
                last = _text(message.get("content"), HEAD_CHARS + 65_536)
                found_last = True
            else:
                earlier = True
                previous = _text(message.get("content"), CONTEXT_CHARS)[:CONTEXT_CHARS]
                if previous:
                    break  # all that is read is found
        elif found_last and role not in _SYSTEM_ROLES:
            earlier = True

    if len(last) > HEAD_CHARS + TAIL_CHARS:
        out = _text_features(last[:HEAD_CHARS], MAX_TOKENS - TAIL_TOKENS)
        out += _text_features(last[-TAIL_CHARS:], TAIL_TOKENS)
    else:
        out = _text_features(last, MAX_TOKENS)
    if system:
        out.append(b"#sys")
        out += _text_features(system, MAX_CONTEXT_TOKENS)
    if earlier:
        out.append(b"#turns")
    if previous:
        out += _text_features(previous, MAX_CONTEXT_TOKENS)
    tools = body.get("tools") or body.get("functions")
    if isinstance(tools, list) and tools:
        out.append(b"#tools")
        for tool in tools[:MAX_TOOLS]:
            spec = tool.get("function", tool) if type(tool) is dict or isinstance(tool, Mapping) else None
            name = spec.get("name") if type(spec) is dict or isinstance(spec, Mapping) else None
            if isinstance(name, str):
                lowered = name[:TOOL_NAME_CHARS].lower().encode("utf-8", "replace")
                out.append(b"#tool:" + lowered)
                words = (
                    lowered.translate(_RUN_TABLE).split(None, MAX_TOOL_WORDS)
                    if lowered.isascii()
                    else [word.encode() for word in _LETTERS.findall(lowered.decode())]
                )
                out += map(b"#tw:".__add__, words[:MAX_TOOL_WORDS])
    out.append(_LENGTH_MARKERS[min(len(last) // 64, 1 << 20).bit_length()])
    return out


_LENGTH_MARKERS: Final = tuple(f"#len:{k}".encode() for k in range(22))


def request_features(body: Mapping[str, Any]) -> list[str]:
    """The feature strings of an OpenAI chat body (see the module docstring); tolerant of any shape.

    Returns a list (duplicates possible; the model counts each distinct bucket once). Work is bounded by
    the constants above whatever the body's size or nesting.
    """
    return [feature.decode() for feature in _features(body)]


def feature_buckets(features: Sequence[str], buckets: int) -> set[int]:
    """The distinct buckets of feature strings: CRC-32 of the UTF-8 bytes, modulo ``buckets``."""
    return set(map(buckets.__rmod__, map(zlib.crc32, map(str.encode, features))))  # h % buckets


def request_buckets(body: Mapping[str, Any], buckets: int) -> set[int]:
    """``feature_buckets(request_features(body), buckets)`` without the round trip through ``str``: what
    :meth:`TierModel.score` and training (:mod:`torchrouter.tiers`) use. With :data:`UNFOLDED` buckets
    (the shipped model) a bucket is the CRC itself: no modulo, which costs as much as the CRC here."""
    ids = set(map(zlib.crc32, _features(body)))
    return ids if buckets == UNFOLDED else set(map(buckets.__rmod__, ids))


@dataclass(frozen=True, slots=True)
class TierScore:
    """A model's verdict: the tier (a label of the model, e.g. ``"H"``), its probability (0..1), and the
    named features that pushed hardest towards it, strongest first (at most :data:`TOP_FEATURES`)."""

    tier: str
    confidence: float
    features: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TierModel:
    """Weights of a multinomial logistic regression over hashed features (the module docstring), with two
    or three labels (the tiers).

    ``weights[b]`` is bucket ``b``'s weight for each label, in ``labels`` order (absent: all 0); ``names``
    maps some buckets to the feature string they stand for in events; ``info`` is the training record
    (corpus, sizes, accuracy). The rest is derived at load: ``packed[b]``, bucket ``b``'s weights relative
    to the first label's as one complex number (the second label's in the real part, the third's in the
    imaginary part: a softmax needs only differences, and one ``sum`` adds a request's rows);
    ``packed_bias``, the same for the biases; ``ranks``, per label, the named buckets that favour it (a
    positive lift: the label's weight minus the mean of the others'), each with its place when they are
    ordered by lift, strongest first, and ``ranked``, their names in that order.
    """

    labels: tuple[str, ...]
    buckets: int
    bias: tuple[float, ...]
    weights: Mapping[int, tuple[float, ...]]
    names: Mapping[int, str]
    info: Mapping[str, Any]
    packed: dict[int, complex]
    packed_bias: complex
    ranks: tuple[dict[int, int], ...]  # per label: named bucket -> place by lift (0: the strongest)
    ranked: tuple[tuple[str, ...], ...]  # per label: the names, strongest first

    def score(self, body: Mapping[str, Any]) -> TierScore:
        """Score an OpenAI chat body. Bounded work; never raises on a malformed body."""
        present = request_buckets(body, self.buckets)
        # Never empty: the length marker is always there. Each present bucket weighs 1 / sqrt(n).
        row: Callable[[int, complex], complex] = self.packed.get
        z = self.packed_bias + sum(map(row, present, _ZEROS)) / math.sqrt(len(present))
        logits = (0.0, z.real, z.imag)[: len(self.labels)]
        peak = max(logits)
        top = logits.index(peak)
        total = sum([math.exp(x - peak) for x in logits])
        # Strongest: named buckets present that favour the winner, by how much (over the mean of the rest).
        rank = self.ranks[top]  # places sort as plain ints: no key function per bucket
        strongest = sorted(map(rank.__getitem__, rank.keys() & present))[:TOP_FEATURES]
        return TierScore(self.labels[top], 1.0 / total, tuple(map(self.ranked[top].__getitem__, strongest)))


_ZEROS: Final = repeat(0j)  # map(packed.get, present, _ZEROS): an absent bucket adds nothing


def _ranks(
    weights: Mapping[int, tuple[float, ...]], names: Mapping[int, str], labels: int
) -> tuple[tuple[dict[int, int], ...], tuple[tuple[str, ...], ...]]:
    """Per label, the named buckets that favour it by lift, strongest first (ties: by bucket), as
    ``(bucket -> place, names in place order)``."""
    rest = labels - 1
    zero = (0.0,) * labels
    lifts: list[list[tuple[float, int]]] = [[] for _ in range(labels)]
    for b in names:
        row = weights.get(b, zero)
        total = sum(row)
        for k, mine in enumerate(row):
            lift = mine - (total - mine) / rest
            if lift > 0:
                lifts[k].append((-lift, b))
    ordered = [[b for _, b in sorted(pairs)] for pairs in lifts]
    return (
        tuple({b: place for place, b in enumerate(buckets)} for buckets in ordered),
        tuple(tuple(names[b] for b in buckets) for buckets in ordered),
    )


def _pack(row: Sequence[float]) -> complex:
    """Weights (2 or 3, in label order) relative to the first, as one complex number."""
    return complex(row[1] - row[0], row[2] - row[0] if len(row) > 2 else 0.0)


def parse_tier_model(doc: object, *, where: str = "tier model") -> TierModel:
    """Validate a parsed model document (the format :func:`torchrouter.tiers.export_model` writes)."""
    if isinstance(doc, Mapping) and doc.get("format") in OLD_FORMATS:
        raise TierModelError(
            f"{where}: a {doc.get('format')} document, whose features this version no longer reads "
            f"({MODEL_FORMAT}); retrain it with `torchrouter tiers train`"
        )
    if not isinstance(doc, Mapping) or doc.get("format") != MODEL_FORMAT:
        raise TierModelError(f"{where}: not a {MODEL_FORMAT} document")
    labels = doc.get("labels")
    buckets = doc.get("buckets")
    bias = doc.get("bias")
    weights = doc.get("weights")
    names = doc.get("names", {})
    if not (isinstance(labels, list) and 2 <= len(labels) <= 3 and all(isinstance(x, str) for x in labels)):
        raise TierModelError(f"{where}: labels must be a list of two or three strings")
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= UNFOLDED:
        raise TierModelError(f"{where}: buckets must be an integer 1..{UNFOLDED}")
    if not (isinstance(bias, list) and len(bias) == len(labels)):
        raise TierModelError(f"{where}: bias must have one number per label")
    if not isinstance(weights, Mapping) or not isinstance(names, Mapping):
        raise TierModelError(f"{where}: weights and names must be mappings keyed by bucket")
    rows: dict[int, tuple[float, ...]] = {}
    try:
        for key, row in weights.items():
            bucket = int(key)
            if not 0 <= bucket < buckets or len(row) != len(labels):
                raise ValueError(key)
            values = tuple(float(value) for value in row)
            if any(values):
                rows[bucket] = values
        named = {int(k): str(v) for k, v in names.items() if 0 <= int(k) < buckets}
        bias_values = tuple(float(x) for x in bias)
    except (TypeError, ValueError) as exc:
        raise TierModelError(f"{where}: a weight row is malformed ({exc})") from None
    info = doc.get("info")
    ranks, ranked = _ranks(rows, named, len(labels))
    return TierModel(
        labels=tuple(labels),
        buckets=buckets,
        bias=bias_values,
        weights=rows,
        names=named,
        info=info if isinstance(info, Mapping) else {},
        packed={b: _pack(row) for b, row in rows.items()},
        packed_bias=_pack(bias_values),
        ranks=ranks,
        ranked=ranked,
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
