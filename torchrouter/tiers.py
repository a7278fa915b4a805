"""Training and evaluating the learned tier model (``torchrouter tiers train`` / ``torchrouter tiers eval``).

The corpus is JSONL, one labelled request a line: ``{"id": str, "tier": "H"|"R"|"C", "messages": [...],
"tools": [...]?}`` (an OpenAI chat body plus a label; see ``corpus/tiers/README.md``). Operators add their
own lines in the same format (``--extra``).

Split: an example is *held out* when ``blake2b(id)`` (8 bytes, big-endian) / 2**64 < :data:`HELD_OUT_SHARE`.
Fixed by the id alone, so the split never moves when the corpus grows, and the held-out part is never used
to train or to choose the regularisation (that is cross-validated on the training part).

Training needs scikit-learn (a development dependency, imported only here, inside the functions that use
it); the features come from :func:`torchrouter_core.tier_model.request_buckets`, the one function the
runtime scores with too (:func:`~torchrouter_core.tier_model.request_features` gives the same features as
strings, to name buckets). Evaluation needs nothing beyond the runtime: it scores through the classifier's
own :func:`torchrouter_core.tiering.classify`, certain signals and confidence threshold included.

Exceptions::

    ValueError
     └── CorpusError    a corpus line is not a labelled request; the message names the file and line
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from classifier.settings import PACKAGE_ROOT
from torchrouter_core.identity import Identity
from torchrouter_core.tier_model import (
    DEFAULT_MODEL_PATH,
    MODEL_FORMAT,
    TierModel,
    TierModelError,
    feature_buckets,
    load_tier_model,
    parse_tier_model,
    request_buckets,
    request_features,
)
from torchrouter_core.tiering import (
    DEFAULT_MIN_CONFIDENCE,
    AgentDirectory,
    Tier,
    TierPolicy,
    classify,
    extract_features,
)

DEFAULT_CORPUS_PATH: Final = PACKAGE_ROOT / "corpus" / "tiers" / "corpus.jsonl"
HELD_OUT_SHARE: Final = 0.2
DEFAULT_BUCKETS: Final = 1 << 32  # the CRC-32 itself: no folding, no collisions (tier_model docstring)
C_GRID: Final = (3.0, 10.0, 30.0, 100.0)
CV_FOLDS: Final = 5
NAMED_FEATURES: Final = 2_000  # buckets named in the model file (the strongest by lift)
LABELS: Final = tuple(t.value for t in Tier)  # H, R, C: the order of rows and columns in reports

_ANONYMOUS: Final = Identity(None, "anonymous", None, None)
_NO_AGENTS: Final = AgentDirectory(
    {},
    {
        Tier.H: TierPolicy(Tier.H, "balanced", 0),
        Tier.R: TierPolicy(Tier.R, "fast-chat", 0),
        Tier.C: TierPolicy(Tier.C, "code", 0),
    },
)


class CorpusError(ValueError):
    """A corpus line is not a labelled chat request."""


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    tier: str
    body: Mapping[str, Any]


def is_held_out(example_id: str) -> bool:
    """The fixed split (module docstring): True for about :data:`HELD_OUT_SHARE` of ids."""
    digest = hashlib.blake2b(example_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < HELD_OUT_SHARE


def load_corpus(path: str | Path) -> list[Example]:
    """Read a labelled JSONL file; blank lines are skipped. Raises :class:`CorpusError` naming the line."""
    examples: list[Example] = []
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CorpusError(f"{where}: invalid JSON: {exc}") from None
        if not isinstance(row, dict):
            raise CorpusError(f"{where}: expected an object with id, tier and messages")
        example_id, tier, messages = row.get("id"), row.get("tier"), row.get("messages")
        if not isinstance(example_id, str) or not example_id:
            raise CorpusError(f"{where}: id must be a non-empty string")
        if tier not in LABELS:
            raise CorpusError(f"{where}: tier must be one of {', '.join(LABELS)}, got {tier!r}")
        if not isinstance(messages, list) or not any(
            isinstance(m, dict) and m.get("role") == "user" for m in messages
        ):
            raise CorpusError(f"{where}: messages must be a list with at least one user message")
        body = {k: v for k, v in row.items() if k not in ("id", "tier")}
        examples.append(Example(example_id, tier, body))
    return examples


def load_corpora(paths: Iterable[str | Path]) -> list[Example]:
    """Several files in order; an id seen twice is an error (it would break the split)."""
    examples: list[Example] = []
    seen: dict[str, str] = {}
    for path in paths:
        for example in load_corpus(path):
            if example.id in seen:
                raise CorpusError(f"{path}: id {example.id!r} already used in {seen[example.id]}")
            seen[example.id] = str(path)
            examples.append(example)
    return examples


def split(examples: Sequence[Example]) -> tuple[list[Example], list[Example]]:
    """(training part, held-out part) by :func:`is_held_out`."""
    train = [e for e in examples if not is_held_out(e.id)]
    held = [e for e in examples if is_held_out(e.id)]
    return train, held


# --- training (scikit-learn) -------------------------------------------------------------------------------


def _matrix(examples: Sequence[Example], buckets: int) -> tuple[Any, list[int]]:
    """Rows of unit-length binary vectors over hashed buckets (exactly what TierModel.score computes), and
    the bucket of each column: only the buckets the examples have (2**32 columns would not fit)."""
    from scipy.sparse import csr_matrix

    rows = [request_buckets(example.body, buckets) for example in examples]
    ids = sorted(set().union(*rows))
    column = {bucket: j for j, bucket in enumerate(ids)}
    indptr = [0]
    indices: list[int] = []
    values: list[float] = []
    for present in rows:
        indices += sorted(map(column.__getitem__, present))
        values += [1.0 / math.sqrt(len(present))] * len(present)
        indptr.append(len(indices))
    return csr_matrix((values, indices, indptr), shape=(len(examples), len(ids))), ids


def _fit(examples: Sequence[Example], buckets: int, c: float) -> tuple[Any, list[int]]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=5000)
    x, ids = _matrix(examples, buckets)
    model.fit(x, [e.tier for e in examples])
    return model, ids


def cross_validate(
    examples: Sequence[Example], *, buckets: int = DEFAULT_BUCKETS, grid: Sequence[float] = C_GRID
) -> dict[float, float]:
    """Mean accuracy of stratified :data:`CV_FOLDS`-fold cross-validation for each C (fixed shuffle)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x, _ = _matrix(examples, buckets)  # a bucket no training fold has gets weight 0 there, as if absent
    y = [e.tier for e in examples]
    folds = StratifiedKFold(n_splits=min(CV_FOLDS, min(Counter(y).values())), shuffle=True, random_state=0)

    return {
        c: float(cross_val_score(LogisticRegression(C=c, max_iter=5000), x, y, cv=folds).mean()) for c in grid
    }


@dataclass
class TrainReport:
    model_doc: dict[str, Any]
    cv_accuracy: dict[float, float]
    chosen_c: float
    trained_on: int
    held_out: int
    sources: list[str] = field(default_factory=list)


def train(
    examples: Sequence[Example],
    *,
    buckets: int = DEFAULT_BUCKETS,
    c: float | None = None,
    sources: Sequence[str] = (),
) -> TrainReport:
    """Fit on the training part of ``examples`` (C chosen by cross-validation there unless given) and return
    the exported model document with its record. The held-out part is counted, never looked at."""
    train_part, held = split(examples)
    missing = sorted(set(LABELS) - {e.tier for e in train_part})
    if missing:
        raise CorpusError(f"the training part has no example of tier {', '.join(missing)}")
    cv = cross_validate(train_part, buckets=buckets) if c is None else {}
    chosen = c if c is not None else max(cv, key=lambda k: (cv[k], -k))
    fitted, ids = _fit(train_part, buckets, chosen)
    doc = export_model(
        fitted,
        ids,
        train_part,
        buckets=buckets,
        info={
            "trained_on": len(train_part),
            "held_out": len(held),
            "c": chosen,
            "cv_accuracy": cv.get(chosen),
            "sources": list(sources),
            "held_out_rule": f"blake2b(id, 8 bytes) / 2**64 < {HELD_OUT_SHARE}",
        },
    )
    return TrainReport(doc, cv, chosen, len(train_part), len(held), list(sources))


def export_model(
    fitted: Any, ids: Sequence[int], examples: Sequence[Example], *, buckets: int, info: Mapping[str, Any]
) -> dict[str, Any]:
    """The model file's document (the format :func:`torchrouter_core.tier_model.parse_tier_model` reads).

    ``ids[j]`` is the bucket of the fitted model's column ``j`` (:func:`_matrix`). Weights are rounded to 5
    decimals and a bucket whose weights all round to 0 is left out. ``names`` holds, for the
    :data:`NAMED_FEATURES` buckets that favour one tier most, the training feature string seen most often
    in that bucket.
    """
    labels = [str(label) for label in fitted.classes_]
    coef = fitted.coef_
    weights: dict[str, list[float]] = {}
    lift: dict[int, float] = {}
    k = len(labels)
    for j in sorted(set(int(c) for c in coef.nonzero()[1])):
        bucket = ids[j]
        row = [round(float(coef[i, j]), 5) for i in range(k)]
        if any(row):
            weights[str(bucket)] = row
            total = sum(row)
            lift[bucket] = max(w - (total - w) / (k - 1) for w in row)
    seen: dict[int, Counter[str]] = {}
    for example in examples:
        for feature in dict.fromkeys(request_features(example.body)):  # distinct, in a fixed order
            bucket = next(iter(feature_buckets([feature], buckets)))
            if bucket in lift:
                seen.setdefault(bucket, Counter())[feature] += 1
    strongest = sorted(lift, key=lambda b: -lift[b])[:NAMED_FEATURES]
    names = {str(b): seen[b].most_common(1)[0][0] for b in strongest if b in seen}
    return {
        "format": MODEL_FORMAT,
        "labels": labels,
        "buckets": buckets,
        "bias": [round(float(x), 6) for x in fitted.intercept_],
        "weights": weights,
        "names": names,
        "info": dict(info),
    }


def write_model(doc: Mapping[str, Any], path: str | Path) -> None:
    Path(path).write_bytes(orjson.dumps(doc) + b"\n")


# --- evaluation (runtime only) -----------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Counts of (labelled, decided) pairs; rows and columns in :data:`LABELS` order."""

    confusion: dict[tuple[str, str], int] = field(default_factory=dict)
    misses: list[tuple[str, str, str]] = field(default_factory=list)  # (id, labelled, decided)

    @property
    def total(self) -> int:
        return sum(self.confusion.values())

    def accuracy(self) -> float:
        return sum(n for (a, b), n in self.confusion.items() if a == b) / self.total if self.total else 0.0

    def recall(self, tier: str) -> float:
        row = sum(n for (a, _), n in self.confusion.items() if a == tier)
        return self.confusion.get((tier, tier), 0) / row if row else 0.0

    def precision(self, tier: str) -> float:
        col = sum(n for (_, b), n in self.confusion.items() if b == tier)
        return self.confusion.get((tier, tier), 0) / col if col else 0.0

    def report(self) -> str:
        lines = [
            f"examples: {self.total}",
            f"accuracy: {self.accuracy():.3f}",
            "per tier: recall precision n",
        ]
        for tier in LABELS:
            n = sum(v for (a, _), v in self.confusion.items() if a == tier)
            lines.append(f"  {tier}  {self.recall(tier):.3f}  {self.precision(tier):.3f}  {n}")
        lines.append("confusion (rows: labelled, columns: decided):")
        lines.append("       " + "".join(f"{t:>6}" for t in LABELS))
        for a in LABELS:
            lines.append(f"  {a:<5}" + "".join(f"{self.confusion.get((a, b), 0):>6}" for b in LABELS))
        return "\n".join(lines)


def decide_tier(
    body: Mapping[str, Any], model: TierModel | None, *, min_confidence: float, default: Tier
) -> str:
    """The classifier's content tier for an anonymous request: :func:`torchrouter_core.tiering.classify`
    with the learned model (``model``) or, when ``model`` is None, the keyword rules alone."""
    features = extract_features(body, model=model)
    return classify(
        _ANONYMOUS, features, _NO_AGENTS, min_confidence=min_confidence, uncertain_tier=default
    ).tier.value


def evaluate(
    examples: Iterable[Example], model: TierModel | None, *, min_confidence: float, default: Tier
) -> Evaluation:
    result = Evaluation()
    for example in examples:
        decided = decide_tier(example.body, model, min_confidence=min_confidence, default=default)
        result.confusion[(example.tier, decided)] = result.confusion.get((example.tier, decided), 0) + 1
        if decided != example.tier:
            result.misses.append((example.id, example.tier, decided))
    return result


# --- the command -------------------------------------------------------------------------------------------

SPLITS: Final = ("held-out", "train", "all")


def _select(examples: Sequence[Example], which: str) -> list[Example]:
    train_part, held = split(examples)
    return {"held-out": held, "train": train_part}.get(which, list(examples))


def _shown(path: Path) -> str:
    """A path as the model's record keeps it: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(PACKAGE_ROOT)) if resolved.is_relative_to(PACKAGE_ROOT) else str(path)


def output_problem(path: Path) -> str | None:
    """Why the model cannot be written to ``path`` (checked before training, which takes a minute), or None:
    its folder must exist and be writable, and the path must not be a folder."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        return f"--out {path} is a folder; give a file path"
    if not folder.is_dir():
        return f"--out {path}: the folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"--out {path}: not writable"
    return None


def cmd_train(args: Any) -> int:
    if (problem := output_problem(Path(args.out))) is not None:
        print(f"torchrouter tiers train: {problem}", file=sys.stderr)
        return 2
    try:
        paths = [args.corpus, *args.extra]
        examples = load_corpora(paths)
        report = train(examples, buckets=args.buckets, c=args.c, sources=[_shown(p) for p in paths])
    except CorpusError as exc:
        print(f"torchrouter tiers train: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:  # scikit-learn is a development dependency
        print(
            f"torchrouter tiers train: needs the dev extra (pip install -e '.[dev]'): {exc}", file=sys.stderr
        )
        return 1
    try:
        write_model(report.model_doc, args.out)
    except OSError as exc:  # the folder went away (or filled up) while training
        print(f"torchrouter tiers train: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    for c, accuracy in report.cv_accuracy.items():
        print(f"cv C={c:g}: accuracy {accuracy:.3f}")
    print(f"trained on {report.trained_on} (C={report.chosen_c:g}); held out {report.held_out}")
    size, buckets = Path(args.out).stat().st_size, len(report.model_doc["weights"])
    print(f"wrote {args.out} ({size} bytes, {buckets} buckets)")
    model = parse_tier_model(report.model_doc)
    held = _select(examples, "held-out")
    if held:
        print("held-out:")
        print(
            evaluate(
                held, model, min_confidence=args.min_confidence, default=Tier(args.default_tier)
            ).report()
        )
    return 0


def cmd_eval(args: Any) -> int:
    try:
        examples = _select(load_corpora(args.corpus or [DEFAULT_CORPUS_PATH]), args.split)
        model = None if args.rules else load_tier_model(args.model)
    except (CorpusError, TierModelError) as exc:
        print(f"torchrouter tiers eval: {exc}", file=sys.stderr)
        return 1
    result = evaluate(examples, model, min_confidence=args.min_confidence, default=Tier(args.default_tier))
    print(f"scored by: {'keyword rules' if model is None else args.model}; split: {args.split}")
    print(result.report())
    if args.misses:
        for example_id, labelled, decided in result.misses:
            print(f"miss {example_id}: labelled {labelled}, decided {decided}")
    return 0


def add_parser(sub: Any) -> None:
    """``torchrouter tiers train|eval`` on the CLI's subparsers."""
    tiers = sub.add_parser("tiers", help="train or evaluate the learned tier model")
    verbs = tiers.add_subparsers(dest="tiers_command", required=True)

    def decision_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--min-confidence", type=float, default=DEFAULT_MIN_CONFIDENCE)
        p.add_argument("--default-tier", choices=LABELS, default="H", help="tier below --min-confidence")

    train_p = verbs.add_parser("train", help="fit the model on the corpus (+ --extra files) and write it")
    train_p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS_PATH)
    train_p.add_argument(
        "--extra", type=Path, action="append", default=[], help="operator JSONL (repeatable)"
    )
    train_p.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH)
    train_p.add_argument("--buckets", type=int, default=DEFAULT_BUCKETS)
    train_p.add_argument("--c", type=float, default=None, help="regularisation (default: cross-validated)")
    decision_options(train_p)
    train_p.set_defaults(func=cmd_train)

    eval_p = verbs.add_parser("eval", help="accuracy and confusion matrix of the classifier's tiering")
    eval_p.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    eval_p.add_argument(
        "--corpus", type=Path, action="append", help="JSONL (repeatable; default: the corpus)"
    )
    eval_p.add_argument("--split", choices=SPLITS, default="held-out")
    eval_p.add_argument("--rules", action="store_true", help="score the keyword rules instead of the model")
    eval_p.add_argument("--misses", action="store_true", help="list the examples tiered wrongly")
    decision_options(eval_p)
    eval_p.set_defaults(func=cmd_eval)
