"""Emotion-directed prompt rewriting: an emotion (or a distribution) becomes visual concepts, not an emotion word.

Text-to-image models read "a sad scene" as semantics (a crying face, a funeral) more than as a look. Following the
Emotion-Director MC-Agent idea, ``rewrite_prompt`` turns the emotion into the *visual concepts* that carry it —
``mood``, ``palette``, ``light``, ``composition``, ``texture`` (surface or weather) and ``symbols`` (``CONCEPTS``) —
keeps the user's subject literal and first, and builds the negative prompt from the opposite emotion's concepts
(``OPPOSITES``) plus generic artefact negatives (``GENERIC_NEGATIVES``). It is rule-based and deterministic: each
emotion has several options per concept and ``seed`` picks among them with ``random.Random(seed)``, so the same seed
gives the same prompt and other seeds give variety.

- **Mixed emotions**: a distribution ``{emotion: weight}`` (aliases such as ``happy`` or ``joy`` are merged through
  ``affectlens.labels.canonical_label``) keeps its top emotion, and the second one when it holds at least
  ``MIX_MIN_SHARE`` of the weight; the second adds its mood, palette, texture and a symbol after the first's.
- **Intensity** in [0, 1] (or, when it is not given, ``min(1, hypot(valence, arousal))``, the distance from the
  circumplex centre): below ``LOW_INTENSITY`` the mood reads "subtle" and the symbols are left out; from
  ``HIGH_INTENSITY`` the mood reads "intense" and the first emotion gets two symbols.
- **Cause** (the affective tree's cause sentence) adds a short literal motif after sanitising (``sanitise_text``:
  control characters, quotes and prompt-syntax characters removed, at most ``MAX_CAUSE_CHARS`` characters and
  ``MAX_MOTIF_WORDS`` words). A cause, or a subject, that speaks of suicide, self-harm or harm to or from someone
  (``is_unsafe_for_image``: ``fusion.safety.RiskDetector`` plus a third-person keyword check) is never rendered: the
  cause is dropped, the subject falls back to ``DEFAULT_SUBJECT``, and ``notes`` says so.
- **Length**: CLIP reads 77 tokens, so a prompt keeps at most ``MAX_PROMPT_WORDS`` words and
  ``MAX_PROMPT_TOKENS`` estimated tokens; parts are added in priority order (subject, mood, palette, light,
  composition, motif, texture, symbols, style) and the ones that do not fit are left out and noted.

Opposites (``OPPOSITES``): the emotion nearest the reflection of each emotion's place on the valence-arousal
circumplex (``affectlens.labels.CIRCUMPLEX``), with two documented hand choices::

    neutral   -> anger      (hand choice: neutral has no reflection; drama is what a neutral image avoids)
    happiness -> sadness
    sadness   -> happiness
    surprise  -> sadness    (still, flat and dim against a sudden burst)
    fear      -> happiness  (hand choice: the reflection is neutral, but warmth and safety push harder against fear)
    disgust   -> happiness  (fresh, clean and blooming against decay)
    anger     -> neutral    (calm, balanced and even against harsh and jagged)

A mixed prompt's negative holds the opposites of both emotions, minus either emotion itself (a bittersweet
happiness+sadness mix gets only the generic negatives).
"""

from __future__ import annotations

import logging
import math
import random
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from affectlens.errors import AffectLensError
from affectlens.labels import CANONICAL_EMOTIONS, LABEL_MAP, canonical_label
from fusion.safety import RiskDetector, normalise

logger = logging.getLogger(__name__)

__all__ = [
    "CONCEPTS",
    "DEFAULT_STYLE",
    "DEFAULT_SUBJECT",
    "GENERIC_NEGATIVES",
    "MAX_CAUSE_CHARS",
    "MAX_PROMPT_TOKENS",
    "MAX_PROMPT_WORDS",
    "MIX_MIN_SHARE",
    "NEGATIVE_SLOTS",
    "OPPOSITES",
    "SLOTS",
    "EmotionPrompt",
    "estimate_tokens",
    "is_unsafe_for_image",
    "resolve_emotions",
    "rewrite_prompt",
    "sanitise_text",
]

#: The concept slots, in the order they appear in the prompt (most important first).
SLOTS: Final[tuple[str, ...]] = ("mood", "palette", "light", "composition", "texture", "symbols")
DEFAULT_SUBJECT: Final = "a quiet scene"
#: Appended last (and dropped first when the prompt is too long); pass ``style=None`` to leave it out.
DEFAULT_STYLE: Final = "detailed photograph"
#: CLIP reads 77 tokens (75 after its start and end tokens) and truncates the rest, so a prompt keeps at most this
#: many words and this many estimated tokens (``estimate_tokens``: words and punctuation marks; CLIP's BPE splits
#: rare words further, hence the margin).
MAX_PROMPT_WORDS: Final = 60
MAX_PROMPT_TOKENS: Final = 70
MAX_CAUSE_CHARS: Final = 120
MAX_SUBJECT_CHARS: Final = 120
MAX_MOTIF_WORDS: Final = 15
#: The second emotion of a distribution is blended in when it holds at least this share of the weight.
MIX_MIN_SHARE: Final = 0.2
LOW_INTENSITY: Final = 1 / 3
HIGH_INTENSITY: Final = 2 / 3

#: Per emotion, per slot: the options ``seed`` picks from. The first option of each slot is the emotion's
#: canonical look (the one used in other emotions' negative prompts).
CONCEPTS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "neutral": {
        "mood": ("calm composed mood", "plain everyday atmosphere", "quiet matter-of-fact mood"),
        "palette": ("balanced natural colours", "soft greys and beiges", "muted earth tones"),
        "light": ("even soft daylight", "diffuse window light", "flat midday light"),
        "composition": ("centred balanced composition", "straight-on symmetrical framing", "eye-level framing"),
        "texture": ("clear still air", "smooth matte surfaces", "clean plain textures"),
        "symbols": ("a plain wooden table", "a simple chair by a white wall", "an ordinary street corner"),
    },
    "happiness": {
        "mood": ("joyful uplifting mood", "cheerful carefree atmosphere", "warm hopeful mood"),
        "palette": ("warm saturated yellows and oranges", "bright golden and sky-blue colours", "vivid pastel colours"),
        "light": ("golden-hour sunlight", "bright warm sunlight with soft shadows", "sunbeams through leaves"),
        "composition": ("open airy composition", "upward rising lines", "wide open space with gentle curves"),
        "texture": ("clear blue sky", "light summer breeze", "sparkling sunlit water"),
        "symbols": ("blooming sunflowers", "colourful balloons", "blossoming trees", "butterflies"),
    },
    "sadness": {
        "mood": ("melancholic mood", "wistful lonely atmosphere", "quiet sorrowful mood"),
        "palette": ("desaturated blue-grey palette", "cold muted blues", "faded washed-out colours"),
        "light": ("overcast diffuse light", "dim grey dusk light", "low light with long shadows"),
        "composition": ("wide empty negative space", "a small lone figure far away", "low horizon, drooping lines"),
        "texture": ("rain on glass", "drizzle and mist", "wet pavement reflections"),
        "symbols": ("wilting flowers", "an empty chair", "fallen autumn leaves", "a single bare tree"),
    },
    "surprise": {
        "mood": ("astonished wide-eyed mood", "sudden startling atmosphere", "electric unexpected mood"),
        "palette": ("bright contrasting colour pops", "electric cyan and magenta accents", "vivid unexpected accents"),
        "light": ("a sudden burst of light", "a bright spotlight shaft", "flash-lit high-key light"),
        "composition": (
            "dynamic wide-angle perspective",
            "lines radiating from the centre",
            "tilted off-balance framing",
        ),
        "texture": ("sparkling flying particles", "bursting confetti in the air", "shimmering air"),
        "symbols": ("an opened gift box", "fireworks", "a door flung open", "bursting soap bubbles"),
    },
    "fear": {
        "mood": ("ominous tense mood", "eerie dread-filled atmosphere", "uneasy suspenseful mood"),
        "palette": ("dark desaturated greens and blacks", "cold deep shadows", "murky near-black tones"),
        "light": ("low-key light with deep shadows", "a single flickering light", "harsh underlighting"),
        "composition": ("tight claustrophobic framing", "tilted dutch angle", "a corridor receding into darkness"),
        "texture": ("thick fog", "cold creeping mist", "grimy scratched surfaces"),
        "symbols": ("looming silhouettes", "long distorted shadows", "a dark open doorway", "twisted bare branches"),
    },
    "disgust": {
        "mood": ("repulsive uneasy mood", "grimy unpleasant atmosphere", "sickening stale mood"),
        "palette": ("sickly yellow-green palette", "murky olive and brown tones", "stained greyish yellows"),
        "light": ("flat greenish fluorescent light", "dim jaundiced light", "harsh clinical light"),
        "composition": ("cluttered cramped composition", "uncomfortably close framing", "crowded off-kilter framing"),
        "texture": ("slimy wet surfaces", "mould and decay", "grime and rust"),
        "symbols": ("rotting fruit", "overflowing rubbish", "spoiled food", "buzzing flies"),
    },
    "anger": {
        "mood": ("furious intense mood", "hostile explosive atmosphere", "seething aggressive mood"),
        "palette": ("red and black high contrast", "burning crimson and charcoal", "scarlet with deep shadows"),
        "light": ("harsh side light", "hard rim light with stark shadows", "fiery orange glow"),
        "composition": ("jagged diagonal lines", "aggressive low-angle framing", "sharp angular shapes"),
        "texture": ("storm clouds and lightning", "smoke and embers", "cracked scorched ground"),
        "symbols": ("roaring fire", "shattered glass", "thorny branches", "crashing waves"),
    },
}

#: The emotion whose concepts make each emotion's negative prompt (module docstring: the table and why).
OPPOSITES: Final[dict[str, str]] = {
    "neutral": "anger",
    "happiness": "sadness",
    "sadness": "happiness",
    "surprise": "sadness",
    "fear": "happiness",
    "disgust": "happiness",
    "anger": "neutral",
}
#: The opposite emotion's canonical options used in a negative prompt, in this order.
NEGATIVE_SLOTS: Final[tuple[str, ...]] = ("mood", "palette", "light", "texture", "symbols")
GENERIC_NEGATIVES: Final[tuple[str, ...]] = (
    "blurry", "low quality", "lowres", "jpeg artifacts", "watermark", "text", "signature",
    "deformed", "disfigured", "bad anatomy", "extra limbs", "gore",
)  # fmt: skip

# ---- sanitising and the safety check --------------------------------------------------------------------------

_QUOTES: Final = frozenset("\"'`´‘’‚‛“”„‟«»‹›′″")
#: Punctuation kept in user text; everything else that is not a letter, digit or space becomes a space (so no
#: prompt-weighting syntax such as "(word:1.5)", "[a|b]" or "<lora:x>" gets through).
_KEEP_PUNCT: Final = frozenset(",.-!?;&")
_TRIM: Final = " ,.-!?;&"
#: Third-person and descriptive self-harm or suicide words that ``RiskDetector`` (which reads first-person chat)
#: lets through on purpose; an image must not show them whoever they are about.
_UNSAFE_WORDS: Final = re.compile(
    r"\b(?:suicid\w*|self[- ]?harm\w*|kill(?:s|ed|ing)? (?:him|her|my|them|your|our)sel(?:f|ves)|"
    r"(?:cut|cuts|cutting|hurt|hurts|hurting|harm|harms|harming|hang|hangs|hanging|hanged|starve|starving|burn|burning)"
    r" (?:him|her|my|them|your|our)sel(?:f|ves)|slit (?:his|her|my|their|your) wrists?|overdos\w*|take (?:his|her|my|"
    r"their) (?:own )?life|took (?:his|her|my|their) (?:own )?life|end(?:ed|ing|s)? (?:it all|(?:his|her|my|their) life)|"
    r"want(?:s|ed)? to die|unalive\w*|noose)\b"
)
_UNSAFE_CATEGORIES: Final = frozenset({"suicidal_ideation", "self_harm", "harm_to_others", "harm_from_others"})


def sanitise_text(text: str, max_chars: int = MAX_CAUSE_CHARS) -> str:
    """``text`` made safe to put inside a prompt: Unicode NFKC, control and format characters and quotes removed,
    characters other than letters, digits, spaces and ``, . - ! ? ; &`` turned into spaces, whitespace collapsed,
    ends trimmed and the result cut at a word boundary to at most ``max_chars`` characters."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFKC", text):
        if ch in _QUOTES:
            continue
        category = unicodedata.category(ch)
        out.append(ch if category[0] in "LN" or ch == " " or ch in _KEEP_PUNCT else " ")
    clean = " ".join("".join(out).split()).strip(_TRIM)
    if len(clean) > max_chars:
        cut = clean[: max_chars + 1]
        clean = (cut.rsplit(" ", 1)[0] if " " in cut else cut[:max_chars]).strip(_TRIM)
    return clean


def is_unsafe_for_image(text: str) -> bool:
    """Whether ``text`` speaks of suicide, self-harm or harm to or from someone, so it must not become image
    content: any risk cue ``fusion.safety.RiskDetector`` finds in those categories (mentions included), or a
    self-harm or suicide word about anyone (``_UNSAFE_WORDS``)."""
    assessment = RiskDetector().assess(text)
    if assessment.level != "none" and _UNSAFE_CATEGORIES.intersection(assessment.categories):
        return True
    return bool(_UNSAFE_WORDS.search(normalise(text)[0]))


# ---- the result -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmotionPrompt:
    """A rewritten prompt and why it reads as it does.

    ``emotions``: the one or two emotions used, with their weights renormalised to sum to 1, strongest first.
    ``concepts``: slot (``SLOTS``) -> the phrases that went into the prompt, in prompt order. ``negative_from``: the
    emotions whose concepts make the negative prompt. ``motif``: the sanitised cause as rendered (``None`` when no
    cause or it was dropped). ``cause_used``: a cause was given and rendered. ``intensity``: in [0, 1], ``None``
    when neither intensity nor valence/arousal was given. ``notes``: what was dropped or changed, and why.
    """

    prompt: str
    negative_prompt: str
    emotions: tuple[tuple[str, float], ...]
    concepts: dict[str, tuple[str, ...]]
    subject: str
    negative_from: tuple[str, ...] = ()
    motif: str | None = None
    cause_used: bool = False
    intensity: float | None = None
    seed: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def emotion(self) -> str:
        """The strongest emotion."""
        return self.emotions[0][0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "emotion": self.emotion,
            "emotions": {name: weight for name, weight in self.emotions},
            "concepts": {slot: list(phrases) for slot, phrases in self.concepts.items()},
            "subject": self.subject,
            "negative_from": list(self.negative_from),
            "motif": self.motif,
            "cause_used": self.cause_used,
            "intensity": self.intensity,
            "seed": self.seed,
            "notes": list(self.notes),
        }


# ---- the rewriter ---------------------------------------------------------------------------------------------


def _unknown(name: object) -> AffectLensError:
    aliases = sorted(k for k, v in LABEL_MAP.items() if v in CONCEPTS and k not in CONCEPTS)
    return AffectLensError(
        f"unknown emotion {name!r}; allowed emotions: {', '.join(CANONICAL_EMOTIONS)} (aliases: {', '.join(aliases)})"
    )


def _canonical(name: object) -> str | None:
    """The canonical emotion of ``name`` when it has concepts, ``None`` for a known label without them."""
    if not isinstance(name, str):
        raise _unknown(name)
    try:
        canon = canonical_label(name)
    except KeyError:
        raise _unknown(name) from None
    return canon if canon in CONCEPTS else None


def resolve_emotions(emotion: str | Mapping[str, float]) -> tuple[tuple[tuple[str, float], ...], list[str]]:
    """The one or two emotions a prompt uses, ``((name, weight), ...)`` strongest first with weights summing to 1,
    and notes on labels left out. A name is one emotion at weight 1; a distribution keeps its top emotion and the
    second when it holds at least ``MIX_MIN_SHARE`` of the total weight (ties break in ``CANONICAL_EMOTIONS``
    order). Labels without concepts (``contempt``, ``calm``) are left out of a distribution, with a note.

    Raises:
        AffectLensError: an unknown emotion, a single emotion without concepts, or weights that are negative, not
            finite or all zero.
    """
    notes: list[str] = []
    if isinstance(emotion, str):
        canon = _canonical(emotion)
        if canon is None:
            raise AffectLensError(
                f"emotion {emotion!r} has no visual concepts; allowed emotions: {', '.join(CANONICAL_EMOTIONS)}"
            )
        return ((canon, 1.0),), notes
    if not isinstance(emotion, Mapping) or not emotion:
        raise AffectLensError(
            f"emotion must be a name or a non-empty {{emotion: weight}} mapping, got {emotion!r}; "
            f"allowed emotions: {', '.join(CANONICAL_EMOTIONS)}"
        )
    merged: dict[str, float] = {}
    for name, weight in emotion.items():
        canon = _canonical(name)
        try:
            value = float(weight)
        except (TypeError, ValueError):
            raise AffectLensError(f"weight of {name!r} must be a number, got {weight!r}") from None
        if not math.isfinite(value) or value < 0:
            raise AffectLensError(f"weight of {name!r} must be finite and >= 0, got {weight!r}")
        if canon is None:
            if value > 0:
                notes.append(f"left out {name!r} ({value:g}): it has no visual concepts")
            continue
        merged[canon] = merged.get(canon, 0.0) + value
    total = sum(merged.values())
    if total <= 0:
        raise AffectLensError(f"the emotion weights sum to zero over the known emotions: {dict(emotion)!r}")
    ranked = sorted(merged.items(), key=lambda kv: (-kv[1], CANONICAL_EMOTIONS.index(kv[0])))
    chosen = [ranked[0]]
    if len(ranked) > 1 and ranked[1][1] / total >= MIX_MIN_SHARE:
        chosen.append(ranked[1])
    kept = sum(w for _, w in chosen)
    return tuple((name, round(w / kept, 4)) for name, w in chosen), notes


def _intensity(intensity: float | None, valence: float | None, arousal: float | None) -> float | None:
    if intensity is not None:
        value = float(intensity)
        if not 0.0 <= value <= 1.0:
            raise AffectLensError(f"intensity must be in [0, 1], got {intensity!r}")
        return value
    if valence is None and arousal is None:
        return None
    v, a = float(valence or 0.0), float(arousal or 0.0)
    if not (-1.0 <= v <= 1.0 and -1.0 <= a <= 1.0):
        raise AffectLensError(f"valence and arousal must be in [-1, 1], got {valence!r}, {arousal!r}")
    return round(min(1.0, math.hypot(v, a)), 4)


_TOKEN: Final = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """A lower bound on CLIP's token count of ``text``: its words plus its punctuation marks."""
    return len(_TOKEN.findall(text))


def _fit(parts: list[tuple[str, str]], notes: list[str], what: str) -> str:
    """Join ``(label, text)`` parts with ", " in priority order, keeping each one that still fits in
    ``MAX_PROMPT_WORDS`` words and ``MAX_PROMPT_TOKENS`` estimated tokens."""
    kept: list[str] = []
    words = tokens = 0
    for label, text in parts:
        more_words, more_tokens = len(text.split()), estimate_tokens(text) + (1 if kept else 0)
        if words + more_words > MAX_PROMPT_WORDS or tokens + more_tokens > MAX_PROMPT_TOKENS:
            notes.append(f"left {label} out of the {what}: it would pass the CLIP length budget")
            continue
        kept.append(text)
        words, tokens = words + more_words, tokens + more_tokens
    return ", ".join(kept)


def rewrite_prompt(
    emotion: str | Mapping[str, float],
    subject: str | None = None,
    *,
    cause: str | None = None,
    intensity: float | None = None,
    valence: float | None = None,
    arousal: float | None = None,
    seed: int = 0,
    style: str | None = DEFAULT_STYLE,
) -> EmotionPrompt:
    """Rewrite an emotion (a name, alias, or ``{emotion: weight}``) and a literal ``subject`` into a text-to-image
    prompt made of the emotion's visual concepts, and its negative prompt (module docstring for the rules).

    ``intensity`` in [0, 1] wins over ``valence``/``arousal`` (each in [-1, 1]) when both are given. ``seed`` picks
    the options (same seed, same prompt). ``cause`` becomes a sanitised motif unless it speaks of self-harm,
    suicide or harm to or from someone.

    Raises:
        AffectLensError: an unknown emotion (the message lists the allowed ones), bad weights, an intensity,
            valence or arousal out of range, or a seed that is not an int.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise AffectLensError(f"seed must be an int, got {seed!r}")
    emotions, notes = resolve_emotions(emotion)
    level = _intensity(intensity, valence, arousal)
    rng = random.Random(seed)

    primary = emotions[0][0]
    secondary = emotions[1][0] if len(emotions) > 1 else None
    table = CONCEPTS[primary]
    concepts: dict[str, list[str]] = {slot: [rng.choice(table[slot])] for slot in SLOTS if slot != "symbols"}
    many = level is not None and level >= HIGH_INTENSITY
    concepts["symbols"] = rng.sample(table["symbols"], 2) if many else [rng.choice(table["symbols"])]
    if secondary is not None:
        other = CONCEPTS[secondary]
        for slot in ("mood", "palette", "texture", "symbols"):
            concepts[slot].append(rng.choice(other[slot]))
        notes.append(f"blended {primary} ({emotions[0][1]:g}) with {secondary} ({emotions[1][1]:g})")
    if level is not None and level < LOW_INTENSITY:
        concepts["mood"] = [f"subtle {concepts['mood'][0]}", *concepts["mood"][1:]]
        concepts["symbols"] = []
        notes.append(f"intensity {level:g} is low: subtle mood, no symbols")
    elif many:
        concepts["mood"] = [f"intense {concepts['mood'][0]}", *concepts["mood"][1:]]

    literal = sanitise_text(subject, MAX_SUBJECT_CHARS) if subject is not None else ""
    if literal and is_unsafe_for_image(literal):
        notes.append("subject dropped: it speaks of self-harm, suicide or harm, which is never rendered")
        logger.warning("prompt subject dropped by the safety check")
        literal = ""
    if not literal:
        literal = DEFAULT_SUBJECT

    motif: str | None = None
    if cause is not None:
        text = sanitise_text(cause, MAX_CAUSE_CHARS)
        if text and (is_unsafe_for_image(cause) or is_unsafe_for_image(text)):
            notes.append("cause dropped: it speaks of self-harm, suicide or harm, which is never rendered")
            logger.warning("prompt cause dropped by the safety check")
        elif text:
            words = text.split()
            if len(words) > MAX_MOTIF_WORDS:
                notes.append(f"cause cut to its first {MAX_MOTIF_WORDS} words")
            motif = " ".join(words[:MAX_MOTIF_WORDS]).strip(_TRIM)
        else:
            notes.append("cause dropped: nothing left after sanitising")

    parts: list[tuple[str, str]] = [("subject", literal)]
    for slot in SLOTS:
        if slot == "texture" and motif:
            parts.append(("motif", f"a motif of {motif}"))
        parts.extend((slot, phrase) for phrase in concepts[slot])
    if style:
        parts.append(("style", sanitise_text(style, 60)))
    prompt = _fit(parts, notes, "prompt")
    cause_used = motif is not None and f"a motif of {motif}" in prompt

    chosen = {name for name, _ in emotions}
    negative_from = tuple(dict.fromkeys(OPPOSITES[name] for name, _ in emotions if OPPOSITES[name] not in chosen))
    negative_parts = [(f"{name} {slot}", CONCEPTS[name][slot][0]) for name in negative_from for slot in NEGATIVE_SLOTS]
    negative_parts += [("artefacts", word) for word in GENERIC_NEGATIVES]
    negative = _fit(negative_parts, notes, "negative prompt")

    result = EmotionPrompt(
        prompt=prompt,
        negative_prompt=negative,
        emotions=emotions,
        concepts={slot: tuple(phrases) for slot, phrases in concepts.items() if phrases},
        subject=literal,
        negative_from=negative_from,
        motif=motif if cause_used else None,
        cause_used=cause_used,
        intensity=level,
        seed=seed,
        notes=tuple(notes),
    )
    logger.debug("emotion prompt for %s (seed %d): %s", emotions, seed, prompt)
    return result
