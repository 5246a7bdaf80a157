"""The strategy LM reader: the compact LM reads the dialogue so far, its top layers fine-tuned to name the next strategy.

The strategy encoder (``fusion.strategy_encoder``) fine-tunes a 22M-parameter sentence model. This reader puts the
product's own compact LM (SmolLM2-135M-Instruct, the ``language_model`` default) to the same task: the dialogue is
written as a transcript, oldest first, each supporter message tagged with its strategy, ending where the next
supporter message would start (``lm_context_text``), e.g.

    Seeker: I just feel so alone
    Supporter (Question): How long have you felt this way?
    Seeker: Since the move, I guess
    Supporter (

The LM's lower layers run frozen, exactly as shipped; a ``StrategyLMDelta`` holds what training changed: copies of
its top ``num_trained_layers`` decoder layers, its final norm and a linear head over the last token's and the mean
token's states. ``StrategyLMReader`` puts the two together: dialogues -> (N, 8) strategy distributions. The planner
mixes that distribution with the MLP's (and the encoder's) by ``StrategyConfig.lm_reader_weight``, chosen on ESConv
valid by ``scripts/train_strategy_planner.py --lm-reader``.

The reader needs the LM's plain weights: an LM carrying a LoRA (the fusion adapter's) would feed the delta states
it was not trained on, so ``load_strategy_lm_reader`` builds its own default LM unless it is given a clean one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch
from torch import nn

from affectlens.labels import ESCONV_STRATEGIES
from fusion.strategy import Message
from fusion.strategy_encoder import numbered_files, require_members
from fusion.strategy_encoder import saved_members as saved_files
from perception.text.emotion import load_delta_state

if TYPE_CHECKING:
    from fusion.lm import CompactLM

logger = logging.getLogger(__name__)

CONFIG_NAME: Final = "lm-reader.json"
WEIGHTS_NAME: Final = "lm-reader.safetensors"
#: Messages of the dialogue so far that ``lm_context_text`` writes (the tokenizer's cut may drop more).
LM_CONTEXT_MESSAGES: Final = 14
#: The LM settings a delta must share with the LM it runs over (the shapes of its layers, its rotary embedding).
SHAPE_KEYS: Final = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "rms_norm_eps",
    "rope_parameters",
    "rope_theta",
    "attention_bias",
    "mlp_bias",
    "vocab_size",
)


def member_files(member: int) -> tuple[str, str]:
    """(config, weights) file names of reader member ``member`` (0-based): ``lm-reader.json`` and
    ``lm-reader.safetensors`` for the first, ``lm-reader-2.json`` and ``lm-reader-2.safetensors`` for the second, ..."""
    return numbered_files(CONFIG_NAME, WEIGHTS_NAME, member)


def saved_members(directory: str | Path) -> int:
    """How many reader members ``directory`` holds (consecutive ``member_files`` with both files present)."""
    return saved_files(directory, member_files)


def lm_context_text(dialogue: Sequence[Message], max_messages: int = LM_CONTEXT_MESSAGES) -> str:
    """The dialogue so far as the reader reads it: the last ``max_messages`` messages oldest first, one a line,
    supporter messages tagged with their (first) strategy or ``none``, then the start of the next supporter line."""
    lines = []
    for m in dialogue[-max_messages:] if max_messages else []:
        if m.speaker == "usr":
            lines.append(f"Seeker: {m.text}")
        else:
            lines.append(f"Supporter ({(m.strategies or ('none',))[0]}): {m.text}")
    return "\n".join(lines) + "\nSupporter ("


def lm_shape(config: Any) -> dict[str, Any]:
    """The ``SHAPE_KEYS`` of a Hugging Face model config (those it has)."""
    raw = config.to_dict()
    return {k: raw[k] for k in SHAPE_KEYS if k in raw}


@dataclass(frozen=True)
class StrategyLMConfig:
    """The delta's shape and provenance (``lm-reader.json``); ``lm_config`` holds the LM's ``SHAPE_KEYS``."""

    lm: str = "smollm2-135m-instruct"
    lm_config: dict[str, Any] = field(default_factory=dict)
    num_trained_layers: int = 4
    max_length: int = 192
    max_messages: int = LM_CONTEXT_MESSAGES
    dropout: float = 0.1
    strategies: tuple[str, ...] = ESCONV_STRATEGIES
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        layers = int(self.lm_config.get("num_hidden_layers", self.num_trained_layers))
        if not 1 <= self.num_trained_layers <= layers:
            raise ValueError(f"num_trained_layers must be in [1, {layers}], got {self.num_trained_layers}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens, got {self.max_length}")

    @property
    def first_trained_layer(self) -> int:
        """Index of the LM's first decoder layer the delta replaces (its lower states are the delta's input)."""
        return int(self.lm_config["num_hidden_layers"]) - self.num_trained_layers

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StrategyLMConfig:
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown strategy LM reader settings {unknown}")
        return cls(**{**raw, "strategies": tuple(raw.get("strategies", ESCONV_STRATEGIES))})


class StrategyLMDelta(nn.Module):
    """What training changes over the LM: its top decoder layers, its final norm and the strategy head."""

    def __init__(self, config: StrategyLMConfig) -> None:
        super().__init__()
        from transformers import AutoConfig

        self.config = config
        shape = dict(config.lm_config)
        lm_config = AutoConfig.for_model(shape.pop("model_type", "llama"), **shape)
        lm_config._attn_implementation = "sdpa"
        layer_class = _model_class(lm_config, "DecoderLayer")
        first = config.first_trained_layer
        self.layers = nn.ModuleList(layer_class(lm_config, first + i) for i in range(config.num_trained_layers))
        self.norm = _model_class(lm_config, "RMSNorm")(lm_config.hidden_size, eps=lm_config.rms_norm_eps)
        self.rotary = _model_class(lm_config, "RotaryEmbedding")(config=lm_config)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * lm_config.hidden_size, len(config.strategies))

    @classmethod
    def from_lm(cls, config: StrategyLMConfig, lm: CompactLM) -> StrategyLMDelta:
        """A delta whose layers and norm start as copies of the LM's and whose head starts small (training)."""
        delta = cls(config)
        decoder = lm.model.base_model
        for mine, theirs in zip(delta.layers, decoder.layers[config.first_trained_layer :], strict=True):
            mine.load_state_dict(theirs.state_dict())
        delta.norm.load_state_dict(decoder.norm.state_dict())
        nn.init.normal_(delta.head.weight, std=0.02)
        nn.init.zeros_(delta.head.bias)
        return delta

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, T, H)`` lower states, left-padded, and their ``(B, T)`` mask (1 = token) -> ``(B, 8)`` logits."""
        batch, length, _ = states.shape
        positions = torch.arange(length, device=states.device).unsqueeze(0).expand(batch, length)
        rotary = self.rotary(states, positions)
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=states.device))
        # causal and not a pad key; a pad query keeps its own key so no row of the softmax is empty
        allowed = (causal[None] & mask.bool()[:, None, :]) | torch.eye(length, dtype=torch.bool, device=states.device)
        hidden = states
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=allowed[:, None], position_embeddings=rotary)
        hidden = self.norm(hidden).float()
        weights = mask.float().unsqueeze(-1)
        mean = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.head(self.dropout(torch.cat([hidden[:, -1], mean], 1)))

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None, member: int = 0) -> Path:
        """Write member ``member``'s ``member_files`` (``lm-reader.json`` and ``lm-reader.safetensors`` for the
        first; cast to ``dtype`` if given) into ``directory``."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        config_name, weights_name = member_files(member)
        state = {
            k: v.detach().to("cpu", dtype or v.dtype).contiguous()
            for k, v in self.state_dict().items()
            if not k.startswith("rotary.")  # computed from the config, not learned
        }
        save_file(state, str(out / weights_name), metadata={"format": "pt", "lm": self.config.lm})
        (out / config_name).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path, member: int = 0) -> StrategyLMDelta:
        """Member ``member`` of the deltas written by ``save_pretrained`` (float32 in memory whatever the stored
        dtype)."""
        folder = Path(directory)
        config_name, weights_name = member_files(member)
        delta = cls(StrategyLMConfig.from_dict(json.loads((folder / config_name).read_text())))
        missing, unexpected = delta.load_state_dict(load_delta_state(folder / weights_name), strict=False)
        missing = [k for k in missing if not k.startswith("rotary.")]
        if missing or unexpected:
            raise ValueError(
                f"{folder / weights_name}: not a strategy LM reader (missing {missing}, extra {unexpected})"
            )
        return delta.eval()


def _model_class(config: Any, suffix: str) -> type[nn.Module]:
    """The ``<Family><suffix>`` class of the config's model family (e.g. ``LlamaDecoderLayer``)."""
    import importlib

    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    model_name = MODEL_MAPPING_NAMES.get(config.model_type)
    if not isinstance(model_name, str):
        raise ValueError(f"the strategy LM reader does not know the model type {config.model_type!r}")
    name = model_name.removesuffix("Model") + suffix
    module = importlib.import_module(f"transformers.models.{config.model_type}.modeling_{config.model_type}")
    found = getattr(module, name, None)
    if found is None:
        raise ValueError(f"the strategy LM reader needs {name} (not found in transformers)")
    return found


class StrategyLMReader(nn.Module):
    """The frozen LM's lower layers and the delta on top: dialogues -> strategy distributions.

    ``lower_states`` runs the LM once per context and keeps the states that enter its first replaced layer (float16,
    so a training script can cache them); ``forward`` runs the delta on them. Only the delta ever trains.
    """

    def __init__(self, lm: CompactLM, delta: StrategyLMDelta) -> None:
        super().__init__()
        expected = lm_shape(lm.model.config)
        mismatched = {k: (v, expected.get(k)) for k, v in delta.config.lm_config.items() if expected.get(k) != v}
        if mismatched:
            raise ValueError(f"the strategy LM reader was trained over another LM: (delta, LM) differ in {mismatched}")
        lm.model.requires_grad_(False)
        self.lm = lm
        self.delta = delta
        self.eval()

    @property
    def config(self) -> StrategyLMConfig:
        return self.delta.config

    def train(self, mode: bool = True) -> StrategyLMReader:
        super().train(mode)
        self.lm.model.eval()
        return self

    def tokenize(self, dialogues: Sequence[Sequence[Message]]) -> list[list[int]]:
        """Token ids of each dialogue's ``lm_context_text``, the last ``max_length`` kept (the oldest words go)."""
        texts = [lm_context_text(d, self.config.max_messages) for d in dialogues]
        return [list(ids[-self.config.max_length :]) for ids in self.lm.tokenizer(texts)["input_ids"]]

    @torch.inference_mode()
    def lower_states(self, ids: Sequence[Sequence[int]], batch_size: int = 16) -> list[np.ndarray]:
        """Per context, the ``(T, H)`` float16 states entering the LM's first replaced layer; contexts are run in
        batches of similar length, left-padded, under bfloat16 autocast."""
        decoder = self.lm.model.base_model
        cut = self.config.first_trained_layer
        out: list[np.ndarray] = [np.zeros((0, 0), np.float16)] * len(ids)
        order = np.argsort([len(s) for s in ids])  # numpy's default sort: the batches a cache was made with
        for start in range(0, len(ids), batch_size):
            rows = order[start : start + batch_size]
            x, mask = left_pad([ids[i] for i in rows])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden = decoder(input_ids=x, attention_mask=mask, output_hidden_states=True).hidden_states[cut]
            for k, i in enumerate(rows):
                n = len(ids[i])
                out[i] = hidden[k, x.shape[1] - n :].float().numpy().astype(np.float16)
        return out

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, T, H)`` left-padded lower states and their mask -> ``(B, 8)`` logits (bfloat16 autocast)."""
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.delta(states, mask).float()

    @torch.inference_mode()
    def probabilities_of_states(self, states: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """(N, 8) strategy distributions from ``lower_states``' output, batched by length."""
        self.eval()
        out = np.zeros((len(states), len(self.config.strategies)), np.float32)
        order = np.argsort([len(s) for s in states], kind="stable")
        for start in range(0, len(states), batch_size):
            rows = order[start : start + batch_size]
            h, mask = stack_states([states[i] for i in rows])
            out[rows] = torch.softmax(self(h, mask), 1).numpy()
        return out

    def probabilities(self, dialogues: Sequence[Sequence[Message]]) -> np.ndarray:
        """(N, 8) strategy distributions of the dialogues so far."""
        if not dialogues:
            return np.zeros((0, len(self.config.strategies)), np.float32)
        return self.probabilities_of_states(self.lower_states(self.tokenize(dialogues)))


def left_pad(ids: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T)`` token ids left-padded with ``pad_id`` (the last token of every row at ``T - 1``) and their mask."""
    length = max((len(s) for s in ids), default=0)
    x = torch.full((len(ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.long)
    for k, s in enumerate(ids):
        if len(s):
            x[k, length - len(s) :] = torch.as_tensor(list(s), dtype=torch.long)
            mask[k, length - len(s) :] = 1
    return x, mask


def stack_states(states: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T, H)`` float32 states left-padded with zeros, and their ``(B, T)`` mask."""
    length = max((len(s) for s in states), default=0)
    width = next((s.shape[1] for s in states if s.ndim == 2 and len(s)), 0)
    h = torch.zeros((len(states), length, width))
    mask = torch.zeros((len(states), length))
    for k, s in enumerate(states):
        if len(s):
            h[k, length - len(s) :] = torch.from_numpy(np.asarray(s, np.float32))
            mask[k, length - len(s) :] = 1
    return h, mask


class StrategyLMReaderEnsemble:
    """Several readers over one LM (different seeds): the LM's lower states are computed once and each member's
    delta reads them; the distribution is the members' mean."""

    def __init__(self, members: Sequence[StrategyLMReader]) -> None:
        if not members:
            raise ValueError("a strategy LM reader ensemble needs at least one member")

        def reads(c: StrategyLMConfig) -> tuple[int, int, int]:
            return c.first_trained_layer, c.max_length, c.max_messages

        first = members[0]
        for m in members[1:]:
            if m.lm is not first.lm:
                raise ValueError("the members of a strategy LM reader ensemble must run over one LM instance")
            if reads(m.config) != reads(first.config):
                raise ValueError(
                    "the members of a strategy LM reader ensemble must read the same lower states: (first trained "
                    f"layer, max_length, max_messages) {reads(first.config)} vs {reads(m.config)}"
                )
        self.members = list(members)

    @property
    def config(self) -> StrategyLMConfig:
        """The first member's settings (the members share their context settings)."""
        return self.members[0].config

    def probabilities_of_states(self, states: Sequence[np.ndarray]) -> np.ndarray:
        """(N, 8): the members' mean over the same lower states."""
        return np.mean([m.probabilities_of_states(states) for m in self.members], axis=0).astype(np.float32)

    def probabilities(self, dialogues: Sequence[Sequence[Message]]) -> np.ndarray:
        """(N, 8) strategy distributions of the dialogues so far: the LM runs once, every delta reads its states."""
        if not dialogues:
            return np.zeros((0, len(self.config.strategies)), np.float32)
        first = self.members[0]
        return self.probabilities_of_states(first.lower_states(first.tokenize(dialogues)))


def load_strategy_lm_reader(
    directory: str | Path, lm: CompactLM | None = None, members: int = 1
) -> StrategyLMReader | StrategyLMReaderEnsemble:
    """The reader saved in ``directory`` over ``lm`` (a clean instance of the LM it names; default: a new one built
    by the registry); with ``members`` > 1, the ensemble of its first ``members`` saved readers over that one LM."""
    require_members(directory, members, "strategy LM readers", member_files)
    deltas = [StrategyLMDelta.from_pretrained(directory, k) for k in range(members)]
    if lm is None:
        from affectlens.registry import create_language_model

        lm = create_language_model(deltas[0].config.lm)
    readers = [StrategyLMReader(lm, delta) for delta in deltas]
    return readers[0] if members == 1 else StrategyLMReaderEnsemble(readers)
