"""The semantic safety reader (``fusion.safety_semantic``): spans, the fit, how ``RiskDetector`` turns a reading
into a cue (and weakens it where the patterns saw an idiom or a story), earlier turns read by meaning, save/load, and
the shipped model's figures on the development and blind sets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from affectlens.cli import main
from affectlens.evaluation import evaluate_safety
from fusion.safety import RiskAssessment, RiskDetector, after_crisis, crisis_support
from fusion.safety_semantic import SemanticRiskModel, fit_classifier, shipped_model, spans

DOCS = Path(__file__).resolve().parents[1] / "docs"
VOCAB = ("rope", "closet", "pills", "gone", "forever", "pizza", "coffee", "killing", "it", "looking", "work")


def bag(texts: list[str]) -> np.ndarray:
    """A toy embedder: L2-normalised word indicators over ``VOCAB`` (plus a constant so no row is zero)."""
    rows = []
    for text in texts:
        words = set(re.findall(r"[a-z]+", text.lower()))
        row = np.array([1.0, *(1.0 if w in words else 0.0 for w in VOCAB)])
        rows.append(row / np.linalg.norm(row))
    return np.array(rows, np.float32)


def toy_model(threshold: float = 0.7) -> SemanticRiskModel:
    texts = [
        "there is a rope in my closet",
        "i keep looking at the pills",
        "i want to be gone forever",
        "i could go for a pizza",
        "coffee at work",
        "killing it at work",
    ]
    y = np.array([1, 1, 1, 0, 0, 0])
    x = bag(texts)
    layers = fit_classifier(x, y, hidden=16, steps=300, lr=1e-2, dropout=0.0)
    crisis = [0, 1, 2]
    return SemanticRiskModel(
        *layers, tuple(texts[i] for i in crisis),
        ("suicidal_ideation", "suicidal_ideation", "suicidal_ideation"), x[crisis], threshold, bag,
    )  # fmt: skip


def test_spans_are_the_whole_message_then_its_sentences() -> None:
    text = "  I am fine. Really. But there is a rope in my closet and I keep looking at it!  "
    got = [text[a:b] for a, b in spans(text)]
    assert got[0] == text.strip()
    assert got[1:] == ["I am fine. Really.", "But there is a rope in my closet and I keep looking at it!"]
    assert spans("one sentence only") == [(0, 17)]
    assert spans("   ") == []


def test_fit_classifier_learns_what_no_line_separates() -> None:
    """Crisis when exactly one of two features is on (XOR): a one-hidden-layer classifier learns it; the numpy
    forward pass of ``SemanticRiskModel`` gives the trained network's answers."""
    rng = np.random.default_rng(0)
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x = np.repeat(corners, 25, axis=0) + rng.normal(0.0, 0.05, (100, 2))
    y = np.repeat(np.array([0, 1, 1, 0]), 25)
    layers = fit_classifier(x, y, hidden=16, steps=800, lr=1e-2, dropout=0.0)
    model = SemanticRiskModel(*layers, (), (), np.zeros((0, 2)), 0.5, bag)
    assert np.mean((model.probabilities(x) >= 0.5) == y) == 1.0
    assert fit_classifier(x, y, hidden=16, steps=50)[3] == fit_classifier(x, y, hidden=16, steps=50)[3]


def test_a_confident_reading_is_a_crisis_with_its_reason() -> None:
    detector = RiskDetector(semantic=toy_model())
    assert detector.name == "safety-patterns+meaning"
    assert RiskDetector(semantic=False).assess("There's a rope in my closet. I keep looking at it.").level == "none"
    risk = detector.assess("Work was long. There's a rope in my closet, I keep looking at it.")
    assert risk.level == "crisis" and risk.categories == ("suicidal_ideation",)
    cue = next(c for c in risk.cues if c.rule == "meaning")
    assert cue.strength == "strong" and cue.phrase == "There's a rope in my closet, I keep looking at it."
    assert "there is a rope in my closet" in cue.note and cue.note in risk.why
    assert RiskAssessment.from_dict(risk.to_dict()) == risk  # the note survives the tree's JSON


def test_a_reading_under_the_threshold_adds_nothing() -> None:
    model = toy_model(threshold=0.99999)
    reading = model.read("there is a rope in my closet")
    assert reading is not None and 0.5 < reading.probability < model.threshold
    assert RiskDetector(semantic=model).assess("there is a rope in my closet").level == "none"
    assert RiskDetector(semantic=toy_model()).assess("coffee at work").level == "none"


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("I would never kill myself, gone forever", "none"),  # a negation the patterns dropped
        ("In the novel the hero kills himself, gone forever", "concern"),  # a story: the patterns' mention
        ("killing it, gone forever", "none"),  # an idiom
    ],
)
def test_evidence_the_patterns_saw_against_a_risk_keeps_the_reading_out(text: str, level: str) -> None:
    """Inside the read span the patterns saw an idiom, a negation or a story: the reading adds no cue, and the
    level is the patterns' own."""
    model = toy_model(threshold=0.55)
    reading = model.read(text)
    assert reading is not None and reading.probability >= model.threshold
    risk = RiskDetector(semantic=model).assess(text)
    assert risk.level == level == RiskDetector(semantic=False).assess(text).level
    assert not [c for c in risk.cues if c.rule == "meaning"]
    plain = "gone forever, gone forever"  # no evidence against: the same kind of reading is a crisis
    assert RiskDetector(semantic=model).assess(plain).level == "crisis"


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = toy_model()
    path = model.save(tmp_path / "m.safetensors")
    loaded = SemanticRiskModel.load(path, embed=bag)
    assert loaded.threshold == model.threshold and loaded.examples == model.examples
    text = "i keep looking at the pills"
    assert loaded.read(text) == model.read(text)
    with pytest.raises(ValueError, match="threshold must be in"):
        SemanticRiskModel(
            model.hidden_weight, model.hidden_bias, model.out_weight, 0.0, (), (), np.zeros((0, 12)), 1.0, bag
        )


# ---- the shipped model ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> SemanticRiskModel:
    model = shipped_model()
    assert model is not None, "the shipped semantic safety model did not load"
    return model


@pytest.mark.parametrize("name", ["safety-eval.csv", "safety-eval-fresh.csv"])
def test_shipped_model_reproduces_its_development_figures(shipped: SemanticRiskModel, name: str) -> None:
    report = evaluate_safety(DOCS / name)
    assert report["model"] == "safety-patterns+meaning"
    patterns = evaluate_safety(DOCS / name, model="safety-patterns")
    assert report["recall"] >= patterns["recall"]
    assert report["precision"] >= 0.9


@pytest.mark.parametrize("name", ["safety-eval-blind-2.csv", "safety-eval-history-blind.csv", "safety-eval-blind.csv"])
def test_shipped_model_reproduces_its_blind_figures(shipped: SemanticRiskModel, name: str) -> None:
    """The card's figures on the blind sets (and on the first blind set, seen since) are what the command reads."""
    (card,) = [row for row in shipped.card["blind"] + shipped.card["seen"] if row["data"] == f"docs/{name}"]
    report = evaluate_safety(DOCS / name)
    for key in ("recall", "precision", "accuracy"):
        assert report[key] == card["patterns+meaning"][key]
    patterns = evaluate_safety(DOCS / name, model="safety-patterns")
    assert patterns["recall"] == card["patterns"]["recall"]
    assert report["recall"] > patterns["recall"]


def test_eval_cli_chooses_the_detector(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["eval", "safety", "--data", str(DOCS / "safety-eval.csv"), "--model", "safety-patterns", "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["model"] == "safety-patterns"
    assert main(["eval", "safety", "--data", str(DOCS / "safety-eval.csv"), "--model", "nope"]) == 2
    assert "unknown safety detector 'nope'" in capsys.readouterr().err


def test_a_reading_over_someone_elses_risk_keeps_their_subject() -> None:
    """The patterns read another person at risk in the span: the meaning's cue is about them too, so the reply
    stays the one for someone worried about another person."""
    text = "my brother says he wants to kill himself, gone forever"
    patterns = RiskDetector(semantic=False).assess(text)
    assert patterns.about_someone_else
    risk = RiskDetector(semantic=toy_model(threshold=0.55)).assess(text)
    (cue,) = [c for c in risk.cues if c.rule == "meaning"]
    assert cue.subject == "other" and risk.about_someone_else


# ---- earlier turns ----------------------------------------------------------------------------------------------


class CountingModel:
    """Wraps a model and counts the texts it reads (the detector remembers recent readings)."""

    def __init__(self, model: SemanticRiskModel) -> None:
        self.model, self.read_texts = model, []
        self.threshold = model.threshold

    def read(self, text: str) -> object:
        self.read_texts.append(text)
        return self.model.read(text)


def test_an_earlier_turn_read_by_meaning_keeps_the_risk_in_view() -> None:
    """The patterns see nothing in an earlier "rope in my closet": the meaning does, so a quiet message after it
    gets the follow-up (crisis support) and a borderline one is a crisis."""
    history = ["Work was long.", "There's a rope in my closet and I keep looking at it."]
    assert RiskDetector(semantic=False).assess("ok, talk later", history).level == "none"
    detector = RiskDetector(semantic=toy_model())
    quiet = detector.assess("ok, talk later", history)
    assert quiet.level == "concern" and after_crisis(quiet) and crisis_support(quiet)
    (cue,) = quiet.cues
    assert cue.rule == "meaning" and cue.turn == 1 and cue.phrase == history[1]
    assert history[1] in quiet.why and quiet.why.startswith("Concern: earlier")
    raised = detector.assess("I'm just so tired of everything.", history)
    assert raised.level == "crisis" and any(c.turn == 1 for c in raised.cues)
    # an everyday history and an idiom in it stay out
    assert detector.assess("ok, talk later", ["coffee at work", "killing it at work"]).level == "none"


def test_a_disclosure_both_readers_see_counts_once() -> None:
    """Patterns and meaning reading the same earlier turn count it once: one disclosure alone keeps a neutral
    message at the follow-up (concern), as with the patterns alone."""
    model = toy_model(threshold=0.55)
    history = ["I want to kill myself, gone forever"]
    assert model.read(history[0]).probability >= model.threshold  # type: ignore[union-attr]
    risk = RiskDetector(semantic=model).assess("ok thanks", history)
    assert {c.rule for c in risk.cues} >= {"meaning"} and len({c.rule for c in risk.cues}) == 2
    assert risk.level == "concern" == RiskDetector(semantic=False).assess("ok thanks", history).level
    # two earlier disclosures are a crisis on their own, as two strong pattern cues are
    two = RiskDetector(semantic=model).assess("ok thanks", [*history, "gone forever, gone forever"])
    assert two.level == "crisis"


def test_earlier_turns_are_read_once_per_detector() -> None:
    counting = CountingModel(toy_model())
    detector = RiskDetector(semantic=counting)  # type: ignore[arg-type]
    history: list[str] = []
    for message in ("hi", "there is a rope in my closet", "ok", "bye"):
        detector.assess(message, history)
        history.append(message)
    assert sorted(counting.read_texts) == sorted(["hi", "there is a rope in my closet", "ok", "bye"])


def test_eval_reads_a_history_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "history.csv"
    data.write_text(
        "history,text,label\n"
        '"Work was long. || I want to kill myself","ok, talk later",crisis\n'
        '"this exam is killing me||I could murder a pizza","ok, talk later",none\n'
        ',"I want to kill myself",crisis\n'
        '"I want to kill myself","ok, talk later",none\n'
    )
    report = evaluate_safety(data, model="safety-patterns")
    assert report["n"] == 4 and report["with_history"] == 3
    assert report["confusion"] == {"tp": 2, "fn": 0, "fp": 1, "tn": 1}
    (miss,) = report["misclassified"]
    assert miss["line"] == 5 and miss["history"] == ["I want to kill myself"] and miss["level"] == "concern"
    assert main(["eval", "safety", "--data", str(data), "--model", "safety-patterns"]) == 0
    out = capsys.readouterr().out
    assert "n=4 (3 with earlier messages)" in out and "earlier: I want to kill myself" in out
