"""The support-strategy planner: which ESConv strategies the next supporter turn should use, and why.

Features of a dialogue so far (``context_features``): the sentence embedding and canonical emotion distribution of
the seeker's last message (the text-emotion network's pooled embedding, as ``TextEmotion.embedding``), the
embedding of the supporter's last message, the strategies of the two previous supporter messages (one-hot, with
"none"), and where we are in the conversation (supporter messages so far, seeker messages so far, whether the
supporter is continuing its own turn). A small MLP (``StrategyHead``) trained on ESConv train by
``scripts/train_strategy_planner.py`` maps them to a distribution over the 8 strategies.

``StrategyPlanner`` is a ``fusion.tree.Planner``: given the dialogue (``with_context``) it plans from the tree, the
dialogue and the affect state. Choices: the most likely strategy, then up to two more whose probability is at
least ``combine_ratio`` of the first (a turn may combine strategies); the strategies of the previous supporter
turn are discounted by ``repetition_penalty`` (people repeat the previous tactic about 22% of the time; language
models about 50%), fitted on ESConv valid so that repetition stays under 0.30 at the least accuracy cost.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch
from torch import nn

from affectlens.labels import CANONICAL_EMOTIONS, ESCONV_STRATEGIES

if TYPE_CHECKING:
    from affectlens.tree import AffectTree

logger = logging.getLogger(__name__)

#: Manifest group of the shipped planner (``weights/strategy-planner/``).
PLANNER_WEIGHTS: Final = "strategy-planner"
#: Positions are scaled by this many messages (and capped at 1).
_POSITION_SCALE: Final = 20.0


@dataclass(frozen=True)
class Message:
    """One message of a support dialogue: ``speaker`` ``"usr"`` (the seeker) or ``"sys"`` (the supporter)."""

    speaker: str
    text: str
    strategies: tuple[str, ...] = ()


Embedder = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]
"""texts -> (N x d L2-normalised embeddings, N x 7 canonical emotion probabilities)."""


def text_embedder(model: Any) -> Embedder:
    """An ``Embedder`` from a ``TextEmotionModel`` (its pooled sentence embedding and calibrated distribution)."""

    def embed(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return np.zeros((0, model.network.encoder.config.hidden_size), np.float32), np.zeros((0, 7), np.float32)
        canonical, fine, pooled = model.predict_logits_and_embeddings(texts)
        probs, _ = model.calibrate(canonical, fine)
        pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-9, None)
        return pooled.astype(np.float32), probs.astype(np.float32)

    return embed


def _one_hot(strategy: str | None) -> np.ndarray:
    out = np.zeros(len(ESCONV_STRATEGIES) + 1, np.float32)
    out[ESCONV_STRATEGIES.index(strategy) if strategy in ESCONV_STRATEGIES else len(ESCONV_STRATEGIES)] = 1.0
    return out


def previous_supporter_turn(dialogue: Sequence[Message]) -> tuple[str, ...]:
    """Strategies of the last supporter turn (consecutive supporter messages) before the seeker last spoke, or of
    the current supporter turn when the supporter is still speaking."""
    i = len(dialogue) - 1
    while i >= 0 and dialogue[i].speaker != "sys":
        i -= 1
    out: list[str] = []
    while i >= 0 and dialogue[i].speaker == "sys":
        out.extend(dialogue[i].strategies)
        i -= 1
    return tuple(dict.fromkeys(out))


def context_features(dialogues: Sequence[Sequence[Message]], embed: Embedder) -> np.ndarray:
    """``(N, d)`` features of each dialogue-so-far (see the module docstring), embeddings batched."""
    seeker, supporter = [], []
    for dialogue in dialogues:
        seeker.append(next((m.text for m in reversed(dialogue) if m.speaker == "usr"), ""))
        supporter.append(next((m.text for m in reversed(dialogue) if m.speaker == "sys"), ""))
    texts = sorted({t for t in seeker + supporter if t})
    vectors, probs = embed(texts)
    index = {t: i for i, t in enumerate(texts)}
    dim = vectors.shape[1] if len(texts) else 0
    rows = []
    for dialogue, s_text, p_text in zip(dialogues, seeker, supporter, strict=True):
        s_vec = vectors[index[s_text]] if s_text else np.zeros(dim, np.float32)
        s_emo = probs[index[s_text]] if s_text else np.zeros(len(CANONICAL_EMOTIONS), np.float32)
        p_vec = vectors[index[p_text]] if p_text else np.zeros(dim, np.float32)
        sys_msgs = [m for m in dialogue if m.speaker == "sys"]
        prev = sys_msgs[-1].strategies[0] if sys_msgs and sys_msgs[-1].strategies else None
        prev2 = sys_msgs[-2].strategies[0] if len(sys_msgs) > 1 and sys_msgs[-2].strategies else None
        position = np.array(
            [
                min(len(sys_msgs) / _POSITION_SCALE, 1.0),
                min(sum(m.speaker == "usr" for m in dialogue) / _POSITION_SCALE, 1.0),
                float(bool(dialogue) and dialogue[-1].speaker == "sys"),
                float(not sys_msgs),
            ],
            np.float32,
        )
        rows.append(np.concatenate([s_vec, s_emo, p_vec, _one_hot(prev), _one_hot(prev2), position]))
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)


@dataclass
class StrategyConfig:
    """The head's shape, its input standardisation and the decision rule (``save_pretrained`` writes it)."""

    input_dim: int
    hidden: int = 256
    dropout: float = 0.3
    strategies: tuple[str, ...] = ESCONV_STRATEGIES
    repetition_penalty: float = 1.0
    combine_ratio: float = 0.6
    max_strategies: int = 2
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StrategyConfig:
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown strategy planner settings {sorted(unknown)}")
        return cls(**{**raw, "strategies": tuple(raw.get("strategies", ESCONV_STRATEGIES))})


class StrategyHead(nn.Module):
    """``(B, input_dim)`` context features -> ``(B, 8)`` strategy logits; standardises its input itself."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, config: StrategyConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.zeros(config.input_dim))
        self.register_buffer("std", torch.ones(config.input_dim))
        self.net = nn.Sequential(
            nn.Linear(config.input_dim, config.hidden), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(config.hidden, len(config.strategies)),
        )  # fmt: skip

    def set_standardisation(self, x: np.ndarray) -> None:
        self.mean.copy_(torch.from_numpy(x.mean(0)))
        self.std.copy_(torch.from_numpy(np.clip(x.std(0), 1e-3, None)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    @torch.inference_mode()
    def probabilities(self, x: np.ndarray) -> np.ndarray:
        self.eval()
        return torch.softmax(self(torch.from_numpy(np.asarray(x, np.float32))), 1).numpy()

    def save_pretrained(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / "model.safetensors")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> StrategyHead:
        from safetensors.torch import load_file

        directory = Path(directory)
        head = cls(StrategyConfig.from_dict(json.loads((directory / "config.json").read_text())))
        head.load_state_dict(load_file(directory / "model.safetensors"), strict=True)
        return head.eval()


def decide(probs: np.ndarray, previous: Sequence[str], config: StrategyConfig) -> list[tuple[str, float]]:
    """Strategies for one turn from the head's ``probs``: the previous turn's strategies discounted
    (``probs / repetition_penalty``), the top one, then others within ``combine_ratio`` of it."""
    scores = np.asarray(probs, np.float64).copy()
    for s in previous:
        if s in config.strategies:
            scores[config.strategies.index(s)] /= config.repetition_penalty
    order = np.argsort(-scores)
    chosen = [order[0]]
    for k in order[1 : config.max_strategies]:
        if scores[k] >= config.combine_ratio * scores[order[0]]:
            chosen.append(k)
    return [(config.strategies[k], float(probs[k])) for k in chosen]


#: Why a strategy fits, in words (the planner's own rationale; the tree keeps the probabilities too).
WHY: Final[dict[str, str]] = {
    "Question": "ask, to understand what happened and what they need",
    "Restatement or Paraphrasing": "say back what they said, so they know they were heard",
    "Reflection of feelings": "name the feeling, so it feels understood",
    "Self-disclosure": "a brief, honest note of shared experience (never claiming to be human)",
    "Affirmation and Reassurance": "affirm their strength and that the feeling makes sense",
    "Providing Suggestions": "offer a small, concrete next step, without pressure",
    "Information": "give useful facts or resources",
    "Others": "keep the conversation warm (greeting, thanks, small talk)",
}


class StrategyPlanner:
    """A ``fusion.tree.Planner`` backed by the trained ``StrategyHead`` and the dialogue so far."""

    name = "strategy-planner"

    def __init__(self, head: StrategyHead, embed: Embedder, dialogue: Sequence[Message] = ()) -> None:
        self.head = head
        self.embed = embed
        self.dialogue = list(dialogue)

    def with_context(self, dialogue: Sequence[Message]) -> StrategyPlanner:
        """The same planner reading ``dialogue`` (the messages so far, the seeker's latest last)."""
        return StrategyPlanner(self.head, self.embed, dialogue)

    def choose(self, dialogues: Sequence[Sequence[Message]], batch_size: int = 512) -> list[list[tuple[str, float]]]:
        """``decide`` for each dialogue-so-far: (strategy, probability) pairs, the top one first; features are
        computed ``batch_size`` dialogues at a time."""
        out: list[list[tuple[str, float]]] = []
        for start in range(0, len(dialogues), batch_size):
            batch = dialogues[start : start + batch_size]
            probs = self.head.probabilities(context_features(batch, self.embed))
            out.extend(
                decide(p, previous_supporter_turn(d), self.head.config) for p, d in zip(probs, batch, strict=True)
            )
        return out

    def plan(self, dialogue: Sequence[Message]) -> list[tuple[str, str, float]]:
        previous = previous_supporter_turn(dialogue)
        out = []
        for strategy, p in self.choose([dialogue])[0]:
            why = WHY[strategy] + (
                " (used last turn: chosen again only because it clearly fits)" if strategy in previous else ""
            )
            out.append((strategy, why, p))
        return out

    def __call__(self, tree: AffectTree) -> list[tuple[str, str, float]]:
        dialogue = self.dialogue
        if not dialogue or dialogue[-1].speaker != "usr":  # no dialogue given: the words of this moment
            words = " ".join(tree.cause_sentences())
            dialogue = [*dialogue, Message("usr", words)] if words else dialogue
        if not dialogue:
            return [("Question", WHY["Question"], 1.0)]
        return self.plan(dialogue)


def load_strategy_planner(directory: str | Path | None = None, text_model: Any | None = None) -> StrategyPlanner:
    """The shipped planner (manifest group ``strategy-planner``) with the default text model as its embedder."""
    if directory is None:
        from affectlens.weights import locate_group

        directory = locate_group(PLANNER_WEIGHTS).path
    if text_model is None:
        from affectlens.registry import create_text_emotion

        text_model = create_text_emotion()
    return StrategyPlanner(StrategyHead.from_pretrained(directory), text_embedder(text_model))
