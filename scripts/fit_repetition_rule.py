"""Fit the strategy planner's repetition rule without labels, on supporter dialogues its models never saw.

The planner's decision rule discounts the previous supporter turn's strategies (``repetition_penalty``) so that
it repeats a tactic about as rarely as people do (the issue's bound: at most 0.30 of turns). The training script
fits that penalty on ESConv valid; a planner refitted on train + valid (``--refit``) has no unseen labelled
dialogues left to fit it on, and a penalty fitted to other models' distributions does not carry over (v7 kept
v6's 1.4 and it cost 0.010 of test turn top-1).

Repetition needs no labels: it compares the planner's choice for a turn with the strategies of the previous
supporter turn, which the dialogue so far already holds. So this script fits the penalty on dialogues outside the
models' training data, by repetition alone: the smallest penalty of the training script's grid whose repetition
over the dialogues' supporter turns is at most 0.30 less two standard errors of a 0.30 rate over those turns
(the training script's bound), with the planner's own ``fresh_secondary``. The default data is ESConv's
``FailedESConv.json`` (196 dialogues the ESConv authors left out of the release for quality; strategy names of
the earlier annotation rounds are mapped, ``fusion.esconv.RAW_STRATEGIES``; any ESConv file ``read_dialogues``
reads works). The turns' own strategies are
scored for information (turn top-1 per penalty) and never used for the choice.

    python scripts/fit_repetition_rule.py                      # prints the grid and the choice
    python scripts/fit_repetition_rule.py --write              # also writes it into the planner's config.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from train_strategy_planner import PENALTIES, repetition_bound  # noqa: E402

from fusion.esconv import read_dialogues, score_turns, turn_examples  # noqa: E402
from fusion.strategy import StrategyPlanner, load_strategy_planner, previous_supporter_turn  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "esconv" / "FailedESConv.json"


def rule_grid(
    planner: StrategyPlanner, probs: np.ndarray, turns: list[Any], penalties: tuple[float, ...] = PENALTIES
) -> list[dict[str, Any]]:
    """Per penalty (the planner's ``fresh_secondary`` kept): repetition over ``turns`` (``TurnExample``s, all with
    a previous supporter turn) and, for information, their turn top-1."""
    config = planner.head.config
    kept = config.repetition_penalty
    dialogues = [t.dialogue for t in turns]
    grid = []
    try:
        for penalty in penalties:
            config.repetition_penalty = penalty
            chosen = [[s for s, _ in d] for d in planner.decisions(probs, dialogues)]
            scores = score_turns(chosen, turns)
            grid.append(
                {
                    "penalty": penalty,
                    "repetition_rate": scores["repetition_rate"],
                    "turn_top1_accuracy": scores["turn_top1_accuracy"],
                }
            )
    finally:
        config.repetition_penalty = kept
    return grid


def choose_penalty(grid: list[dict[str, Any]], bound: float) -> float:
    """The smallest penalty whose repetition is at most ``bound`` (labels play no part); the largest when none is."""
    ok = [g["penalty"] for g in grid if g["repetition_rate"] <= bound]
    return min(ok) if ok else max(g["penalty"] for g in grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--planner", type=Path, default=REPO / "weights" / "strategy-planner")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dialogues the planner never trained on")
    parser.add_argument("--write", action="store_true", help="write the chosen penalty into the planner's config")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.time()
    planner = load_strategy_planner(args.planner)
    turns = [t for t in turn_examples(read_dialogues(args.data)) if previous_supporter_turn(t.dialogue)]
    if not turns:
        parser.error(f"{args.data}: no supporter turn after an earlier supporter turn")
    probs = planner.batched_probabilities([t.dialogue for t in turns])
    grid = rule_grid(planner, probs, turns)
    bound = repetition_bound(len(turns))
    penalty = choose_penalty(grid, bound)
    config = planner.head.config
    record = {
        "data": str(args.data.resolve().relative_to(REPO.parent))
        if args.data.resolve().is_relative_to(REPO.parent)
        else str(args.data),
        "turns": len(turns),
        "bound": round(bound, 4),
        "fresh_secondary": config.fresh_secondary,
        "previous_penalty": config.repetition_penalty,
        "penalty": penalty,
        "grid": grid,
        "seconds": round(time.time() - started, 1),
        "command": " ".join(["python scripts/fit_repetition_rule.py", *sys.argv[1:]]),
    }
    print(json.dumps(record, indent=1))
    if args.write:
        path = args.planner / "config.json"
        raw = json.loads(path.read_text())
        raw["repetition_penalty"] = penalty
        raw.setdefault("metrics", {})["repetition_rule"] = {k: v for k, v in record.items() if k != "seconds"}
        path.write_text(json.dumps(raw, indent=2) + "\n")
        print(f"repetition_penalty {config.repetition_penalty} -> {penalty} written to {path}")
        print(
            "a shipped planner's config.json has a sha256 in weights/manifest.toml: update it (affectlens weights verify)"
        )


if __name__ == "__main__":
    main()
