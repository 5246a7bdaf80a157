"""The fusion adapter (Nano-EmoX shape): modality tokens -> fusion encoder -> projector -> soft prefix for the LM.

Modality tokens come from our encoders' outputs, the same at training and at inference:

- **face**, one token per time window (``FACE_WINDOW_SECONDS``; an image is one window): the expression model's
  calibrated log-probabilities, circumplex valence/arousal and top probability, averaged over the window's faces
  weighted by face quality (``face_token``);
- **voice**, one token per utterance: the speech-emotion head's input (pooled Whisper-encoder frames + acoustic
  measures, ``Utterance.voice_features``) and its canonical log-probabilities and valence/arousal (``voice_token``);
- **text**, one token per utterance or typed text: the text network's pooled sentence embedding
  (``TextEmotion.embedding``) and its log-probabilities and valence/arousal (``text_token``).

A missing modality is simply absent (a key-padding mask), and the raw part of a voice or text token may be
missing too (a flag says so). The fusion encoder is a small pre-norm Transformer over
``[query_1 .. query_K, modality tokens ...]`` with a modality embedding per token; the outputs at the ``K`` learned
query positions pass through the projector (``linear`` | ``mlp2x_gelu``, parsed in ``build_projector`` only)
into the LM's embedding space and become ``K`` soft tokens in the prompt, where ``SIGNALS`` stands.
An auxiliary emotion head on the mean of the query outputs helps training.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from torch import nn

from affectlens.labels import CANONICAL_EMOTIONS
from affectlens.types import AnalysisResult, EmotionPrediction, TextEmotion, Utterance

logger = logging.getLogger(__name__)

MODALITY_NAMES: Final[tuple[str, ...]] = ("face", "voice", "text")
#: Length of one face token's time window in a video.
FACE_WINDOW_SECONDS: Final = 1.0
#: Values in a prediction summary: 7 log-probabilities, valence, arousal.
SUMMARY_DIM: Final = len(CANONICAL_EMOTIONS) + 2
FACE_DIM: Final = SUMMARY_DIM + 1
_EPS: Final = 1e-4

#: The prompt's fixed parts (training and inference share them). ``SIGNALS`` is replaced by the soft tokens.
SYSTEM_PROMPT: Final = "You are AffectLens. You read a person's face, voice and words, and you answer with care."
SIGNALS: Final = "<signals>"
#: Instruction per curriculum task; the label is read after ``LABEL_CUE``.
INSTRUCTIONS: Final[dict[str, str]] = {
    "caption": "Describe the face, the voice and the words.",
    "reason": "What does the person feel, and why?",
    "reply": "The person said: {text}\nReply with empathy in one or two sentences.",
    "explain": "The analysis found: {facts}\nExplain in one sentence what the person likely feels and why.",
}
LABEL_CUE: Final = "Emotion:"


def label_token_ids(tokenizer: Any) -> list[int]:
    """The token that starts each label right after ``LABEL_CUE`` (``" happiness"``, with its space), in
    ``CANONICAL_EMOTIONS`` order: where the LM's label distribution is read.

    Raises ``ValueError`` when two labels start with the same token (they could not be told apart).
    """
    cue = tokenizer(LABEL_CUE, add_special_tokens=False)["input_ids"]
    ids = []
    for label in CANONICAL_EMOTIONS:
        full = tokenizer(f"{LABEL_CUE} {label}", add_special_tokens=False)["input_ids"]
        if full[: len(cue)] != cue or len(full) <= len(cue):
            raise ValueError(f"the tokenizer merges {LABEL_CUE!r} with {label!r}: cannot read labels after the cue")
        ids.append(int(full[len(cue)]))
    if len(set(ids)) != len(ids):
        raise ValueError(f"labels share their first token after {LABEL_CUE!r}: {ids}")
    return ids


def summary_vector(prediction: EmotionPrediction) -> np.ndarray:
    """``(SUMMARY_DIM,)``: log-probabilities in ``CANONICAL_EMOTIONS`` order, valence and arousal (0 when unknown)."""
    p = np.array([prediction.probabilities.get(e, 0.0) for e in CANONICAL_EMOTIONS], np.float32)
    return np.concatenate([np.log(p + _EPS), [prediction.valence or 0.0, prediction.arousal or 0.0]]).astype(np.float32)


def face_token(predictions: Sequence[EmotionPrediction], qualities: Sequence[float] | None = None) -> np.ndarray:
    """``(FACE_DIM,)`` for one time window: the quality-weighted mean probability turned into a summary, plus
    the mean top probability."""
    w = np.asarray(qualities if qualities is not None else [1.0] * len(predictions), np.float64)
    w = np.clip(w, 0.05, None)
    w = w / w.sum()
    probs = np.stack([[p.probabilities.get(e, 0.0) for e in CANONICAL_EMOTIONS] for p in predictions])
    mean = (w[:, None] * probs).sum(0)
    va = [(p.valence or 0.0, p.arousal or 0.0) for p in predictions]
    valence = float(sum(wi * v for wi, (v, _) in zip(w, va, strict=True)))
    arousal = float(sum(wi * a for wi, (_, a) in zip(w, va, strict=True)))
    pooled = EmotionPrediction.from_vector(mean, "window", valence, arousal)
    confidence = float(sum(wi * p.confidence for wi, p in zip(w, predictions, strict=True)))
    return np.concatenate([summary_vector(pooled), [confidence]]).astype(np.float32)


def _with_raw(summary: np.ndarray, raw: np.ndarray | None, raw_dim: int) -> np.ndarray:
    if raw is None or np.asarray(raw).shape != (raw_dim,):
        return np.concatenate([summary, np.zeros(raw_dim, np.float32), [0.0]]).astype(np.float32)
    return np.concatenate([summary, np.asarray(raw, np.float32), [1.0]]).astype(np.float32)


def voice_token(utterance: Utterance, raw_dim: int) -> np.ndarray:
    """``(SUMMARY_DIM + raw_dim + 1,)`` for an utterance with a speech emotion: summary, head features, flag."""
    if utterance.speech_emotion is None:
        raise ValueError(f"utterance {utterance.index} has no speech emotion")
    return _with_raw(summary_vector(utterance.speech_emotion), utterance.voice_features, raw_dim)


def text_token(emotion: TextEmotion, raw_dim: int) -> np.ndarray:
    """``(SUMMARY_DIM + raw_dim + 1,)`` for a text's emotion: summary, sentence embedding, flag."""
    return _with_raw(summary_vector(emotion.emotion), emotion.embedding, raw_dim)


def _cap(rows: list[np.ndarray], limit: int) -> list[np.ndarray]:
    """At most ``limit`` tokens: neighbouring tokens averaged in ``limit`` even groups when there are more."""
    if len(rows) <= limit:
        return rows
    return [np.mean(group, axis=0) for group in np.array_split(np.stack(rows), limit)]


@dataclass
class ModalityTokens:
    """Token rows per modality, ``{"face": (n_f, FACE_DIM), "voice": (n_v, d_v), "text": (n_t, d_t)}``; a modality
    with no rows is absent."""

    rows: dict[str, np.ndarray]

    def present(self) -> list[str]:
        return [m for m in MODALITY_NAMES if m in self.rows and len(self.rows[m])]


@dataclass
class FusionAdapterConfig:
    """Architecture of the adapter (``save_pretrained`` writes it as ``config.json``), the LM it was trained for
    and the prompt's label tokens and calibration."""

    voice_raw_dim: int = 805
    text_raw_dim: int = 384
    d_model: int = 256
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    queries: int = 4
    max_tokens_per_modality: int = 8
    projector: str = "mlp2x_gelu"
    lm_name: str = "smollm2-135m-instruct"
    lm_hidden: int = 576
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    label_token_ids: list[int] = field(default_factory=list)
    temperature: float = 1.0
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def input_dims(self) -> dict[str, int]:
        return {
            "face": FACE_DIM,
            "voice": SUMMARY_DIM + self.voice_raw_dim + 1,
            "text": SUMMARY_DIM + self.text_raw_dim + 1,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FusionAdapterConfig:
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fusion adapter settings {sorted(unknown)}")
        if "lora_targets" in raw:
            raw = {**raw, "lora_targets": tuple(raw["lora_targets"])}
        return cls(**raw)


PROJECTORS: Final[tuple[str, ...]] = ("linear", "mlp2x_gelu")


def build_projector(spec: str, d_in: int, d_out: int) -> nn.Module:
    """The projector named by ``spec`` (LLaVA's spellings): ``linear`` or ``mlp<N>x_gelu`` (N linear layers)."""
    if spec == "linear":
        return nn.Linear(d_in, d_out)
    if spec.startswith("mlp") and spec.endswith("x_gelu") and spec[3:-6].isdigit() and int(spec[3:-6]) >= 1:
        depth = int(spec[3:-6])
        layers: list[nn.Module] = [nn.Linear(d_in, d_out)]
        for _ in range(1, depth):
            layers += [nn.GELU(), nn.Linear(d_out, d_out)]
        return nn.Sequential(*layers)
    raise ValueError(f"unknown projector {spec!r}; valid: {', '.join(PROJECTORS)} (or mlp<N>x_gelu)")


@dataclass
class TokenBatch:
    """A padded batch: ``x[m]`` is ``(B, N_m, d_m)`` and ``mask[m]`` ``(B, N_m)`` True where a token exists."""

    x: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor]

    @classmethod
    def collate(cls, samples: Sequence[ModalityTokens], config: FusionAdapterConfig) -> TokenBatch:
        dims = config.input_dims
        x: dict[str, torch.Tensor] = {}
        mask: dict[str, torch.Tensor] = {}
        for m in MODALITY_NAMES:
            rows = [_cap(list(s.rows.get(m, np.zeros((0, dims[m])))), config.max_tokens_per_modality) for s in samples]
            n = max(1, max(len(r) for r in rows))
            xm = torch.zeros(len(samples), n, dims[m])
            mm = torch.zeros(len(samples), n, dtype=torch.bool)
            for i, r in enumerate(rows):
                if r:
                    xm[i, : len(r)] = torch.as_tensor(np.stack(r), dtype=torch.float32)
                    mm[i, : len(r)] = True
            x[m], mask[m] = xm, mm
        return cls(x, mask)


class FusionAdapter(nn.Module):
    """``TokenBatch`` -> ``(B, queries, lm_hidden)`` soft prefix and ``(B, 7)`` auxiliary emotion logits."""

    def __init__(self, config: FusionAdapterConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or FusionAdapterConfig()
        self.inputs = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, c.d_model)) for m, d in c.input_dims.items()}
        )
        self.modality = nn.Embedding(len(MODALITY_NAMES) + 1, c.d_model)  # + the query type
        self.order = nn.Embedding(c.max_tokens_per_modality, c.d_model)
        self.queries = nn.Parameter(torch.randn(c.queries, c.d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            c.d_model, c.heads, 4 * c.d_model, c.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.d_model)
        self.projector = build_projector(c.projector, c.d_model, c.lm_hidden)
        self.aux = nn.Linear(c.d_model, len(CANONICAL_EMOTIONS))

    def forward(self, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        b = next(iter(batch.x.values())).shape[0]
        parts = [self.queries.expand(b, -1, -1) + self.modality.weight[len(MODALITY_NAMES)]]
        keep = [torch.ones(b, c.queries, dtype=torch.bool)]
        for i, m in enumerate(MODALITY_NAMES):
            xm = batch.x[m]
            n = xm.shape[1]
            parts.append(self.inputs[m](xm) + self.modality.weight[i] + self.order.weight[:n])
            keep.append(batch.mask[m])
        h = self.encoder(torch.cat(parts, 1), src_key_padding_mask=~torch.cat(keep, 1))
        q = self.norm(h[:, : c.queries])
        return self.projector(q), self.aux(q.mean(1))

    def save_pretrained(self, directory: str | Path, lora: dict[str, torch.Tensor] | None = None) -> Path:
        """``config.json`` + ``adapter.safetensors`` (the adapter's weights, and the LM's LoRA under ``lora.``)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        state.update({f"lora.{k}": v.detach().contiguous() for k, v in (lora or {}).items()})
        save_file(state, directory / "adapter.safetensors")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> tuple[FusionAdapter, dict[str, torch.Tensor]]:
        """The adapter and the LoRA state for its LM (empty when it was trained without LoRA)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config = FusionAdapterConfig.from_dict(json.loads((directory / "config.json").read_text()))
        state = load_file(directory / "adapter.safetensors")
        adapter = cls(config)
        adapter.load_state_dict({k: v for k, v in state.items() if not k.startswith("lora.")}, strict=True)
        lora = {k[len("lora.") :]: v for k, v in state.items() if k.startswith("lora.")}
        return adapter.eval(), lora


def tokens_from_results(
    results: AnalysisResult | Iterable[AnalysisResult], config: FusionAdapterConfig
) -> ModalityTokens:
    """The modality tokens of one moment (one or several results): face windows, voice and text utterances."""
    results = [results] if isinstance(results, AnalysisResult) else list(results)
    results = [part for r in results for part in (r.parts or (r,))]  # a multimodal result: its parts
    rows: dict[str, list[np.ndarray]] = {m: [] for m in MODALITY_NAMES}
    for result in results:
        windows: dict[int, list[tuple[EmotionPrediction, float]]] = {}
        for frame in result.frames:
            for face in frame.faces:
                key = int(frame.time // FACE_WINDOW_SECONDS) if result.kind == "video" else 0
                windows.setdefault(key, []).append((face.expression, face.quality.score))
        for key in sorted(windows):
            preds, qualities = zip(*windows[key], strict=True)
            rows["face"].append(face_token(preds, qualities))
        for u in result.utterances:
            if u.speech_emotion is not None:
                rows["voice"].append(voice_token(u, config.voice_raw_dim))
            if u.text_emotion is not None and u.text:
                rows["text"].append(text_token(u.text_emotion, config.text_raw_dim))
    cap = config.max_tokens_per_modality
    return ModalityTokens({m: np.stack(_cap(r, cap)) for m, r in rows.items() if r})
