"""Calibrated late fusion: each modality's distribution, weighted by how far it can be trusted, pooled into one.

Every modality first becomes a ``ModalityEvidence`` (``collect_evidence``): the face's expression averaged over
the faces seen (weighted by face quality), the voice's emotion averaged over utterances (weighted by speech
seconds), the words' emotion averaged over utterances (weighted by word count). ``LateFusion`` then pools them
log-linearly (a weighted product of experts)::

    log p(e) ∝ Σ_m w_m · log p_m(e),   w_m = α_m · r_m(signal_m)

``α_m`` is how much that modality is worth when fully reliable and at once its calibration (an inverse
temperature on its log-probabilities), fitted on validation data by ``LateFusion.fit``; ``r_m`` in [0, 1] is the documented reliability of this particular
observation: face quality for the face, ``s / (s + k_voice)`` for ``s`` seconds of speech, ``n / (n + k_text)``
for ``n`` words. The result abstains (``uncertain``) when its top probability is under ``abstain_below``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from affectlens.labels import CANONICAL_EMOTIONS, valence_arousal
from affectlens.types import AnalysisResult, EmotionPrediction

logger = logging.getLogger(__name__)

Modality = Literal["face", "voice", "text"]
MODALITIES: Final[tuple[Modality, ...]] = ("face", "voice", "text")
_EPS: Final = 1e-6


@dataclass(frozen=True)
class ModalityEvidence:
    """One modality's say on the emotion: its distribution over ``CANONICAL_EMOTIONS``, the reliability
    signal its weight depends on, and where it was seen.

    ``signal`` is the face quality in [0, 1] (mean over faces), the seconds of speech (voice), or the number of
    words (text). ``span`` is the time range in seconds (``None`` for an image or typed text); ``count`` the
    faces, utterances or texts it averages; ``cue`` a short human-readable description.
    """

    modality: Modality
    probabilities: np.ndarray
    signal: float
    count: int = 1
    span: tuple[float, float] | None = None
    cue: str = ""
    valence: float | None = None
    arousal: float | None = None

    def __post_init__(self) -> None:
        p = np.asarray(self.probabilities, np.float64)
        if p.shape != (len(CANONICAL_EMOTIONS),) or not np.all(np.isfinite(p)) or p.min() < 0 or p.sum() <= 0:
            raise ValueError(f"{self.modality}: expected {len(CANONICAL_EMOTIONS)} finite non-negative probabilities")
        object.__setattr__(self, "probabilities", p / p.sum())

    @property
    def label(self) -> str:
        return CANONICAL_EMOTIONS[int(np.argmax(self.probabilities))]

    @property
    def confidence(self) -> float:
        return float(np.max(self.probabilities))


def _average(predictions: Sequence[EmotionPrediction], weights: Sequence[float]) -> tuple[np.ndarray, float, float]:
    w = np.asarray(weights, np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
    probs = np.stack([[p.probabilities.get(e, 0.0) for e in CANONICAL_EMOTIONS] for p in predictions])
    mean = (w[:, None] * probs).sum(0)
    vals = [(p.valence, p.arousal) for p in predictions]
    if all(v is not None and a is not None for v, a in vals):
        valence = float(sum(wi * v for wi, (v, _) in zip(w, vals, strict=True)))
        arousal = float(sum(wi * a for wi, (_, a) in zip(w, vals, strict=True)))
    else:
        valence, arousal = valence_arousal(dict(zip(CANONICAL_EMOTIONS, mean.tolist(), strict=True)))
    return mean, valence, arousal


def collect_evidence(results: AnalysisResult | Iterable[AnalysisResult]) -> list[ModalityEvidence]:
    """The face, voice and text evidence of one or several results (e.g. an image, a voice note and typed text
    of the same moment), in ``MODALITIES`` order; a modality nothing was found for is left out."""
    results = [results] if isinstance(results, AnalysisResult) else list(results)
    out: list[ModalityEvidence] = []
    faces = [(frame.time, face) for r in results for frame in r.frames for face in frame.faces]
    if faces:
        predictions = [face.expression for _, face in faces]
        qualities = [max(face.quality.score, 0.05) for _, face in faces]
        mean, valence, arousal = _average(predictions, qualities)
        times = [t for t, _ in faces]
        video = any(r.kind == "video" for r in results)
        out.append(
            ModalityEvidence(
                "face", mean, float(np.mean([f.quality.score for _, f in faces])), len(faces),
                (min(times), max(times)) if video else None,
                f"{len(faces)} face observation(s), mean quality {np.mean([f.quality.score for _, f in faces]):.2f}",
                valence, arousal,
            )
        )  # fmt: skip
    spoken = [u for r in results for u in r.utterances if u.speech_emotion is not None]
    if spoken:
        seconds = [max(u.end - u.start, 0.05) for u in spoken]
        mean, valence, arousal = _average([u.speech_emotion for u in spoken], seconds)  # type: ignore[misc]
        out.append(
            ModalityEvidence(
                "voice", mean, float(sum(seconds)), len(spoken), (min(u.start for u in spoken), max(u.end for u in spoken)),
                f"{len(spoken)} utterance(s), {sum(seconds):.1f} s of speech", valence, arousal,
            )
        )  # fmt: skip
    worded = [u for r in results for u in r.utterances if u.text_emotion is not None and u.text]
    if worded:
        words = [max(len((u.text or "").split()), 1) for u in worded]
        mean, valence, arousal = _average([u.text_emotion.emotion for u in worded], words)  # type: ignore[union-attr]
        timed = [u for u in worded if u.end > u.start]
        span = (min(u.start for u in timed), max(u.end for u in timed)) if timed else None
        out.append(
            ModalityEvidence(
                "text", mean, float(sum(words)), len(worded), span, f"{sum(words)} word(s) in {len(worded)} utterance(s)",
                valence, arousal,
            )
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class FusedEmotion:
    """The fused distribution over ``CANONICAL_EMOTIONS`` with valence/arousal, each modality's weight in it,
    and ``uncertain`` when the top probability is under the fusion's abstention threshold."""

    probabilities: dict[str, float]
    valence: float
    arousal: float
    weights: dict[str, float]
    uncertain: bool
    method: str

    @property
    def label(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    @property
    def state(self) -> str:
        """The label, or ``"uncertain"`` when the fusion abstains."""
        return "uncertain" if self.uncertain else self.label

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "state": self.state,
            "confidence": round(self.confidence, 4),
            "probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
            "valence": round(self.valence, 4),
            "arousal": round(self.arousal, 4),
            "weights": {k: round(v, 4) for k, v in self.weights.items()},
            "uncertain": self.uncertain,
            "method": self.method,
        }


@dataclass
class LateFusionConfig:
    """Fitted parameters of ``LateFusion`` (see the module docstring); the defaults are the untrained prior."""

    alpha: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 1.0))
    k_voice: float = 1.0
    k_text: float = 4.0
    abstain_below: float = 0.35
    fitted_on: str = "untrained prior"
    metrics: dict[str, float] = field(default_factory=dict)


class LateFusion:
    """Reliability-weighted log-linear pooling of per-modality distributions (module docstring)."""

    name = "late-fusion"

    def __init__(self, config: LateFusionConfig | None = None) -> None:
        self.config = config or LateFusionConfig()

    def reliability(self, evidence: ModalityEvidence) -> float:
        """``r_m`` in [0, 1] for one observation."""
        c = self.config
        if evidence.modality == "face":
            return float(np.clip(evidence.signal, 0.0, 1.0))
        k = c.k_voice if evidence.modality == "voice" else c.k_text
        s = max(evidence.signal, 0.0)
        return float(s / (s + k))

    def weight(self, evidence: ModalityEvidence) -> float:
        return self.config.alpha[evidence.modality] * self.reliability(evidence)

    def __call__(self, evidence: Sequence[ModalityEvidence], results: Sequence[AnalysisResult] = ()) -> FusedEmotion:
        """Pool ``evidence`` (``results`` is not needed: the evidence carries everything late fusion reads)."""
        if not evidence:
            raise ValueError("late fusion needs at least one modality's evidence")
        logits = np.zeros(len(CANONICAL_EMOTIONS))
        weights: dict[str, float] = {}
        for ev in evidence:
            w = self.weight(ev)
            weights[ev.modality] = weights.get(ev.modality, 0.0) + w
            logits += w * np.log(ev.probabilities + _EPS)
        if sum(weights.values()) <= 0:  # nothing reliable: fall back to the plain average
            logits = np.log(np.mean([ev.probabilities for ev in evidence], axis=0) + _EPS)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        probs = dict(zip(CANONICAL_EMOTIONS, p.tolist(), strict=True))
        valence, arousal = valence_arousal(probs)
        total = sum(weights.values()) or 1.0
        return FusedEmotion(
            probs, valence, arousal, {k: v / total for k, v in weights.items()},
            bool(p.max() < self.config.abstain_below), self.name,
        )  # fmt: skip

    def fit(self, samples: Sequence[Sequence[ModalityEvidence]], labels: Sequence[int], iterations: int = 200) -> None:
        """Fit ``α_m``, ``k_voice`` and ``k_text`` by minimising the NLL of ``labels`` (indices into
        ``CANONICAL_EMOTIONS``) on ``samples`` (validation data, never the test set)."""
        import torch

        log_alpha = torch.zeros(len(MODALITIES), requires_grad=True)
        log_k = torch.tensor(
            [np.log(self.config.k_voice), np.log(self.config.k_text)], dtype=torch.float32, requires_grad=True
        )
        rows = [(i, MODALITIES.index(ev.modality), ev) for i, sample in enumerate(samples) for ev in sample]
        sample_idx = torch.tensor([i for i, _, _ in rows])
        modality_idx = torch.tensor([m for _, m, _ in rows])
        logp = torch.tensor(np.log(np.stack([ev.probabilities for _, _, ev in rows]) + _EPS), dtype=torch.float32)
        signal = torch.tensor([ev.signal for _, _, ev in rows], dtype=torch.float32)
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        optimiser = torch.optim.LBFGS([log_alpha, log_k], lr=0.5, max_iter=iterations)

        def closure() -> torch.Tensor:
            optimiser.zero_grad()
            k = log_k.exp()
            r = torch.where(
                modality_idx == 0, signal.clamp(0, 1), signal / (signal + k[(modality_idx - 1).clamp(min=0)])
            )
            w = log_alpha.exp()[modality_idx] * r
            fused = torch.zeros(len(samples), len(CANONICAL_EMOTIONS)).index_add(0, sample_idx, w[:, None] * logp)
            loss = torch.nn.functional.cross_entropy(fused, y)
            loss.backward()
            return loss

        optimiser.step(closure)
        alpha, k = log_alpha.exp().tolist(), log_k.exp().tolist()
        self.config.alpha = dict(zip(MODALITIES, alpha, strict=True))
        self.config.k_voice, self.config.k_text = k
        logger.info("late fusion fitted: alpha %s, k %s", alpha, k)

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "late_fusion.json"
        path.write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> LateFusion:
        path = Path(directory)
        path = path / "late_fusion.json" if path.is_dir() else path
        raw = json.loads(path.read_text())
        known = set(LateFusionConfig.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown late-fusion settings {sorted(unknown)}")
        return cls(LateFusionConfig(**raw))


#: Where the fitted late-fusion parameters ship (``scripts/train_fusion_adapter.py`` writes them).
LATE_FUSION_WEIGHTS: Final = "late-fusion"


def load_late_fusion(path: str | Path | None = None) -> LateFusion:
    """The fitted late fusion from ``path`` or the shipped weights (manifest entry ``late-fusion``)."""
    if path is None:
        from affectlens.weights import resolve

        path = resolve(LATE_FUSION_WEIGHTS)
    return LateFusion.from_pretrained(path)
