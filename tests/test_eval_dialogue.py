"""``affectlens eval strategy|dialogue`` on ESConv JSONL: the text metrics against hand-computed values, the ESConv
reader's errors, and both evaluations with tiny injected parts (no weights); one real-weights check."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from affectlens import evaluation
from affectlens.cli import main
from affectlens.conversation import Conversation
from affectlens.errors import MediaError
from affectlens.labels import ESCONV_STRATEGIES
from affectlens.text_metrics import corpus_bleu, distinct_n, lcs_length, mean_rouge_l, rouge_l, text_scores, tokenize
from fusion.esconv import read_dialogues, reply_samples, score_turns, strategy_examples, turn_examples
from fusion.strategy import Message, StrategyConfig, StrategyHead, StrategyPlanner, context_features
from tests.test_conversation import conversation
from tests.test_strategy import DIALOGUE, fake_embed

# --- text metrics ------------------------------------------------------------------------------------------------


def test_tokenize_splits_words_and_punctuation_lower_cased() -> None:
    assert tokenize("I'm FINE, thanks!") == ["i", "'", "m", "fine", ",", "thanks", "!"]


def test_identical_texts_score_one() -> None:
    texts = ["That sounds really hard.", "What happened next?"]
    assert corpus_bleu(texts, texts) == pytest.approx(1.0)
    assert mean_rouge_l(texts, texts) == pytest.approx(1.0)


def test_bleu_2_by_hand() -> None:
    # unigrams: the×2, cat, on, mat match (5 of 6); bigrams: "the cat", "on the", "the mat" match (3 of 5); same length
    assert corpus_bleu(["the cat sat on the mat"], ["the cat is on the mat"]) == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    # all n-grams match but 2 tokens against 6: brevity penalty exp(1 - 6/2)
    assert corpus_bleu(["the cat"], ["the cat sat on the mat"]) == pytest.approx(math.exp(-2))
    # corpus level: counts are summed over pairs before dividing (1+0 bigram matches of 1+1; 3 of 4 unigrams)
    hyps, refs = ["the cat", "a dog"], ["the cat", "a bird"]
    assert corpus_bleu(hyps, refs) == pytest.approx(math.sqrt(3 / 4 * 1 / 2))
    assert corpus_bleu(["a b"], ["b a"]) == 0.0  # no bigram in common: unsmoothed BLEU is 0
    assert corpus_bleu([""], ["something"]) == 0.0
    with pytest.raises(ValueError, match="references"):
        corpus_bleu(["a"], [])


def test_rouge_l_by_hand() -> None:
    assert lcs_length(["a", "b", "c", "d", "e"], ["a", "c", "e", "x"]) == 3
    # LCS 3: precision 3/4, recall 3/5, F1 = 2·0.75·0.6 / 1.35
    assert rouge_l("a b c d e", "a c e x") == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert rouge_l("x y", "a b") == 0.0 and rouge_l("", "a") == 0.0
    assert mean_rouge_l(["a b", "x"], ["a b", "y"]) == pytest.approx(0.5)


def test_distinct_counts_unique_over_all_ngrams() -> None:
    texts = ["a b a b", "a c"]
    assert distinct_n(texts, 1) == pytest.approx(3 / 6)  # a b c of a b a b a c
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)  # ab ba ab ac
    assert distinct_n(["a"], 2) == 0.0
    assert set(text_scores(texts, texts)) == {"bleu_2", "rouge_l", "distinct_1", "distinct_2"}


# --- ESConv data --------------------------------------------------------------------------------------------------


def sys_(text: str, strategy: str) -> dict[str, str]:
    return {"text": text, "speaker": "sys", "strategy": strategy}


def usr(text: str) -> dict[str, str]:
    return {"text": text, "speaker": "usr"}


ECHO = "That sounds hard. What happened next?"  # what tests.test_conversation's EchoResponder says

DIALOGUES = [
    [
        sys_("Hello, how are you?", "Others"),  # before the seeker spoke: not scored
        usr("I failed my exam"),
        sys_(ECHO, "Question"),  # opens a turn; previous turn: Others
        sys_("That is hard.", "Affirmation and Reassurance"),  # continues the turn
        usr("I did not study"),
        sys_("Did you sleep?", "Question"),  # opens a turn; previous turn: Question + Affirmation -> a repeat
    ],
    [
        usr("I lost my job"),
        sys_(ECHO, "Reflection of feelings"),  # opens the first turn: no previous turn
        usr("yes"),
        sys_("Try applying again.", "Providing Suggestions"),  # previous turn: Reflection
    ],
]


def write_jsonl(path: Path, dialogues: list[list[dict[str, str]]] = DIALOGUES) -> Path:
    rows = [{"emotion_type": "sadness", "problem_type": "job", "situation": "s", "dialog": d} for d in dialogues]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    return path


def test_examples_and_samples_follow_the_training_definition(tmp_path: Path) -> None:
    dialogues = read_dialogues(write_jsonl(tmp_path / "d.jsonl"))
    examples = strategy_examples(dialogues)
    assert [e.strategy for e in examples] == [
        "Question", "Affirmation and Reassurance", "Question", "Reflection of feelings", "Providing Suggestions",
    ]  # fmt: skip
    assert [e.first for e in examples] == [True, False, True, True, True]
    samples = reply_samples(dialogues, per_dialogue=2)
    assert [(s.dialogue, s.seeker, s.reference) for s in samples] == [
        (0, "I failed my exam", ECHO), (0, "I did not study", "Did you sleep?"),
        (1, "I lost my job", ECHO), (1, "yes", "Try applying again."),
    ]  # fmt: skip
    assert [m.text for m in samples[1].history] == ["Hello, how are you?", "I failed my exam", ECHO, "That is hard."]
    assert len(reply_samples(dialogues, per_dialogue=1)) == 2
    for sample in samples:  # each reply's own strategy comes with it
        assert sample.strategy == dialogues[sample.dialogue][len(sample.history) + 1].strategies[0]
    assert len(read_dialogues(tmp_path / "d.jsonl", limit=1)) == 1


def test_turn_examples_group_consecutive_supporter_messages(tmp_path: Path) -> None:
    dialogues = read_dialogues(write_jsonl(tmp_path / "d.jsonl"))
    turns = turn_examples(dialogues)
    assert [t.strategies for t in turns] == [
        ("Question", "Affirmation and Reassurance"), ("Question",), ("Reflection of feelings",),
        ("Providing Suggestions",),
    ]  # fmt: skip
    assert [t.dialogue[-1].text for t in turns] == ["I failed my exam", "I did not study", "I lost my job", "yes"]
    # a turn's dialogue is its first message's, so the message examples that open a turn are the turns
    assert [e.dialogue for e in strategy_examples(dialogues) if e.first] == [t.dialogue for t in turns]
    # a turn whose messages have no known strategy is not scored; a repeated strategy counts once
    odd = [[usr("hi"), sys_("a", "Unknown"), usr("so"), sys_("b", "Others"), sys_("c", "Others")]]
    assert [t.strategies for t in turn_examples(read_dialogues(write_jsonl(tmp_path / "o.jsonl", odd)))] == [
        ("Others",)
    ]


def test_score_turns_by_hand(tmp_path: Path) -> None:
    turns = turn_examples(read_dialogues(write_jsonl(tmp_path / "d.jsonl")))
    always = score_turns([["Question"]] * 4, turns)
    # Question is in turns 1 and 2 of 4; the turns' first strategies are Question, Question, Reflection, Suggestions
    assert always["n"] == 4 and always["turn_top1_accuracy"] == 0.5 and always["any_chosen_in_set"] == 0.5
    assert always["first_strategy_accuracy"] == 0.5
    assert always["first_strategy_macro_f1"] == round((2 / 3) / 3, 4)  # Question 2·2/(4+2); Reflection, Suggestions 0
    # turns with a previous turn: 1 (Others), 2 (Question + Affirmation: a repeat), 4 (Reflection)
    assert always["repetition_rate"] == round(1 / 3, 4) and always["multi_strategy_turns"] == 0.25
    chosen = [
        ["Affirmation and Reassurance", "Question"], ["Others"], ["Reflection of feelings", "Question"],
        ["Providing Suggestions"],
    ]  # fmt: skip
    mixed = score_turns(chosen, turns)
    assert mixed["turn_top1_accuracy"] == 0.75 and mixed["any_chosen_in_set"] == 0.75
    assert mixed["chosen_precision"] == round((1 + 0 + 0.5 + 1) / 4, 4)
    assert mixed["first_strategy_accuracy"] == 0.5
    # classes: Question (2 references, 0 predicted), Affirmation and Others (predicted, never first) 0; Reflection and
    # Suggestions 1
    assert mixed["first_strategy_macro_f1"] == 0.4
    assert mixed["repetition_rate"] == 0.0 and mixed["mean_strategies_per_turn"] == 1.5
    assert mixed["predicted_distribution"]["Others"] == 0.25


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "file not found"),
        ("", "empty file"),
        ("\n  \n", "empty file"),
        ('{"dialog": []}\n{"dialog": [oops\n', "line 2: not JSON"),
        ('{"dialog": []}\n[1, 2]\n', "line 2: not an ESConv dialogue"),
        ('{"situation": "no dialog"}\n', "line 1: not an ESConv dialogue"),
        ('{"dialog": [{"text": "hi", "speaker": "bot"}]}\n', "line 1, dialog entry 1: speaker 'bot'"),
        ('{"dialog": [{"speaker": "usr"}]}\n', "line 1, dialog entry 1: no text"),
        ('{"dialog": ["hi"]}\n', "line 1, dialog entry 1: a dialog entry is not an object"),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path: Path, content: str | None, problem: str) -> None:
    path = tmp_path / "bad.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(MediaError, match=problem) as info:
        read_dialogues(path)
    assert str(info.value).startswith(f"{path}: ")


def test_undecodable_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(MediaError, match="not a UTF-8 text file"):
        read_dialogues(path)


@pytest.mark.parametrize("task", ["strategy", "dialogue"])
def test_cli_reports_bad_data_without_loading_models(
    tmp_path: Path, task: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("models must not load before the data is read")

    monkeypatch.setattr("fusion.strategy.load_strategy_planner", refuse)
    monkeypatch.setattr(evaluation, "shipped_conversations", refuse)
    path = tmp_path / "bad.jsonl"
    path.write_text('{"dialog": []}\nnot json\n')
    assert main(["eval", task, "--data", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: line 2: not JSON") and "Traceback" not in err
    # a file with dialogues but nothing to score
    write_jsonl(path, [[usr("hello")]])
    assert main(["eval", task, "--data", str(path)]) == 1
    assert f"error: {path}: no supporter message" in capsys.readouterr().err
    assert main(["eval", task, "--data", str(path), "--limit", "0"]) == 2


# --- eval strategy ------------------------------------------------------------------------------------------------


def question_planner() -> StrategyPlanner:
    """A tiny head that always puts (almost) all its mass on "Question"."""
    head = StrategyHead(StrategyConfig(input_dim=context_features([DIALOGUE], fake_embed).shape[1], hidden=8))
    with torch.no_grad():
        last = head.net[-1]
        assert isinstance(last, torch.nn.Linear)
        last.weight.zero_()
        last.bias.fill_(0.0)
        last.bias[ESCONV_STRATEGIES.index("Question")] = 20.0
    return StrategyPlanner(head, fake_embed)


def test_evaluate_strategy_by_hand(tmp_path: Path) -> None:
    report = evaluation.evaluate_strategy(write_jsonl(tmp_path / "d.jsonl"), planner=question_planner())
    assert report["task"] == "strategy" and report["n"] == 5 and report["dialogues"] == 2
    assert report["accuracy"] == 0.4 and report["any_chosen_accuracy"] == 0.4
    # classes among the references or predictions: Question F1 = 2·2/(5+2), the three others 0
    assert report["macro_f1"] == round((4 / 7) / 4, 4)
    # three supporter turns with a previous one: Others -> Question (no), Question+Affirmation -> (Question) yes,
    # Reflection -> (planner Question | reference Providing Suggestions) no
    assert report["repetition_rate"] == round(1 / 3, 4)
    assert report["reference_repetition_rate"] == round(1 / 3, 4)
    assert report["majority_class"] == {"strategy": "Question", "accuracy": 0.4}
    assert report["mean_strategies_per_turn"] == 1.0
    assert report["predicted_distribution"]["Question"] == 1.0
    assert report["reference_distribution"]["Question"] == 0.4 and sum(report["reference_distribution"].values()) == 1
    turns = report["turns"]
    assert turns["n"] == 4 and turns["turn_top1_accuracy"] == 0.5 and turns["any_chosen_in_set"] == 0.5
    assert turns["repetition_rate"] == round(1 / 3, 4) and turns["reference_repetition_rate"] == round(1 / 3, 4)
    assert turns["majority_class"] == {
        "strategy": "Question", "turn_top1_accuracy": 0.5, "first_strategy_accuracy": 0.5,
    }  # fmt: skip
    # the question planner's top strategy is what its rule chooses: the same scores before the rule
    assert report["prediction"] == {"accuracy": 0.4, "macro_f1": report["macro_f1"], "repetition_rate": round(1 / 3, 4)}
    assert turns["prediction"] == {"turn_top1_accuracy": 0.5, "repetition_rate": round(1 / 3, 4)}
    one = evaluation.evaluate_strategy(tmp_path / "d.jsonl", limit=1, planner=question_planner())
    assert one["n"] == 3 and one["dialogues"] == 1


def test_evaluate_strategy_prediction_is_the_top_strategy_before_the_rule(tmp_path: Path) -> None:
    planner = question_planner()
    with torch.no_grad():  # Question 0.6, Reflection 0.4: the rule (penalty 2) answers a Question turn with Reflection
        bias = planner.head.net[-1].bias
        bias.fill_(-30.0)
        bias[ESCONV_STRATEGIES.index("Question")] = float(np.log(0.6))
        bias[ESCONV_STRATEGIES.index("Reflection of feelings")] = float(np.log(0.4))
    planner.head.config.repetition_penalty, planner.head.config.combine_ratio = 2.0, 1.0
    report = evaluation.evaluate_strategy(write_jsonl(tmp_path / "d.jsonl"), planner=planner)
    assert report["prediction"]["accuracy"] == 0.4  # always Question: 2 of the 5 references
    assert report["turns"]["prediction"]["turn_top1_accuracy"] == 0.5
    assert report["predicted_distribution"]["Reflection of feelings"] > 0  # the rule moved some off Question
    assert report["repetition_rate"] < report["prediction"]["repetition_rate"]


def test_planner_choose_batches_like_plan() -> None:
    planner = question_planner()
    dialogues = [DIALOGUE, DIALOGUE[:1], [*DIALOGUE, Message("sys", "Hm.", ("Others",))]]
    assert planner.choose(dialogues, batch_size=2) == [planner.choose([d])[0] for d in dialogues]
    assert [s for s, _, _ in planner.plan(DIALOGUE)] == [s for s, _ in planner.choose([DIALOGUE])[0]]


def test_cli_eval_strategy_prints_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fusion.strategy.load_strategy_planner", lambda directory=None: question_planner())
    path = write_jsonl(tmp_path / "d.jsonl")
    assert main(["eval", "strategy", "--data", str(path)]) == 0
    out = capsys.readouterr().out
    assert "n=5 supporter messages (2 dialogues)" in out and "accuracy 0.4000" in out
    assert "repetition 0.3333 (references 0.3333)" in out and "'Question': accuracy 0.4000" in out
    assert "per supporter turn (n=4): top-1 in the turn's strategies 0.5000" in out
    assert "most likely strategy alone (before the repetition rule): accuracy 0.4000" in out
    assert main(["eval", "strategy", "--data", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accuracy"] == 0.4 and "seconds" in report


# --- eval dialogue ------------------------------------------------------------------------------------------------


class RecordingFactory:
    """Tiny conversations (tests.test_conversation), continuing the history they are given; keeps the histories."""

    made: list[RecordingFactory] = []  # noqa: RUF012 - every factory the CLI built, for its arguments

    def __init__(self, exemplars: str | Path | None = None, reply_lora: bool | str | Path = True) -> None:
        self.histories: list[list[str]] = []
        self.exemplars, self.reply_lora = exemplars, reply_lora
        RecordingFactory.made.append(self)

    def __call__(self, history: Sequence[Message]) -> Conversation:
        self.histories.append([m.text for m in history])
        chat = conversation()
        chat.dialogue = list(history)
        return chat


def test_evaluate_dialogue_continues_the_reference_history(tmp_path: Path) -> None:
    factory = RecordingFactory()
    report = evaluation.evaluate_dialogue(
        write_jsonl(tmp_path / "d.jsonl"), limit=2, turns_per_dialogue=1, conversations=factory
    )
    assert report["task"] == "dialogue" and report["n"] == 2 and report["dialogues"] == 2
    assert factory.histories[1:] == [["Hello, how are you?"], []]  # [0] is the warm-up turn
    # both references are exactly what the echo responder says
    assert report["reply"]["bleu_2"] == pytest.approx(1.0) and report["reply"]["rouge_l"] == pytest.approx(1.0)
    assert report["reply"]["distinct_1"] == 0.5 and report["reply"]["distinct_2"] == round(7 / 14, 4)
    assert report["references"] == {"distinct_1": 0.5, "distinct_2": 0.5}
    assert report["reply_sources"] == {"echo": 2} and report["model"] == "echo"
    assert 0 <= report["template_baseline"]["rouge_l"] < 1
    latency = report["latency_seconds"]
    assert latency["mean"] > 0 and latency["p90"] > 0
    assert report["examples"][0]["reference"] == ECHO and report["examples"][0]["reply"] == ECHO

    factory = RecordingFactory()
    more = evaluation.evaluate_dialogue(tmp_path / "d.jsonl", turns_per_dialogue=3, conversations=factory)
    assert more["n"] == 4
    assert factory.histories[2] == ["Hello, how are you?", "I failed my exam", ECHO, "That is hard."]
    assert more["reply"]["bleu_2"] < 1


def test_evaluate_dialogue_counts_why_replies_were_refused_and_can_return_every_turn(tmp_path: Path) -> None:
    from tests.test_reply_fit import CheckedResponder

    def refusing(history: Sequence[Message]) -> Conversation:
        chat = conversation(CheckedResponder())
        chat.dialogue = list(history)
        return chat

    path = write_jsonl(tmp_path / "d.jsonl")
    report = evaluation.evaluate_dialogue(path, turns_per_dialogue=3, conversations=refusing, examples=-1)
    assert report["reply_sources"] == {"template": 4} and report["refusals"] == {"left the topic": 4}
    assert len(report["examples"]) == report["n"] == 4
    assert all(row["refused"][0].startswith("left the topic") for row in report["examples"])


def test_cli_eval_dialogue_prints_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluation, "shipped_conversations", RecordingFactory)
    path = write_jsonl(tmp_path / "d.jsonl")
    assert main(["eval", "dialogue", "--data", str(path), "--turns-per-dialogue", "1"]) == 0
    out = capsys.readouterr().out
    assert "n=2 supporter turns (2 dialogues)" in out and "template baseline" in out and "echo 2" in out
    assert main(["eval", "dialogue", "--data", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 4 and set(report["latency_seconds"]) == {"mean", "p90"}
    assert main(["eval", "dialogue", "--data", str(path), "--model", "x"]) == 2
    assert RecordingFactory.made[-1].exemplars is None and RecordingFactory.made[-1].reply_lora
    bank = write_jsonl(tmp_path / "train.jsonl")
    assert main(["eval", "dialogue", "--data", str(path), "--exemplars", str(bank), "--no-reply-lora", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["exemplars"] == str(bank) and report["reply_lora"] is None
    assert RecordingFactory.made[-1].exemplars == str(bank) and not RecordingFactory.made[-1].reply_lora
    assert main(["eval", "dialogue", "--data", str(path), "--reply-lora", str(tmp_path / "lora"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reply_lora"] == str(tmp_path / "lora")
    assert RecordingFactory.made[-1].reply_lora == str(tmp_path / "lora")
    with pytest.raises(SystemExit):  # a LoRA folder and no LoRA at all
        main(["eval", "dialogue", "--data", str(path), "--reply-lora", "x", "--no-reply-lora"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["eval", "dialogue", "--data", str(path), "--exemplars", str(path)]) == 1  # its own references
    assert "is the file being scored" in capsys.readouterr().err


# --- the shipped planner on real ESConv ---------------------------------------------------------------------------


@pytest.mark.weights
@pytest.mark.slow
@pytest.mark.data
def test_shipped_planner_on_esconv_test(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import require_shared

    path = require_shared("esconv/test.jsonl")
    assert main(["eval", "strategy", "--data", str(path), "--limit", "40", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dialogues"] == 40 and report["n"] > 400
    assert report["accuracy"] > report["majority_class"]["accuracy"]
    assert report["repetition_rate"] <= 0.30 and 1 <= report["mean_strategies_per_turn"] <= 2
    assert np.isclose(sum(report["predicted_distribution"].values()), 1, atol=1e-3)
