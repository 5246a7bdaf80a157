"""Train the semantic safety reader (``fusion.safety_semantic``): a one-hidden-layer classifier over all-MiniLM-L6-v2
sentence embeddings of written crisis messages against hard negatives and real support-seeking messages, its
threshold chosen on development sets, scored on a blind set.

1. Fit on ``--bank`` (``scripts/data/safety-bank.csv``: text, label crisis|none, category, set; 1,588 messages
   written for this project in four sets by separate authors: 480 crisis and hard negatives, 300 forum-style posts,
   349 short chat messages, 459 mixed messages weighted to indirect crisis phrasings and near-miss negatives; 899
   crisis) and, as everyday negatives, the seeker messages of
   ``--negatives`` (ESConv train: what people who come to a support chat write; a message the patterns already
   read as a concern or a crisis is left out, since some seekers do speak of harm), with their sentences (the
   reader scores a message's sentences too): ``fusion.safety_semantic.fit_classifier`` with its defaults (hidden
   256, GELU, dropout 0.2, AdamW 1e-3, weight decay 1e-4, 1,500 full-batch steps, seed 0). Each class weighs half;
   within ``none``, the bank's negatives and the ESConv texts weigh half each.
2. Choose on development data only: among the thresholds whose crisis rate over the seeker messages of ``--check``
   (ESConv valid, unlabelled; nearly all of them are not a crisis) stays at most ``MAX_EVERYDAY_RATE``, the one with
   the best crisis F1 of ``RiskDetector`` (patterns + this reader) over ``--dev`` pooled (``docs/safety-eval.csv``,
   ``docs/safety-eval-fresh.csv``, ``docs/safety-eval-history-dev.csv``, whose messages are read with the user's
   earlier ones); a tie goes to the higher threshold.
3. Score ``--blind`` (``docs/safety-eval-blind-2.csv`` and ``docs/safety-eval-history-blind.csv``, written by
   separate authors who saw neither the patterns, the bank nor the development sets; never used for a choice) and,
   for the record, ``--seen`` (``docs/safety-eval-blind.csv``, the first blind set, whose misses were seen when the
   fourth bank set was briefed): the patterns alone and patterns + meaning.

Writes ``weights/safety-semantic/safety-semantic.safetensors`` + ``.json`` (card, choices and metrics).

    python scripts/train_safety_semantic.py      # about 10 minutes on 2 cores (two runs: 9 and 11)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affectlens.evaluation import evaluate_safety  # noqa: E402
from fusion.memory import sentence_embedder  # noqa: E402
from fusion.safety import RiskDetector  # noqa: E402
from fusion.safety_semantic import SemanticRiskModel, fit_classifier, spans  # noqa: E402

DEFAULT_BANK = REPO / "scripts" / "data" / "safety-bank.csv"
DOCS = REPO / "docs"
DEFAULT_DEV = (DOCS / "safety-eval.csv", DOCS / "safety-eval-fresh.csv", DOCS / "safety-eval-history-dev.csv")
DEFAULT_BLIND = (DOCS / "safety-eval-blind-2.csv", DOCS / "safety-eval-history-blind.csv")
DEFAULT_SEEN = (DOCS / "safety-eval-blind.csv",)
DEFAULT_OUT = REPO / "weights" / "safety-semantic" / "safety-semantic.safetensors"
DEFAULT_ESCONV = REPO.parent / "shared" / "data" / "esconv"
#: At most this share of ESConv valid's seeker messages may read as a crisis (2% until 2026-11-28: with the fourth
#: bank set it let 1.6% through, and a crisis reply for "It's the third time." about a driving test; docs/safety.md).
MAX_EVERYDAY_RATE = 0.01
THRESHOLDS = tuple(round(0.5 + 0.02 * k, 2) for k in range(25))  # 0.50 ... 0.98


def read_bank(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    texts = [r["text"].strip() for r in rows]
    labels = np.array([1 if r["label"].strip() == "crisis" else 0 for r in rows])
    return texts, labels, [r["category"].strip() for r in rows]


def seeker_messages(path: Path, patterns: RiskDetector) -> tuple[list[str], int]:
    """The seeker messages of an ESConv JSONL file (3 words or more, deduplicated) that the patterns read as no
    risk, and how many the patterns left out."""
    texts: dict[str, None] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            for turn in json.loads(line)["dialog"]:
                text = turn["text"].strip()
                if turn["speaker"] == "usr" and len(text.split()) >= 3:
                    texts[text] = None
    kept = [t for t in texts if patterns.assess(t).level == "none"]
    return kept, len(texts) - len(kept)


def with_sentences(messages: list[str]) -> list[str]:
    """The messages and, for those of several sentences, each sentence as ``read`` scores it (deduplicated)."""
    out: dict[str, None] = {}
    for text in messages:
        for a, b in spans(text):
            out[text[a:b]] = None
    return list(out)


def pooled(reports: list[dict[str, Any]]) -> dict[str, float]:
    tp, fp, fn, tn = (sum(r["confusion"][k] for r in reports) for k in ("tp", "fp", "fn", "tn"))
    recall = tp / (tp + fn) if tp + fn else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"recall": round(recall, 4), "precision": round(precision, 4), "f1": round(f1, 4), "n": tp + fp + fn + tn}


def summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in ("n", "recall", "precision", "f1", "accuracy", "confusion", "concern")}


def relative(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bank", type=Path, default=DEFAULT_BANK)
    parser.add_argument("--dev", type=Path, nargs="+", default=list(DEFAULT_DEV))
    parser.add_argument("--blind", type=Path, nargs="*", default=list(DEFAULT_BLIND))
    parser.add_argument("--seen", type=Path, nargs="*", default=list(DEFAULT_SEEN))
    parser.add_argument("--negatives", type=Path, default=DEFAULT_ESCONV / "train.jsonl")
    parser.add_argument("--check", type=Path, default=DEFAULT_ESCONV / "valid.jsonl")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    started = time.process_time()

    base = sentence_embedder()
    memo: dict[str, np.ndarray] = {}

    def embed(texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in memo]
        if todo:
            memo.update(zip(todo, base(todo), strict=True))
        return np.stack([memo[t] for t in texts])

    patterns = RiskDetector(semantic=False)
    texts, y, categories = read_bank(args.bank)
    seekers, left_out = seeker_messages(args.negatives, patterns)
    everyday = with_sentences(seekers)  # the reader scores sentences too: so does the fit
    print(f"bank: {len(texts)} messages, {int(y.sum())} crisis; {args.negatives.name}: {len(seekers)} seeker "
          f"messages and their sentences, {len(everyday)} texts, as everyday negatives ({left_out} messages the "
          "patterns read as a risk left out)", flush=True)  # fmt: skip
    x_bank = embed(texts).astype(np.float64)
    x = np.concatenate([x_bank, embed(everyday).astype(np.float64)])
    target = np.concatenate([y, np.zeros(len(everyday), int)])
    # each class half; within none, the bank's negatives and the everyday texts half each
    n_pos, n_hard = int(y.sum()), int(len(y) - y.sum())
    weight = np.concatenate(
        [np.where(y == 1, 0.5 / n_pos, 0.25 / n_hard), np.full(len(everyday), 0.25 / max(len(everyday), 1))]
    )
    layers = fit_classifier(x, target, weight)
    crisis = np.flatnonzero(y == 1)

    def model(threshold: float, card: dict[str, Any] | None = None) -> SemanticRiskModel:
        return SemanticRiskModel(
            *layers, tuple(texts[i] for i in crisis),
            tuple(categories[i] for i in crisis), x_bank[crisis].astype(np.float32), threshold,
            embed, card or {},
        )  # fmt: skip

    check, _ = seeker_messages(args.check, patterns)
    embed(check)  # the whole messages in batches once; every threshold's pass below reuses them
    dev_patterns = pooled([evaluate_safety(p, detector=patterns) for p in args.dev])
    print(f"dev, patterns alone: {dev_patterns}; {args.check.name}: {len(check)} seeker messages the patterns pass")
    grid: dict[str, dict[str, float]] = {}
    for t in THRESHOLDS:
        detector = RiskDetector(semantic=model(t))
        row = pooled([evaluate_safety(p, detector=detector) for p in args.dev])
        # a message can only turn into a crisis through the reader (the patterns pass all of them)
        flagged = [m for m in check if detector.assess(m).level == "crisis"]
        row["everyday_crisis_rate"] = round(len(flagged) / max(len(check), 1), 4)
        grid[f"{t:g}"] = row
        print(f"dev, threshold {t:.2f}: {row}", flush=True)
    allowed = [t for t in THRESHOLDS if grid[f"{t:g}"]["everyday_crisis_rate"] <= MAX_EVERYDAY_RATE]
    if not allowed:
        raise SystemExit(f"no threshold keeps the everyday crisis rate at most {MAX_EVERYDAY_RATE}")
    threshold = max(allowed, key=lambda t: (grid[f"{t:g}"]["f1"], t))
    print(f"chosen threshold {threshold:g}")

    chosen = RiskDetector(semantic=model(threshold))

    def scored(paths: list[Path], kind: str) -> list[dict[str, Any]]:
        out = []
        for path in paths:
            row = {
                "data": relative(path),
                "patterns": summary(evaluate_safety(path, detector=patterns)),
                "patterns+meaning": summary(evaluate_safety(path, detector=chosen)),
            }
            for name in ("patterns", "patterns+meaning"):
                print(f"{kind} {path.name}, {name}: {row[name]}")
            out.append(row)
        return out

    blind, seen = scored(args.blind, "blind"), scored(args.seen, "seen")
    rel = [relative(p) for p in args.dev]
    card = {
        "description": "fusion.safety_semantic.SemanticRiskModel: one-hidden-layer classifier (256 GELU units; crisis "
        "vs none) over all-MiniLM-L6-v2 sentence embeddings (mean-pooled, L2-normalised), with the bank's crisis "
        "examples for the category vote and the explanation",
        "data": f"{args.bank.name}: {len(texts)} messages written for this project ({int(y.sum())} crisis in four "
        f"categories, the rest hard and everyday negatives; Apache-2.0 like the code) and {len(seekers)} ESConv "
        f"train seeker messages with their sentences ({len(everyday)} texts) as everyday negatives ({left_out} the "
        "patterns read as a risk left out; ESConv: CC BY-NC 4.0, academic research only)",
        "weights": "crisis 0.5; the bank's negatives 0.25; the ESConv texts 0.25",
        "fit": "fusion.safety_semantic.fit_classifier defaults: hidden 256, dropout 0.2, AdamW lr 1e-3, weight "
        "decay 1e-4, 1500 full-batch steps, seed 0",
        "selection": f"among the thresholds whose crisis rate over {len(check)} ESConv valid seeker messages the "
        f"patterns pass stays at most {MAX_EVERYDAY_RATE:g}, the one with the best crisis F1 of RiskDetector (patterns "
        f"+ this reader) over {', '.join(rel)} pooled (ties to the higher threshold)",
        "dev_patterns_alone": dev_patterns,
        "dev_grid": grid,
        "blind": blind,
        "seen": seen,
        "cpu_seconds": round(time.process_time() - started, 1),
        "command": "python scripts/train_safety_semantic.py",
    }
    path = model(threshold, card).save(args.out)
    print(f"-> {path}, {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
