"""The support-strategy planner: which ESConv strategies the next supporter turn should use, and why.

Features of a dialogue so far (``context_features``), a base block and the blocks its ``FeatureSpec`` turns on:

* base: the sentence embedding and canonical emotion distribution of the seeker's last message (the text-emotion
  network's pooled embedding, as ``TextEmotion.embedding``), the embedding of the supporter's last message, the
  strategies of the two previous supporter messages (one-hot, with "none"), and where we are in the conversation
  (supporter messages so far, seeker messages so far, whether the supporter is continuing its own turn);
* ``sentence``: general all-MiniLM-L6-v2 sentence embeddings of the seeker's last message, the supporter's last
  message and the last few messages joined (``fusion.memory.sentence_embedder``, a shipped weight group);
* ``history``: the strategy history and the shape of the dialogue (``history_features``);
* ``hash_buckets``: hashed words and bigrams of the seeker's and the supporter's last messages (``hashed_ngrams``);
* ``affect``: the seeker's affect state (``affect_features``: valence, arousal, dominance and their last step, from
  ``fusion.affect_state.AffectTracker`` run over the emotion of each seeker message). In a conversation the planner
  reads the tree: its fused emotion (face and voice included) stands for the seeker's last message, in this block
  and in the base block's emotion distribution.

A small MLP (``StrategyHead``, optionally an average of a few seeds) trained on ESConv train by
``scripts/train_strategy_planner.py`` maps them to a distribution over the 8 strategies. When the head's
``encoder_weight`` is set, the planner mixes in the distribution of the strategy encoder
(``fusion.strategy_encoder``, all-MiniLM-L6-v2 fine-tuned to read the dialogue's words; with ``encoder_members``
> 1 the mean of several such encoders) by that weight; with ``lm_reader_weight`` set, also the distribution of the
strategy LM reader (``fusion.strategy_lm``: the compact LM's top layers fine-tuned to read the dialogue as a
transcript; with ``lm_reader_members`` > 1 the mean of several such readers over one LM pass). The MLP keeps the
rest of the weight.

``StrategyPlanner`` is a ``fusion.tree.Planner``: given the dialogue (``with_context``) it plans from the tree, the
dialogue and the affect state. Choices: the most likely strategy, then others whose probability is at least
``combine_ratio`` of the first, up to ``max_strategies`` in all (a turn may combine strategies); the strategies of
the previous supporter turn are discounted (people repeat the previous tactic about 22% of the time; language
models about 50%): divided by ``repetition_penalty`` and lowered by ``repetition_margin`` (the shipped rule: a
margin, fitted without labels by ``scripts/fit_repetition_rule.py`` so that repetition stays under 0.30 at the least
accuracy cost) and, with ``fresh_secondary``, never added beside the first.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch
from torch import nn

from affectlens.labels import CANONICAL_EMOTIONS, ESCONV_STRATEGIES, valence_arousal
from fusion.affect_state import AffectTracker, observation_from

if TYPE_CHECKING:
    from affectlens.tree import AffectTree
    from fusion.lm import CompactLM
    from fusion.strategy_encoder import StrategyEncoder, StrategyEncoderEnsemble
    from fusion.strategy_lm import StrategyLMReader, StrategyLMReaderEnsemble

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


SentenceEmbedder = Callable[[list[str]], np.ndarray]
"""texts -> (N x d L2-normalised general sentence embeddings), as ``fusion.memory.sentence_embedder`` gives."""

#: Messages joined for the context sentence embedding (``FeatureSpec.sentence``).
CONTEXT_MESSAGES: Final = 4
_TOKEN = re.compile(r"[a-z0-9']+|[?!]")


@dataclass(frozen=True)
class FeatureSpec:
    """Which feature blocks ``context_features`` appends after the base block (all off: the base block alone).

    ``hash_buckets``: binary hashed bag of words and bigrams of the seeker's last message and of the supporter's last
    message (``hash_buckets`` columns each; CRC32, so stable across processes). ``sentence``: general sentence
    embeddings (all-MiniLM-L6-v2) of those two messages and of the last ``CONTEXT_MESSAGES`` messages joined.
    ``history``: the strategy history and the shape of the dialogue (``history_features``). ``affect``: the
    seeker's affect state over the dialogue (``affect_features``)."""

    hash_buckets: int = 0
    sentence: bool = False
    history: bool = False
    affect: bool = False

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureSpec:
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown strategy feature settings {sorted(unknown)}")
        return cls(**raw)


def hashed_ngrams(text: str, buckets: int) -> np.ndarray:
    """``(buckets,)`` 0/1: the lower-cased words (and ``?``/``!``) of ``text``, their bigrams and a start-of-message
    bigram, each hashed (CRC32) to a bucket."""
    out = np.zeros(buckets, np.float32)
    words = _TOKEN.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in zip(["<s>", *words], words, strict=False)]
    for gram in grams:
        out[zlib.crc32(gram.encode()) % buckets] = 1.0
    return out


def history_features(dialogue: Sequence[Message]) -> np.ndarray:
    """``(2 * 8 + 9 + 6,)``: share of the supporter's strategies so far spent on each strategy, the previous
    supporter turn's strategies (multi-hot), the third-last supporter message's strategy (one-hot with "none"), and
    the seeker's last message (log word count, ends with "?", how many seeker messages in a row), the supporter's last
    message (log word count, has "?"), and whether the seeker has said goodbye-like thanks before."""
    n = len(ESCONV_STRATEGIES)
    used = [s for m in dialogue if m.speaker == "sys" for s in m.strategies if s in ESCONV_STRATEGIES]
    share = np.zeros(n, np.float32)
    for s in used:
        share[ESCONV_STRATEGIES.index(s)] += 1.0 / len(used)
    previous = np.zeros(n, np.float32)
    for s in previous_supporter_turn(dialogue):
        if s in ESCONV_STRATEGIES:
            previous[ESCONV_STRATEGIES.index(s)] = 1.0
    sys_msgs = [m for m in dialogue if m.speaker == "sys"]
    third = sys_msgs[-3].strategies[0] if len(sys_msgs) > 2 and sys_msgs[-3].strategies else None
    seeker = next((m.text for m in reversed(dialogue) if m.speaker == "usr"), "")
    supporter = next((m.text for m in reversed(dialogue) if m.speaker == "sys"), "")
    run = 0
    for m in reversed(dialogue):
        if m.speaker != "usr":
            break
        run += 1
    thanked = any(m.speaker == "usr" and "thank" in m.text.lower() for m in dialogue)
    shape = np.array(
        [
            np.log1p(len(seeker.split())) / 4.0,
            float(seeker.rstrip().endswith("?")),
            min(run, 4) / 4.0,
            np.log1p(len(supporter.split())) / 4.0,
            float("?" in supporter),
            float(thanked),
        ],
        np.float32,
    )
    return np.concatenate([share, previous, _one_hot(third), shape])


def affect_features(readings: Sequence[np.ndarray]) -> np.ndarray:
    """``(6,)``: the seeker's affect state after their messages' emotion ``readings`` (canonical distributions in
    ``CANONICAL_EMOTIONS`` order, oldest first) as valence, arousal, dominance and the last step of each; zeros
    before any reading. ``AffectTracker`` with its default dynamics, the conversation's own; each reading's valence
    and arousal are its circumplex position (``affectlens.labels.valence_arousal``), its dominance
    ``dominance_of``'s, its confidence its top probability. The planner rebuilds this state from the dialogue
    rather than reading the conversation's own tracker (which also weighs face and voice, turn by turn) so that it
    is computed the same way as on ESConv, where the head learned it from words alone."""
    tracker = AffectTracker()
    state = None
    for turn, reading in enumerate(readings):
        probs = {e: float(p) for e, p in zip(CANONICAL_EMOTIONS, reading, strict=True)}
        valence, arousal = valence_arousal(probs)
        state = tracker.update("seeker", observation_from(valence, arousal, probs, max(probs.values()), turn))
    if state is None:
        return np.zeros(6, np.float32)
    return np.array([state.valence, state.arousal, state.dominance, *state.velocity], np.float32)


def tree_reading(tree: AffectTree) -> np.ndarray | None:
    """The tree's fused emotion distribution in ``CANONICAL_EMOTIONS`` order (``None`` when it has none)."""
    value = tree.emotion.value if isinstance(tree.emotion.value, dict) else {}
    probs = value.get("probabilities") or {}
    reading = np.array([float(probs.get(e, 0.0)) for e in CANONICAL_EMOTIONS], np.float32)
    total = float(reading.sum())
    return reading / total if total > 0 else None


def _context_text(dialogue: Sequence[Message]) -> str:
    return " ".join(
        f"{'Seeker' if m.speaker == 'usr' else 'Supporter'}: {m.text}" for m in dialogue[-CONTEXT_MESSAGES:]
    )


def context_features(
    dialogues: Sequence[Sequence[Message]],
    embed: Embedder,
    spec: FeatureSpec | None = None,
    sentence_embed: SentenceEmbedder | None = None,
    readings: Sequence[np.ndarray | None] | None = None,
) -> np.ndarray:
    """``(N, d)`` features of each dialogue-so-far (see the module docstring), embeddings batched: the base block,
    then the blocks ``spec`` turns on (``sentence`` needs ``sentence_embed``). With the ``affect`` block,
    ``readings[k]`` (a canonical distribution, e.g. the tree's fused emotion) replaces the text's emotion of
    dialogue ``k``'s last seeker message, in the base block and the affect block."""
    spec = spec or FeatureSpec()
    seeker, supporter = [], []
    for dialogue in dialogues:
        seeker.append(next((m.text for m in reversed(dialogue) if m.speaker == "usr"), ""))
        supporter.append(next((m.text for m in reversed(dialogue) if m.speaker == "sys"), ""))
    every_seeker = [m.text for d in dialogues for m in d if m.speaker == "usr" and m.text] if spec.affect else []
    texts = sorted({t for t in seeker + supporter + every_seeker if t})
    vectors, probs = embed(texts)
    index = {t: i for i, t in enumerate(texts)}
    dim = vectors.shape[1] if len(texts) else 0
    if spec.sentence:
        if sentence_embed is None:
            raise ValueError("these strategy features need a sentence embedder (FeatureSpec.sentence)")
        contexts = [_context_text(d) for d in dialogues]
        sentence_texts = sorted({t for t in seeker + supporter + contexts if t})
        sentence_vectors = sentence_embed(sentence_texts) if sentence_texts else np.zeros((0, 0), np.float32)
        sentence_index = {t: i for i, t in enumerate(sentence_texts)}
        sentence_dim = sentence_vectors.shape[1] if sentence_texts else 0

        def sentence(text: str) -> np.ndarray:
            return sentence_vectors[sentence_index[text]] if text else np.zeros(sentence_dim, np.float32)

    rows = []
    for k, (dialogue, s_text, p_text) in enumerate(zip(dialogues, seeker, supporter, strict=True)):
        s_vec = vectors[index[s_text]] if s_text else np.zeros(dim, np.float32)
        s_emo = probs[index[s_text]] if s_text else np.zeros(len(CANONICAL_EMOTIONS), np.float32)
        override = readings[k] if spec.affect and readings is not None else None
        if override is not None and s_text:
            s_emo = np.asarray(override, np.float32)
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
        blocks = [s_vec, s_emo, p_vec, _one_hot(prev), _one_hot(prev2), position]
        if spec.sentence:
            blocks += [sentence(s_text), sentence(p_text), sentence(contexts[k])]
        if spec.history:
            blocks.append(history_features(dialogue))
        if spec.hash_buckets:
            blocks += [hashed_ngrams(s_text, spec.hash_buckets), hashed_ngrams(p_text, spec.hash_buckets)]
        if spec.affect:
            said = [probs[index[m.text]] for m in dialogue if m.speaker == "usr" and m.text]
            if override is not None and said:
                said[-1] = s_emo
            blocks.append(affect_features(said))
        rows.append(np.concatenate(blocks))
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)


@dataclass
class StrategyConfig:
    """The head's shape, its input standardisation and the decision rule (``save_pretrained`` writes it)."""

    input_dim: int
    hidden: int = 256
    dropout: float = 0.3
    strategies: tuple[str, ...] = ESCONV_STRATEGIES
    repetition_penalty: float = 1.0
    #: subtracted from the (penalised) probability of each of the previous supporter turn's strategies: moving a
    #: turn off a repeated strategy then costs at most this much probability, the cheapest way to cut repetition
    #: when the probabilities are calibrated (``docs/strategy-planner.md``, "A margin rule instead of a ratio?")
    repetition_margin: float = 0.0
    #: a strategy of the previous supporter turn may be the first choice (when it clearly fits), never a second one
    fresh_secondary: bool = False
    combine_ratio: float = 0.6
    max_strategies: int = 2
    members: int = 1
    #: share of the strategy encoder's distribution in the planner's (``fusion.strategy_encoder``; 0: MLP alone)
    encoder_weight: float = 0.0
    #: strategy encoders averaged before the mix (``fusion.strategy_encoder.StrategyEncoderEnsemble``; saved beside)
    encoder_members: int = 1
    #: share of the strategy LM reader's distribution (``fusion.strategy_lm``; 0: none); the MLP keeps
    #: ``1 - encoder_weight - lm_reader_weight``
    lm_reader_weight: float = 0.0
    #: strategy LM readers averaged before the mix (``fusion.strategy_lm.StrategyLMReaderEnsemble``; saved beside)
    lm_reader_members: int = 1
    features: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> FeatureSpec:
        """The feature blocks the head reads (``features``, as a ``FeatureSpec``; empty: the base block alone)."""
        return FeatureSpec.from_dict(self.features)

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
        self.net = self._mlp(config)
        #: further ensemble members (``members - 1``), trained from other seeds; their distributions are averaged
        self.others = nn.ModuleList([self._mlp(config) for _ in range(config.members - 1)])

    @staticmethod
    def _mlp(config: StrategyConfig) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(config.input_dim, config.hidden), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(config.hidden, len(config.strategies)),
        )  # fmt: skip

    def set_standardisation(self, x: np.ndarray) -> None:
        """Mean and spread of each feature from ``x``; the hashed n-gram columns (the last ``2 * hash_buckets``,
        0/1 and mostly 0) are left as they are."""
        mean, std = x.mean(0), np.clip(x.std(0), 1e-3, None)
        raw = 2 * self.config.spec.hash_buckets
        if raw:
            mean[-raw:], std[-raw:] = 0.0, 1.0
        self.mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        self.std.copy_(torch.from_numpy(std.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits; with several members, the log of their mean distribution."""
        z = (x - self.mean) / self.std
        if not self.others:
            return self.net(z)
        probs = torch.stack([torch.softmax(m(z), 1) for m in [self.net, *self.others]]).mean(0)
        return torch.log(probs.clamp_min(1e-12))

    @classmethod
    def ensemble(cls, heads: Sequence[StrategyHead]) -> StrategyHead:
        """One head averaging the distributions of ``heads`` (same config and standardisation; the first's kept)."""
        config = StrategyConfig.from_dict({**asdict(heads[0].config), "members": len(heads)})
        out = cls(config)
        out.mean.copy_(heads[0].mean)
        out.std.copy_(heads[0].std)
        for target, head in zip([out.net, *out.others], heads, strict=True):
            target.load_state_dict(head.net.state_dict())
        return out.eval()

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
    (``probs / repetition_penalty - repetition_margin``), the top one, then others whose discounted score is within
    ``combine_ratio`` of its (with ``fresh_secondary``, none of the previous turn's), up to ``max_strategies`` in
    all."""
    repeated = {config.strategies.index(s) for s in previous if s in config.strategies}
    scores = np.asarray(probs, np.float64).copy()
    for k in repeated:
        scores[k] = scores[k] / config.repetition_penalty - config.repetition_margin
    order = np.argsort(-scores)
    chosen = [order[0]]
    others = [k for k in order[1:] if not (config.fresh_secondary and k in repeated)]
    for k in others[: config.max_strategies - 1]:
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

    def __init__(
        self,
        head: StrategyHead,
        embed: Embedder,
        dialogue: Sequence[Message] = (),
        sentence_embed: SentenceEmbedder | None = None,
        encoder: StrategyEncoder | StrategyEncoderEnsemble | None = None,
        lm_reader: StrategyLMReader | StrategyLMReaderEnsemble | None = None,
    ) -> None:
        if head.config.encoder_weight > 0 and encoder is None:
            raise ValueError(
                f"this planner mixes in a strategy encoder (encoder_weight {head.config.encoder_weight}); pass one"
            )
        if head.config.lm_reader_weight > 0 and lm_reader is None:
            raise ValueError(
                f"this planner mixes in a strategy LM reader (lm_reader_weight {head.config.lm_reader_weight}); "
                "pass one"
            )
        self.head = head
        self.embed = embed
        self.dialogue = list(dialogue)
        self.sentence_embed = sentence_embed
        self.encoder = encoder
        self.lm_reader = lm_reader

    def with_context(self, dialogue: Sequence[Message]) -> StrategyPlanner:
        """The same planner reading ``dialogue`` (the messages so far, the seeker's latest last)."""
        return StrategyPlanner(self.head, self.embed, dialogue, self.sentence_embed, self.encoder, self.lm_reader)

    def features(
        self, dialogues: Sequence[Sequence[Message]], readings: Sequence[np.ndarray | None] | None = None
    ) -> np.ndarray:
        """``context_features`` of ``dialogues`` with the head's feature blocks (``readings``: see there)."""
        return context_features(dialogues, self.embed, self.head.config.spec, self.sentence_embed, readings)

    def probabilities(
        self, dialogues: Sequence[Sequence[Message]], readings: Sequence[np.ndarray | None] | None = None
    ) -> np.ndarray:
        """(N, 8) strategy distributions: the MLP's, mixed with the encoder's by ``encoder_weight`` and the LM
        reader's by ``lm_reader_weight`` when set."""
        probs = self.head.probabilities(self.features(dialogues, readings))
        parts = [(self.head.config.encoder_weight, self.encoder), (self.head.config.lm_reader_weight, self.lm_reader)]
        used = [(w, model) for w, model in parts if w > 0 and model is not None]
        if used:
            mixed = (1.0 - sum(w for w, _ in used)) * probs
            for w, model in used:
                mixed = mixed + w * model.probabilities(dialogues)
            probs = mixed
        return probs

    def batched_probabilities(self, dialogues: Sequence[Sequence[Message]], batch_size: int = 512) -> np.ndarray:
        """``probabilities`` computed ``batch_size`` dialogues at a time."""
        parts = [self.probabilities(dialogues[k : k + batch_size]) for k in range(0, len(dialogues), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.head.config.strategies)), np.float32)

    def decisions(self, probs: np.ndarray, dialogues: Sequence[Sequence[Message]]) -> list[list[tuple[str, float]]]:
        """``decide`` for each dialogue-so-far from its row of ``probs`` (the previous supporter turn discounted)."""
        return [decide(p, previous_supporter_turn(d), self.head.config) for p, d in zip(probs, dialogues, strict=True)]

    def choose(self, dialogues: Sequence[Sequence[Message]], batch_size: int = 512) -> list[list[tuple[str, float]]]:
        """``decide`` for each dialogue-so-far: (strategy, probability) pairs, the top one first; features are
        computed ``batch_size`` dialogues at a time."""
        return self.decisions(self.batched_probabilities(dialogues, batch_size), dialogues)

    def plan(self, dialogue: Sequence[Message], reading: np.ndarray | None = None) -> list[tuple[str, str, float]]:
        """(strategy, why, probability) for the next supporter turn after ``dialogue``; ``reading`` (the tree's
        fused emotion) stands for the emotion of its last seeker message when the head reads the affect state."""
        previous = previous_supporter_turn(dialogue)
        out = []
        chosen = self.decisions(self.probabilities([dialogue], [reading]), [dialogue])[0]
        for strategy, p in chosen:
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
        return self.plan(dialogue, tree_reading(tree))


def load_strategy_planner(
    directory: str | Path | None = None, text_model: Any | None = None, lm: CompactLM | None = None
) -> StrategyPlanner:
    """The shipped planner (manifest group ``strategy-planner``) with the default text model as its embedder, and
    all-MiniLM-L6-v2 (``fusion.memory.sentence_embedder``, a shipped weight group) when its features need it.
    When it mixes in the strategy LM reader, that runs over ``lm`` (a clean instance of the LM the reader names;
    default: its own, built by the registry)."""
    if directory is None:
        from affectlens.weights import locate_group

        directory = locate_group(PLANNER_WEIGHTS).path
    if text_model is None:
        from affectlens.registry import create_text_emotion

        text_model = create_text_emotion()
    head = StrategyHead.from_pretrained(directory)
    sentence_embed = None
    if head.config.spec.sentence:
        from fusion.memory import sentence_embedder

        sentence_embed = sentence_embedder()
    encoder = None
    if head.config.encoder_weight > 0:
        from fusion.strategy_encoder import load_strategy_encoder

        encoder = load_strategy_encoder(directory, members=head.config.encoder_members)
    lm_reader = None
    if head.config.lm_reader_weight > 0:
        from fusion.strategy_lm import load_strategy_lm_reader

        lm_reader = load_strategy_lm_reader(directory, lm, members=head.config.lm_reader_members)
    return StrategyPlanner(
        head, text_embedder(text_model), sentence_embed=sentence_embed, encoder=encoder, lm_reader=lm_reader
    )
