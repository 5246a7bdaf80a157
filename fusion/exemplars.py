"""Retrieved ESConv exemplars: real supporter replies of a planned strategy, to a seeker message like this one.

``ExemplarBank`` holds the first message of every supporter turn that answers the seeker in an ESConv JSONL file
(the seeker's message, the supporter's reply, the reply's strategy and the dialogue's index), with all-MiniLM
sentence embeddings of the seeker messages. ``retrieve(message, strategy)`` returns the reply of the most similar
seeker message whose reply used ``strategy`` (cosine of the seeker messages; replies shorter than
``min_words`` or longer than ``max_words`` are not kept, so an exemplar is one usable sentence or two).

ESConv (CC BY-NC 4.0, research use) is data this project does not redistribute: no bank ships in ``weights/``. A
bank is built from the user's own copy (``ExemplarBank.from_esconv(path)``, or the ``AFFECTLENS_ESCONV``
environment variable naming the train JSONL, read by ``default_bank``); its embeddings are cached next to the
other caches under ``~/.cache/affectlens/exemplars/`` keyed by the file's sha256. Without a bank the reply
LoRA still works: it was trained with the exemplar left out of half of its prompts.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from affectlens.labels import ESCONV_STRATEGIES

logger = logging.getLogger(__name__)

#: Environment variable naming an ESConv train JSONL to retrieve exemplars from.
ESCONV_ENV: Final = "AFFECTLENS_ESCONV"
#: Shortest and longest exemplar replies kept, in words.
MIN_WORDS: Final = 5
MAX_WORDS: Final = 40

Embedder = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class Exemplar:
    """One supporter reply of the bank: the seeker's message it answered, the reply, its strategy, its dialogue."""

    seeker: str
    reply: str
    strategy: str
    dialogue: int


class ExemplarBank:
    """Exemplars and the normalised embeddings of their seeker messages (``(N, d)``, row ``i`` for item ``i``)."""

    def __init__(self, items: Sequence[Exemplar], vectors: np.ndarray, embed: Embedder) -> None:
        if len(items) != len(vectors):
            raise ValueError(f"{len(items)} exemplars but {len(vectors)} embeddings")
        self.items = list(items)
        self.vectors = np.asarray(vectors, np.float32)
        self.embed = embed
        self._strategy = np.array([ESCONV_STRATEGIES.index(e.strategy) for e in self.items], np.int64)
        self._dialogue = np.array([e.dialogue for e in self.items], np.int64)

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def from_esconv(
        cls, path: str | os.PathLike[str], embed: Embedder | None = None, cache: Path | None = None
    ) -> ExemplarBank:
        """A bank from an ESConv JSONL file; embeddings cached under ``cache`` (default
        ``~/.cache/affectlens/exemplars``) by the file's sha256. Raises ``MediaError`` for an unreadable file."""
        from fusion.esconv import read_dialogues, reply_samples

        path = Path(path)
        dialogues = read_dialogues(path)
        items = []
        for sample in reply_samples(dialogues, per_dialogue=10_000):
            if sample.strategy in ESCONV_STRATEGIES and MIN_WORDS <= len(sample.reference.split()) <= MAX_WORDS:
                items.append(Exemplar(sample.seeker, sample.reference, sample.strategy, sample.dialogue))
        if embed is None:
            from fusion.memory import shared_sentence_embedder

            embed = shared_sentence_embedder()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        cache = cache or Path.home() / ".cache" / "affectlens" / "exemplars"
        stored = cache / f"{digest}-{len(items)}.npy"
        if stored.is_file():
            vectors = np.load(stored)
        else:
            vectors = embed([e.seeker for e in items])
            cache.mkdir(parents=True, exist_ok=True)
            np.save(stored, vectors)
        logger.info("exemplar bank from %s: %d supporter replies", path, len(items))
        return cls(items, vectors, embed)

    def retrieve(
        self, message: str, strategy: str, exclude_dialogue: int | None = None, vector: np.ndarray | None = None
    ) -> Exemplar | None:
        """The exemplar of ``strategy`` whose seeker message is nearest ``message`` (or its embedding ``vector``),
        leaving out dialogue ``exclude_dialogue``; None when the bank has none of that strategy."""
        if strategy not in ESCONV_STRATEGIES or not message.strip():
            return None
        mask = self._strategy == ESCONV_STRATEGIES.index(strategy)
        if exclude_dialogue is not None:
            mask &= self._dialogue != exclude_dialogue
        if not mask.any():
            return None
        query = self.embed([message])[0] if vector is None else np.asarray(vector, np.float32)
        scores = np.where(mask, self.vectors @ query, -np.inf)
        return self.items[int(scores.argmax())]


def default_bank(embed: Embedder | None = None) -> ExemplarBank | None:
    """The bank of the ESConv file ``AFFECTLENS_ESCONV`` names (embedded by ``embed``, default all-MiniLM), or None
    when it is unset; a named file that cannot be read is logged and gives None (the replies go on without
    exemplars)."""
    path = os.environ.get(ESCONV_ENV, "").strip()
    if not path:
        return None
    from affectlens.errors import AffectLensError

    try:
        return ExemplarBank.from_esconv(path, embed)
    except (AffectLensError, OSError) as exc:
        logger.warning("%s=%s: no exemplars (%s)", ESCONV_ENV, path, exc)
        return None
