"""Train the support-strategy planner on ESConv and compare it with the majority class and the LM choosing alone.

Data: ``../shared/data/esconv/{train,valid,test}.jsonl`` (standard split). Every supporter message with a strategy
after the seeker has spoken is one example: the dialogue before it -> its strategy. Features:
``fusion.strategy.context_features`` (text-emotion network embeddings, cached under ``--cache``).

1. ``StrategyHead`` (MLP) on train, Adam, the epoch with the best valid accuracy kept.
2. ``repetition_penalty``: the largest valid accuracy whose cross-turn repetition (the first message of a supporter
   turn re-using a strategy of the previous supporter turn) stays at most 0.30.
3. Test: top-1 accuracy and macro-F1 over supporter messages, predicted vs reference strategy distribution,
   repetition rate (planner and the human references), against the majority class (from train) and SmolLM2
   choosing alone (next-token scores over the strategy names, zero-shot, on ``--lm-limit`` test messages).

    python scripts/train_strategy_planner.py   # writes weights/strategy-planner/ and its training_report.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affectlens.labels import ESCONV_STRATEGIES  # noqa: E402
from fusion.esconv import StrategyExample, load_split, repetition_rate, score_strategies  # noqa: E402
from fusion.strategy import (  # noqa: E402
    StrategyConfig,
    StrategyHead,
    context_features,
    decide,
    previous_supporter_turn,
    text_embedder,
)

logger = logging.getLogger("train_strategy_planner")
DATA = REPO.parent / "shared" / "data" / "esconv"
FEATURE_VERSION = "strategy-features v1"


def features(split: str, examples: list[StrategyExample], embed: Any, cache: Path, key: str) -> np.ndarray:
    path = cache / f"{split}-{key}.npy"
    if path.is_file():
        return np.load(path)
    t0 = time.time()
    x = np.concatenate(
        [context_features([e.dialogue for e in examples[i : i + 512]], embed) for i in range(0, len(examples), 512)]
    )
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    logger.info("%s: %d examples, features in %.0f s", split, len(examples), time.time() - t0)
    return x


def train_head(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, args: argparse.Namespace) -> StrategyHead:
    torch.manual_seed(args.seed)
    head = StrategyHead(StrategyConfig(input_dim=x.shape[1], hidden=args.hidden, dropout=args.dropout))
    head.set_standardisation(x)
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, 0, {})
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        head.train()
        for idx in torch.randperm(len(xt), generator=gen).split(128):
            loss = torch.nn.functional.cross_entropy(head(xt[idx]), yt[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = float((head.probabilities(xv).argmax(1) == yv).mean())
        logger.info("epoch %d: valid accuracy %.4f", epoch + 1, acc)
        if acc > best[0]:
            best = (acc, epoch + 1, {k: v.clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best[2])
    head.config.metrics["kept_epoch"] = best[1]
    return head.eval()


def lm_alone(examples: list[StrategyExample], limit: int) -> tuple[list[list[str]], list[int]]:
    """SmolLM2 picks the strategy zero-shot: next-token scores over the strategy names after a description."""
    from affectlens.registry import create_language_model

    lm = create_language_model()
    names = list(ESCONV_STRATEGIES)
    ids = lm.label_token_ids(names)
    rows = np.random.default_rng(0).permutation(len(examples))[:limit]
    chosen = []
    for i in rows:
        dialogue = examples[i].dialogue[-6:]
        lines = "\n".join(f"{'Seeker' if m.speaker == 'usr' else 'Supporter'}: {m.text}" for m in dialogue)
        prompt = (
            "You are an emotional supporter. The support strategies are: " + "; ".join(names) + ".\n"
            f"Conversation:\n{lines}\nWhich strategy should the supporter use next? Answer with the strategy name only."
        )
        scores = lm.score_next(prompt, ids)
        chosen.append([names[int(torch.as_tensor(scores).argmax())]])
    return chosen, rows.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "weights" / "strategy-planner")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "affectlens" / "train" / "strategy")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--lm-limit", type=int, default=400, help="test messages the LM-alone baseline scores")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0, cpu0 = time.time(), time.process_time()

    from affectlens import weights
    from affectlens.registry import create_text_emotion

    text_model = create_text_emotion()
    embed = text_embedder(text_model)
    key = hashlib.sha256(
        (
            FEATURE_VERSION + json.dumps(sorted(weights.locate_group("text-emotion-minilm-goemotions").files.values()))
        ).encode()
    ).hexdigest()[:12]
    splits = {s: load_split(DATA / f"{s}.jsonl") for s in ("train", "valid", "test")}
    x = {s: features(s, ex, embed, args.cache, key) for s, ex in splits.items()}
    y = {s: np.array([ESCONV_STRATEGIES.index(e.strategy) for e in ex]) for s, ex in splits.items()}
    head = train_head(x["train"], y["train"], x["valid"], y["valid"], args)

    probs = {s: head.probabilities(x[s]) for s in ("valid", "test")}
    grid = []
    for penalty in (1.0, 1.25, 1.5, 2.0, 3.0, 5.0):
        head.config.repetition_penalty = penalty
        chosen = [
            [s for s, _ in decide(p, previous_supporter_turn(e.dialogue), head.config)]
            for p, e in zip(probs["valid"], splits["valid"], strict=True)
        ]
        r = score_strategies(chosen, splits["valid"])
        grid.append({"penalty": penalty, "accuracy": r["accuracy"], "repetition_rate": r["repetition_rate"]})
    ok = [g for g in grid if g["repetition_rate"] <= 0.30] or [min(grid, key=lambda g: g["repetition_rate"])]
    head.config.repetition_penalty = max(ok, key=lambda g: (g["accuracy"], -g["penalty"]))["penalty"]
    logger.info("repetition penalty grid on valid: %s -> %s", grid, head.config.repetition_penalty)

    test = splits["test"]
    planner_chosen = [
        [s for s, _ in decide(p, previous_supporter_turn(e.dialogue), head.config)]
        for p, e in zip(probs["test"], test, strict=True)
    ]
    counts = np.bincount(y["train"], minlength=len(ESCONV_STRATEGIES))
    majority = ESCONV_STRATEGIES[int(counts.argmax())]
    report: dict[str, Any] = {
        "data": {s: len(ex) for s, ex in splits.items()},
        "planner": score_strategies(planner_chosen, test),
        "planner_without_penalty": score_strategies(
            [[ESCONV_STRATEGIES[int(p.argmax())]] for p in probs["test"]], test
        ),
        "majority_class": {**score_strategies([[majority]] * len(test), test), "strategy": majority},
        "human_references": {
            "repetition_rate": round(repetition_rate([[e.strategy] for e in test], test), 4),
            "distribution": {s: round(float((y["test"] == i).mean()), 4) for i, s in enumerate(ESCONV_STRATEGIES)},
        },
        "repetition_penalty_grid_valid": grid,
    }
    if args.lm_limit:
        lm_chosen, rows = lm_alone(test, args.lm_limit)
        report["lm_alone"] = {
            **score_strategies(lm_chosen, [test[i] for i in rows]),
            "model": "smollm2-135m-instruct, zero-shot",
        }
        report["planner_on_lm_subset"] = score_strategies([planner_chosen[i] for i in rows], [test[i] for i in rows])
    head.config.metrics.update(
        {"test_accuracy": report["planner"]["accuracy"], "test_repetition_rate": report["planner"]["repetition_rate"]}
    )
    report["training"] = {
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "wall_seconds": round(time.time() - t0, 1),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    head.save_pretrained(args.out)
    (args.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("repetition_penalty_grid_valid",)}, indent=2)[:4000])


if __name__ == "__main__":
    main()
