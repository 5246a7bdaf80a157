"""Does a reply belong to this conversation? The topic check on the compact LM's replies.

A 135M model sometimes answers a different conversation: "What kind of jobs do you enjoy doing?" to someone who
just failed a driving test. Overlap scores against one reference do not see it, and a pattern cannot list every
topic. ``ReplyFitModel`` reads it from meaning: a one-hidden-layer classifier (``fusion.safety_semantic``'s,
trained by ``scripts/train_reply_fit.py``) over all-MiniLM-L6-v2 embeddings of the person's last message, of the
recent dialogue and of the reply (``pair_features``), trained on ESConv train to tell the supporter's real reply
from replies of other dialogues. So it reads whether a reply answers what was said, its topic and its kind: a
reply about something the conversation never touched scores low, and so does a fitting sentence in the wrong place
("I'm sorry to hear that." to "Hello", "How are you feeling right now?" to a goodbye). It is a coarse check: on
ESConv test it refuses about half of the replies taken from other dialogues (the rest are mostly generic ones that
fit there too) and 5% of the supporters' own replies, mostly weak ones; a generic sentence is refused in 4-44% of
valid contexts, depending on the sentence.

``fits(dialogue, reply)`` is p(the reply answers this dialogue); ``problem(dialogue, reply)`` names a reply below
the ``threshold`` (chosen on ESConv valid so that at most ``MAX_REFUSED`` of the supporters' own replies would be
refused), which ``affectlens.conversation.LMResponder`` reports so that the tree's template is used instead.

Limits: English; a 22M-parameter sentence encoder's sense of topic; it sees the last ``RECENT_MESSAGES`` messages
only, so a reply about something said long ago may read as off topic; it does not judge tone (``check_reply``'s
patterns do that).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from affectlens.errors import AffectLensError
from fusion.safety_semantic import classifier_probabilities, load_classifier, save_classifier

if TYPE_CHECKING:
    from fusion.strategy import Message

logger = logging.getLogger(__name__)

WEIGHT: Final[str] = "reply-fit"
CARD_WEIGHT: Final[str] = "reply-fit-card"
#: Messages of the dialogue (the person's last included) read as its recent context.
RECENT_MESSAGES: Final = 6
#: The threshold refuses at most this share of ESConv valid supporters' own replies (``scripts/train_reply_fit.py``).
MAX_REFUSED: Final = 0.05

Embedder = Callable[[list[str]], np.ndarray]


def recent_text(dialogue: Sequence[Message]) -> tuple[str, str]:
    """(the person's last message, the last ``RECENT_MESSAGES`` messages newest first, one a line): the two contexts
    a reply is read against. Newest first, so that the encoder's length cut drops the oldest words."""
    last = next((m.text for m in reversed(dialogue) if m.speaker == "usr" and m.text), "")
    recent = [m.text for m in list(dialogue)[-RECENT_MESSAGES:] if m.text]
    return last, "\n".join(reversed(recent))


def pair_features(last: np.ndarray, recent: np.ndarray, reply: np.ndarray) -> np.ndarray:
    """(N, 5d) features of L2-normalised embeddings (N, d) each: the reply itself (how generic it is), its
    element-wise products with the last message and the recent dialogue, and the absolute differences."""
    last, recent, reply = (np.asarray(a, np.float32) for a in (last, recent, reply))
    return np.concatenate([reply, last * reply, recent * reply, np.abs(last - reply), np.abs(recent - reply)], 1)


@dataclass(frozen=True)
class ReplyFitModel:
    """The classifier (``hidden_weight`` 5d x h, ``hidden_bias``, ``out_weight`` h, ``out_bias``; GELU) over
    ``pair_features``, giving p(the reply belongs to the dialogue), and the ``threshold`` under which a reply is
    refused as off topic."""

    hidden_weight: np.ndarray
    hidden_bias: np.ndarray
    out_weight: np.ndarray
    out_bias: float
    threshold: float
    embed: Embedder = field(repr=False)
    card: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.hidden_weight.shape[1] != self.hidden_bias.shape[0] or self.hidden_bias.shape != self.out_weight.shape:
            raise ValueError("the classifier's layers do not match")

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """p(belongs) for ``pair_features`` rows (N, 5d)."""
        return classifier_probabilities(
            features, (self.hidden_weight, self.hidden_bias, self.out_weight, self.out_bias)
        )

    def fits(self, dialogue: Sequence[Message], reply: str) -> float:
        """p(``reply`` answers ``dialogue``, whose last message is the person's)."""
        last, recent = recent_text(dialogue)
        vectors = self.embed([last or recent, recent or last, reply])
        return float(self.probabilities(pair_features(vectors[:1], vectors[1:2], vectors[2:]))[0])

    def problem(self, dialogue: Sequence[Message], reply: str) -> str | None:
        """``"left the topic: ..."`` for a reply under the threshold, else None (also for empty input)."""
        if not reply.strip() or not any(m.text for m in dialogue):
            return None
        p = self.fits(dialogue, reply)
        if p >= self.threshold:
            return None
        return f"left the topic (p {p:.2f} < {self.threshold:.2f} that it answers this conversation): “{reply}”"

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (safetensors: the two layers) and its ``.json`` card (threshold and whatever ``card``
        holds)."""
        layers = (self.hidden_weight, self.hidden_bias, self.out_weight, self.out_bias)
        return save_classifier(path, layers, {**self.card, "threshold": self.threshold})

    @classmethod
    def load(cls, path: str | Path | None = None, embed: Embedder | None = None) -> ReplyFitModel:
        """Load ``path`` and its ``.json`` card, or the shipped ``reply-fit`` weight through the weights lookup
        order; ``embed`` defaults to ``fusion.memory.shared_sentence_embedder()``."""
        layers, _, card = load_classifier(path, WEIGHT, CARD_WEIGHT, "reply topic model")
        try:
            threshold = float(card.pop("threshold"))
        except (KeyError, TypeError, ValueError) as exc:
            raise AffectLensError(f"{path or WEIGHT}: unreadable reply topic model card (no threshold: {exc})") from exc
        if embed is None:
            from fusion.memory import shared_sentence_embedder

            embed = shared_sentence_embedder()
        return cls(*layers, threshold, embed, card)


@lru_cache(maxsize=1)
def shipped_model() -> ReplyFitModel | None:
    """The shipped model, loaded once per process; None (logged) when it cannot load: the LM's replies are then
    checked by ``check_reply``'s patterns alone."""
    try:
        return ReplyFitModel.load()
    except Exception as exc:  # the patterns still check every reply
        logger.warning("reply topic model unavailable (%s); LM replies are not checked for topic", exc)
        return None
