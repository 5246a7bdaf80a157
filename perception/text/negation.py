"""Negated emotion words: "I am not sad anymore" is not sadness.

The text model learned from GoEmotions, where a negator before an emotion word is rare, so it reads the word and
misses the "not" ("I don't feel scared at all now." -> fear 0.80). ``negated_classes`` finds the canonical emotions
whose cue words (``CUES``) occur in a text only negated: a negator (``not``, ``never``, ``no longer``, ``n't``,
``hardly``) at most two words before the cue, with only feel-verbs and adverbs between ("not feeling sad", "don't
really feel worried", "wasn't even upset"); "never been this sad" is not one. ``adjust`` scales the model's top
class by ``NEGATED_SCALE`` when it is such a class (and the GoEmotions labels that map to it alike) and gives the
probability it removes to neutral (since 2026-11-29 afternoon; spread over every class before: "I am not sad
anymore." then stayed sadness). The rule and its checks: ``docs/text-negation.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np

#: How much of a negated top class's probability is kept (fixed before any measurement, not tuned).
NEGATED_SCALE: Final = 0.25
#: Cue words per canonical emotion (whole words, lower case).
CUES: Final[dict[str, tuple[str, ...]]] = {
    "sadness": ("sad", "upset", "depressed", "unhappy", "miserable", "hopeless", "heartbroken", "lonely", "down"),
    "fear": ("scared", "afraid", "worried", "anxious", "nervous", "frightened", "terrified", "fearful", "panicked"),
    "anger": ("angry", "mad", "furious", "annoyed", "pissed", "irritated", "livid"),
    "happiness": ("happy", "glad", "excited", "thrilled", "pleased", "delighted", "joyful"),
    "surprise": ("surprised", "shocked", "amazed", "astonished", "stunned"),
    "disgust": ("disgusted", "repulsed", "grossed"),
}
_NEGATOR: Final = r"(?:not|never|no longer|hardly|\w+n't|cannot)"
#: Words that may stand between the negator and the cue.
_BETWEEN: Final = (
    r"(?:feel|feeling|felt|feels|be|being|get|getting|really|very|so|too|that|even|all|particularly|overly|super|"
    r"at|any|more|as|truly|actually)"
)
_PATTERNS: Final[dict[str, tuple[re.Pattern[str], re.Pattern[str]]]] = {
    name: (
        re.compile(rf"\b{_NEGATOR}\s+(?:{_BETWEEN}\s+){{0,2}}(?:{'|'.join(words)})\b"),
        re.compile(rf"\b(?:{'|'.join(words)})\b"),
    )
    for name, words in CUES.items()
}


def negated_classes(text: str) -> set[str]:
    """The canonical emotions whose cue words occur in ``text`` and are all negated."""
    norm = text.lower().replace("’", "'")
    out = set()
    for name, (negated, cue) in _PATTERNS.items():
        cues = len(cue.findall(norm))
        if cues and len(negated.findall(norm)) >= cues:
            out.add(name)
    return out


def adjust(
    texts: Sequence[str],
    canonical: np.ndarray,
    fine: np.ndarray,
    labels: Sequence[str],
    fine_labels: Sequence[str],
    fine_to_canonical: Mapping[str, str],
) -> tuple[np.ndarray, np.ndarray]:
    """``canonical`` (N x classes, rows summing to 1) and ``fine`` (N x fine labels, independent probabilities)
    with, for each text whose top class is negated in it, that class scaled by ``NEGATED_SCALE``, the probability
    it loses given to ``neutral`` (the fine ``neutral`` label raised by as much, at most to 1), and its fine labels
    scaled alike. Returns new arrays; texts without a negated top class are unchanged. Without a neutral class the
    row is renormalised instead."""
    canonical, fine = canonical.copy(), fine.copy()
    for i, text in enumerate(texts):
        top = labels[int(np.argmax(canonical[i]))]
        if top not in negated_classes(text):
            continue
        removed = canonical[i, labels.index(top)] * (1.0 - NEGATED_SCALE)
        canonical[i, labels.index(top)] -= removed
        if "neutral" in labels:
            canonical[i, labels.index("neutral")] += removed
        else:
            canonical[i] /= canonical[i].sum()
        for j, name in enumerate(fine_labels):
            if fine_to_canonical.get(name) == top:
                fine[i, j] *= NEGATED_SCALE
            elif name == "neutral":
                fine[i, j] = min(1.0, fine[i, j] + removed)
    return canonical, fine
