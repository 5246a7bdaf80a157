"""The reply topic check (``fusion.reply_fit``): a tiny model trained in the test, saving and loading, the
conversation's fallback when a responder's own check refuses its reply, and the shipped model on a real case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from affectlens.errors import AffectLensError
from fusion.reply_fit import RECENT_MESSAGES, ReplyFitModel, pair_features, recent_text
from fusion.safety_semantic import fit_classifier
from fusion.strategy import Message
from tests.test_conversation import EchoResponder, conversation, words_embed

TOPICS = {
    "exam": ["my exam is tomorrow", "I failed the exam", "the exam results scare me", "studying for the exam"],
    "car": ["my car broke down", "the car needs repairs", "I crashed the car", "selling my old car"],
    "dog": ["my dog is sick", "the dog ran away", "walking the dog helps", "the vet saw my dog"],
}
REPLIES = {
    "exam": ["how do you feel about the exam", "the exam sounds stressful", "when is the next exam"],
    "car": ["is the car fixed now", "car trouble is stressful", "can someone drive the car"],
    "dog": ["how is the dog now", "losing a dog hurts", "does the dog like walks"],
}


def tiny_model(threshold: float = 0.5) -> ReplyFitModel:
    """Trained here: replies on the dialogue's topic against replies on another one."""
    rows, labels = [], []
    for topic, said in TOPICS.items():
        for text in said:
            last, recent = words_embed([text]), words_embed([f"{text}\nhello"])
            for other, replies in REPLIES.items():
                vectors = words_embed(replies)
                rows.append(
                    pair_features(np.repeat(last, len(replies), 0), np.repeat(recent, len(replies), 0), vectors)
                )
                labels += [float(other == topic)] * len(replies)
    layers = fit_classifier(np.concatenate(rows), np.array(labels), hidden=16, steps=400, batch_size=32, lr=1e-2)
    return ReplyFitModel(*layers, threshold=threshold, embed=words_embed)


def test_recent_text_reads_the_last_message_and_the_recent_dialogue_newest_first() -> None:
    dialogue = [Message("usr" if i % 2 == 0 else "sys", f"m{i}") for i in range(RECENT_MESSAGES + 3)]
    last, recent = recent_text(dialogue)
    assert last == dialogue[-1].text if dialogue[-1].speaker == "usr" else dialogue[-2].text
    lines = recent.split("\n")
    assert (
        len(lines) == RECENT_MESSAGES and lines[0] == dialogue[-1].text and lines[-1] == dialogue[-RECENT_MESSAGES].text
    )


def test_a_tiny_model_refuses_a_reply_from_another_topic() -> None:
    model = tiny_model()
    dialogue = [Message("usr", "hi"), Message("sys", "hello"), Message("usr", "I failed the exam again")]
    assert model.fits(dialogue, "the exam sounds stressful") > 0.5
    assert model.problem(dialogue, "the exam sounds stressful") is None
    found = model.problem(dialogue, "is the car fixed now")
    assert found is not None and found.startswith("left the topic") and "car fixed" in found
    assert model.problem(dialogue, "") is None and model.problem([], "is the car fixed now") is None


def test_save_and_load_keep_the_model_and_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    model = tiny_model(threshold=0.3)
    path = model.save(tmp_path / "fit.safetensors")
    loaded = ReplyFitModel.load(path, embed=words_embed)
    dialogue = [Message("usr", "my dog is sick")]
    assert loaded.threshold == 0.3
    assert loaded.fits(dialogue, "how is the dog now") == pytest.approx(model.fits(dialogue, "how is the dog now"))
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(AffectLensError, match="unreadable reply topic model"):
        ReplyFitModel.load(path, embed=words_embed)
    with pytest.raises(AffectLensError, match="missing"):
        ReplyFitModel.load(tmp_path / "absent.safetensors", embed=words_embed)


def test_fit_classifier_in_batches_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    a = fit_classifier(x, y, hidden=8, steps=50, batch_size=16)
    b = fit_classifier(x, y, hidden=8, steps=50, batch_size=16)
    assert all(np.array_equal(p, q) for p, q in zip(a[:3], b[:3], strict=True)) and a[3] == b[3]


class CheckedResponder(EchoResponder):
    """Replies, then refuses its own reply as off topic (as ``LMResponder`` does with a topic model)."""

    def problems(self, dialogue, text) -> list[str]:
        assert dialogue[-1].speaker == "usr"  # the person's latest message is part of what the check reads
        return [f"left the topic (p 0.01 < 0.10 that it answers this conversation): “{text}”"]


def test_a_reply_its_responder_refuses_falls_back_to_the_template_and_the_turn_says_why() -> None:
    chat = conversation(CheckedResponder("What kind of jobs do you enjoy?"))
    turn = chat.send("I failed my driving test again.")
    assert turn.reply_source == "template" and turn.reply == turn.tree.reply.text
    assert len(turn.refused) == 1 and turn.refused[0].startswith("left the topic")
    assert turn.to_dict()["refused"] == list(turn.refused)
    fine = conversation().send("I failed my driving test again.")  # no own check: kept, nothing refused
    assert fine.reply_source == "echo" and fine.refused == ()


def test_the_shipped_model_refuses_a_reply_about_something_else() -> None:
    from fusion.reply_fit import shipped_model

    model = shipped_model()
    assert model is not None
    # the example conversation as the LM wrote it (docs/examples/conversations/lm-replies/driving-test.md)
    dialogue = [
        Message("usr", "Hi. I failed my driving test again today."),
        Message("sys", "Hello! I'm sorry you've been having trouble with your driving test."),
        Message("usr", "It's the third time. I studied so hard and I still panicked at the roundabout."),
        Message("sys", "I understand that it is difficult for some people to study but there are many ways to improve "
                "your skills. Have you tried any of those?"),
        Message("usr", "My dad keeps saying I'm useless with cars."),
    ]  # fmt: skip
    jobs = "I think it would be helpful if you could share what you know about your job as well. What kind of jobs do "
    found = model.problem(dialogue, jobs + "you enjoy doing?")
    assert found is not None and found.startswith("left the topic")
    assert model.problem(dialogue, "It hurts when your dad says that. How did you feel when he said it?") is None
    # it reads whether a reply answers what was said, not only its topic: sorry for a greeting does not
    assert model.problem([Message("usr", "Hi, how are you?")], "How are you feeling right now?") is None
    assert model.problem([Message("usr", "Hello")], "I'm sorry to hear that.") is not None
