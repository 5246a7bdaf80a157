"""Speech emotion: a small head over pooled Whisper-encoder frames (``whisper-probe``).

The Whisper encoder's output for the real span of a segment (``WhisperASR.encode``: 50 frames per second,
384 wide for tiny.en) is pooled into its mean and standard deviation over time, optionally joined by
acoustic measures (the 9-value prosody vector and the 28 ``voice_statistics``), standardised, and
classified by a linear layer (multinomial logistic regression) or a one-hidden-layer MLP. The head
predicts the 8 RAVDESS classes it was trained on; at inference they map to the canonical 7 by
``affectlens.labels`` with one documented choice: **RAVDESS ``calm`` is merged into ``neutral``** (both are
non-emotional deliveries; calm is the lower-arousal one). Valence and arousal are the probability-weighted
mean of each class's position on Russell's circumplex (``CIRCUMPLEX``, hand-placed, not fitted).
The shipped head (``scripts/train_speech_emotion.py``) learnt from acted English RAVDESS sentences, both
whole 2.4 s clips and their VAD speech spans; expect less on spontaneous or noisy speech.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from torch import nn

from affectlens import weights
from affectlens.labels import CANONICAL_EMOTIONS, canonical_label
from affectlens.labels import CIRCUMPLEX as SHARED_CIRCUMPLEX
from affectlens.registry import create, register
from affectlens.types import EmotionPrediction, Prosody
from perception.voice.prosody import VOICE_STATISTICS, ProsodyAnalyzer, voice_statistics

logger = logging.getLogger(__name__)

#: The classes the head predicts, in output order (RAVDESS's emotion codes 01-08).
RAVDESS_LABELS: Final[tuple[str, ...]] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)
#: (valence, arousal) in [-1, 1] per class: the shared circumplex of ``affectlens.labels`` for every class
#: with a canonical name, and a pleasant, low-arousal place for ``calm``, which has none.
CIRCUMPLEX: Final[dict[str, tuple[float, float]]] = {
    label: SHARED_CIRCUMPLEX[canonical] if (canonical := canonical_label(label)) else (0.3, -0.6)
    for label in RAVDESS_LABELS
}
#: Labels without a canonical class and where the head sends them (see the module docstring).
NON_CANONICAL: Final[dict[str, str]] = {"calm": "neutral"}
#: Prosody measures in the acoustic features, in order; ``PROSODY_DIM`` adds a voiced/unvoiced flag.
PROSODY_FIELDS: Final[tuple[str, ...]] = (
    "pitch_mean",
    "pitch_range",
    "energy",
    "speaking_rate",
    "pause_ratio",
    "jitter",
    "shimmer",
    "hnr",
)
PROSODY_DIM: Final[int] = len(PROSODY_FIELDS) + 1
#: Acoustic features: the prosody vector, then ``VOICE_STATISTICS``.
ACOUSTIC_DIM: Final[int] = PROSODY_DIM + len(VOICE_STATISTICS)
WEIGHT_GROUP: Final[str] = "speech-emotion-whisper-probe"


@dataclass(frozen=True)
class ProbeConfig:
    """Architecture of the head; ``save_pretrained`` writes it as ``config.json``.

    ``input_dim`` is the encoder width (384 for Whisper tiny), pooled into ``2 * input_dim`` (mean, std)
    plus ``ACOUSTIC_DIM`` when ``use_acoustic``; ``hidden_dim`` 0 makes the head linear (multinomial logistic
    regression), otherwise one GELU hidden layer with ``dropout``. ``encoder`` names the ASR whose
    ``encode`` output the head was trained on.
    """

    input_dim: int = 384
    use_acoustic: bool = False
    hidden_dim: int = 0
    dropout: float = 0.0
    labels: tuple[str, ...] = RAVDESS_LABELS
    encoder: str = "whisper-tiny.en"

    @property
    def feature_dim(self) -> int:
        return 2 * self.input_dim + (ACOUSTIC_DIM if self.use_acoustic else 0)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ProbeConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown ProbeConfig fields: {', '.join(sorted(unknown))}")
        return cls(**{**raw, **({"labels": tuple(raw["labels"])} if "labels" in raw else {})})


def pool_frames(frames: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over time of ``(T, d)`` encoder frames: ``(2 d,)`` float32."""
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 2 or len(frames) == 0:
        raise ValueError(f"expected (T, d) frames with T >= 1, got shape {frames.shape}")
    return np.concatenate([frames.mean(axis=0), frames.std(axis=0)]).astype(np.float32)


def prosody_vector(prosody: Prosody) -> np.ndarray:
    """``Prosody`` as ``(PROSODY_DIM,)`` float32: the measures of ``PROSODY_FIELDS`` (pitch as log2 Hz, ``None``
    as 0) and a last entry 1 when the segment is voiced at all."""
    values = []
    for name in PROSODY_FIELDS:
        value = getattr(prosody, name)
        if name == "pitch_mean" and value is not None:
            value = np.log2(value)
        values.append(0.0 if value is None else float(value))
    values.append(0.0 if prosody.pitch_mean is None else 1.0)
    return np.asarray(values, np.float32)


def acoustic_vector(
    audio: np.ndarray, prosody: Prosody | None = None, analyzer: ProsodyAnalyzer | None = None
) -> np.ndarray:
    """``(ACOUSTIC_DIM,)`` float32 for 16 kHz mono ``audio``: ``prosody_vector`` (of ``prosody`` when given,
    else measured) and ``voice_statistics``."""
    if prosody is None:
        prosody = (analyzer or ProsodyAnalyzer())(audio)
    return np.concatenate([prosody_vector(prosody), voice_statistics(audio)]).astype(np.float32)


class SpeechEmotionHead(nn.Module):
    """``(B, feature_dim)`` pooled features -> ``(B, len(labels))`` logits; standardises its input itself."""

    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def __init__(self, config: ProbeConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ProbeConfig()
        self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
        self.register_buffer("feature_std", torch.ones(config.feature_dim))
        n_out = len(config.labels)
        if config.hidden_dim > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Dropout(config.dropout),
                nn.Linear(config.feature_dim, config.hidden_dim),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden_dim, n_out),
            )
        else:
            self.net = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.feature_dim, n_out))

    def set_standardisation(self, features: np.ndarray) -> None:
        """Set the input mean and standard deviation from ``(N, feature_dim)`` training features."""
        x = torch.as_tensor(np.asarray(features, np.float32))
        self.feature_mean.copy_(x.mean(0))
        self.feature_std.copy_(x.std(0).clamp_min(1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.feature_mean) / self.feature_std)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (float32) into ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = asdict(self.config)
        config["labels"] = list(config["labels"])
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().float().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> SpeechEmotionHead:
        """Load a head written by ``save_pretrained``; every parameter must be present."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config = ProbeConfig.from_dict(json.loads((directory / "config.json").read_text()))
        head = cls(config)
        head.load_state_dict(load_file(str(directory / "model.safetensors")), strict=True)
        return head.eval()


class WhisperProbe:
    """Speech emotion from 16 kHz mono audio: Whisper encoder -> pooled frames (+ prosody) -> head.

    ``encoder`` is a ``WhisperASR`` (or anything with ``encode(audio) -> (T, d)`` and ``encoder_id``); share
    the pipeline's ASR so that the encoder runs once per segment (see ``predict_encoded``).
    """

    name = "whisper-probe"

    def __init__(
        self,
        head: SpeechEmotionHead,
        encoder: Any | None = None,
        prosody: ProsodyAnalyzer | None = None,
        weight_files: dict[str, str] | None = None,
    ) -> None:
        config = head.config
        if encoder is not None and getattr(encoder, "encoder_id", config.encoder) != config.encoder:
            raise ValueError(f"the head was trained on {config.encoder!r} encoder frames, not {encoder.encoder_id!r}'s")
        self.head = head.eval()
        self.config = config
        self.encoder = encoder
        self.prosody = prosody or ProsodyAnalyzer()
        self.weight_files = weight_files or {}
        canonical = [NON_CANONICAL.get(lbl) or canonical_label(lbl) for lbl in config.labels]
        # (len(labels), 7): sums the head's classes into the canonical ones.
        self._to_canonical = np.array([[c == e for e in CANONICAL_EMOTIONS] for c in canonical], np.float32)
        self._circumplex = np.array([CIRCUMPLEX.get(lbl, (0.0, 0.0)) for lbl in config.labels], np.float32)

    def features(
        self, frames: np.ndarray, audio: np.ndarray | None = None, prosody: Prosody | None = None
    ) -> np.ndarray:
        """The head's input for one segment: ``(feature_dim,)`` float32 from ``(T, d)`` encoder frames (and, when
        the head uses acoustic features, the segment's 16 kHz audio, plus its ``Prosody`` if already measured)."""
        frames = np.asarray(frames, np.float32)
        if frames.ndim != 2 or frames.shape[1] != self.config.input_dim:
            raise ValueError(f"expected (T, {self.config.input_dim}) encoder frames, got shape {frames.shape}")
        pooled = pool_frames(frames)
        if not self.config.use_acoustic:
            return pooled
        if audio is None:
            raise ValueError("this head uses acoustic features: pass the segment's audio")
        return np.concatenate([pooled, acoustic_vector(audio, prosody, self.prosody)])

    @torch.inference_mode()
    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """``(B, feature_dim)`` features -> ``(B, len(labels))`` probabilities in the head's label order."""
        x = torch.as_tensor(np.asarray(features, np.float32)).reshape(-1, self.config.feature_dim)
        return torch.softmax(self.head(x), dim=1).numpy()

    def to_predictions(self, probabilities: np.ndarray) -> list[EmotionPrediction]:
        """Head-order probabilities ``(B, len(labels))`` -> canonical predictions with valence and arousal."""
        canonical = probabilities @ self._to_canonical
        va = probabilities @ self._circumplex
        return [
            EmotionPrediction.from_vector(p, self.name, valence=float(v), arousal=float(a))
            for p, (v, a) in zip(canonical, va, strict=True)
        ]

    def predict_encoded(
        self, frames: Sequence[np.ndarray], audios: Sequence[np.ndarray | None] | None = None,
        prosody: Sequence[Prosody | None] | None = None,
    ) -> list[EmotionPrediction]:  # fmt: skip
        """Predictions for segments already encoded (``(T_i, d)`` frames each), in one batch through the head."""
        n = len(frames)
        audios = audios if audios is not None else [None] * n
        prosody = prosody if prosody is not None else [None] * n
        if not n:
            return []
        x = np.stack([self.features(f, a, p) for f, a, p in zip(frames, audios, prosody, strict=True)])
        return self.to_predictions(self.predict_features(x))

    def _encode(self, audio: np.ndarray) -> np.ndarray:
        if self.encoder is None:
            raise RuntimeError(
                "this WhisperProbe has no encoder: build it with encoder=<WhisperASR> or pretrained=True"
            )
        audio = np.asarray(audio, np.float32).reshape(-1)
        if len(audio) == 0:
            raise ValueError("empty audio")
        return np.asarray(self.encoder.encode(audio), np.float32)

    def predict_batch(self, audios: Sequence[np.ndarray]) -> list[EmotionPrediction]:
        """Predictions for several 16 kHz mono float32 segments (each encoded, then one head batch)."""
        return self.predict_encoded([self._encode(a) for a in audios], list(audios))

    def predict(self, audio16k: np.ndarray) -> EmotionPrediction:
        """Canonical 7-way distribution, valence and arousal of one 16 kHz mono float32 segment ``(n,)``."""
        return self.predict_batch([audio16k])[0]


@register("speech_emotion", "whisper-probe")
def _build_probe(
    pretrained: bool = True,
    model_path: str | None = None,
    encoder: Any | None = None,
    config: ProbeConfig | None = None,
) -> WhisperProbe:
    """The trained head from the ``speech-emotion-whisper-probe`` group (``model_path``: a folder written by
    ``save_pretrained``), with a Whisper tiny.en encoder unless one is injected. ``pretrained=False`` builds an
    untrained head from ``config`` and loads no encoder unless one is given."""
    if not pretrained:
        return WhisperProbe(SpeechEmotionHead(config), encoder=encoder)
    found = weights.locate_group(WEIGHT_GROUP, model_path)
    head = SpeechEmotionHead.from_pretrained(found.path)
    files = dict(found.files)
    if encoder is None:
        encoder = create("asr", head.config.encoder)
        files.update(encoder.weight_files)
    return WhisperProbe(head, encoder=encoder, weight_files=files)
