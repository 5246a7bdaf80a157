"""Fit the strategy planner's repetition rule without labels, on supporter dialogues its models never saw.

The planner's decision rule discounts the previous supporter turn's strategies so that it repeats a tactic about as
rarely as people do (the issue's bound: at most 0.30 of turns): by a margin subtracted from their probabilities
(``--rule margin``, ``repetition_margin``, the shipped rule since 2026-11-28) or by a factor dividing them
(``--rule penalty``, ``repetition_penalty``). The training script fits a penalty on ESConv valid; a planner
refitted on train + valid (``--refit``) has no unseen labelled dialogues left to fit it on, and a penalty fitted to
other models' distributions does not carry over (v7 kept v6's 1.4 and it cost 0.010 of test turn top-1).

Repetition needs no labels: it compares the planner's choice for a turn with the strategies of the previous
supporter turn, which the dialogue so far already holds. So this script fits the rule on dialogues outside the
models' training data, by repetition alone: the smallest setting of its grid (margins 0-0.30 in steps of 0.01, or
the training script's penalties) whose repetition over the dialogues' supporter turns is at most 0.30 less two
standard errors of a 0.30 rate over those turns (the training script's bound), with the planner's own
``fresh_secondary``. The default data is ESConv's
``FailedESConv.json`` (196 dialogues the ESConv authors left out of the release for quality; strategy names of
the earlier annotation rounds are mapped, ``fusion.esconv.RAW_STRATEGIES``; any ESConv file ``read_dialogues``
reads works). The turns' own strategies are scored for information (turn top-1 per setting) and never used for the
choice.

    python scripts/fit_repetition_rule.py                      # the margin: prints the grid and the choice
    python scripts/fit_repetition_rule.py --rule penalty       # the ratio rule instead
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


#: the margins tried (``--rule margin``)
MARGINS: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(31))
#: the planner setting each rule fits, and the value of each setting that switches its rule off
RULES: dict[str, str] = {"margin": "repetition_margin", "penalty": "repetition_penalty"}
OFF: dict[str, float] = {"repetition_margin": 0.0, "repetition_penalty": 1.0}


def rule_grid(
    planner: StrategyPlanner,
    probs: np.ndarray,
    turns: list[Any],
    settings: tuple[float, ...] = PENALTIES,
    rule: str = "penalty",
) -> list[dict[str, Any]]:
    """Per value in ``settings`` of ``rule``'s setting (the other rule switched off, the planner's
    ``fresh_secondary`` kept): repetition over ``turns`` (``TurnExample``s, all with a previous supporter turn)
    and, for information, their turn top-1. The planner's own settings are restored afterwards."""
    config = planner.head.config
    kept = {name: getattr(config, name) for name in OFF}
    dialogues = [t.dialogue for t in turns]
    grid = []
    try:
        for name, value in OFF.items():
            setattr(config, name, value)
        for value in settings:
            setattr(config, RULES[rule], value)
            chosen = [[s for s, _ in d] for d in planner.decisions(probs, dialogues)]
            scores = score_turns(chosen, turns)
            grid.append(
                {
                    "setting": value,
                    "repetition_rate": scores["repetition_rate"],
                    "turn_top1_accuracy": scores["turn_top1_accuracy"],
                }
            )
    finally:
        for name, value in kept.items():
            setattr(config, name, value)
    return grid


def choose_setting(grid: list[dict[str, Any]], bound: float) -> float:
    """The smallest setting whose repetition is at most ``bound`` (labels play no part); the largest when none is."""
    ok = [g["setting"] for g in grid if g["repetition_rate"] <= bound]
    return min(ok) if ok else max(g["setting"] for g in grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--planner", type=Path, default=REPO / "weights" / "strategy-planner")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dialogues the planner never trained on")
    parser.add_argument("--rule", choices=tuple(RULES), default="margin", help="the margin (shipped) or the ratio")
    parser.add_argument("--write", action="store_true", help="write the chosen rule into the planner's config")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.time()
    planner = load_strategy_planner(args.planner)
    turns = [t for t in turn_examples(read_dialogues(args.data)) if previous_supporter_turn(t.dialogue)]
    if not turns:
        parser.error(f"{args.data}: no supporter turn after an earlier supporter turn")
    probs = planner.batched_probabilities([t.dialogue for t in turns])
    grid = rule_grid(planner, probs, turns, MARGINS if args.rule == "margin" else PENALTIES, args.rule)
    bound = repetition_bound(len(turns))
    value = choose_setting(grid, bound)
    config = planner.head.config
    chosen = {**OFF, RULES[args.rule]: value}
    record = {
        "data": str(args.data.resolve().relative_to(REPO.parent))
        if args.data.resolve().is_relative_to(REPO.parent)
        else str(args.data),
        "turns": len(turns),
        "bound": round(bound, 4),
        "rule": args.rule,
        "fresh_secondary": config.fresh_secondary,
        "previous": {name: getattr(config, name) for name in OFF},
        "chosen": chosen,
        "grid": grid,
        "seconds": round(time.time() - started, 1),
        "command": " ".join(["python scripts/fit_repetition_rule.py", *sys.argv[1:]]),
    }
    print(json.dumps(record, indent=1))
    if args.write:
        path = args.planner / "config.json"
        raw = json.loads(path.read_text())
        raw.update(chosen)
        raw.setdefault("metrics", {})["repetition_rule"] = {k: v for k, v in record.items() if k != "seconds"}
        path.write_text(json.dumps(raw, indent=2) + "\n")
        print(f"{record['previous']} -> {chosen} written to {path}")
        print(
            "a shipped planner's config.json has a sha256 in weights/manifest.toml: update it (affectlens weights verify)"
        )


if __name__ == "__main__":
    main()
