"""Emotional memory: a user's earlier turns kept with their emotion, recalled by content and mood for the reply
("Last time you mentioned your exam, you seemed worried.").

Each remembered turn holds its text, emotion label, valence/arousal, topic keywords and an L2-normalised text
embedding from an injected ``embed(texts) -> (N, d)`` callable (``text_embedder`` builds one from a
``TextEmotionModel``, ``sentence_embedder`` from the all-MiniLM-L6-v2 sentence encoder). Recall scores every
eligible item against the query text and, when given, the current mood ``m = (valence, arousal)``; mood-congruent
retrieval in the manner of Emotional RAG (Huang et al. 2024,
"Emotional RAG: Enhancing role-playing agents through emotional retrieval")::

    content(i) = cos(e_query, e_i)                                       in [-1, 1]
    mood(i)    = 1 - ||m - (v_i, a_i)||_2 / (2 √2)                       in [0, 1] (2 √2: the square's diagonal)
    score(i)   = α · content(i) + (1 - α) · mood(i)      (α = 0.7; score = content(i) without a mood)

Items of the current turn and of the ``exclude_recent`` turns before it are never recalled (they are still in
the dialogue); the ``k`` best with ``score >= min_score`` and ``content >= min_content`` come back, best first
(ties: the more recent). The thresholds depend on the embedder; the defaults suit ``sentence_embedder`` (the
shipped all-MiniLM-L6-v2 base). ``text_embedder`` reuses the text emotion model's pooled vectors instead, which
are trained for emotion and so make "content" largely a second mood term.

Keywords (``keywords``) are the text's content words: lower-cased alphabetic tokens of three or more letters,
minus English stop-words and common feeling words (the feeling is kept as the emotion label), in order of first
appearance. Each user keeps at most ``max_items`` items; past that, the least emotional (smallest
``||(v, a)||``) of the older half is dropped, so old neutral small talk goes first and old emotional turns last.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from affectlens.labels import canonical_label

if TYPE_CHECKING:
    from perception.text.emotion import TextEmotionModel

logger = logging.getLogger(__name__)

#: ``embed(texts) -> (N, d)`` float array, one row per text.
Embedder = Callable[[list[str]], np.ndarray]

_MOOD_SPAN: Final = 2.0 * math.sqrt(2.0)
_TOKEN = re.compile(r"[a-z][a-z']*[a-z]|[a-z]")


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


#: English function words and conversational fillers that carry no topic.
STOP_WORDS: Final[frozenset[str]] = _word_set(
    """
    a about above actually after again against all also am an and any anyway are aren't as at back be because
    been before being below between bit both but by can can't cannot cant could couldn't did didn't didnt do
    does doesn't doesnt doing don't dont down during each even ever every few for from further get gets getting
    go goes going gonna got gotten had hadn't has hasn't have haven't having he he'd he'll he's her here here's
    hers herself him himself his how how's i i'd i'll i'm i've if im in into is isn't isnt it it's its itself
    ive just kind know let's like lot lots made make makes many maybe me more most much must mustn't my myself
    need needs no nor not now of off often oh ok okay on once one only or other ought our ours ourselves out
    over own really right said same say says see seem seems shan't she she'd she'll she's should shouldn't so
    some somehow something sort still such sure take than that that's the their theirs them themselves then
    there there's these they they'd they'll they're they've thing things think this those though through to
    today tomorrow tonight too under until up upon us very via want wanted was wasn't wasnt way we we'd we'll
    we're we've week well went were weren't what what's when when's where where's which while who who's whom why
    why's will with won't wont would wouldn't yeah yes yesterday yet you you'd you'll you're you've your yours
    yourself yourselves
    """
)

#: Feeling words, left out of keywords: the feeling is stored as the item's emotion.
FEELING_WORDS: Final[frozenset[str]] = _word_set(
    """
    afraid angry annoyed anxious ashamed awful bad calm cheerful confused depressed disappointed disgusted down
    embarrassed excited fear feel feeling feelings feels felt fine frightened frustrated furious glad good
    grateful great guilty happy hate hopeless hurt joy lonely love mad miserable nervous okay panic proud
    relieved sad scared shocked sorry stressed stressful surprised terrible terrified tired upset worried worry
    worrying
    """
)

#: How ``mention`` names a remembered feeling, by canonical emotion (``None``: no feeling is mentioned).
FEELING_PHRASES: Final[dict[str, str | None]] = {
    "neutral": None,
    "happiness": "happy",
    "sadness": "down",
    "surprise": "surprised",
    "fear": "worried",
    "disgust": "put off",
    "anger": "frustrated",
    "contempt": "dismissive",
}


def keywords(text: str, max_keywords: int = 5) -> tuple[str, ...]:
    """Up to ``max_keywords`` content words of ``text``, in order of first appearance (see the module docstring)."""
    out: list[str] = []
    for token in _TOKEN.findall(text.lower().replace("’", "'")):
        word = token[:-2] if token.endswith("'s") else token
        if len(word) < 3 or word in STOP_WORDS or word in FEELING_WORDS or word in out:
            continue
        out.append(word)
        if len(out) == max_keywords:
            break
    return tuple(out)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise ValueError(f"embed must return an (N, d) array, got shape {x.shape}")
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def sentence_embedder(base_path: str | None = None, batch_size: int = 32, max_length: int = 256) -> Embedder:
    """``embed(texts) -> (N, d)`` float32, L2-normalised: all-MiniLM-L6-v2 sentence embeddings (mean-pooled, as
    sentence-transformers pools them), from the ``all-MiniLM-L6-v2`` weight group the text emotion model already
    ships, or from the model folder ``base_path``. The recommended embedder: it is trained for semantic
    similarity, so content and mood stay separate terms of the score.

    The encoder loads here, through ``affectlens.weights``' lookup order (local files first), not at import.
    """
    import torch

    from affectlens import weights
    from perception.text.emotion import BASE_GROUP, load_base, mean_pool

    encoder, tokenizer = load_base(weights.locate_group(BASE_GROUP, base_path).path)

    @torch.inference_mode()
    def embed(texts: list[str]) -> np.ndarray:
        rows = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            rows.append(mean_pool(hidden, batch["attention_mask"]).float().numpy())
        return _normalise(np.concatenate(rows) if rows else np.zeros((0, encoder.config.hidden_size), np.float32))

    return embed


@lru_cache(maxsize=1)
def shared_sentence_embedder() -> Embedder:
    """One ``sentence_embedder()`` (the shipped encoder) per process, for the parts that all read with it: the
    conversations' memory (the CLI's, the demo's, the dialogue eval's), the reply exemplars, and the semantic safety
    reader (``fusion.safety_semantic``)."""
    return sentence_embedder()


def text_embedder(model: TextEmotionModel) -> Embedder:
    """``embed(texts) -> (N, d)`` float32, L2-normalised: a ``TextEmotionModel``'s pooled sentence embeddings (the
    same vectors as ``TextEmotion.embedding``, so an analysed turn's embedding can be stored as it is).

    No second encoder, but these vectors are trained for emotion: with the shipped model "I'm so worried about my
    exam tomorrow" lies nearer "I'm worried" (cosine 0.94) than "How should I prepare for the exam?" (0.27), so
    recall by them is mostly by feeling. Prefer ``sentence_embedder`` for recall by content.
    """

    def embed(texts: list[str]) -> np.ndarray:
        _, _, pooled = model.predict_logits_and_embeddings(list(texts))
        return _normalise(pooled)

    return embed


@dataclass(frozen=True, eq=False)
class MemoryItem:
    """One remembered turn: its text, emotion label, valence/arousal in [-1, 1], ``(d,)`` L2-normalised
    ``embedding``, topic ``keywords`` and optional ``time`` in seconds."""

    turn: int
    text: str
    emotion: str
    valence: float
    arousal: float
    embedding: np.ndarray = field(repr=False)
    keywords: tuple[str, ...] = ()
    time: float | None = None

    @property
    def intensity(self) -> float:
        """How emotional the turn was: ``||(v, a)|| / √2`` in [0, 1]."""
        return math.hypot(self.valence, self.arousal) / math.sqrt(2.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "text": self.text,
            "emotion": self.emotion,
            "valence": round(self.valence, 4),
            "arousal": round(self.arousal, 4),
            "embedding": [float(x) for x in self.embedding],
            "keywords": list(self.keywords),
            "time": self.time,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> MemoryItem:
        return cls(
            int(raw["turn"]),
            str(raw["text"]),
            str(raw["emotion"]),
            float(raw["valence"]),
            float(raw["arousal"]),
            np.asarray(raw["embedding"], np.float32),
            tuple(raw.get("keywords", ())),
            None if raw.get("time") is None else float(raw["time"]),
        )


@dataclass(frozen=True)
class Recollection:
    """A recalled item with its ``score`` and the parts of it (``content`` cosine, ``mood`` congruence or
    ``None`` without a query mood), and the ``topic``: the item's keyword shared with the query, if any."""

    item: MemoryItem
    score: float
    content: float
    mood: float | None
    topic: str | None

    def to_dict(self) -> dict[str, Any]:
        item = self.item.to_dict()
        del item["embedding"]
        return {
            "item": item,
            "score": round(self.score, 4),
            "content": round(self.content, 4),
            "mood": None if self.mood is None else round(self.mood, 4),
            "topic": self.topic,
        }


@dataclass(frozen=True)
class MemoryConfig:
    """``alpha``: weight of content against mood in the score; ``exclude_recent``: turns before the current one that
    are never recalled; ``min_score``: default threshold on the score; ``min_content``: threshold on the content
    cosine alone (mood reorders relevant turns, it never recalls an unrelated one); ``max_items``: cap per user;
    ``max_keywords``: keywords kept per item. The thresholds suit ``sentence_embedder`` (in a small check related
    sentences scored 0.5-0.6, unrelated ones 0.0-0.25)."""

    alpha: float = 0.7
    exclude_recent: int = 2
    min_score: float = 0.4
    min_content: float = 0.3
    max_items: int = 200
    max_keywords: int = 5

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.exclude_recent < 0 or self.max_items < 1 or self.max_keywords < 1:
            raise ValueError("exclude_recent must be >= 0, max_items and max_keywords >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mood_congruence(mood: tuple[float, float], valence: float, arousal: float) -> float:
    """``1 - ||mood - (valence, arousal)|| / (2 √2)``: 1 for the same point, 0 for opposite corners."""
    return 1.0 - math.hypot(mood[0] - valence, mood[1] - arousal) / _MOOD_SPAN


class EmotionalMemory:
    """Per-user store of earlier turns, recalled by content and mood (see the module docstring)."""

    def __init__(self, embed: Embedder, config: MemoryConfig | None = None) -> None:
        self.embed = embed
        self.config = config or MemoryConfig()
        self._items: dict[str, list[MemoryItem]] = {}

    def items(self, user_id: str) -> list[MemoryItem]:
        """The user's items, oldest first."""
        return list(self._items.get(user_id, ()))

    def forget(self, user_id: str) -> None:
        """Drop everything remembered about the user."""
        self._items.pop(user_id, None)

    def add(
        self,
        user_id: str,
        turn: int,
        text: str,
        emotion_label: str,
        valence: float,
        arousal: float,
        *,
        embedding: np.ndarray | None = None,
        time: float | None = None,
    ) -> MemoryItem:
        """Remember one turn. ``embedding``: the turn's text embedding when already computed
        (``TextEmotion.embedding``; it must come from the same encoder as ``embed``), else ``embed`` is called.

        Raises:
            ValueError: the text is empty or whitespace only (nothing to recall it by).
        """
        if not text.strip():
            raise ValueError("text is empty or whitespace only: there is nothing to remember")
        vector = _normalise(self.embed([text]) if embedding is None else np.asarray(embedding)[None, :])[0]
        item = MemoryItem(
            int(turn),
            text,
            emotion_label,
            float(np.clip(valence, -1.0, 1.0)),
            float(np.clip(arousal, -1.0, 1.0)),
            vector,
            keywords(text, self.config.max_keywords),
            time,
        )
        store = self._items.setdefault(user_id, [])
        store.append(item)
        while len(store) > self.config.max_items:
            older = store[: max(1, len(store) // 2)]
            drop = min(range(len(older)), key=lambda i: (older[i].intensity, older[i].turn))
            logger.debug("memory of %s full: dropping turn %d (%s)", user_id, store[drop].turn, store[drop].emotion)
            del store[drop]
        return item

    def recall(
        self,
        user_id: str,
        query_text: str,
        mood: tuple[float, float] | None = None,
        k: int = 3,
        min_score: float | None = None,
        turn: int | None = None,
    ) -> list[Recollection]:
        """The ``k`` best earlier items for ``query_text`` (and ``mood``, valence/arousal in [-1, 1]), best first.

        ``turn`` is the current turn (default: the user's latest stored turn); it and the ``exclude_recent`` turns
        before it are left out. ``min_score`` defaults to ``config.min_score``. A blank query recalls nothing.

        Raises:
            ValueError: the stored embeddings and the query's have different sizes (another encoder).
        """
        store = self._items.get(user_id, [])
        if not store or not query_text.strip() or k <= 0:
            return []
        current = max(item.turn for item in store) if turn is None else int(turn)
        eligible = [item for item in store if item.turn < current - self.config.exclude_recent]
        if not eligible:
            return []
        query = _normalise(self.embed([query_text]))[0]
        matrix = np.stack([item.embedding for item in eligible])
        if matrix.shape[1] != query.shape[0]:
            raise ValueError(
                f"stored embeddings have {matrix.shape[1]} dimensions, the query {query.shape[0]}: "
                "the memory was built with another encoder"
            )
        content = matrix @ query
        alpha = self.config.alpha
        threshold = self.config.min_score if min_score is None else min_score
        query_words = set(keywords(query_text, max_keywords=64))
        found = []
        for item, cos in zip(eligible, content.tolist(), strict=True):
            congruence = None if mood is None else mood_congruence(mood, item.valence, item.arousal)
            score = cos if congruence is None else alpha * cos + (1.0 - alpha) * congruence
            if cos < self.config.min_content or score < threshold:
                continue
            topic = next((w for w in item.keywords if w in query_words), None)
            found.append(Recollection(item, float(score), float(cos), congruence, topic))
        found.sort(key=lambda r: (-r.score, -r.item.turn))
        return found[:k]

    # -- persistence -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: the config and per user the items (embeddings as lists)."""
        return {
            "config": self.config.to_dict(),
            "users": {uid: [item.to_dict() for item in items] for uid, items in self._items.items()},
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], embed: Embedder) -> EmotionalMemory:
        """The memory from ``to_dict``'s output; ``embed`` must be the encoder the items were embedded with."""
        memory = cls(embed, MemoryConfig(**raw.get("config", {})))
        for uid, items in raw.get("users", {}).items():
            memory._items[uid] = [MemoryItem.from_dict(item) for item in items]
        return memory


def _feeling(item: MemoryItem) -> str | None:
    try:
        name = canonical_label(item.emotion)
    except KeyError:
        name = None
    if name is not None:
        return FEELING_PHRASES.get(name)
    # an unknown or abstaining label: read the feeling off the circumplex quadrant
    if item.valence <= -0.3:
        return "tense" if item.arousal >= 0.3 else "down"
    if item.valence >= 0.3:
        return "excited" if item.arousal >= 0.3 else "content"
    return None


def _topic_phrase(text: str, topic: str) -> str:
    """``topic`` as the user put it: ``"my math exam"`` -> ``"your math exam"``; else the bare word."""
    match = re.search(rf"\b(?:my|our)\s+((?:[a-z][a-z'-]*\s+)?{re.escape(topic)})\b", text.lower())
    return f"your {match.group(1)}" if match else topic


def _snippet(text: str, max_words: int = 8) -> str:
    words = text.split()
    return " ".join(words) if len(words) <= max_words else " ".join(words[:max_words]) + "…"


#: ``mention`` names a change for the better when the person's valence now is at least this, and this much above
#: the recalled turn's.
BRIGHTER_NOW: Final = 0.3


def mention(recollection: Recollection, now_valence: float | None = None) -> str:
    """A natural reference to a recalled turn for a reply.

    With a topic shared with the query: ``"Last time you mentioned your exam, you seemed worried."``; without one,
    the start of what was said: ``'Last time you said "I failed the test", you seemed down.'``. The feeling comes
    from the emotion label (``FEELING_PHRASES``), else from the valence/arousal quadrant; none for neutral. When the
    person sounds clearly brighter now (``now_valence``, in [-1, 1], at least ``BRIGHTER_NOW`` and that much above
    the recalled turn's) the change is named instead, so that a glad reply that follows is not read as glad about
    the old words: ``'Last time you said "Maybe I should give up", and now you sound more hopeful.'``.
    """
    item = recollection.item
    if recollection.topic:
        head = f"Last time you mentioned {_topic_phrase(item.text, recollection.topic)}"
    else:
        head = f'Last time you said "{_snippet(item.text).rstrip(".!?,;:")}"'
    if now_valence is not None and now_valence >= BRIGHTER_NOW and now_valence - item.valence >= BRIGHTER_NOW:
        return f"{head}, and now you sound more hopeful."
    feeling = _feeling(item)
    return f"{head}, you seemed {feeling}." if feeling else f"{head}."
