"""The support-strategy planner: features, the decision rule, the Planner protocol, and the shipped head."""

from __future__ import annotations

import numpy as np
import pytest

from affectlens.labels import ESCONV_STRATEGIES
from fusion.strategy import (
    Message,
    StrategyConfig,
    StrategyHead,
    StrategyPlanner,
    context_features,
    decide,
    previous_supporter_turn,
)


def fake_embed(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic 8-wide bag-of-characters embeddings and a flat emotion distribution."""
    vecs = np.array([[t.count(c) for c in "aeiostnr"] for t in texts], np.float32) + 1e-3
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs, np.full((len(texts), 7), 1 / 7, np.float32)


DIALOGUE = [
    Message("usr", "I failed my exam"),
    Message("sys", "That sounds hard. What happened?", ("Question",)),
    Message("usr", "I did not study enough"),
]


def test_previous_supporter_turn_collects_consecutive_messages():
    dialogue = [*DIALOGUE[:2], Message("sys", "You are not alone.", ("Affirmation and Reassurance",)), DIALOGUE[2]]
    assert previous_supporter_turn(dialogue) == ("Affirmation and Reassurance", "Question")
    assert previous_supporter_turn(DIALOGUE[:1]) == ()


def test_features_encode_history_and_position():
    x = context_features([DIALOGUE, DIALOGUE[:1]], fake_embed)
    assert x.shape[0] == 2 and np.isfinite(x).all()
    assert not np.allclose(x[0], x[1])
    # the previous strategy's one-hot sits after the two embeddings and the emotion distribution
    offset = 8 + 7 + 8
    assert x[0, offset + ESCONV_STRATEGIES.index("Question")] == 1.0
    assert x[1, offset + len(ESCONV_STRATEGIES)] == 1.0  # no previous supporter message: "none"


def test_decide_discounts_repetition_and_combines_close_strategies():
    config = StrategyConfig(input_dim=1, repetition_penalty=2.0, combine_ratio=0.6, max_strategies=2)
    probs = np.zeros(len(ESCONV_STRATEGIES))
    probs[ESCONV_STRATEGIES.index("Question")] = 0.5
    probs[ESCONV_STRATEGIES.index("Reflection of feelings")] = 0.4
    plain = decide(probs, (), config)
    assert [s for s, _ in plain] == ["Question", "Reflection of feelings"]
    penalised = decide(probs, ("Question",), config)
    assert penalised[0][0] == "Reflection of feelings"  # 0.5 / 2 < 0.4
    assert [s for s, _ in decide(probs, (), StrategyConfig(input_dim=1, combine_ratio=0.9))] == ["Question"]


def test_planner_is_a_tree_planner_and_round_trips(tmp_path):
    x = context_features([DIALOGUE], fake_embed)
    head = StrategyHead(StrategyConfig(input_dim=x.shape[1], hidden=8))
    head.save_pretrained(tmp_path)
    again = StrategyHead.from_pretrained(tmp_path)
    assert np.allclose(head.probabilities(x), again.probabilities(x))
    planner = StrategyPlanner(again, fake_embed).with_context(DIALOGUE)
    plan = planner.plan(DIALOGUE)
    assert 1 <= len(plan) <= 2 and all(s in ESCONV_STRATEGIES and why and 0 <= p <= 1 for s, why, p in plan)
    from fusion.tree import Planner

    assert isinstance(planner, Planner)


@pytest.mark.weights
@pytest.mark.slow
def test_shipped_planner_plans_from_a_real_dialogue():
    import json
    from pathlib import Path

    from fusion.strategy import load_strategy_planner

    planner = load_strategy_planner()
    report = json.loads(
        (Path(__file__).resolve().parents[1] / "weights/strategy-planner/training_report.json").read_text()
    )
    assert report["planner"]["accuracy"] > report["majority_class"]["accuracy"] + 0.05
    assert report["planner"]["repetition_rate"] <= 0.30
    plan = planner.plan([Message("usr", "Hi, I have been feeling really anxious about losing my job.")])
    assert plan and all(s in ESCONV_STRATEGIES for s, _, _ in plan)
