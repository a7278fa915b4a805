"""``torchrouter tiers train`` and ``torchrouter tiers eval`` on a small slice of the corpus (real
scikit-learn, real files in tmp_path), the fixed split, and the corpus itself."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from torchrouter.cli import main
from torchrouter.tiers import DEFAULT_CORPUS_PATH, HELD_OUT_SHARE, is_held_out, load_corpus, split
from torchrouter_core.tier_model import UNFOLDED, load_tier_model


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def corpus_rows() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in DEFAULT_CORPUS_PATH.read_bytes().splitlines() if line.strip()]


def slice_of_corpus(per_tier: int) -> list[dict[str, Any]]:
    rows = corpus_rows()
    by_tier = {t: [r for r in rows if r["tier"] == t] for t in "HRC"}
    return [r for t in "HRC" for r in by_tier[t][:: max(1, len(by_tier[t]) // per_tier)][:per_tier]]


def train_ids(prefix: str) -> list[str]:
    """Ids the fixed split puts in the training part."""
    kept = (i for i in (f"{prefix}-{n}" for n in itertools.count()) if not is_held_out(i))
    return list(itertools.islice(kept, 100))


# --- the corpus and the split ------------------------------------------------------------------------------


def test_the_corpus_meets_the_brief() -> None:
    examples = load_corpus(DEFAULT_CORPUS_PATH)
    counts = Counter(e.tier for e in examples)
    assert len(examples) >= 600 and min(counts.values()) >= 200
    assert len({e.id for e in examples}) == len(examples)
    assert sum(1 for e in examples if e.body.get("tools")) >= 30
    assert sum(1 for e in examples if len(e.body["messages"]) > 2) >= 20
    held = [e for e in examples if is_held_out(e.id)]
    assert abs(len(held) / len(examples) - HELD_OUT_SHARE) < 0.05


def test_the_split_is_fixed_by_id() -> None:
    # Pinned: the split must never move (it is how held-out numbers stay honest as the corpus grows).
    first_40 = [f"x-{n}" for n in range(40)]
    assert [i for i in first_40 if is_held_out(i)] == [
        "x-0", "x-8", "x-9", "x-10", "x-17", "x-23", "x-30", "x-31", "x-36", "x-39"
    ]  # fmt: skip
    decided = {i: is_held_out(i) for i in (f"x-{n}" for n in range(2000))}
    assert 0.15 < sum(decided.values()) / len(decided) < 0.25
    assert decided == {i: is_held_out(i) for i in decided}


# --- train and eval ----------------------------------------------------------------------------------------


def test_train_then_eval_then_the_runtime_loads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_jsonl(tmp_path / "slice.jsonl", slice_of_corpus(25))
    out = tmp_path / "model.json"
    assert main(["tiers", "train", "--corpus", str(corpus), "--out", str(out), "--c", "10"]) == 0
    printed = capsys.readouterr().out
    assert "trained on" in printed and "held-out:" in printed and f"wrote {out}" in printed

    model = load_tier_model(out)
    assert model.info["sources"] == [str(corpus)] and model.info["c"] == 10.0
    train_part, held = split(load_corpus(corpus))
    assert model.info["trained_on"] == len(train_part) and model.info["held_out"] == len(held)

    assert main(["tiers", "eval", "--model", str(out), "--corpus", str(corpus), "--split", "train"]) == 0
    report = capsys.readouterr().out
    accuracy = float(report.split("accuracy: ")[1].split()[0])
    assert accuracy >= 0.9  # a model that learned nothing scores about a third on what it was trained on
    assert "confusion (rows: labelled, columns: decided):" in report
    rows = [line.split() for line in report.splitlines() if line.strip()[:1] in ("H", "R", "C")][-3:]
    assert [r[0] for r in rows] == ["H", "R", "C"] and all(len(r) == 4 for r in rows)
    assert sum(int(n) for r in rows for n in r[1:]) == len(train_part)


def test_a_folded_model_trains_and_scores_the_same_as_it_was_fitted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --buckets folds the CRC (modulo); the default keeps it whole (UNFOLDED). Both fit only the buckets
    # their examples have, and the runtime reads either.
    corpus = write_jsonl(tmp_path / "slice.jsonl", slice_of_corpus(15))
    for buckets in (4096, UNFOLDED):
        out = tmp_path / f"model-{buckets}.json"
        args = ["tiers", "train", "--corpus", str(corpus), "--out", str(out), "--c", "10"]
        assert main([*args, "--buckets", str(buckets)]) == 0
        capsys.readouterr()
        model = load_tier_model(out)
        assert model.buckets == buckets and all(0 <= b < buckets for b in model.weights)
        train_part, _ = split(load_corpus(corpus))
        right = sum(model.score(e.body).tier == e.tier for e in train_part)
        assert right >= 0.9 * len(train_part)


def test_operator_examples_are_learned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write_jsonl(tmp_path / "slice.jsonl", slice_of_corpus(15))
    ids = train_ids("ops")
    extra = write_jsonl(
        tmp_path / "ops.jsonl",
        [
            {
                "id": ids[n],
                "tier": "C",
                "messages": [{"role": "user", "content": f"zorblax the {word} please"}],
            }
            for n, word in enumerate(["queue", "ledger", "report", "mailer", "ticket", "widget"])
        ],
    )
    out = tmp_path / "model.json"
    args = ["tiers", "train", "--corpus", str(base), "--extra", str(extra), "--out", str(out), "--c", "10"]
    assert main(args) == 0
    capsys.readouterr()
    score = load_tier_model(out).score({"messages": [{"role": "user", "content": "zorblax the garden"}]})
    assert score.tier == "C" and "zorblax" in score.features

    without = tmp_path / "without.json"
    assert main(["tiers", "train", "--corpus", str(base), "--out", str(without), "--c", "10"]) == 0
    capsys.readouterr()
    assert "zorblax" not in load_tier_model(without).names.values()


def test_eval_of_the_rules_and_misses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"id": "q1", "tier": "C", "messages": [{"role": "user", "content": "```\nx = 1\n```"}]},
            {"id": "q2", "tier": "H", "messages": [{"role": "user", "content": "Hello"}]},
        ],
    )
    assert main(["tiers", "eval", "--rules", "--corpus", str(corpus), "--split", "all", "--misses"]) == 0
    report = capsys.readouterr().out
    assert "scored by: keyword rules" in report and "accuracy: 0.500" in report
    assert "miss q2: labelled H, decided R" in report and "miss q1" not in report


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            ['{"id": "a", "tier": "X", "messages": [{"role": "user", "content": "hi"}]}'],
            "1: tier must be one of",
        ),
        (['{"tier": "H", "messages": [{"role": "user", "content": "hi"}]}'], "1: id must be"),
        (["", '{"id": "a", "tier": "H", "messages": []}'], "2: messages must be a list with"),
        (["not json"], "1: invalid JSON"),
        (["[1]"], "1: expected an object"),
    ],
)
def test_bad_corpus_lines_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], message: str
) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    assert main(["tiers", "eval", "--rules", "--corpus", str(corpus)]) == 1
    assert f"bad.jsonl:{message}" in capsys.readouterr().err


def test_an_id_used_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    row = {"id": "same", "tier": "H", "messages": [{"role": "user", "content": "hi"}]}
    a, b = write_jsonl(tmp_path / "a.jsonl", [row]), write_jsonl(tmp_path / "b.jsonl", [row])
    assert main(["tiers", "train", "--corpus", str(a), "--extra", str(b), "--out", str(tmp_path / "m")]) == 1
    assert "id 'same' already used" in capsys.readouterr().err


def test_eval_refuses_a_broken_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.json").write_text("{}")
    assert main(["tiers", "eval", "--model", str(tmp_path / "m.json")]) == 1
    assert "not a torchrouter-tier-model/2" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["missing folder", "a folder", "read-only folder"])
def test_an_unwritable_out_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    out = {
        "missing folder": tmp_path / "nonexistent" / "dir" / "x.json",
        "a folder": tmp_path,
        "read-only folder": locked / "x.json",
    }[where]
    if where == "read-only folder":
        locked.chmod(0o500)
        if os.access(locked, os.W_OK):  # root writes anywhere
            pytest.skip("running as root: a read-only folder is still writable")
    # The corpus does not exist either: the answer names --out, so nothing was read or trained first.
    try:
        code = main(["tiers", "train", "--corpus", str(tmp_path / "none.jsonl"), "--out", str(out)])
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--out" in err and "Traceback" not in err, err
