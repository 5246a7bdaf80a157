"""Canonical emotion vocabulary and the one table that maps dataset label names onto it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

#: The canonical basic emotions, in the order every distribution in AffectLens uses.
CANONICAL_EMOTIONS: Final[tuple[str, ...]] = (
    "neutral",
    "happiness",
    "sadness",
    "surprise",
    "fear",
    "disgust",
    "anger",
)
#: Extra canonical class that only some models support.
OPTIONAL_EMOTIONS: Final[tuple[str, ...]] = ("contempt",)

#: Dataset label name -> canonical name. Names are matched case-insensitively.
#: Labels that map to ``None`` have no canonical class: evaluation reports them under ``excluded``.
#: - RAVDESS ``calm`` and Emo-DB ``boredom`` have no canonical counterpart, so they are excluded.
LABEL_MAP: Final[dict[str, str | None]] = {
    # canonical names map to themselves
    **{name: name for name in (*CANONICAL_EMOTIONS, *OPTIONAL_EMOTIONS)},
    # FER2013, RAVDESS, CK+, AffectNet, GoEmotions-Ekman spellings
    "happy": "happiness",
    "joy": "happiness",
    "angry": "anger",
    "sad": "sadness",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
    "contemptuous": "contempt",
    # no canonical class
    "calm": None,
    "boredom": None,
}


def canonical_label(name: str) -> str | None:
    """Return the canonical emotion for a dataset label, or ``None`` when it has no canonical class.

    Raises:
        KeyError: the label is unknown to the table (add it to ``LABEL_MAP``).
    """
    key = name.strip().lower()
    if key not in LABEL_MAP:
        known = ", ".join(sorted(LABEL_MAP))
        raise KeyError(f"unknown emotion label {name!r}; known labels: {known}")
    return LABEL_MAP[key]


#: Where each canonical emotion sits on the valence-arousal circumplex, both in [-1, 1]. A documented
#: mapping, not a learned one: positions follow Russell's circumplex (1980) as commonly placed in affect
#: datasets (e.g. the AffectNet category means): pleasant/unpleasant on valence, calm/activated on arousal.
CIRCUMPLEX: Final[dict[str, tuple[float, float]]] = {
    "neutral": (0.0, 0.0),
    "happiness": (0.8, 0.4),
    "sadness": (-0.7, -0.4),
    "surprise": (0.2, 0.8),
    "fear": (-0.6, 0.7),
    "disgust": (-0.7, 0.3),
    "anger": (-0.6, 0.7),
    "contempt": (-0.5, 0.3),
}


def valence_arousal(probabilities: dict[str, float]) -> tuple[float, float]:
    """Probability-weighted circumplex position of a distribution over canonical emotions."""
    total = sum(probabilities.values()) or 1.0
    valence = sum(p * CIRCUMPLEX[e][0] for e, p in probabilities.items()) / total
    arousal = sum(p * CIRCUMPLEX[e][1] for e, p in probabilities.items()) / total
    return valence, arousal


#: FACS names of the 17 action units of the BRIEF (``affectlens.types.AU_COLUMNS``), for readable output.
FACS_NAMES: Final[dict[str, str]] = {
    "AU01": "inner brow raiser",
    "AU02": "outer brow raiser",
    "AU04": "brow lowerer",
    "AU05": "upper lid raiser",
    "AU06": "cheek raiser",
    "AU07": "lid tightener",
    "AU09": "nose wrinkler",
    "AU10": "upper lip raiser",
    "AU12": "lip corner puller",
    "AU14": "dimpler",
    "AU15": "lip corner depressor",
    "AU17": "chin raiser",
    "AU20": "lip stretcher",
    "AU23": "lip tightener",
    "AU25": "lips part",
    "AU26": "jaw drop",
    "AU45": "blink",
}

#: The eight ESConv support strategies (Liu et al., 2021), spelled as in the dataset; a turn may use several.
ESCONV_STRATEGIES: Final[tuple[str, ...]] = (
    "Question",
    "Restatement or Paraphrasing",
    "Reflection of feelings",
    "Self-disclosure",
    "Affirmation and Reassurance",
    "Providing Suggestions",
    "Information",
    "Others",
)


def canonical_emotion(name: object, what: str = "emotion") -> str:
    """The canonical emotion a user-given name means (``happy`` -> ``happiness``), or an ``AffectLensError`` that
    names it and lists the canonical emotions (for names with no canonical class, too: ``calm``, ``contempt``)."""
    from affectlens.errors import AffectLensError

    try:
        label = canonical_label(str(name))
    except KeyError:
        label = None
    if label not in CANONICAL_EMOTIONS:
        raise AffectLensError(f"unknown {what} {name!r}; allowed: {', '.join(CANONICAL_EMOTIONS)}")
    return label


def canonical_mixture(emotion: str | Mapping[str, float], what: str = "emotion") -> dict[str, float]:
    """A canonical emotion mixture from a name or a ``{name: weight}`` mapping: user names resolve through
    ``canonical_emotion`` (weights of names that mean the same emotion add up), weights are normalised to sum to
    1, strongest first. ``AffectLensError`` for an unknown name, an empty mapping, a weight that is not a finite
    number >= 0, or weights that are all zero."""
    from affectlens.errors import AffectLensError

    if isinstance(emotion, str):
        return {canonical_emotion(emotion, what): 1.0}
    if not isinstance(emotion, Mapping) or not emotion:
        raise AffectLensError(
            f"no {what} given: name one of {', '.join(CANONICAL_EMOTIONS)} or a non-empty {{name: weight}} "
            f"mixture, got {emotion!r}"
        )
    mixture: dict[str, float] = {}
    for name, weight in emotion.items():
        try:
            value = float(weight)
        except (TypeError, ValueError):
            raise AffectLensError(f"{what} weight for {name!r} must be a number, got {weight!r}") from None
        if not math.isfinite(value) or value < 0:
            raise AffectLensError(
                f"{what} weight for {name!r} must be a finite number >= 0 (non-negative), got {weight!r}"
            )
        key = canonical_emotion(name, what)
        mixture[key] = mixture.get(key, 0.0) + value
    total = sum(mixture.values())
    if total <= 0:
        raise AffectLensError(f"the {what} weights are all zero (they sum to zero): {dict(emotion)!r}")
    return {k: v / total for k, v in sorted(mixture.items(), key=lambda kv: -kv[1]) if v > 0}
