"""The strategy encoder: all-MiniLM-L6-v2 fine-tuned to read the dialogue so far and name the next strategy.

The planner's MLP (``fusion.strategy.StrategyHead``) sees fixed features: embeddings of the last two messages and
the strategy history. The encoder reads the words of the whole recent dialogue instead: ``context_text`` writes
it newest first (so truncation drops the oldest messages), each supporter message tagged with its strategy, after
a count of the messages so far, e.g.

    4 seeker, 3 supporter messages [SEP] seeker: I just feel so alone [SEP] supporter (question): How long ...

A ``StrategyEncoderDelta`` holds what training changed over the frozen base: its top ``num_trained_layers``
transformer layers and a linear head over the mean-pooled tokens (the base's embeddings and lower layers are
the shipped ``all-MiniLM-L6-v2`` weight group, unchanged). ``StrategyEncoder`` puts the two together:
dialogues -> (N, 8) strategy distributions. ``scripts/train_strategy_planner.py --encoder`` trains it on ESConv
train; the planner mixes its distribution with the MLP's by ``StrategyConfig.encoder_weight`` (chosen on valid).
Several encoders trained from different seeds can be averaged (``StrategyEncoderEnsemble``; member ``k`` is saved as
``member_files(k)``); they share one base's embeddings and lower layers in memory.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch
from torch import nn

from affectlens.labels import ESCONV_STRATEGIES
from fusion.strategy import Message
from perception.text.emotion import (
    load_base,
    load_delta_state,
    mean_pool,
    save_delta,
    swap_top_layers,
)
from perception.text.emotion import pad_ids as pad

if TYPE_CHECKING:
    from transformers import BertModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

CONFIG_NAME: Final = "encoder.json"
WEIGHTS_NAME: Final = "encoder.safetensors"
#: Messages of the dialogue so far that ``context_text`` writes (newest first; the tokenizer may cut more).
CONTEXT_MESSAGES: Final = 12


def numbered_files(config_name: str, weights_name: str, member: int) -> tuple[str, str]:
    """(config, weights) file names of ensemble member ``member`` (0-based): the names themselves for the first,
    the stems numbered from 2 for the others (``encoder.json`` -> ``encoder-2.json``, ``encoder-3.json``, ...)."""
    if member < 0:
        raise ValueError(f"member must be >= 0, got {member}")
    if member == 0:
        return config_name, weights_name

    def numbered(name: str) -> str:
        stem, _, suffix = name.partition(".")
        return f"{stem}-{member + 1}.{suffix}"

    return numbered(config_name), numbered(weights_name)


def member_files(member: int) -> tuple[str, str]:
    """(config, weights) file names of encoder member ``member`` (0-based): ``encoder.json`` and
    ``encoder.safetensors`` for the first, ``encoder-2.json`` and ``encoder-2.safetensors`` for the second, ..."""
    return numbered_files(CONFIG_NAME, WEIGHTS_NAME, member)


def saved_members(directory: str | Path, files: Callable[[int], tuple[str, str]] = member_files) -> int:
    """How many members ``directory`` holds: consecutive ``files(k)`` (default: the encoder's) with both present."""
    count = 0
    while all((Path(directory) / name).is_file() for name in files(count)):
        count += 1
    return count


def require_members(
    directory: str | Path, members: int, what: str, files: Callable[[int], tuple[str, str]] = member_files
) -> None:
    """Raise unless ``directory`` holds ``members`` (>= 1) members' ``files``; ``what`` names them in the error."""
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    found = saved_members(directory, files)
    if found < members:
        raise FileNotFoundError(
            f"{directory}: the planner mixes {members} {what} but the folder holds {found} "
            f"(expected {', '.join(n for k in range(members) for n in files(k))})"
        )


def context_text(dialogue: Sequence[Message], max_messages: int = CONTEXT_MESSAGES) -> str:
    """The dialogue so far as the encoder reads it: the message counts, then the last ``max_messages`` messages
    newest first, supporter messages tagged with their (first) strategy or ``none``, joined by ``[SEP]``."""
    supporter = sum(m.speaker == "sys" for m in dialogue)
    parts = [f"{len(dialogue) - supporter} seeker, {supporter} supporter messages"]
    for m in reversed(dialogue[-max_messages:] if max_messages else []):
        if m.speaker == "usr":
            parts.append(f"seeker: {m.text}")
        else:
            tag = m.strategies[0].lower() if m.strategies else "none"
            parts.append(f"supporter ({tag}): {m.text}")
    return " [SEP] ".join(parts)


@dataclass(frozen=True)
class StrategyEncoderConfig:
    """The delta's shape and provenance (``encoder.json``); ``base_config`` holds the base's ``BertConfig`` fields."""

    base: str = "all-MiniLM-L6-v2"
    base_config: dict[str, Any] = field(default_factory=dict)
    num_trained_layers: int = 4
    max_length: int = 160
    max_messages: int = CONTEXT_MESSAGES
    dropout: float = 0.1
    strategies: tuple[str, ...] = ESCONV_STRATEGIES
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layers = int(self.base_config.get("num_hidden_layers", self.num_trained_layers))
        if not 1 <= self.num_trained_layers <= layers:
            raise ValueError(f"num_trained_layers must be in [1, {layers}], got {self.num_trained_layers}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StrategyEncoderConfig:
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown strategy encoder settings {unknown}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        return cls(**values)


class StrategyEncoderDelta(nn.Module):
    """What training changes over the base: its top transformer layers and the strategy head."""

    def __init__(self, config: StrategyEncoderConfig) -> None:
        super().__init__()
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertLayer

        self.config = config
        bert = BertConfig(**{**config.base_config, "attn_implementation": "sdpa"})
        self.layers = nn.ModuleList(BertLayer(bert) for _ in range(config.num_trained_layers))
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(bert.hidden_size, len(config.strategies))

    @classmethod
    def from_base(cls, config: StrategyEncoderConfig, encoder: BertModel) -> StrategyEncoderDelta:
        """A delta whose layers start as copies of the base's top layers and whose head starts small (training)."""
        delta = cls(config)
        for mine, theirs in zip(delta.layers, encoder.encoder.layer[-config.num_trained_layers :], strict=True):
            mine.load_state_dict(theirs.state_dict())
        nn.init.normal_(delta.head.weight, std=0.02)
        nn.init.zeros_(delta.head.bias)
        return delta

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None, member: int = 0) -> Path:
        """Write ``member_files(member)`` (``encoder.json`` and ``encoder.safetensors`` for the first member; cast to
        ``dtype`` if given) into ``directory``."""
        return save_delta(self, self.config, directory, *member_files(member), dtype)

    @classmethod
    def from_pretrained(cls, directory: str | Path, member: int = 0) -> StrategyEncoderDelta:
        """A delta written by ``save_pretrained`` (float32 in memory whatever the stored dtype)."""
        config_name, weights_name = member_files(member)
        folder = Path(directory)
        delta = cls(StrategyEncoderConfig.from_dict(json.loads((folder / config_name).read_text())))
        delta.load_state_dict(load_delta_state(folder / weights_name), strict=True)
        return delta.eval()


class StrategyEncoder(nn.Module):
    """The frozen base with its top layers swapped for the delta's: dialogues -> strategy distributions.

    ``train()`` keeps the base's embeddings and lower layers in eval mode; their parameters never need gradients.
    """

    def __init__(self, encoder: BertModel, tokenizer: PreTrainedTokenizerBase, delta: StrategyEncoderDelta) -> None:
        super().__init__()
        swap_top_layers(encoder, delta.layers, delta.config.base_config, "the strategy encoder")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.delta = delta
        self.eval()

    @property
    def config(self) -> StrategyEncoderConfig:
        return self.delta.config

    def train(self, mode: bool = True) -> StrategyEncoder:
        super().train(mode)
        self.encoder.eval()
        for layer in self.delta.layers:
            layer.train(mode)
        self.delta.dropout.train(mode)
        return self

    def tokenize(self, dialogues: Sequence[Sequence[Message]]) -> list[list[int]]:
        """Token ids of each dialogue's ``context_text``, truncated to ``max_length`` (the oldest words go)."""
        texts = [context_text(d, self.config.max_messages) for d in dialogues]
        return self.tokenizer(texts, truncation=True, max_length=self.config.max_length)["input_ids"]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """BxT token ids -> Bx8 strategy logits."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.training):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.delta.head(self.delta.dropout(mean_pool(hidden.float(), attention_mask)))

    @torch.inference_mode()
    def probabilities_of_ids(self, ids: Sequence[Sequence[int]], batch_size: int = 64) -> np.ndarray:
        """(N, 8) strategy distributions of tokenized contexts, batched by length."""
        self.eval()
        out = np.zeros((len(ids), len(self.config.strategies)), np.float32)
        order = np.argsort([len(s) for s in ids], kind="stable")
        for start in range(0, len(ids), batch_size):
            rows = order[start : start + batch_size]
            x, mask = pad([ids[i] for i in rows])
            out[rows] = torch.softmax(self(x, mask), 1).numpy()
        return out

    def probabilities(self, dialogues: Sequence[Sequence[Message]]) -> np.ndarray:
        """(N, 8) strategy distributions of the dialogues so far."""
        return self.probabilities_of_ids(self.tokenize(dialogues))


class StrategyEncoderEnsemble:
    """Strategy encoders trained from different seeds: the mean of their distributions."""

    def __init__(self, members: Sequence[StrategyEncoder]) -> None:
        if not members:
            raise ValueError("a strategy encoder ensemble needs at least one member")
        self.members = list(members)

    @property
    def config(self) -> StrategyEncoderConfig:
        """The first member's settings."""
        return self.members[0].config

    def probabilities(self, dialogues: Sequence[Sequence[Message]]) -> np.ndarray:
        """(N, 8) strategy distributions: the members' mean."""
        return np.mean([m.probabilities(dialogues) for m in self.members], axis=0).astype(np.float32)


def sharing_lower_layers(base: BertModel) -> BertModel:
    """A copy of ``base`` that shares its embeddings, pooler and transformer layers but has a layer list of its own,
    so ``swap_top_layers`` on the copy leaves ``base``'s top layers in place (the members of an ensemble hold one
    base's embeddings and lower layers, not one copy each)."""
    clone = copy.copy(base)
    clone._modules = dict(base._modules)
    stack = copy.copy(base.encoder)
    stack._modules = dict(base.encoder._modules)
    stack.layer = nn.ModuleList(list(base.encoder.layer))
    clone.encoder = stack
    return clone


def load_strategy_encoder(
    directory: str | Path, base_path: str | Path | None = None, members: int = 1
) -> StrategyEncoder | StrategyEncoderEnsemble:
    """The encoder saved in ``directory`` over the shipped ``all-MiniLM-L6-v2`` base (or the folder ``base_path``);
    with ``members`` > 1, the ensemble of its first ``members`` saved members over one shared base."""
    from affectlens import weights

    require_members(directory, members, "strategy encoders")
    deltas = [StrategyEncoderDelta.from_pretrained(directory, k) for k in range(members)]
    encoder, tokenizer = load_base(
        weights.locate_group(deltas[0].config.base, None if base_path is None else str(base_path)).path
    )
    if members == 1:
        return StrategyEncoder(encoder, tokenizer, deltas[0])
    return StrategyEncoderEnsemble([StrategyEncoder(sharing_lower_layers(encoder), tokenizer, d) for d in deltas])
