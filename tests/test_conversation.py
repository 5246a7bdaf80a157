"""The multi-turn Conversation with tiny injected parts: trees, plans, affect state, memory, replies."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from affectlens import Analyzer
from affectlens.conversation import Conversation, LMResponder, tidy_reply
from affectlens.labels import CANONICAL_EMOTIONS
from affectlens.types import EmotionPrediction, TextEmotion
from fusion.affect_state import AffectTracker
from fusion.late import LateFusion
from fusion.memory import EmotionalMemory, MemoryConfig
from fusion.strategy import StrategyConfig, StrategyHead, StrategyPlanner, context_features
from tests.test_strategy import DIALOGUE, fake_embed


class KeywordText:
    """'exam' or 'fail' reads as sadness, 'great' as happiness, anything else neutral."""

    name = "keyword-text"
    weight_files: dict[str, str] = {}  # noqa: RUF012 - a fixed empty mapping

    def predict(self, texts: list[str]) -> list[TextEmotion]:
        out = []
        for text in texts:
            label = "sadness" if ("exam" in text or "fail" in text) else "happiness" if "great" in text else "neutral"
            vector = np.full(len(CANONICAL_EMOTIONS), 0.02)
            vector[CANONICAL_EMOTIONS.index(label)] = 0.88
            va = {"sadness": (-0.7, -0.4), "happiness": (0.8, 0.4), "neutral": (0.0, 0.0)}[label]
            out.append(
                TextEmotion(EmotionPrediction.from_vector(vector, self.name, *va), {}, ((text.split()[0], 0.5),))
            )
        return out


class EchoResponder:
    name = "echo"

    def __init__(self, text: str = "That sounds hard. What happened next?") -> None:
        self.text = text
        self.calls: list[tuple[str, ...]] = []

    def reply(self, tree, strategies, dialogue, recollection) -> str:
        self.calls.append(tuple(strategies))
        return self.text


def words_embed(texts: list[str]) -> np.ndarray:
    """Bag-of-words hashing, L2-normalised: 'exam' texts are close to each other."""
    out = np.zeros((len(texts), 64), np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().replace(".", " ").split():
            out[i, zlib.crc32(word.encode()) % 64] += 1.0  # stable across runs (hash() is salted)
    return out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-9, None)


def conversation(responder=None) -> Conversation:
    head = StrategyHead(StrategyConfig(input_dim=context_features([DIALOGUE], fake_embed).shape[1], hidden=8))
    return Conversation(
        analyzer=Analyzer(text=KeywordText(), fuser=LateFusion()),
        planner=StrategyPlanner(head, fake_embed),
        responder=responder or EchoResponder(),
        tracker=AffectTracker(),
        memory=EmotionalMemory(words_embed, MemoryConfig(exclude_recent=1, min_score=0.1, min_content=0.1)),
    )


def test_turns_carry_tree_plan_affect_and_reply():
    chat = conversation()
    first = chat.send("I have my exam tomorrow and I am scared to fail.")
    assert first.tree.emotion.value["label"] == "sadness"
    assert first.strategies and all(0 <= p <= 1 for _, _, p in first.strategies)
    assert first.reply == "That sounds hard. What happened next?" and first.reply_source == "echo"
    assert first.affect is not None and first.affect.valence < 0
    second = chat.send("Today was great, I went for a walk.")
    assert second.affect is not None and second.affect.valence > first.affect.valence  # the state moves...
    assert second.affect.valence < 0.8  # ...but with inertia, not all the way
    assert [m.speaker for m in chat.dialogue] == ["usr", "sys", "usr", "sys"]
    payload = chat.to_dict()
    assert len(payload["turns"]) == 2 and len(payload["affect_trajectory"]) == 2


def test_memory_brings_back_an_earlier_topic_once():
    chat = conversation()
    chat.send("I have my exam tomorrow and I am scared to fail.")
    chat.send("Today was great, I went for a walk.")
    third = chat.send("The exam results come out soon.")
    assert third.recollection is not None and "exam" in third.recollection
    assert third.reply.startswith(third.recollection)  # used in the reply
    fourth = chat.send("Still thinking about the exam results.")
    assert fourth.recollection is None or fourth.recollection != third.recollection


def test_a_human_claiming_reply_falls_back_to_the_template():
    chat = conversation(EchoResponder("As a human, I know exactly how you feel."))
    turn = chat.send("I failed again.")
    assert turn.reply_source == "template" and turn.reply == turn.tree.reply.text


def test_empty_turn_is_refused():
    with pytest.raises(ValueError, match="needs text"):
        conversation().send("   ")


def test_tidy_reply_cuts_labels_repeats_and_fragments():
    text = "You: I hear you. I hear you. That is a lot to carry. Would you like to"
    assert tidy_reply(text) == "I hear you. That is a lot to carry."
    assert tidy_reply("Thank you.\nPerson: hi") == "Thank you."


def test_lm_responder_prompt_names_the_strategies_in_order():
    from fusion.lm import tiny_language_model

    chat = conversation()
    turn = chat.send("I failed my exam.")
    responder = LMResponder(tiny_language_model(), max_new_tokens=6)
    messages = responder.prompt(turn.tree, ["Question", "Reflection of feelings"], chat.dialogue, None)
    user = messages[-1]["content"]
    assert "I failed my exam." in user and user.index("open question") < user.index("name the feeling")
    assert isinstance(responder.reply(turn.tree, ["Question"], chat.dialogue, None), str)


def test_chat_cli_one_turn_as_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    import json

    import affectlens.conversation
    from affectlens import cli

    made = conversation()  # tiny parts; the CLI builds a Conversation around the injected analyzer
    monkeypatch.setattr(
        affectlens.conversation, "Conversation",
        lambda analyzer=None, user_id="user": made,
    )  # fmt: skip
    assert cli.main(["chat", "--text", "I failed my exam", "--json"], analyzer=made.analyzer) == 0
    turn = json.loads(capsys.readouterr().out)
    assert turn["reply"] and turn["strategies"] and turn["tree"]["emotion"]["value"]["label"] == "sadness"
    assert cli.main(["chat", "--json"]) == 2  # --json needs a turn to answer


def test_chat_cli_interactive(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    import io

    import affectlens.conversation
    from affectlens import cli

    made = conversation()
    monkeypatch.setattr(affectlens.conversation, "Conversation", lambda analyzer=None, user_id="user": made)
    monkeypatch.setattr("sys.stdin", io.StringIO("I failed my exam\n\n/quit\nnever read\n"))
    assert cli.main(["chat"], analyzer=made.analyzer) == 0
    out = capsys.readouterr().out
    assert out.count("AffectLens: ") == 1 and "strategies:" in out and len(made.turns) == 1


def test_the_tree_carries_the_affect_trajectory(tree_schema: dict):
    from affectlens.tree import AffectTree
    from tests.conftest import validate

    chat = conversation()
    chat.send("I have my exam tomorrow and I am scared to fail.")
    turn = chat.send("Today was great, I went for a walk.")
    affect = turn.tree.affect
    assert affect is not None and affect["trajectory"] == turn.trajectory
    assert len(affect["recent"]) == 2 and affect["state"]["valence"] == pytest.approx(turn.affect.valence, abs=1e-4)
    assert "affect over the conversation" in turn.tree.render()
    validate(turn.tree.to_dict(), tree_schema)
    assert AffectTree.from_dict(turn.tree.to_dict()).affect == affect
    assert chat.send("ok").tree.affect is not None
