"""Emotional memory: recall by content and mood, recent turns left out, the cap, mentions, persistence."""

from __future__ import annotations

import json
import re
import zlib

import numpy as np
import pytest

from fusion.memory import (
    EmotionalMemory,
    MemoryConfig,
    MemoryItem,
    keywords,
    mention,
    mood_congruence,
    sentence_embedder,
    text_embedder,
)
from perception.text.emotion import TextEmotionModel

DIM = 256


def bag_of_words(texts: list[str]) -> np.ndarray:
    """Deterministic fake embedder: hashed bag of content words (a word's crc32 picks its dimension)."""
    out = np.zeros((len(texts), DIM), np.float32)
    for i, text in enumerate(texts):
        for word in keywords(text, max_keywords=100):
            out[i, zlib.crc32(word.encode()) % DIM] += 1.0
    return out


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return bag_of_words(texts)


DIALOGUE = [
    ("I'm so worried about my math exam on Friday", "fear", -0.6, 0.7),
    ("My sister is getting married next month", "happiness", 0.8, 0.4),
    ("The weather was nice so I went for a walk in the park", "neutral", 0.1, 0.0),
    ("My cat has been sick all week", "sadness", -0.7, -0.4),
    ("ok", "neutral", 0.0, 0.0),
    ("hmm right", "neutral", 0.0, 0.0),
]


@pytest.fixture
def memory() -> EmotionalMemory:
    mem = EmotionalMemory(bag_of_words)
    for turn, (text, label, v, a) in enumerate(DIALOGUE):
        mem.add("u", turn, text, label, v, a)
    return mem


def test_keywords_are_content_words_in_order() -> None:
    assert keywords("I'm so worried about my math exam on Friday, the exam!") == ("math", "exam", "friday")
    assert keywords("My sister's wedding… I feel happy") == ("sister", "wedding")
    assert keywords("ok, it is what it is") == ()
    assert keywords("one two three four five six seven", max_keywords=2) == ("two", "three")


def test_content_retrieval_finds_the_exam_turn(memory: EmotionalMemory) -> None:
    found = memory.recall("u", "How should I prepare for the exam?", k=3)
    assert [r.item.turn for r in found] == [0]
    top = found[0]
    assert top.topic == "exam" and top.mood is None and top.score == top.content > 0.3
    assert memory.recall("u", "I bought a new laptop") == []  # nothing relevant: nothing recalled
    assert memory.recall("u", "   ") == [] and memory.recall("nobody", "exam") == []


def test_mood_congruence_breaks_ties_between_equally_similar_items() -> None:
    mem = EmotionalMemory(bag_of_words, MemoryConfig(exclude_recent=0))
    mem.add("u", 0, "I have my exam tomorrow", "fear", -0.6, 0.7)
    mem.add("u", 1, "I have my exam tomorrow", "happiness", 0.8, 0.4)
    query = "the exam"
    worried = mem.recall("u", query, mood=(-0.5, 0.6), turn=5)
    cheerful = mem.recall("u", query, mood=(0.7, 0.4), turn=5)
    assert worried[0].content == pytest.approx(worried[1].content)
    assert [r.item.emotion for r in worried] == ["fear", "happiness"]
    assert [r.item.emotion for r in cheerful] == ["happiness", "fear"]
    alpha = mem.config.alpha
    expected = alpha * worried[0].content + (1 - alpha) * mood_congruence((-0.5, 0.6), -0.6, 0.7)
    assert worried[0].score == pytest.approx(expected)


def test_mood_alone_never_recalls_an_unrelated_turn(memory: EmotionalMemory) -> None:
    # the cat turn is recent (excluded); the exam turn has exactly this mood but nothing in common with the query
    assert memory.recall("u", "I bought a new laptop", mood=(-0.6, 0.7), min_score=0.0) == []


def test_mood_congruence_range() -> None:
    assert mood_congruence((0.3, -0.2), 0.3, -0.2) == 1.0
    assert mood_congruence((1.0, 1.0), -1.0, -1.0) == pytest.approx(0.0)


def test_recent_turns_are_excluded() -> None:
    mem = EmotionalMemory(bag_of_words, MemoryConfig(exclude_recent=2))
    for turn in (3, 8, 9, 10):
        mem.add("u", turn, f"the exam again, turn {turn}", "fear", -0.5, 0.5)
    assert [r.item.turn for r in mem.recall("u", "exam", k=5)] == [3]  # current turn 10: 8, 9, 10 left out
    assert [r.item.turn for r in mem.recall("u", "exam", k=5, turn=20)] == [10, 9, 8, 3]  # ties: most recent first
    mem.config = MemoryConfig(exclude_recent=0)
    assert [r.item.turn for r in mem.recall("u", "exam", k=5, turn=10)] == [9, 8, 3]


def test_the_cap_drops_old_unemotional_items_first() -> None:
    mem = EmotionalMemory(bag_of_words, MemoryConfig(max_items=4))
    mem.add("u", 0, "my exam went badly", "sadness", -0.8, -0.3)
    mem.add("u", 1, "the bus was late", "neutral", 0.0, 0.05)
    mem.add("u", 2, "lunch was pasta", "neutral", 0.1, 0.0)
    mem.add("u", 3, "my brother visited", "happiness", 0.7, 0.3)
    mem.add("u", 4, "the train too", "neutral", 0.0, 0.0)
    assert [i.turn for i in mem.items("u")] == [0, 2, 3, 4]  # turn 1: old and flat; turn 0 is old but emotional
    mem.add("u", 5, "new shoes", "happiness", 0.5, 0.2)
    assert [i.turn for i in mem.items("u")] == [0, 3, 4, 5]
    assert len(mem.items("u")) == 4


def test_mention_names_the_topic_and_the_feeling(memory: EmotionalMemory) -> None:
    found = memory.recall("u", "How should I prepare for the exam?")
    assert mention(found[0]) == "Last time you mentioned your math exam, you seemed worried."
    text = mention(memory.recall("u", "Is your sister married now?", k=1)[0])
    assert text == "Last time you mentioned your sister, you seemed happy."


def test_mention_without_a_shared_keyword_or_a_clear_feeling() -> None:
    mem = EmotionalMemory(bag_of_words, MemoryConfig(exclude_recent=0))
    mem.add("u", 0, "Walked in the park under grey skies, for hours and hours again", "neutral", 0.0, 0.0)
    mem.add("u", 1, "The park", "nervousness", -0.5, 0.6)  # not a canonical label: feeling from the quadrant
    by_turn = {r.item.turn: r for r in mem.recall("u", "park", turn=5, min_score=0.0)}
    for r in by_turn.values():
        assert r.topic == "park"
    no_topic = type(by_turn[0])(by_turn[0].item, 0.5, 0.5, None, None)
    assert mention(no_topic) == 'Last time you said "Walked in the park under grey skies, for…".'
    assert mention(by_turn[1]) == "Last time you mentioned park, you seemed tense."
    # brighter now: the change is named, so a glad reply after it is not glad about the old words
    assert mention(no_topic, now_valence=0.76) == (
        'Last time you said "Walked in the park under grey skies, for…", and now you sound more hopeful.'
    )
    assert mention(by_turn[1], now_valence=0.2) == "Last time you mentioned park, you seemed tense."  # not bright
    assert mention(by_turn[1], now_valence=-0.6).endswith("you seemed tense.")  # worse now: no change named


def test_add_uses_a_given_embedding_and_refuses_blank_text() -> None:
    embed = Counting()
    mem = EmotionalMemory(embed)
    item = mem.add("u", 0, "exam", "fear", -0.5, 0.5, embedding=np.array([3.0, 4.0]))
    assert embed.calls == 0 and np.allclose(item.embedding, [0.6, 0.8])
    with pytest.raises(ValueError, match="nothing to remember"):
        mem.add("u", 1, "  ", "neutral", 0.0, 0.0)
    with pytest.raises(ValueError, match="another encoder"):
        mem.recall("u", "exam", turn=9)


def test_round_trip_through_json(memory: EmotionalMemory) -> None:
    raw = json.loads(json.dumps(memory.to_dict()))
    restored = EmotionalMemory.from_dict(raw, bag_of_words)
    assert restored.to_dict() == raw and restored.config == memory.config
    query, mood = "the exam on Friday", (-0.4, 0.5)
    before = [r.to_dict() for r in memory.recall("u", query, mood)]
    assert before and [r.to_dict() for r in restored.recall("u", query, mood)] == before
    item = MemoryItem.from_dict(raw["users"]["u"][0])
    assert item.keywords == ("math", "exam", "friday") and item.embedding.dtype == np.float32


def test_text_embedder_uses_the_text_models_pooled_embeddings() -> None:
    model = TextEmotionModel.tiny()
    embed = text_embedder(model)
    texts = ["my exam is on friday", "a walk in the park"]
    vectors = embed(texts)
    assert vectors.shape == (2, 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    pooled = model.predict(texts, explain=False)[0].embedding
    assert pooled is not None and np.allclose(vectors[0], pooled / np.linalg.norm(pooled), atol=1e-5)
    mem = EmotionalMemory(embed, MemoryConfig(exclude_recent=0, min_score=-1.0, min_content=-1.0))
    for turn, text in enumerate(texts):
        mem.add("u", turn, text, "neutral", 0.0, 0.0)
    assert mem.recall("u", texts[0], turn=5, k=1)[0].content == pytest.approx(1.0, abs=1e-5)


def test_mentions_read_naturally() -> None:
    sentence = re.compile(r"^Last time you (mentioned|said) .+\.$")
    mem = EmotionalMemory(bag_of_words, MemoryConfig(exclude_recent=0))
    for turn, (text, label, v, a) in enumerate(DIALOGUE):
        mem.add("u", turn, text, label, v, a)
    for text, *_ in DIALOGUE[:4]:
        for r in mem.recall("u", text, turn=10):
            assert sentence.match(mention(r)), mention(r)


@pytest.mark.weights
@pytest.mark.slow
def test_sentence_embedder_recalls_by_content_not_by_feeling() -> None:
    mem = EmotionalMemory(sentence_embedder(), MemoryConfig(exclude_recent=0))
    mem.add("u", 0, "I'm so worried about my math exam on Friday", "fear", -0.6, 0.7)
    mem.add("u", 1, "I'm worried", "fear", -0.6, 0.7)
    mem.add("u", 2, "My sister is getting married next month", "happiness", 0.8, 0.4)
    found = mem.recall("u", "How should I prepare for the exam?", mood=(-0.5, 0.6), turn=5)
    assert found and found[0].item.turn == 0 and found[0].topic == "exam"
    assert mention(found[0]) == "Last time you mentioned your math exam, you seemed worried."
    assert mem.recall("u", "I bought a new laptop", turn=5) == []
