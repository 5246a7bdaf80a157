"""Risk read by meaning: the second reader beside ``fusion.safety``'s patterns.

The patterns (``RISK_RULES``) recognise phrasings someone wrote down; a message that says the same thing in other
words ("I looked up how many pills it would take", "there's a rope in my closet and I keep looking at it") slips
past them. ``SemanticRiskModel`` reads the meaning instead: a small classifier (one hidden layer) over
all-MiniLM-L6-v2 sentence embeddings (the encoder the text emotion model already ships), trained by
``scripts/train_safety_semantic.py`` on a bank of written messages, people at risk (suicidal ideation, self-harm,
harm to or from others) against hard negatives that share their words (idioms, hyperbole, someone else's story,
news and fiction, past and resolved, negated, everyday ropes and pills, sadness without risk), and on what people
who come to a support chat write (ESConv's seeker messages) as everyday negatives.

``read(text)`` scores the whole message and each of its sentences and keeps the most likely span; the crisis
examples of the bank nearest to that span give its category and the explanation ("close in meaning to: ...").
``RiskDetector`` turns a reading at or above ``threshold`` into a ``strong`` cue (a crisis on its own), unless the
patterns saw explicit evidence against a risk in the same span (an idiom, a negation, a story); there is no
concern band, so idioms and negations the patterns leave alone stay alone. The threshold was chosen on the
development sets named in the weight's card, never on the blind set it reports.

Limits: English; a 22M-parameter sentence encoder's sense of meaning, so long stories whose risk is spread over
several sentences, sarcasm and new slang can still slip past; the bank is written text, not real users' messages.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import numpy as np

from affectlens import weights
from affectlens.errors import AffectLensError

logger = logging.getLogger(__name__)

WEIGHT: Final[str] = "safety-semantic"
CARD_WEIGHT: Final[str] = "safety-semantic-card"
#: Sentences for ``read``: split after ., ! or ? (and line breaks); fragments under this many characters join the
#: sentence before them (a short first one stands alone: the fit scored spans the same way).
_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+|\n+")
MIN_SPAN_CHARS: Final[int] = 12
#: Crisis examples of the bank voting on a reading's category.
NEIGHBOURS: Final[int] = 5

Embedder = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class SemanticReading:
    """The most likely span of a message: its probability of a crisis, where it is (``start:end`` in the text),
    the category its nearest crisis examples share, and the nearest one with its cosine similarity."""

    probability: float
    start: int
    end: int
    category: str
    nearest: str
    similarity: float

    def phrase(self, text: str) -> str:
        return text[self.start : self.end]


def spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``read`` scores: the whole message (stripped), then each sentence when there are several."""
    stripped = text.strip()
    if not stripped:
        return []
    offset = text.index(stripped)
    whole = (offset, offset + len(stripped))
    pieces: list[tuple[int, int]] = []
    start = offset
    for match in _SENTENCE_END.finditer(text, offset, whole[1]):
        pieces.append((start, match.start()))
        start = match.end()
    pieces.append((start, whole[1]))
    merged: list[tuple[int, int]] = []
    for a, b in pieces:
        if not text[a:b].strip():
            continue
        if merged and b - a < MIN_SPAN_CHARS:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return [whole] + (merged if len(merged) > 1 else [])


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh form (as ``torch.nn.GELU(approximate="tanh")`` trains it)."""
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


# ---- the one-hidden-layer classifier, shared with fusion.reply_fit ---------------------------------------------------

Layers = tuple[np.ndarray, np.ndarray, np.ndarray, float]
"""(hidden weight d x h, hidden bias h, out weight h, out bias): what ``fit_classifier`` returns."""


def classifier_probabilities(x: np.ndarray, layers: Layers) -> np.ndarray:
    """p(positive) of the classifier ``layers`` for inputs ``x`` (N, d): GELU hidden layer, sigmoid out."""
    hidden_weight, hidden_bias, out_weight, out_bias = layers
    hidden = _gelu(np.asarray(x, np.float32) @ hidden_weight + hidden_bias)
    logits = (hidden @ out_weight).astype(np.float64) + out_bias
    return np.asarray(1.0 / (1.0 + np.exp(-logits)))


def save_classifier(
    path: str | Path, layers: Layers, card: dict[str, Any], extra: dict[str, np.ndarray] | None = None
) -> Path:
    """Write ``path`` (safetensors: the two layers as float32, plus ``extra`` arrays) and its ``.json`` ``card``."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    hidden_weight, hidden_bias, out_weight, out_bias = layers
    arrays = {
        "hidden.weight": hidden_weight.astype(np.float32), "hidden.bias": hidden_bias.astype(np.float32),
        "out.weight": out_weight.astype(np.float32), "out.bias": np.array([out_bias], np.float32), **(extra or {}),
    }  # fmt: skip
    save_file(arrays, str(path))
    path.with_suffix(".json").write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n")
    return path


def load_classifier(
    path: str | Path | None, weight: str, card_weight: str, what: str
) -> tuple[Layers, dict[str, np.ndarray], dict[str, Any]]:
    """(layers, every array, card) from ``path`` and its ``.json`` card, or from the shipped ``weight`` and
    ``card_weight`` through the weights lookup order. A missing or unreadable file is an ``AffectLensError`` naming
    it and ``what`` it should hold."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if path is None:
        path, card_path = weights.locate(weight).path, weights.locate(card_weight).path
    else:
        path = Path(path)
        card_path = path.with_suffix(".json")
    if not path.is_file() or not card_path.is_file():
        raise AffectLensError(f"{path}: {what} or its card missing")
    try:
        arrays = load_file(str(path))
        card = json.loads(card_path.read_text())
        layers = (
            arrays["hidden.weight"].astype(np.float32), arrays["hidden.bias"].astype(np.float32),
            arrays["out.weight"].astype(np.float32), float(arrays["out.bias"][0]),
        )  # fmt: skip
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise AffectLensError(f"{path}: unreadable {what} ({exc})") from exc
    if not isinstance(card, dict):
        raise AffectLensError(f"{card_path}: unreadable {what} card (not a JSON object)")
    return layers, arrays, card


@dataclass(frozen=True)
class SemanticRiskModel:
    """A one-hidden-layer classifier (``hidden_weight`` d x h, ``hidden_bias``, ``out_weight`` h, ``out_bias``; GELU)
    over L2-normalised sentence embeddings, giving p(crisis); with the bank's crisis examples (``examples``, their
    ``categories`` and normalised ``example_vectors``) for categories and reasons."""

    hidden_weight: np.ndarray  # (d, h)
    hidden_bias: np.ndarray  # (h,)
    out_weight: np.ndarray  # (h,)
    out_bias: float
    examples: tuple[str, ...]
    categories: tuple[str, ...]
    example_vectors: np.ndarray  # (n, d), L2-normalised
    threshold: float
    embed: Embedder = field(repr=False)
    card: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if len(self.examples) != len(self.categories) or len(self.examples) != len(self.example_vectors):
            raise ValueError("examples, categories and example vectors must have the same length")

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """p(crisis) for L2-normalised embeddings (N, d)."""
        return classifier_probabilities(vectors, (self.hidden_weight, self.hidden_bias, self.out_weight, self.out_bias))

    def read(self, text: str) -> SemanticReading | None:
        """The most likely span of ``text`` (None for empty text)."""
        where = spans(text)
        if not where:
            return None
        vectors = self.embed([text[a:b] for a, b in where])
        probs = self.probabilities(vectors)
        k = int(np.argmax(probs))
        sims = self.example_vectors.astype(np.float32) @ vectors[k].astype(np.float32)
        order = np.argsort(-sims)[:NEIGHBOURS]
        votes: dict[str, float] = {}
        for i in order.tolist():
            votes[self.categories[i]] = votes.get(self.categories[i], 0.0) + float(sims[i])
        category = max(votes, key=lambda c: votes[c])
        nearest = int(order[0])
        return SemanticReading(
            round(float(probs[k]), 4), where[k][0], where[k][1], category, self.examples[nearest],
            round(float(sims[nearest]), 3),
        )  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (safetensors: the two layers, the example vectors) and its ``.json`` card (the examples,
        categories, threshold and whatever ``card`` holds)."""
        card = {
            **self.card,
            "threshold": self.threshold,
            "examples": [{"text": t, "category": c} for t, c in zip(self.examples, self.categories, strict=True)],
        }
        layers = (self.hidden_weight, self.hidden_bias, self.out_weight, self.out_bias)
        return save_classifier(path, layers, card, {"example_vectors": self.example_vectors.astype(np.float16)})

    @classmethod
    def load(cls, path: str | Path | None = None, embed: Embedder | None = None) -> SemanticRiskModel:
        """Load ``path`` and its ``.json`` card, or the shipped ``safety-semantic`` weight through the weights
        lookup order; ``embed`` defaults to ``fusion.memory.shared_sentence_embedder()``."""
        layers, arrays, card = load_classifier(path, WEIGHT, CARD_WEIGHT, "semantic safety model")
        if embed is None:
            from fusion.memory import shared_sentence_embedder

            embed = shared_sentence_embedder()
        examples = card.pop("examples")
        return cls(
            *layers,
            tuple(e["text"] for e in examples),
            tuple(e["category"] for e in examples),
            arrays["example_vectors"].astype(np.float32),
            float(card.pop("threshold")),
            embed,
            card,
        )


@lru_cache(maxsize=1)
def shipped_model() -> SemanticRiskModel | None:
    """The shipped model, loaded once per process; None (logged) when it cannot load, so that the patterns still
    guard every message."""
    try:
        return SemanticRiskModel.load()
    except Exception as exc:  # any failure leaves the patterns working
        logger.warning("semantic safety model unavailable (%s); risk is read by the patterns alone", exc)
        return None


def fit_classifier(
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None = None,
    hidden: int = 256,
    steps: int = 1500,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    dropout: float = 0.2,
    seed: int = 0,
    batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Train the one-hidden-layer classifier (GELU, dropout) by full-batch AdamW on the weighted binary cross-entropy:
    (hidden weight d x h, hidden bias, out weight, out bias) for ``SemanticRiskModel``. ``weight``: per-sample
    weights (default: the two classes weighted equally), scaled to sum to 1. ``batch_size``: each step reads that
    many rows drawn at random (the loss normalised by their weight) instead of all of them, for large ``x``.
    Deterministic for a ``seed`` on the CPU; ``x`` (N, d), ``y`` in {0, 1}."""
    import torch

    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    if weight is None:
        pos = max(float(y.sum()), 1.0)
        neg = max(float(len(y) - y.sum()), 1.0)
        weight = np.where(y > 0, 0.5 / pos, 0.5 / neg)
    sample = torch.tensor(np.asarray(weight, np.float64) / float(np.sum(weight)), dtype=torch.float32)
    torch.manual_seed(seed)
    layer, out = torch.nn.Linear(x.shape[1], hidden), torch.nn.Linear(hidden, 1)
    net = torch.nn.Sequential(layer, torch.nn.GELU(approximate="tanh"), torch.nn.Dropout(dropout), out)
    optimiser = torch.optim.AdamW(net.parameters(), lr, weight_decay=weight_decay)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    net.train()
    draw = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimiser.zero_grad()
        if batch_size is None or batch_size >= len(y):
            rows, inp, tgt = sample, inputs, targets
        else:
            pick = torch.randint(len(y), (batch_size,), generator=draw)
            rows, inp, tgt = sample[pick] / sample[pick].sum(), inputs[pick], targets[pick]
        losses = torch.nn.functional.binary_cross_entropy_with_logits(net(inp)[:, 0], tgt, reduction="none")
        (losses * rows).sum().backward()
        optimiser.step()
    with torch.no_grad():
        return (
            layer.weight.T.contiguous().numpy().copy(), layer.bias.numpy().copy(), out.weight[0].numpy().copy(),
            float(out.bias[0]),
        )  # fmt: skip
