"""Canonical emotion vocabulary and the one table that maps dataset label names onto it."""

from __future__ import annotations

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
