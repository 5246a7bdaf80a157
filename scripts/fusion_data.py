"""Assembled multimodal samples for the fusion adapter, from real faces, voices and texts in ``../shared/data``.

Every source item first goes through the encoder AffectLens uses at inference, and is kept as the typed result
the modality tokens are read from (``fusion.adapter.face_token`` / ``voice_token`` / ``text_token``):

- faces: FER2013 through the default expression model. Adapter training and validation use the 10% of FER2013
  train that ``scripts/train_face_expression.py`` holds out (the expression model never trained on it); the
  held-back evaluation uses FER2013 test.
- voices: RAVDESS speech (``calm`` excluded: no canonical class). The speech head's input features are the VAD-span
  features cached by ``scripts/train_speech_emotion.py``. Actors 1-22 trained the shipped head, so their
  probabilities here are out-of-fold (4 actor folds, the shipped hyper-parameters); actors 1-20 feed adapter
  training, 21-22 validation, and the held-back actors 23-24 (through the shipped head) the evaluation.
- texts: GoEmotions-Ekman single-label comments through the default text model: dev (never trained on) split
  80/20 for training/validation, test for the evaluation.
- dialogues: ESConv train/valid seeker turns and the supporter's reply, for the empathy stage.

A sample picks an emotion, then items of that emotion from a random subset of the modalities, so the labels
agree; ``conflict`` samples have all three modalities and swap one for an item of another emotion (the target
stays the majority's). Items are never shared between the training, validation and evaluation pools.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from affectlens import weights  # noqa: E402
from affectlens.labels import CANONICAL_EMOTIONS, canonical_label, valence_arousal  # noqa: E402
from affectlens.types import EmotionPrediction, TextEmotion, Utterance  # noqa: E402
from fusion.adapter import FusionAdapterConfig, ModalityTokens, face_token, text_token, voice_token  # noqa: E402

logger = logging.getLogger("fusion_data")
DATA = REPO.parent / "shared" / "data"
FEATURE_VERSION = "fusion-features v1"
SPLITS = ("train", "val", "test")
#: Probability of each modality subset in a sample (single 0.1 each, pairs 0.15 each, all three 0.25).
PATTERNS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("face",), 0.1), (("voice",), 0.1), (("text",), 0.1),
    (("face", "voice"), 0.15), (("face", "text"), 0.15), (("voice", "text"), 0.15),
    (("face", "voice", "text"), 0.25),
)  # fmt: skip


@dataclass
class Pool:
    """Encoded items of one modality and split: ``y`` canonical label indices, ``tokens`` one row each,
    ``probs`` the encoder's canonical distribution (for late fusion and the single-modality baselines) and
    ``signal`` the late-fusion reliability signal; ``text`` holds the words for text items."""

    y: np.ndarray
    tokens: np.ndarray
    probs: np.ndarray
    signal: np.ndarray
    text: list[str] = field(default_factory=list)

    def by_class(self) -> dict[int, np.ndarray]:
        return {c: np.flatnonzero(self.y == c) for c in range(len(CANONICAL_EMOTIONS))}


def _cache_path(cache: Path, parts: list[str]) -> Path:
    key = hashlib.sha256((FEATURE_VERSION + "|".join(parts)).encode()).hexdigest()[:16]
    return cache / f"fusion-{key}.npz"


def face_pools(config: FusionAdapterConfig) -> dict[str, Pool]:
    from train_face_expression import load_fer2013

    from affectlens.registry import create_face_expression

    model = create_face_expression()
    data = load_fer2013(DATA / "fer2013.npz")
    out: dict[str, Pool] = {}
    rng = np.random.default_rng(1)
    val_images, val_y = data["val"]
    order = rng.permutation(len(val_y))
    cut = int(0.8 * len(order))
    for split, (images, y) in {
        "train": (val_images[order[:cut]], val_y[order[:cut]]),
        "val": (val_images[order[cut:]], val_y[order[cut:]]),
        "test": data["test"],
    }.items():
        crops = np.stack([model.preprocess(img) for img in images])
        probs = np.concatenate([model.predict_batch(crops[i : i + 512]) for i in range(0, len(crops), 512)])
        preds = []
        for p in probs:
            v, a = valence_arousal(dict(zip(CANONICAL_EMOTIONS, p.tolist(), strict=True)))
            preds.append(EmotionPrediction.from_vector(p, model.name, v, a))
        tokens = np.stack([face_token([p]) for p in preds])
        out[split] = Pool(y, tokens, probs, np.ones(len(y), np.float32))
        logger.info("faces %s: %d, encoder accuracy %.3f", split, len(y), float((probs.argmax(1) == y).mean()))
    return out


def voice_pools(config: FusionAdapterConfig, feature_cache: Path) -> dict[str, Pool]:
    from train_speech_emotion import Features, HyperParams, actor_fold, extract_features, fit_on

    from perception.voice.emotion import RAVDESS_LABELS, SpeechEmotionHead, WhisperProbe

    labels = pd.read_csv(DATA / "ravdess_speech" / "labels.csv")
    features: Features = extract_features(DATA / "ravdess_speech", labels, feature_cache)
    y8 = labels["label"].map(RAVDESS_LABELS.index).to_numpy()
    actors = labels["actor"].to_numpy()
    report = json.loads((REPO / "weights" / "speech-emotion-whisper-probe" / "training_report.json").read_text())
    hp = HyperParams(**report["final"]["chosen"])
    fold = actor_fold(actors)
    seen = actors <= 22
    x_span = features.design("span", hp)
    probs8 = np.zeros((len(labels), len(RAVDESS_LABELS)), np.float32)
    import torch

    for k in range(4):  # out-of-fold probabilities for the actors the shipped head trained on
        head = fit_on(features, y8, seen & (fold != k), hp)
        rows = seen & (fold == k)
        with torch.inference_mode():
            probs8[rows] = torch.softmax(head(torch.from_numpy(x_span[rows])), 1).numpy()
    shipped = SpeechEmotionHead.from_pretrained(REPO / "weights" / "speech-emotion-whisper-probe")
    with torch.inference_mode():
        probs8[~seen] = torch.softmax(shipped(torch.from_numpy(x_span[~seen])), 1).numpy()
    probe = WhisperProbe(shipped)
    preds = probe.to_predictions(probs8)
    canonical = [canonical_label(lbl) for lbl in labels["label"]]
    keep = np.array([c is not None for c in canonical])
    y = np.array([CANONICAL_EMOTIONS.index(c) if c else -1 for c in canonical])
    if "from_cache" in features.meta:  # the VAD span of each clip, in samples
        spans = np.load(features.meta["from_cache"])["spans"]
        seconds = np.clip((spans[:, 1] - spans[:, 0]) / 16000, 0.1, None)
    else:
        seconds = np.full(len(labels), features.meta["mean_span_seconds"])
    out: dict[str, Pool] = {}
    for split, rows in {
        "train": keep & (actors <= 20),
        "val": keep & (actors > 20) & (actors <= 22),
        "test": keep & (actors > 22),
    }.items():
        idx = np.flatnonzero(rows)
        tokens = np.stack(
            [
                voice_token(
                    Utterance(0, 0.0, float(seconds[i]), speech_emotion=preds[i], voice_features=x_span[i]),
                    config.voice_raw_dim,
                )
                for i in idx
            ]
        )
        probs = np.stack([[preds[i].probabilities[e] for e in CANONICAL_EMOTIONS] for i in idx])
        out[split] = Pool(y[idx], tokens, probs, seconds[idx].astype(np.float32))
        logger.info("voices %s: %d, encoder accuracy %.3f", split, len(idx), float((probs.argmax(1) == y[idx]).mean()))
    return out


def read_goemotions(split: str) -> tuple[list[str], np.ndarray]:
    names = (DATA / "goemotions" / "ekman" / "labels.txt").read_text().split()
    frame = pd.read_csv(DATA / "goemotions" / "ekman" / f"{split}.tsv", sep="\t", header=None, quoting=3)
    texts, ys = [], []
    for text, ids in zip(frame[0], frame[1].astype(str), strict=True):
        parts = ids.split(",")
        if len(parts) == 1:
            texts.append(str(text))
            ys.append(CANONICAL_EMOTIONS.index(canonical_label(names[int(parts[0])]) or ""))
    return texts, np.array(ys)


def _encode_texts(model: Any, texts: list[str], config: FusionAdapterConfig) -> tuple[np.ndarray, np.ndarray]:
    emotions: list[TextEmotion] = []
    for i in range(0, len(texts), 256):
        emotions += model.predict(texts[i : i + 256], explain=False)
    tokens = np.stack([text_token(e, config.text_raw_dim) for e in emotions])
    probs = np.stack([[e.emotion.probabilities[c] for c in CANONICAL_EMOTIONS] for e in emotions])
    return tokens, probs


def text_model() -> Any:
    """The default text emotion model (the encoder of the text tokens)."""
    from affectlens.registry import create_text_emotion

    return create_text_emotion()


def text_pools(config: FusionAdapterConfig, model: Any) -> dict[str, Pool]:
    dev_texts, dev_y = read_goemotions("dev")
    test_texts, test_y = read_goemotions("test")
    rng = np.random.default_rng(2)
    order = rng.permutation(len(dev_y))
    cut = int(0.8 * len(order))
    out: dict[str, Pool] = {}
    for split, (texts, y) in {
        "train": ([dev_texts[i] for i in order[:cut]], dev_y[order[:cut]]),
        "val": ([dev_texts[i] for i in order[cut:]], dev_y[order[cut:]]),
        "test": (test_texts, test_y),
    }.items():
        tokens, probs = _encode_texts(model, texts, config)
        words = np.array([len(t.split()) for t in texts], np.float32)
        out[split] = Pool(y, tokens, probs, words, texts)
        logger.info("texts %s: %d, encoder accuracy %.3f", split, len(y), float((probs.argmax(1) == y).mean()))
    return out


@dataclass
class DialogueTurn:
    """One ESConv supporter turn: the seeker's preceding words, the reply, its strategies, the situation."""

    seeker: str
    reply: str
    strategies: list[str]
    emotion_type: str
    situation: str
    token: np.ndarray


def dialogue_turns(split: str, model: Any, config: FusionAdapterConfig, limit: int, seed: int) -> list[DialogueTurn]:
    """Supporter turns (after at least one seeker turn) sampled from ESConv ``split`` (``train`` | ``valid``)."""
    rows = [json.loads(line) for line in (DATA / "esconv" / f"{split}.jsonl").read_text().splitlines() if line]
    candidates: list[tuple[str, str, list[str], str, str]] = []
    for dialogue in rows:
        seeker: list[str] = []
        turns = dialogue["dialog"]
        for i, turn in enumerate(turns):
            if turn["speaker"] == "usr":
                seeker.append(turn["text"].strip())
                continue
            if not seeker or (i > 0 and turns[i - 1]["speaker"] == "sys"):
                continue
            said = " ".join(seeker[-2:])
            if 3 <= len(said.split()) <= 60 and 4 <= len(turn["text"].split()) <= 40:
                candidates.append(
                    (
                        said,
                        turn["text"].strip(),
                        [turn.get("strategy", "Others")],
                        dialogue["emotion_type"],
                        dialogue["situation"],
                    )
                )
    rng = np.random.default_rng(seed)
    chosen = [candidates[i] for i in rng.permutation(len(candidates))[:limit]]
    tokens, _ = _encode_texts(model, [c[0] for c in chosen], config)
    return [DialogueTurn(s, r, st, e, sit, t) for (s, r, st, e, sit), t in zip(chosen, tokens, strict=True)]


@dataclass
class Sample:
    """One assembled moment: its modality tokens, target label, each present modality's source label, whether it
    is a conflict sample, and the per-modality (probabilities, reliability signal) for late fusion."""

    tokens: ModalityTokens
    label: int
    sources: dict[str, int]
    conflict: bool
    evidence: dict[str, tuple[np.ndarray, float]]
    words: str | None = None


def assemble(pools: dict[str, Pool], n: int, seed: int, conflict_rate: float, max_repeat: int = 1) -> list[Sample]:
    """``n`` samples from one split's pools (see the module docstring); ``max_repeat`` > 1 gives some samples
    several face windows or voice utterances of the same emotion, as a video would."""
    rng = np.random.default_rng(seed)
    by_class = {m: p.by_class() for m, p in pools.items()}
    patterns, probs = zip(*PATTERNS, strict=True)
    out: list[Sample] = []
    for _ in range(n):
        c = int(rng.integers(len(CANONICAL_EMOTIONS)))
        pattern = patterns[rng.choice(len(patterns), p=np.asarray(probs))]
        labels = dict.fromkeys(pattern, c)
        conflict = len(pattern) == 3 and rng.random() < conflict_rate
        if conflict:
            odd = pattern[int(rng.integers(3))]
            labels[odd] = int(rng.choice([k for k in range(len(CANONICAL_EMOTIONS)) if k != c]))
        rows: dict[str, np.ndarray] = {}
        evidence: dict[str, tuple[np.ndarray, float]] = {}
        words = None
        for m, label in labels.items():
            members = by_class[m][label]
            count = int(rng.integers(1, max_repeat + 1)) if m in ("face", "voice") else 1
            picks = rng.choice(members, size=count, replace=len(members) < count)
            pool = pools[m]
            rows[m] = pool.tokens[picks]
            evidence[m] = (
                pool.probs[picks].mean(0),
                float(pool.signal[picks].sum() if m == "voice" else pool.signal[picks].mean()),
            )
            if m == "text":
                words = pool.text[int(picks[0])]
        out.append(Sample(ModalityTokens(rows), c, labels, conflict, evidence, words))
    return out


def default_cache() -> Path:
    """Where the encoded pools are cached."""
    return Path.home() / ".cache" / "affectlens" / "train" / "fusion"


def default_feature_cache() -> Path:
    """Where ``scripts/train_speech_emotion.py`` caches the RAVDESS speech features (its ``--cache`` default)."""
    return Path("/tmp/affectlens-ser")


def pools_path(cache: Path, config: FusionAdapterConfig) -> Path:
    """The cache file of the encoded pools: keyed by the encoders' weight hashes and the token layout."""
    shas = [weights.locate(n).sha256 for n in ("affectlens-expression",)]
    shas += sorted(weights.locate_group("speech-emotion-whisper-probe").files.values())
    shas += sorted(weights.locate_group("text-emotion-minilm-goemotions").files.values())
    return _cache_path(cache, [*shas, str(config.voice_raw_dim), str(config.text_raw_dim)])


def build_pools(cache: Path, feature_cache: Path, config: FusionAdapterConfig) -> dict[str, dict[str, Pool]]:
    """``{split: {modality: Pool}}``, cached under ``cache`` by the encoders' weight hashes."""
    from affectlens.registry import create_text_emotion

    path = pools_path(cache, config)
    if path.is_file():
        logger.info("encoded pools from %s", path)
        raw = np.load(path, allow_pickle=False)
        texts = json.loads(str(raw["texts"]))
        return {
            s: {
                m: Pool(
                    raw[f"{s}_{m}_y"],
                    raw[f"{s}_{m}_tokens"],
                    raw[f"{s}_{m}_probs"],
                    raw[f"{s}_{m}_signal"],
                    texts.get(f"{s}_{m}", []),
                )
                for m in ("face", "voice", "text")
            }
            for s in SPLITS
        }
    text_model = create_text_emotion()
    per_modality = {
        "face": face_pools(config),
        "voice": voice_pools(config, feature_cache),
        "text": text_pools(config, text_model),
    }
    pools = {s: {m: per_modality[m][s] for m in per_modality} for s in SPLITS}
    cache.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}
    for s, by_m in pools.items():
        for m, p in by_m.items():
            arrays.update(
                {f"{s}_{m}_y": p.y, f"{s}_{m}_tokens": p.tokens, f"{s}_{m}_probs": p.probs, f"{s}_{m}_signal": p.signal}
            )
    arrays["texts"] = np.array(json.dumps({f"{s}_text": pools[s]["text"].text for s in SPLITS}))
    np.savez(path, **arrays)
    logger.info("encoded pools cached in %s", path)
    return pools
