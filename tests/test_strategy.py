"""The support-strategy planner: features, the decision rule, the Planner protocol, and the shipped head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectlens.labels import CANONICAL_EMOTIONS, ESCONV_STRATEGIES
from fusion.affect_state import DOMINANCE, AffectObservation, AffectTracker
from fusion.strategy import (
    FeatureSpec,
    Message,
    StrategyConfig,
    StrategyHead,
    StrategyPlanner,
    affect_features,
    context_features,
    decide,
    hashed_ngrams,
    history_features,
    previous_supporter_turn,
    tree_reading,
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


def fake_sentence(texts: list[str]) -> np.ndarray:
    """Deterministic 3-wide "sentence embeddings": length, words, question marks."""
    return np.array([[len(t), len(t.split()), t.count("?")] for t in texts], np.float32)


def test_hashed_ngrams_are_stable_binary_words_and_bigrams():
    import zlib

    x = hashed_ngrams("Thank you!", 1000)
    grams = ["thank", "you", "!", "<s> thank", "thank you", "you !"]
    assert set(np.flatnonzero(x)) == {zlib.crc32(g.encode()) % 1000 for g in grams}
    assert x.dtype == np.float32 and set(np.unique(x)) == {0.0, 1.0}
    assert np.array_equal(hashed_ngrams("thank YOU !", 1000), x)  # lower-cased, spacing ignored
    assert not hashed_ngrams("", 16).any()


def test_history_features_by_hand():
    dialogue = [
        *DIALOGUE[:2],
        Message("sys", "You are not alone.", ("Affirmation and Reassurance",)),
        Message("usr", "Thanks. What should I do?"),
        Message("sys", "Try a study plan.", ("Providing Suggestions",)),
        Message("usr", "ok"),
        Message("usr", "I will try"),
    ]
    h = history_features(dialogue)
    n = len(ESCONV_STRATEGIES)
    assert h.shape == (2 * n + n + 1 + 6,)
    share, previous, third, shape = h[:n], h[n : 2 * n], h[2 * n : 3 * n + 1], h[3 * n + 1 :]
    for s in ("Question", "Affirmation and Reassurance", "Providing Suggestions"):
        assert share[ESCONV_STRATEGIES.index(s)] == pytest.approx(1 / 3)
    assert np.flatnonzero(previous).tolist() == [ESCONV_STRATEGIES.index("Providing Suggestions")]
    assert np.flatnonzero(third).tolist() == [ESCONV_STRATEGIES.index("Question")]
    assert shape == pytest.approx([np.log1p(3) / 4, 0.0, 2 / 4, np.log1p(4) / 4, 0.0, 1.0])
    empty = history_features([Message("usr", "Why me?")])
    assert not empty[: 2 * n].any() and empty[3 * n] == 1.0  # no third-last strategy: "none"
    assert empty[3 * n + 1 :] == pytest.approx([np.log1p(2) / 4, 1.0, 1 / 4, 0.0, 0.0, 0.0])


def test_feature_blocks_follow_the_spec():
    base = context_features([DIALOGUE], fake_embed)
    spec = FeatureSpec(hash_buckets=16, sentence=True, history=True)
    x = context_features([DIALOGUE, DIALOGUE[:1]], fake_embed, spec, fake_sentence)
    n = len(ESCONV_STRATEGIES)
    assert x.shape == (2, base.shape[1] + 3 * 3 + (3 * n + 1 + 6) + 2 * 16)
    assert np.allclose(x[0, : base.shape[1]], base[0])  # the base block first, unchanged
    d = base.shape[1]
    context = "Seeker: I failed my exam Supporter: That sounds hard. What happened? Seeker: I did not study enough"
    assert (
        x[0, d : d + 9].tolist()
        == fake_sentence(["I did not study enough", DIALOGUE[1].text, context]).ravel().tolist()
    )
    assert not x[1, d + 3 : d + 6].any()  # no supporter message yet: zeros
    assert np.array_equal(x[0, -32:-16], hashed_ngrams("I did not study enough", 16))
    assert np.array_equal(x[0, -16:], hashed_ngrams(DIALOGUE[1].text, 16))
    with pytest.raises(ValueError, match="sentence embedder"):
        context_features([DIALOGUE], fake_embed, spec)


def test_planner_with_feature_blocks_and_an_ensemble_round_trips(tmp_path):
    spec = FeatureSpec(hash_buckets=8, sentence=True, history=True)
    x = context_features([DIALOGUE, DIALOGUE[:1]], fake_embed, spec, fake_sentence)
    features = {"hash_buckets": 8, "sentence": True, "history": True}
    heads = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        head = StrategyHead(StrategyConfig(input_dim=x.shape[1], hidden=8, features=features))
        head.set_standardisation(x)
        heads.append(head)
    assert torch.all(heads[0].mean[-16:] == 0) and torch.all(heads[0].std[-16:] == 1)  # n-gram columns left raw
    both = StrategyHead.ensemble(heads)
    assert both.config.members == 2 and both.config.spec == spec
    assert np.allclose(both.probabilities(x), (heads[0].probabilities(x) + heads[1].probabilities(x)) / 2, atol=1e-6)
    both.save_pretrained(tmp_path)
    again = StrategyHead.from_pretrained(tmp_path)
    assert np.allclose(again.probabilities(x), both.probabilities(x))
    planner = StrategyPlanner(again, fake_embed, sentence_embed=fake_sentence).with_context(DIALOGUE)
    assert planner.sentence_embed is fake_sentence
    assert np.allclose(planner.features([DIALOGUE]), x[:1])
    assert [s for s, _, _ in planner.plan(DIALOGUE)] == [s for s, _ in planner.choose([DIALOGUE])[0]]


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


def test_margin_moves_the_turns_whose_repeat_is_least_ahead():
    """The ratio moves a turn off a repeated strategy by how many *times* more likely it is, the margin by how much
    more probability it has: a weak lead (0.20 against 0.14) goes first under the margin, a strong one (0.60 against
    0.45) under the ratio."""
    weak, strong = np.zeros(len(ESCONV_STRATEGIES)), np.zeros(len(ESCONV_STRATEGIES))
    weak[ESCONV_STRATEGIES.index("Question")], weak[ESCONV_STRATEGIES.index("Others")] = 0.20, 0.14
    strong[ESCONV_STRATEGIES.index("Question")], strong[ESCONV_STRATEGIES.index("Others")] = 0.60, 0.45
    ratio = StrategyConfig(input_dim=1, repetition_penalty=1.4, max_strategies=1)
    margin = StrategyConfig(input_dim=1, repetition_margin=0.1, max_strategies=1)
    previous = ("Question",)
    assert [decide(p, previous, ratio)[0][0] for p in (weak, strong)] == ["Question", "Others"]  # 0.143 > 0.14
    assert [decide(p, previous, margin)[0][0] for p in (weak, strong)] == ["Others", "Question"]  # 0.50 > 0.45
    assert decide(weak, (), margin)[0] == ("Question", pytest.approx(0.20))  # no previous turn: untouched
    # a repeat that stays first: the second strategy is measured against its discounted score, as with the ratio
    lead = np.zeros(len(ESCONV_STRATEGIES))
    lead[ESCONV_STRATEGIES.index("Question")], lead[ESCONV_STRATEGIES.index("Others")] = 0.50, 0.26
    both = decide(lead, previous, StrategyConfig(input_dim=1, repetition_margin=0.1, combine_ratio=0.6))
    assert both == [("Question", pytest.approx(0.50)), ("Others", pytest.approx(0.26))]  # 0.26 >= 0.6 * (0.50 - 0.1)


def test_fresh_secondary_never_adds_a_strategy_of_the_previous_turn():
    probs = np.zeros(len(ESCONV_STRATEGIES))
    for name, p in (("Question", 0.40), ("Reflection of feelings", 0.35), ("Others", 0.25)):
        probs[ESCONV_STRATEGIES.index(name)] = p
    config = StrategyConfig(input_dim=1, repetition_penalty=1.0, combine_ratio=0.6, max_strategies=2)
    previous = ("Reflection of feelings",)
    assert [s for s, _ in decide(probs, previous, config)] == ["Question", "Reflection of feelings"]
    config.fresh_secondary = True  # the repeat is skipped; the next one within the ratio (0.25 >= 0.6 * 0.40) comes in
    assert [s for s, _ in decide(probs, previous, config)] == ["Question", "Others"]
    config.combine_ratio = 0.7  # nothing fresh is close enough: one strategy
    assert [s for s, _ in decide(probs, previous, config)] == ["Question"]
    # the first choice may still repeat the previous turn when it clearly fits
    assert decide(probs, ("Question",), config)[0][0] == "Question"


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
    # the encoder the config mixes in is loaded, and its weight is the one the training chose on valid
    assert (planner.encoder is not None) == (planner.head.config.encoder_weight > 0)
    if report.get("encoder"):
        assert planner.head.config.encoder_weight == report["encoder"]["encoder_weight"]
    plan = planner.plan([Message("usr", "Hi, I have been feeling really anxious about losing my job.")])
    assert plan and all(s in ESCONV_STRATEGIES for s, _, _ in plan)


def emotion_embed(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``fake_embed``'s vectors; the emotion: sadness for "exam" or "study", else neutral."""
    vecs, _ = fake_embed(texts)
    probs = np.zeros((len(texts), len(CANONICAL_EMOTIONS)), np.float32)
    for i, t in enumerate(texts):
        probs[i, CANONICAL_EMOTIONS.index("sadness" if "exam" in t or "study" in t else "neutral")] = 1.0
    return vecs, probs


def test_affect_features_follow_the_tracker_by_hand():
    assert not affect_features([]).any()
    sad = np.eye(len(CANONICAL_EMOTIONS), dtype=np.float32)[CANONICAL_EMOTIONS.index("sadness")]
    one = affect_features([sad])
    # the first reading sets the state: sadness's circumplex position, its dominance, no step yet
    assert np.allclose(one, [-0.7, -0.4, DOMINANCE["sadness"], 0, 0, 0], atol=1e-6)
    neutral = np.eye(len(CANONICAL_EMOTIONS), dtype=np.float32)[0]
    two = affect_features([sad, neutral])
    tracker = AffectTracker()
    tracker.update("u", AffectObservation(-0.7, -0.4, DOMINANCE["sadness"], 1.0, 0))
    state = tracker.update("u", AffectObservation(0.0, 0.0, 0.0, 1.0, 1))
    assert np.allclose(two, [state.valence, state.arousal, state.dominance, *state.velocity], atol=1e-6)
    assert -0.7 < two[0] < 0.0 and two[3] > 0  # inertia: part way back towards neutral, moving up


def test_affect_block_reads_every_seeker_message_and_the_tree_reading():
    spec = FeatureSpec(affect=True)
    base = context_features([DIALOGUE], emotion_embed)
    x = context_features([DIALOGUE], emotion_embed, spec)
    assert x.shape == (1, base.shape[1] + 6) and np.allclose(x[0, : base.shape[1]], base[0])
    sad = np.eye(len(CANONICAL_EMOTIONS), dtype=np.float32)[CANONICAL_EMOTIONS.index("sadness")]
    assert np.allclose(x[0, -6:], affect_features([sad, sad]))  # both seeker messages are about the exam
    happy = np.eye(len(CANONICAL_EMOTIONS), dtype=np.float32)[CANONICAL_EMOTIONS.index("happiness")]
    y = context_features([DIALOGUE], emotion_embed, spec, readings=[happy])
    assert np.allclose(y[0, -6:], affect_features([sad, happy]))  # the tree's reading replaces the last message's
    emotion = slice(8, 8 + len(CANONICAL_EMOTIONS))  # after the seeker's 8-wide embedding: their emotion
    assert np.allclose(y[0, emotion], happy) and np.allclose(x[0, emotion], sad)
    # without the affect block the reading is ignored: the head was not trained to read it
    assert np.allclose(context_features([DIALOGUE], emotion_embed, readings=[happy]), base)


def test_planner_plans_from_the_tree_reading():
    from affectlens.tree import TreeNode

    x = context_features([DIALOGUE], emotion_embed, FeatureSpec(affect=True))
    head = StrategyHead(StrategyConfig(input_dim=x.shape[1], hidden=8, features={"affect": True}))
    planner = StrategyPlanner(head, emotion_embed).with_context(DIALOGUE)

    class Tree:  # the one part of an AffectTree the planner reads when it has a dialogue
        emotion = TreeNode("emotion", {"probabilities": {"happiness": 0.5, "neutral": 0.5}}, 0.5)

    reading = tree_reading(Tree())  # type: ignore[arg-type]
    assert reading is not None and np.allclose(reading[[0, 1]], [0.5, 0.5])
    expected = head.probabilities(context_features([DIALOGUE], emotion_embed, head.config.spec, readings=[reading]))
    assert planner(Tree())[0][2] == pytest.approx(float(expected[0].max()))  # type: ignore[arg-type]
    plain = head.probabilities(x)
    assert not np.allclose(plain, expected)  # the reading changed the plan's inputs


def test_tree_reading_without_an_emotion_is_none():
    from affectlens.tree import TreeNode

    class Tree:
        emotion = TreeNode("emotion", {"probabilities": None}, 0.0)

    assert tree_reading(Tree()) is None  # type: ignore[arg-type]


def test_combiner_cross_validation_finds_the_model_that_knows():
    """``scripts/train_strategy_planner.py --combiner-cv``: with one model that always ranks a strategy of the turn
    first and one that guesses, both the cross-validated weight grid and the learned combiner follow the first."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from train_strategy_planner import combiner_cv, softmax_regression

    rng = np.random.default_rng(0)
    n, k = 400, len(ESCONV_STRATEGIES)
    truth = rng.integers(0, k, n)
    sets = np.eye(k, dtype=bool)[truth] | (rng.random((n, k)) < 0.1)
    knows = np.full((n, k), 0.5 / (k - 1))
    knows[np.arange(n), truth] = 0.5
    guesses = rng.dirichlet(np.ones(k), n)
    report = combiner_cv({"guesses": guesses, "knows": knows}, sets, groups=np.arange(n) // 8)
    assert report["grid_best_in_sample"] == 1.0
    assert report["grid_cross_validated"] == 1.0
    assert min(report["learned_cross_validated_by_l2"].values()) > 0.95
    shares = sets / sets.sum(1, keepdims=True)
    logits = softmax_regression(np.log(knows), shares, 0.01)(np.log(knows))
    assert (logits.argmax(1) == truth).mean() == 1.0


def test_refit_takes_the_planners_choices_and_never_reads_valid(tmp_path):
    """``scripts/train_strategy_planner.py --refit FOLDER``: the choices come from FOLDER's planner (each MLP member's
    kept epoch, the encoder's schedule and kept epoch, the mix, the repetition rule), and a fixed-epoch member trains
    exactly that many epochs, keeps the last and never scores valid (here an index valid does not have)."""
    import argparse
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from train_strategy_planner import Refit, end_epoch, train_head

    config = StrategyConfig(
        input_dim=6, hidden=8, repetition_penalty=1.4, fresh_secondary=True, encoder_weight=0.5, repetition_margin=0.07
    )
    config.metrics = {"kept_epochs": [2, 5]}
    StrategyHead(config).save_pretrained(tmp_path)
    (tmp_path / "encoder.json").write_text(json.dumps({"training": {"epochs": 3, "kept_epoch": 3}}))
    refit = Refit.read(tmp_path)
    assert refit.mlp_epochs == (2, 5) and refit.encoder_epochs == (3, 3) and refit.reader_epochs is None
    assert (refit.encoder_weight, refit.lm_reader_weight) == (0.5, 0.0)
    assert (refit.repetition_penalty, refit.fresh_secondary, refit.repetition_margin) == (1.4, True, 0.07)
    assert "train + valid" in refit.training_note((3, 2)) and "epoch 2 kept" in refit.training_note((3, 2))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    targets = np.eye(len(ESCONV_STRATEGIES), dtype=np.float32)[rng.integers(0, len(ESCONV_STRATEGIES), 64)]
    args = argparse.Namespace(epochs=12, hidden=8, dropout=0.1, lr=1e-2, weight_decay=0.0)
    never = np.array([10**6])  # a valid row that does not exist: scoring valid would raise
    head = train_head(x, targets, x[:0], never, np.zeros((1, len(ESCONV_STRATEGIES)), bool), {}, 0, args, 2)
    assert head.config.metrics["kept_epoch"] == 2
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    history: list[dict[str, float]] = []
    best = end_epoch("m", 0, 1, None, np.zeros((0, 2), bool), 0.5, 0.0, history, (0.9, {}), model)
    assert "valid_turn_top1" not in history[0] and torch.equal(best[1]["weight"], model.weight)


def test_raw_esconv_reader_maps_speakers_and_old_strategy_names(tmp_path):
    """``fusion.esconv.read_dialogues`` on ESConv's original release (FailedESConv.json's format: one JSON list)."""
    import json

    from affectlens.errors import MediaError
    from fusion.esconv import read_dialogues, turn_examples

    raw = [
        {
            "dialog": [
                {"speaker": "listener", "annotation": {"strategy": "Other"}, "content": "hi\n"},
                {"speaker": "speaker", "annotation": {"feedback": "4"}, "content": "I lost my job\n"},
                {"speaker": "listener", "annotation": {"strategy": "Questions"}, "content": "What happened?"},
                {"speaker": "listener", "annotation": {"strategy": "Direct Guidance"}, "content": "Call them."},
                {"speaker": "speaker", "annotation": {}, "content": "They let me go"},
                {"speaker": "listener", "annotation": {"strategy": "No Such Strategy"}, "content": "Hm."},
            ]
        }
    ]
    path = tmp_path / "FailedESConv.json"
    path.write_text(json.dumps(raw))
    (dialogue,) = read_dialogues(path)
    assert [m.speaker for m in dialogue] == ["sys", "usr", "sys", "sys", "usr", "sys"]
    assert [m.strategies for m in dialogue] == [
        ("Others",),
        (),
        ("Question",),
        ("Providing Suggestions",),
        (),
        ("No Such Strategy",),
    ]
    assert dialogue[0].text == "hi"
    # the unknown strategy drops the last turn; the first turn combines two strategies
    assert [t.strategies for t in turn_examples([dialogue])] == [("Question", "Providing Suggestions")]
    path.write_text(json.dumps([{"dialog": []}, {"situation": "no dialog"}]))
    with pytest.raises(MediaError, match=r"FailedESConv\.json: dialogue 2: not an ESConv dialogue"):
        read_dialogues(path)
    path.write_text(json.dumps([{"dialog": [{"speaker": "robot", "content": "x"}]}]))
    with pytest.raises(MediaError, match="dialogue 1, dialog entry 1: speaker 'robot' is not one of usr, sys"):
        read_dialogues(path)
    path.write_text('[{"dialog": [}]')
    with pytest.raises(MediaError, match="not JSON"):
        read_dialogues(path)


def test_repetition_rule_is_fitted_from_repetition_alone():
    """``scripts/fit_repetition_rule.py``: the smallest setting (a penalty, or a margin) whose repetition over unseen
    dialogues stays under the bound; the turns' own strategies never change the choice."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from fit_repetition_rule import choose_setting, repetition_bound, rule_grid

    from fusion.esconv import TurnExample

    assert repetition_bound(2100) == pytest.approx(0.30 - 2 * (0.21 / 2100) ** 0.5)
    # every turn follows a Question turn; the planner leans to Question by 0.40 against 0.30
    probs = np.zeros((100, len(ESCONV_STRATEGIES)))
    probs[:, ESCONV_STRATEGIES.index("Question")] = 0.40
    probs[:, ESCONV_STRATEGIES.index("Reflection of feelings")] = 0.30
    probs[:, ESCONV_STRATEGIES.index("Others")] = 0.30
    probs[:50, ESCONV_STRATEGIES.index("Question")] = 0.60  # half the turns lean far more
    context = (*DIALOGUE, Message("sys", "Tell me more?", ("Question",)), Message("usr", "ok"))
    head = StrategyHead(StrategyConfig(input_dim=1, combine_ratio=0.99, fresh_secondary=True, repetition_margin=0.2))
    planner = StrategyPlanner(head, fake_embed)

    def grid_for(labels: str, rule: str = "penalty", settings: tuple[float, ...] = (1.0, 1.2, 1.5, 2.5)) -> list[dict]:
        turns = [TurnExample(context, (labels,)) for _ in range(100)]
        return rule_grid(planner, probs, turns, settings, rule)

    grid = grid_for("Question")
    assert [g["repetition_rate"] for g in grid] == [1.0, 1.0, 0.5, 0.0]  # 0.40/1.5 < 0.30; 0.60/2.5 < 0.30
    assert choose_setting(grid, 0.6) == 1.5 and choose_setting(grid, 0.2) == 2.5
    assert choose_setting(grid, -1.0) == 2.5  # nothing under the bound: the largest
    other = grid_for("Others")  # other labels: other accuracy, the same repetition, the same choice
    assert [g["turn_top1_accuracy"] for g in other] != [g["turn_top1_accuracy"] for g in grid]
    assert [g["repetition_rate"] for g in other] == [g["repetition_rate"] for g in grid]
    assert choose_setting(other, 0.6) == 1.5
    margins = grid_for("Question", "margin", (0.0, 0.05, 0.15, 0.35))  # the planner's own margin 0.2 set aside
    assert [g["repetition_rate"] for g in margins] == [1.0, 1.0, 0.5, 0.0]  # 0.40 - 0.15 < 0.30; 0.60 - 0.35 < 0.30
    assert choose_setting(margins, 0.6) == 0.15
    assert (head.config.repetition_penalty, head.config.repetition_margin) == (1.0, 0.2)  # left as they were
