"""Text emotion: the delta over MiniLM on a tiny random BERT (offline), then the shipped weights and GoEmotions."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from affectlens.labels import CANONICAL_EMOTIONS, canonical_label
from affectlens.registry import create_text_emotion, list_models
from perception.text.emotion import (
    CIRCUMPLEX,
    FINE_TO_CANONICAL,
    GOEMOTIONS_LABELS,
    TextEmotionConfig,
    TextEmotionDelta,
    TextEmotionModel,
    TextEmotionNetwork,
    tiny_base,
)
from tests.conftest import require_shared

TEXTS = ["I am so happy and grateful for your help!", "This is disgusting.", "ok"]


@pytest.fixture(scope="module")
def tiny() -> TextEmotionModel:
    return create_text_emotion("minilm-goemotions", pretrained=False)


def _words(text: str) -> set[str]:
    return {w.strip("\"'`“”‘’()[]{}<>.,;:!?*_~-–—…") for w in text.split()}


# -- tables ----------------------------------------------------------------------------------------------


def test_label_tables_cover_the_28_labels_and_the_canonical_classes() -> None:
    assert len(GOEMOTIONS_LABELS) == 28 == len(set(GOEMOTIONS_LABELS))
    assert set(FINE_TO_CANONICAL) == set(CIRCUMPLEX) == set(GOEMOTIONS_LABELS)
    assert set(FINE_TO_CANONICAL.values()) == set(CANONICAL_EMOTIONS)
    # each fine label that is itself an Ekman name maps onto its own canonical class
    for name in ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"):
        assert FINE_TO_CANONICAL[name] == canonical_label(name)
    for v, a in CIRCUMPLEX.values():
        assert -1 <= v <= 1 and -1 <= a <= 1


def test_circumplex_signs_follow_the_canonical_grouping() -> None:
    for label, canonical in FINE_TO_CANONICAL.items():
        valence = CIRCUMPLEX[label][0]
        if canonical == "happiness":
            assert valence > 0, label
        elif canonical in ("sadness", "fear", "disgust", "anger"):
            assert valence < 0, label


# -- the untrained tiny model ----------------------------------------------------------------------------


def test_registered_and_untrained_build_needs_no_files(tiny: TextEmotionModel) -> None:
    assert "minilm-goemotions" in list_models("text_emotion")
    assert tiny.name == "minilm-goemotions" and tiny.weight_files == {}
    assert tiny.describe()["trained_layers"] == 1


def test_predict_shapes_and_ranges(tiny: TextEmotionModel) -> None:
    results = tiny.predict(TEXTS)
    assert len(results) == len(TEXTS)
    for result in results:
        probs = result.emotion.probabilities
        assert list(probs) == list(CANONICAL_EMOTIONS)
        assert np.isclose(sum(probs.values()), 1.0, atol=1e-5) and min(probs.values()) > 0
        assert list(result.fine) == list(GOEMOTIONS_LABELS)
        assert all(0.0 <= p <= 1.0 for p in result.fine.values())
        assert result.emotion.valence is not None and -1 <= result.emotion.valence <= 1
        assert result.emotion.arousal is not None and -1 <= result.emotion.arousal <= 1
        assert result.emotion.model == "minilm-goemotions"
        assert set(result.to_dict()) >= {"label", "probabilities", "fine", "salient_words", "valence"}


def test_batch_order_and_batch_size_do_not_change_results(tiny: TextEmotionModel) -> None:
    forward = tiny.predict_arrays(TEXTS)[0]
    backward = tiny.predict_arrays(TEXTS[::-1])[0][::-1]
    one_by_one = np.concatenate([tiny.predict_arrays([t])[0] for t in TEXTS])
    assert np.allclose(forward, backward, atol=1e-5) and np.allclose(forward, one_by_one, atol=1e-5)


def test_salient_words_are_input_words_scored_by_occlusion(tiny: TextEmotionModel) -> None:
    text = TEXTS[0]
    result = tiny.predict([text])[0]
    assert result.salient_words, "occlusion found no word that supports the top class"
    assert len(result.salient_words) <= tiny.top_words
    scores = [s for _, s in result.salient_words]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    assert {w for w, _ in result.salient_words} <= _words(text)
    # the score is exactly the drop in the top class's probability when the word is removed
    word, score = result.salient_words[0]
    top = CANONICAL_EMOTIONS.index(result.emotion.label)
    chunk = next(c for c in text.split() if c.strip("!.,") == word)
    without = tiny.predict_arrays([text.replace(chunk, "", 1)])[0][0, top]
    assert score == pytest.approx(result.emotion.confidence - float(without), abs=1e-5)


def test_explain_off_skips_attribution(tiny: TextEmotionModel) -> None:
    with_words, without_words = tiny.predict(TEXTS[:1])[0], tiny.predict(TEXTS[:1], explain=False)[0]
    assert without_words.salient_words == ()
    assert with_words.emotion.probabilities == without_words.emotion.probabilities


def test_valence_arousal_is_the_probability_weighted_circumplex_mean(tiny: TextEmotionModel) -> None:
    n = len(GOEMOTIONS_LABELS)
    joy, grief = np.zeros((1, n)), np.zeros((1, n))
    joy[0, GOEMOTIONS_LABELS.index("joy")] = 1.0
    grief[0, GOEMOTIONS_LABELS.index("grief")] = 1.0
    assert np.allclose(tiny.valence_arousal(joy), [CIRCUMPLEX["joy"]])
    half = (joy + grief) / 2
    expected = (np.array(CIRCUMPLEX["joy"]) + np.array(CIRCUMPLEX["grief"])) / 2
    assert np.allclose(tiny.valence_arousal(half), [expected])


def test_empty_or_whitespace_text_is_refused(tiny: TextEmotionModel) -> None:
    with pytest.raises(ValueError, match=r"texts \[1, 2\] are empty or whitespace only"):
        tiny.predict(["fine", "", "  \n\t"])
    with pytest.raises(TypeError, match="list of texts"):
        tiny.predict("a bare string")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be str"):
        tiny.predict(["ok", None])  # type: ignore[list-item]
    assert tiny.predict([]) == []


def test_long_text_is_truncated_with_a_logged_note(tiny: TextEmotionModel, caplog: pytest.LogCaptureFixture) -> None:
    head = "what a lovely day " * 60  # far beyond 128 tokens
    with caplog.at_level(logging.WARNING, logger="perception.text.emotion"):
        first, second = tiny.predict([head + "terrible ending", head + "wonderful ending"])
    assert "truncated" in caplog.text
    # the model never sees the tails, so they cannot change the result or appear among the salient words
    assert first.emotion.probabilities == second.emotion.probabilities
    assert not {w for w, _ in first.salient_words + second.salient_words} & {"terrible", "wonderful", "ending"}


def test_non_english_text_runs(tiny: TextEmotionModel) -> None:
    result = tiny.predict(["Ich bin so glücklich, danke!", "我很高兴"])
    assert all(np.isclose(sum(r.emotion.probabilities.values()), 1.0, atol=1e-5) for r in result)


def test_save_pretrained_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = TextEmotionModel.tiny(seed=3)
    model.update_config(class_bias=(0.0, 0.5, -0.5, 0.0, 0.2, 0.0, 0.1), temperature=1.7, fine_threshold=0.3)
    folder = model.save_pretrained(tmp_path / "delta")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    delta = TextEmotionDelta.from_pretrained(folder)
    assert delta.config == model.config
    encoder, tokenizer = tiny_base(seed=3)
    reloaded = TextEmotionModel(TextEmotionNetwork(encoder, delta), tokenizer)
    for a, b in zip(model.predict_logits(TEXTS), reloaded.predict_logits(TEXTS), strict=True):
        assert np.array_equal(a, b)
    assert [r.to_dict() for r in model.predict(TEXTS)] == [r.to_dict() for r in reloaded.predict(TEXTS)]


def test_half_precision_save_stays_close(tmp_path: Path) -> None:
    model = TextEmotionModel.tiny(seed=4)
    delta = TextEmotionDelta.from_pretrained(model.network.delta.save_pretrained(tmp_path, dtype=torch.float16))
    encoder, tokenizer = tiny_base(seed=4)
    reloaded = TextEmotionModel(TextEmotionNetwork(encoder, delta), tokenizer)
    assert np.allclose(model.predict_arrays(TEXTS)[0], reloaded.predict_arrays(TEXTS)[0], atol=1e-2)


def test_only_the_delta_trains() -> None:
    model = TextEmotionModel.tiny()
    net = model.network.train()
    delta_params = {id(p) for p in net.delta.parameters()}
    for p in net.encoder.parameters():
        assert p.requires_grad == (id(p) in delta_params)
    assert net.delta.training and all(layer.training for layer in net.delta.layers)
    assert not net.encoder.embeddings.training and not net.encoder.encoder.layer[0].training
    net.eval()


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="class_bias needs 7"):
        TextEmotionConfig(class_bias=(0.0,))
    with pytest.raises(ValueError, match="num_trained_layers"):
        TextEmotionConfig(base_config={"num_hidden_layers": 2}, num_trained_layers=3)
    with pytest.raises(ValueError, match="unknown text-emotion config keys"):
        TextEmotionConfig.from_dict({"hidden": 3})
    config = TextEmotionConfig(base_config={"num_hidden_layers": 6}, temperature=2.0)
    assert TextEmotionConfig.from_dict(config.to_dict()) == config


def test_delta_refuses_another_base() -> None:
    model = TextEmotionModel.tiny()
    encoder, _ = tiny_base()
    encoder.config.hidden_size = 48  # pretend the base is wider
    with pytest.raises(ValueError, match="another base"):
        TextEmotionNetwork(encoder, TextEmotionDelta(model.config))


# -- the shipped weights ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> TextEmotionModel:
    return create_text_emotion("minilm-goemotions")


@pytest.mark.weights
def test_shipped_delta_records_its_files(real: TextEmotionModel) -> None:
    assert {"text-emotion-minilm-goemotions-model", "minilm-l6-model"} <= set(real.weight_files)
    assert real.config.base == "all-MiniLM-L6-v2" and real.config.training["test_ekman_macro_f1"] >= 0.55


@pytest.mark.weights
def test_happy_text_is_happiness_with_the_happy_words(real: TextEmotionModel) -> None:
    result = real.predict(["I am so happy and grateful for your help!"])[0]
    assert result.emotion.label == "happiness"
    assert {"happy", "grateful"} & {w.lower() for w, _ in result.salient_words}
    assert result.emotion.valence is not None and result.emotion.valence > 0.2
    assert max(result.fine, key=result.fine.__getitem__) in ("gratitude", "joy")


@pytest.mark.weights
def test_disgusting_text_is_anger_or_disgust(real: TextEmotionModel) -> None:
    result = real.predict(["This is disgusting and makes me furious"])[0]
    assert result.emotion.label in ("anger", "disgust")
    assert result.emotion.valence is not None and result.emotion.valence < 0


@pytest.mark.weights
def test_terrified_text_is_fear(real: TextEmotionModel) -> None:
    result = real.predict(["I'm terrified of what the scan will show"])[0]
    assert result.emotion.label == "fear"
    assert "terrified" in {w.lower() for w, _ in result.salient_words}


@pytest.mark.weights
@pytest.mark.data
@pytest.mark.slow
def test_goemotions_ekman_test_macro_f1(real: TextEmotionModel) -> None:
    root = require_shared("goemotions/ekman")
    names = (root / "labels.txt").read_text().split()
    rows = [line.rstrip("\n").split("\t") for line in (root / "test.tsv").open(encoding="utf-8")][:1000]
    truth = np.array([CANONICAL_EMOTIONS.index(canonical_label(names[int(r[1].split(",")[0])]) or "") for r in rows])
    probs = np.stack(
        [
            [p.emotion.probabilities[e] for e in CANONICAL_EMOTIONS]
            for p in real.predict([r[0] for r in rows], explain=False)
        ]
    )
    pred = probs.argmax(1)
    f1 = []
    for k in range(len(CANONICAL_EMOTIONS)):
        tp, fp, fn = (
            np.sum((pred == k) & (truth == k)),
            np.sum((pred == k) & (truth != k)),
            np.sum((pred != k) & (truth == k)),
        )
        f1.append(2 * tp / max(2 * tp + fp + fn, 1))
    assert float(np.mean(f1)) > 0.5, f"macro-F1 {np.mean(f1):.3f} on the first 1,000 GoEmotions-Ekman test rows"


# ---- negated emotion words (perception.text.negation) ---------------------------------------------------------------


def test_negated_classes_finds_only_emotion_words_that_are_all_negated() -> None:
    from perception.text.negation import negated_classes

    assert negated_classes("I am not sad anymore.") == {"sadness"}
    assert negated_classes("I don’t really feel scared at all now.") == {"fear"}
    assert negated_classes("I'm no longer afraid, and I'm not angry either.") == {"fear", "anger"}
    assert negated_classes("I've never been this sad in my life.") == set()  # an intensifier, not a negation
    assert negated_classes("I don't know why I'm so sad.") == set()  # the "not" belongs to "know"
    assert negated_classes("I'm not sad, I'm just... okay, I am sad.") == set()  # said plainly too
    assert negated_classes("Nothing here about feelings.") == set()


def test_adjust_lowers_only_a_negated_top_class_and_its_fine_labels() -> None:
    from perception.text.negation import NEGATED_SCALE, adjust

    labels = ("neutral", "sadness", "fear")
    fine_labels = ("sadness", "grief", "fear", "neutral")
    mapping = {"sadness": "sadness", "grief": "sadness", "fear": "fear", "neutral": "neutral"}
    canonical = np.array([[0.2, 0.7, 0.1], [0.2, 0.7, 0.1]])
    fine = np.array([[0.8, 0.4, 0.1, 0.2], [0.8, 0.4, 0.1, 0.2]])
    texts = ["I am not sad anymore.", "I am so sad."]
    new_canonical, new_fine = adjust(texts, canonical, fine, labels, fine_labels, mapping)
    kept = 0.7 * NEGATED_SCALE
    # what the denied class loses goes to neutral ("I am not sad anymore." is neutral, not a weaker sadness)
    assert new_canonical[0] == pytest.approx([0.2 + 0.7 - kept, kept, 0.1]) and new_canonical[0].sum() == pytest.approx(
        1.0
    )
    assert new_fine[0] == pytest.approx([0.8 * NEGATED_SCALE, 0.4 * NEGATED_SCALE, 0.1, 0.2 + 0.7 - kept])
    assert np.array_equal(new_canonical[1], canonical[1]) and np.array_equal(new_fine[1], fine[1])  # not negated
    assert np.array_equal(canonical[0], [0.2, 0.7, 0.1])  # the inputs are left as they were
    # a negated emotion that is not the top class changes nothing
    other, _ = adjust(["I'm not scared, just sad."], canonical[:1], fine[:1], labels, fine_labels, mapping)
    assert np.array_equal(other, canonical[:1])


@pytest.mark.weights
def test_the_shipped_model_reads_a_denied_anger_as_neutral(real: TextEmotionModel) -> None:
    text = "I'm not angry, just tired."  # docs/text-negation-eval.csv
    try:
        real.negation = False
        assert real.predict([text], explain=False)[0].emotion.label == "anger"  # what the model alone reads
    finally:
        real.negation = True
    denied = real.predict([text])[0]
    assert denied.emotion.label == "neutral"
    assert denied.salient_words[0][0] == "not"  # the explanation names the word that changed the reading
    assert real.predict(["I'm so angry at my brother right now."], explain=False)[0].emotion.label == "anger"
    # the plain denial the renormalising rule left as a weaker sadness (0.78 -> 0.47) reads neutral now
    assert real.predict(["I am not sad anymore."], explain=False)[0].emotion.label == "neutral"
