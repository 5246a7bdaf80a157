"""Emotional talking head: a portrait speaks a reply with an emotion, rendered on the CPU by mesh warping.

After Think-Before-Draw, labels are too coarse to drive a face: the emotion is first reasoned into which
muscles move, how strongly and when, and only then rendered, global emotion first, local muscles after.

1. **AU plan** (``plan_performance``): the emotion mixture and intensity (from the tree or asked for) become,
   through the talking head's emotion prototypes (``load_plans``: the AU basis's, with the targets of some
   emotions searched for a speaking face; ``generation.edit.plan_edit``, blended by weight), per-AU targets;
   an onset, apex and offset per emotion (surprise is fast, sadness slow); cues from the text (a question
   raises the brows at its end, an exclamation strengthens the apex). Out come AU intensity curves at 25 fps
   for the 17 AUs and a readable chain of thought (``Performance.reasons``).
2. **Speech** (``generation.speech``): piper with the shipped Joe voice in a separate process (piper is GPL),
   espeak-ng as the fallback, rate and pitch nudged by the emotion.
3. **Lip sync** (``generation.lipsync``): piper reports no phoneme timings, so the mouth follows the audio:
   the envelope opens the jaw and lips (AU26, AU25), the spectral shape spreads (AU20) or rounds (AU23) them.
   It is layered over the emotion: while the voice is loud, the emotion's own mouth opening gives way.
4. **Animation** (``TalkingHead.frames``): each frame moves the portrait's 468-point mesh by the AU basis
   (emotion + lip sync), closes the lids for blinks, turns it slightly (slow head motion and small nods on
   stressed speech) and moves two extra control points, the irises, for gaze shifts; the emotion's shading
   (``generation.texture``, ratio images learned from FER2013) follows the same curve, and the shading of the
   portrait's own expression (as our expression model reads it: a smiling photo) is divided out as the new one
   sets in. ``generation.warp`` renders it; pixels outside a ring around the face stay as they were.
5. **Output** (``generation.video_out``): H.264 + AAC MP4.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import cv2
import numpy as np

from affectlens import weights
from affectlens.errors import AffectLensError
from affectlens.labels import CANONICAL_EMOTIONS, FACS_NAMES, canonical_mixture
from generation.edit import (
    AU_NAMES,
    INNER_LIPS,
    AUBasis,
    EmotionPrototypes,
    ExpressionEditor,
    check_image,
    fill_mouth,
    plan_edit,
)
from generation.texture import ExpressionTexture, FaceTexture
from generation.warp import MeshWarper

if TYPE_CHECKING:
    from affectlens.tree import AffectTree
    from generation.lipsync import MouthCurves
    from generation.speech import EngineChoice, Speech

logger = logging.getLogger(__name__)

FPS: Final[float] = 25.0
#: Seconds the expression starts before the voice (the face reacts first) and lingers after it.
LEAD_IN: Final[float] = 0.4
TAIL: Final[float] = 0.6
#: Seconds from the first movement to the apex, per emotion (fast surprise, slow sadness).
ONSET: Final[dict[str, float]] = {
    "neutral": 0.4,
    "happiness": 0.5,
    "sadness": 0.9,
    "surprise": 0.25,
    "fear": 0.35,
    "disgust": 0.5,
    "anger": 0.4,
}
#: Share of the apex kept at the end of the offset (the face relaxes, but does not snap back).
OFFSET_LEVEL: Final[float] = 0.6
#: Shading (ratio image) weight at intensity 0.5 when the texture's card names none (the card's gain was chosen
#: on validation faces by ``scripts/fit_expression_texture.py``); it scales with the intensity like the shape.
TEXTURE_GAIN: Final[float] = 2.0
#: Share of the photo's own expression shading divided out as the new expression sets in.
OWN_SHADING: Final[float] = 1.0
#: Largest per-emotion shading gain a plans file may set (``load_shading_gains``).
MAX_SHADING_GAIN: Final[float] = 4.0
#: Blur of the shading on a photo, in interocular distances (0.08 looked softer on the sample portrait but cost
#: agreement on FER2013 validation faces: 0.36 against 0.44 with the other settings here).
SOFTEN: Final[float] = 0.0
#: Lip sync: AU steps at a fully open mouth (jaw, lips) and at full spread / rounding. Lips more than jaw: the
#: fitted AU26 also drops the chin, which stretched the face at 4.5 (chosen on FER2013 validation faces and the
#: sample portrait with ``scripts/judge_talking_head.py --split val --set ...``).
JAW_GAIN: Final[float] = 2.0
LIPS_GAIN: Final[float] = 5.0
SPREAD_GAIN: Final[float] = 0.5
ROUND_GAIN: Final[float] = 1.2
#: How much of the emotion's own mouth opening gives way while the voice is loud.
MOUTH_YIELD: Final[float] = 0.7
BLINK_PROFILE: Final[tuple[float, ...]] = (0.45, 1.0, 0.75, 0.3)  # lid closure per frame of a blink
#: AUs the plans never move: the blinks draw the lids (below), and the fitted AU45 component moves the chin and
#: lips more than the lids (0.035 and 0.026 against 0.014 interocular distances per unit), so relaxing a photo's
#: AU45 reading (1.5-2.0 for hooded or smiling eyes) used to shift the lower face instead of opening the eyes.
HELD_AUS: Final[tuple[str, ...]] = ("AU45",)
#: Upper and lower lid contours of each eye (MediaPipe mesh), paired point by point: a blink moves the upper
#: lid onto the lower one. (The fitted AU45 component also moves the chin: FER2013's blinks come with other
#: movements, so blinks are drawn geometrically instead.)
LIDS: Final[tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]] = (
    ((246, 161, 160, 159, 158, 157, 173), (7, 163, 144, 145, 153, 154, 155)),
    ((466, 388, 387, 386, 385, 384, 398), (249, 390, 373, 374, 380, 381, 382)),
)
MAX_YAW: Final[float] = 35.0  # degrees: a face turned further is a profile the warp cannot animate
MIN_INTEROCULAR: Final[float] = 24.0  # pixels between the eye corners: smaller faces are too small to animate
MAX_CHARS: Final[int] = 1000
#: The weights entry of the talking head's own emotion prototypes (``scripts/fit_talking_head_plans.py``).
PLANS_WEIGHT: Final[str] = "talking-head-plans"
EYES: Final[tuple[tuple[int, ...], tuple[int, ...]]] = (
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
)


def check_text(text: str) -> str:
    """``text`` stripped, or ``AffectLensError`` when it is empty or longer than ``MAX_CHARS``."""
    if not isinstance(text, str):
        raise AffectLensError(f"text must be a string, got {type(text).__name__}")
    text = " ".join(text.split())
    if not text:
        raise AffectLensError("the text to speak is empty")
    if len(text) > MAX_CHARS:
        raise AffectLensError(
            f"the text to speak is {len(text)} characters; the talking head takes at most {MAX_CHARS}"
        )
    return text


@dataclass(frozen=True)
class TextCue:
    """A moment of the text that changes the face: a question or an exclamation, over [start, end] seconds."""

    kind: str
    start: float
    end: float
    sentence: str


def text_cues(text: str, start: float, duration: float) -> list[TextCue]:
    """Questions and exclamations of ``text``, placed on the speech's time line by their share of characters
    (speech from ``start`` for ``duration`` seconds)."""
    cues: list[TextCue] = []
    total = max(len(text), 1)
    for match in re.finditer(r"[^.!?]+[.!?]*", text):
        sentence = match.group().strip()
        if not sentence:
            continue
        s = start + duration * match.start() / total
        e = start + duration * match.end() / total
        if sentence.endswith("?"):
            cues.append(TextCue("question", s, e, sentence))
        elif sentence.endswith("!"):
            cues.append(TextCue("exclamation", s, e, sentence))
    return cues


@dataclass(frozen=True)
class Performance:
    """The AU plan over time: per-frame expression AU changes (``curves``, frames x 17, AU steps added to the
    portrait's own AUs), the expression's envelope (``level``, 0-1 per frame: onset, apex, offset), the
    mixture and intensity it renders, the key times (seconds) and the chain of thought."""

    emotion: dict[str, float]
    intensity: float
    fps: float
    curves: np.ndarray
    level: np.ndarray
    onset: tuple[float, float]
    apex: tuple[float, float]
    offset: tuple[float, float]
    targets: dict[str, float]
    reasons: tuple[str, ...]
    cues: tuple[TextCue, ...] = ()

    @property
    def num_frames(self) -> int:
        return int(self.curves.shape[0])

    def curve(self, au: str) -> np.ndarray:
        """One AU's change per frame."""
        return self.curves[:, AU_NAMES.index(au)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "emotion": {k: round(v, 4) for k, v in self.emotion.items()},
            "intensity": round(self.intensity, 3),
            "fps": self.fps,
            "frames": self.num_frames,
            "onset": [round(t, 3) for t in self.onset],
            "apex": [round(t, 3) for t in self.apex],
            "offset": [round(t, 3) for t in self.offset],
            "targets": {k: round(v, 3) for k, v in self.targets.items()},
            "reasons": list(self.reasons),
            "cues": [{"kind": c.kind, "start": round(c.start, 3), "end": round(c.end, 3)} for c in self.cues],
        }


def _envelope(times: np.ndarray, start: float, onset: float, apex_end: float, end: float) -> np.ndarray:
    """0 before ``start``; a smooth rise to 1 over ``onset`` seconds; 1 until ``apex_end``; a smooth fall to
    ``OFFSET_LEVEL`` by ``end``."""
    rise = np.clip((times - start) / max(onset, 1e-3), 0.0, 1.0)
    rise = rise * rise * (3 - 2 * rise)  # smoothstep
    fall = np.clip((times - apex_end) / max(end - apex_end, 1e-3), 0.0, 1.0)
    fall = fall * fall * (3 - 2 * fall)
    return rise * (1.0 - (1.0 - OFFSET_LEVEL) * fall)


def plan_performance(
    emotion: str | Mapping[str, float],
    text: str,
    speech_duration: float,
    intensity: float = 0.6,
    *,
    basis: AUBasis,
    current_aus: Mapping[str, float] | None = None,
    fps: float = FPS,
    prototypes: EmotionPrototypes | None = None,
) -> Performance:
    """The AU plan for saying ``text`` (``speech_duration`` seconds of audio) with ``emotion`` (a name or a
    mixture) at ``intensity`` in [0, 1], from a face whose AUs are ``current_aus`` (zeros when unknown).

    The face's own expression first relaxes to the neutral prototype (``plan_edit`` to neutral); each emotion's AU
    change then comes from ``plan_edit`` from that relaxed face at a strength that grows with the intensity; a
    mixture blends the changes by weight; ``HELD_AUS`` (the blink) never move. The video runs ``LEAD_IN`` before
    the voice and ``TAIL`` after it; the expression rises over the dominant emotion's ``ONSET``, holds its apex
    while the voice lasts and relaxes to ``OFFSET_LEVEL`` over the tail. A question lifts the inner and outer
    brows over its last half second; an exclamation strengthens the apex by a fifth while it is spoken.
    ``prototypes`` (default: the basis's) are the AU targets the emotions aim at; the talking head passes its own
    (``load_plans``).
    """
    mixture = canonical_mixture(emotion)
    text = check_text(text)
    if not 0.0 <= float(intensity) <= 1.0 or not np.isfinite(intensity):
        raise AffectLensError(f"intensity must be within [0, 1], got {intensity}")
    prototypes = prototypes or basis.prototypes
    if prototypes is None:
        raise AffectLensError("the AU basis has no emotion prototypes")
    current = {au: float((current_aus or {}).get(au, 0.0)) for au in AU_NAMES}
    scale = 0.5 + float(intensity)  # 0.5x .. 1.5x the basis's validated default strength
    strength = float(min(3.0, basis.default_strength * scale))
    total = LEAD_IN + speech_duration + TAIL
    n = max(1, round(total * fps))
    times = np.arange(n) / fps
    dominant = next(iter(mixture))

    delta = np.zeros(len(AU_NAMES))
    reasons: list[str] = []
    mix_text = " + ".join(f"{e} {w:.0%}" for e, w in mixture.items())
    reasons.append(
        f"global: {mix_text} at intensity {intensity:.2f} -> plan strength {strength:.2f} "
        f"(the basis's default {basis.default_strength:.2f} x {scale:.2f})"
    )
    # Global first: the portrait's own expression (a smiling photo, say) relaxes to the neutral prototype...
    relax = plan_edit(current, "neutral", 1.0, prototypes=prototypes, held=HELD_AUS)
    if relax.delta:
        reasons.append("relax the photo's own expression first: " + "; ".join(relax.reasons[:3]))
    for au, change in relax.delta.items():
        delta[AU_NAMES.index(au)] += change
    # ...then each emotion of the mixture builds on that neutral face, blended by weight.
    for name, weight in mixture.items():
        plan = plan_edit(relax.planned, name, strength, prototypes=prototypes, held=HELD_AUS)
        for au, change in plan.delta.items():
            delta[AU_NAMES.index(au)] += weight * change
        own = basis.prototypes is not None and prototypes.targets[name] != basis.prototypes.targets[name]
        label = f"{name} ({weight:.0%}{', targets fitted for a speaking face' if own else ''})"
        reasons.append(f"{label}: " + ("; ".join(plan.reasons[:4]) if plan.delta else plan.reasons[0]))
    moved = [(AU_NAMES[k], float(delta[k])) for k in np.argsort(-np.abs(delta)) if abs(delta[k]) >= 0.05]
    if moved:
        reasons.append(
            "muscles at the apex: "
            + ", ".join(f"{au} {FACS_NAMES[au]} {'+' if d > 0 else ''}{d:.2f}" for au, d in moved[:6])
        )

    onset = ONSET[dominant] * (1.2 - 0.4 * float(intensity))  # stronger feelings arrive faster
    start = max(0.0, LEAD_IN - 0.3)
    apex_start = start + onset
    apex_end = LEAD_IN + speech_duration
    level = _envelope(times, start, onset, apex_end, total)
    reasons.append(
        f"timing: onset {start:.2f}-{apex_start:.2f} s ({dominant}'s {ONSET[dominant]:.2f} s, quicker when "
        f"intense), apex until the voice ends at {apex_end:.2f} s, offset to {OFFSET_LEVEL:.0%} by {total:.2f} s"
    )
    curves = level[:, None] * delta[None, :]

    cues = text_cues(text, LEAD_IN, speech_duration)
    brows = [AU_NAMES.index("AU01"), AU_NAMES.index("AU02")]
    for cue in cues:
        if cue.kind == "question":
            window = np.clip(1.0 - np.abs(times - (cue.end - 0.25)) / 0.35, 0.0, 1.0)
            curves[:, brows] += 1.0 * window[:, None]
            reasons.append(f"question at {cue.start:.2f}-{cue.end:.2f} s: lift AU01/AU02 towards its end")
        elif cue.kind == "exclamation":
            inside = ((times >= cue.start) & (times <= cue.end)).astype(np.float64)
            curves += 0.2 * inside[:, None] * level[:, None] * delta[None, :]
            reasons.append(f"exclamation at {cue.start:.2f}-{cue.end:.2f} s: apex strengthened by a fifth")
    reasons.append(
        "mouth: jaw (AU26) and lips (AU25) follow the voice's envelope, spread (AU20) or round (AU23) with its "
        f"spectrum; the emotion's own mouth opening yields {MOUTH_YIELD:.0%} while the voice is loud"
    )
    targets = {au: round(current[au] + float(d), 3) for au, d in moved}
    return Performance(
        emotion=mixture,
        intensity=float(intensity),
        fps=fps,
        curves=curves.astype(np.float32),
        level=level.astype(np.float32),
        onset=(start, apex_start),
        apex=(apex_start, apex_end),
        offset=(apex_end, total),
        targets=targets,
        reasons=tuple(reasons),
        cues=tuple(cues),
    )


# ---- natural motion ----------------------------------------------------------------------------------------


def blink_curve(num_frames: int, fps: float, rng: np.random.Generator, breaks: list[float] | None = None) -> np.ndarray:
    """Lid closure per frame (0 open, 1 shut): blinks every 2.5-5.5 s (people blink 12-20 times a minute), and one shortly
    after each pause of the voice (``breaks``, seconds), never two within a second."""
    out = np.zeros(num_frames, np.float32)
    times = sorted([*(b + 0.1 for b in (breaks or [])), *np.cumsum(rng.uniform(2.5, 5.5, size=64)) - 1.5])
    last = -10.0
    for t in times:
        if t < 0.3 or t - last < 1.0:
            continue
        k = round(t * fps)
        if k >= num_frames:
            continue
        last = t
        for j, share in enumerate(BLINK_PROFILE):
            if k + j < num_frames:
                out[k + j] = max(out[k + j], share)
    return out


def head_motion(num_frames: int, fps: float, rng: np.random.Generator, speech: np.ndarray) -> np.ndarray:
    """Frames x 3 (yaw, pitch, roll degrees): slow drift (a few incommensurate sines, about 1.5 degrees) plus
    small nods (pitch) on loud stretches of the voice (``speech``: mouth opening per frame, 0-1)."""
    t = np.arange(num_frames) / fps
    out = np.zeros((num_frames, 3))
    for axis, amplitude in enumerate((1.6, 1.0, 0.7)):
        for freq in (0.13, 0.29, 0.47):
            out[:, axis] += amplitude / 3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    if len(speech):
        kernel = np.hanning(max(3, int(fps * 0.4)))
        nod = np.convolve(speech, kernel / kernel.sum(), mode="same")
        out[:, 1] += 2.0 * nod
    return out


def gaze_path(num_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Frames x 2 iris offsets (share of the eye's width, x right, y down): mostly at the viewer, with a short
    glance aside every 1.5-4 s (a saccade: two frames), back after 0.3-0.8 s."""
    out = np.zeros((num_frames, 2))
    t = rng.uniform(1.0, 3.0)
    while t < num_frames / fps:
        k0 = int(t * fps)
        hold = int(rng.uniform(0.3, 0.8) * fps)
        target = np.array([rng.uniform(-0.12, 0.12), rng.uniform(-0.04, 0.05)])
        for k in range(k0, min(num_frames, k0 + hold + 2)):
            ramp = min(1.0, (k - k0 + 1) / 2)
            back = min(1.0, max(0.0, (k0 + hold + 2 - k) / 2))
            out[k] = target * min(ramp, back)
        t += hold / fps + rng.uniform(1.5, 4.0)
    return out


def rotate_points(points: np.ndarray, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """468x3 points turned about their centre by small angles (degrees); x/y of the result."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    centre = points.mean(axis=0)
    return ((points - centre) @ (rz @ rx @ ry).T + centre)[:, :2]


# ---- the renderer ------------------------------------------------------------------------------------------


def close_mouth(image: np.ndarray, points: np.ndarray, threshold: float = 0.03) -> np.ndarray:
    """``image`` with the inside of an open mouth (teeth, tongue) painted over from the lips around it
    (``cv2.inpaint``, Telea), when the inner lips are more than ``threshold`` interocular distances apart.

    The talking head closes the lips at rest and opens them with the voice; warping a photo's visible teeth
    shut would leave a white line the eye (and our mesh) still reads as an open mouth, and its opening would
    stretch the teeth. With a closed base, every opening is drawn as a new, dark mouth (``fill_mouth``)."""
    interocular = float(np.linalg.norm(points[33, :2] - points[263, :2]))
    if np.linalg.norm(points[13, :2] - points[14, :2]) <= threshold * interocular:
        return image
    lips = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(lips, [np.round(points[list(INNER_LIPS), :2]).astype(np.int32)], 255)
    mask = cv2.dilate(lips, np.ones((3, 3), np.uint8), iterations=max(1, round(interocular / 40)))
    return np.asarray(cv2.inpaint(image, mask, max(3, round(interocular / 15)), cv2.INPAINT_TELEA), np.uint8)


@dataclass(frozen=True)
class Portrait:
    """A portrait ready to animate: the RGB image, its face's mesh (468x3 pixels), box, current AUs and pose,
    a warper over the mesh plus two iris points, and the expression shading carried onto the face."""

    image: np.ndarray
    points: np.ndarray
    box: tuple[float, float, float, float]
    aus: dict[str, float]
    yaw: float
    warper: MeshWarper = field(repr=False)
    texture: FaceTexture | None = field(default=None, repr=False)
    expression: dict[str, float] = field(default_factory=dict)  # our expression model's reading of ``image``

    @property
    def irises(self) -> np.ndarray:
        """2x2: the eyes' centres (x, y pixels), where the iris control points sit at rest."""
        return np.stack([self.points[list(eye), :2].mean(axis=0) for eye in EYES])


@dataclass(frozen=True)
class TalkingHeadVideo:
    """A rendered (or renderable) talking head: the performance, the speech, the mouth curves and the
    per-frame natural motion; ``frames()`` yields RGB frames, ``write`` makes the MP4."""

    portrait: Portrait = field(repr=False)
    performance: Performance
    speech: Speech = field(repr=False)
    mouth: MouthCurves = field(repr=False)
    aus: np.ndarray = field(repr=False)  # frames x 17: every AU change rendered (emotion + lip sync)
    pose: np.ndarray = field(repr=False)  # frames x 3 degrees
    gaze: np.ndarray = field(repr=False)  # frames x 2
    blinks: np.ndarray = field(repr=False)  # frames: lid closure 0-1
    renderer: TalkingHead = field(repr=False)

    @property
    def num_frames(self) -> int:
        return int(self.aus.shape[0])

    @property
    def fps(self) -> float:
        return self.performance.fps

    def frames(self) -> Iterator[np.ndarray]:
        """The RGB uint8 frames, one by one (a long reply never holds all of them in memory)."""
        for k in range(self.num_frames):
            yield self.renderer.render_frame(self, k)

    def audio(self) -> np.ndarray:
        """The speech placed on the video's time line: ``LEAD_IN`` of silence first."""
        lead = np.zeros(round(LEAD_IN * self.speech.sample_rate), np.float32)
        return np.concatenate([lead, self.speech.samples.astype(np.float32)])

    def write(self, path: str | Path) -> dict[str, Any]:
        """Render every frame into an H.264 + AAC MP4 at ``path``; returns timing figures."""
        from generation.video_out import write_mp4

        started = time.perf_counter()
        write_mp4(path, self.frames(), self.fps, audio=self.audio(), sample_rate=self.speech.sample_rate)
        seconds = time.perf_counter() - started
        logger.info(
            "talking head: %d frames in %.1f s (%.1f fps) -> %s",
            self.num_frames,
            seconds,
            self.num_frames / max(seconds, 1e-9),
            path,
        )
        return {"frames": self.num_frames, "render_seconds": seconds, "render_fps": self.num_frames / seconds}

    def to_dict(self) -> dict[str, Any]:
        return {
            "performance": self.performance.to_dict(),
            "speech": {
                "engine": self.speech.engine,
                "voice": self.speech.voice,
                "seconds": round(self.speech.duration, 3),
                "prosody": self.speech.prosody,
            },
            "frames": self.num_frames,
            "fps": self.fps,
            "box": list(self.portrait.box),
        }


class TalkingHead:
    """Animate a portrait: ``prepare(image)`` once, then ``perform(portrait, text, emotion)`` -> a video.

    ``editor`` (an ``ExpressionEditor``) finds the face, measures its AUs and carries the AU basis;
    ``texture`` adds the emotion's shading (None: shape only); ``engine`` picks the TTS ("auto": piper, then
    espeak-ng); ``plans`` are the emotion prototypes the AU plans aim at (None: the basis's, those of still
    expression editing); ``shading_gains`` multiply an emotion's own shading (1 for an emotion not named; the
    talking-head plans file fits them, ``load_shading_gains``). ``build_talking_head`` assembles the defaults,
    the shipped talking-head plans and shading gains included.
    """

    def __init__(
        self,
        editor: ExpressionEditor,
        texture: ExpressionTexture | None = None,
        engine: EngineChoice = "auto",
        fps: float = FPS,
        texture_gain: float | None = None,
        plans: EmotionPrototypes | None = None,
        shading_gains: Mapping[str, float] | None = None,
    ) -> None:
        self.editor = editor
        self.plans = plans
        self.shading_gains: dict[str, float] = dict(shading_gains or {})
        self.texture = texture
        self.engine = engine
        self.fps = fps
        # The shading's gain: the one chosen for expression editing on validation faces (its card), unless given.
        card_gain = float(texture.card.get("gain", TEXTURE_GAIN)) if texture is not None else TEXTURE_GAIN
        self.texture_gain = card_gain if texture_gain is None else texture_gain

    @property
    def basis(self) -> AUBasis:
        return self.editor.basis

    def with_engine(self, engine: EngineChoice) -> TalkingHead:
        """The same models, plans and settings speaking with another TTS ``engine`` (a shallow copy)."""
        other = copy.copy(self)
        other.engine = engine
        return other

    def prepare(self, image: np.ndarray, points: np.ndarray | None = None) -> Portrait:
        """Find the portrait's one face and get it ready to animate; ``AffectLensError`` for no face, several
        faces, a profile or a face too small. ``points`` (468x3 pixels) skips the search when the mesh is known."""
        check_image(image)
        if points is None:
            points, box = self.editor.locate(image)
        else:
            from perception.face.pipeline import mesh_box

            box = mesh_box(points)
        measured = self.editor.geometry(points[None])[0]
        if abs(measured.yaw) > MAX_YAW:
            raise AffectLensError(
                f"the face is turned {measured.yaw:+.0f} degrees (a profile): the talking head needs a face "
                f"within {MAX_YAW:.0f} degrees of frontal"
            )
        interocular = float(np.linalg.norm(points[33, :2] - points[263, :2]))
        if interocular < MIN_INTEROCULAR:
            raise AffectLensError(
                f"the face is too small to animate ({interocular:.0f} px between the eye corners; at least "
                f"{MIN_INTEROCULAR:.0f} px): use a closer or larger portrait"
            )
        image = close_mouth(image, points)
        irises = np.stack([points[list(eye), :2].mean(axis=0) for eye in EYES])
        warper = MeshWarper(np.concatenate([points[:, :2], irises]), image.shape[:2])
        texture = None
        if self.texture is not None:  # the lip sync draws the mouth: no shading there
            texture = self.texture.for_face(points, image.shape[:2], mouth=False, soften=SOFTEN)
        # The expression the base image still shows (read after ``close_mouth``: visible teeth no longer count),
        # whose shading ``render_frame`` divides out as the new expression sets in.
        reading: dict[str, float] = {}
        model = self.editor.expression or self.editor.pipeline.expression
        if model is not None:
            probs = model.predict_batch(model.preprocess(image, np.asarray(box, np.float32))[None])[0]
            reading = {e: float(p) for e, p in zip(CANONICAL_EMOTIONS, probs, strict=True)}
        return Portrait(
            image, points, (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            measured.aus, measured.yaw, warper, texture, reading,
        )  # fmt: skip

    def perform(
        self,
        portrait: Portrait,
        text: str,
        emotion: str | Mapping[str, float],
        intensity: float = 0.6,
        seed: int = 0,
        speech: Speech | None = None,
    ) -> TalkingHeadVideo:
        """Speak ``text`` with ``emotion`` (a name or a mixture) at ``intensity`` in [0, 1]: synthesises the
        speech (unless ``speech`` is given), plans the AUs and the natural motion; frames render lazily."""
        from generation.lipsync import mouth_curves
        from generation.speech import synthesize

        text = check_text(text)
        mixture = canonical_mixture(emotion)
        if speech is None:
            speech = synthesize(text, mixture, intensity=intensity, engine=self.engine)
        performance = plan_performance(
            mixture,
            text,
            speech.duration,
            intensity,
            basis=self.basis,
            current_aus=portrait.aus,
            fps=self.fps,
            prototypes=self.plans,
        )
        stronger = [
            f"{e}'s learned shading (FER2013 ratio images) at {self.shading_gains[e]:g}x the usual weight"
            for e in performance.emotion
            if self.texture is not None and self.shading_gains.get(e, 1.0) != 1.0
        ]
        if stronger:  # the chain of thought says so when an emotion's shading is not at the usual weight
            why = "shading fitted for a speaking face: " + "; ".join(stronger)
            performance = replace(performance, reasons=(*performance.reasons, why))
        n = performance.num_frames
        lead = round(LEAD_IN * self.fps)
        voice = mouth_curves(speech.samples, speech.sample_rate, self.fps, max(1, n - lead))
        open_ = np.zeros(n, np.float32)
        spread = np.zeros(n, np.float32)
        open_[lead : lead + len(voice.open)] = voice.open[: n - lead]
        spread[lead : lead + len(voice.spread)] = voice.spread[: n - lead]

        aus = performance.curves.astype(np.float64).copy()
        k25, k26 = AU_NAMES.index("AU25"), AU_NAMES.index("AU26")
        k20, k23 = AU_NAMES.index("AU20"), AU_NAMES.index("AU23")
        level = performance.level.astype(np.float64)
        for k, au in ((k25, "AU25"), (k26, "AU26")):
            # The mouth rests where the emotion puts it (open for surprise, closed otherwise: a portrait
            # photographed with parted lips closes them as the expression sets in), and yields to the voice.
            current = float(portrait.aus.get(au, 0.0))
            planned = float(performance.curves[:, k].max())
            rest = current + planned if planned > 0 else 0.0
            # The closing itself is not ramped: the base image's open mouth is painted over (``close_mouth``).
            aus[:, k] = rest * level * (1 - MOUTH_YIELD * open_) - current
        aus[:, k26] += JAW_GAIN * open_
        aus[:, k25] += LIPS_GAIN * open_
        aus[:, k20] += SPREAD_GAIN * np.clip(spread, 0, None) * open_
        aus[:, k23] += ROUND_GAIN * np.clip(-spread, 0, None) * open_
        rng = np.random.default_rng(seed)
        quiet = open_ < 0.05
        breaks = [k / self.fps for k in range(lead + 1, n) if quiet[k] and not quiet[k - 1]]
        blinks = blink_curve(n, self.fps, rng, breaks)
        pose = head_motion(n, self.fps, rng, open_)
        gaze = gaze_path(n, self.fps, rng)
        return TalkingHeadVideo(portrait, performance, speech, voice, aus.astype(np.float32), pose, gaze, blinks, self)

    def shading_weights(
        self, portrait: Portrait, emotion: Mapping[str, float], level: float, intensity: float
    ) -> dict[str, float]:
        """The weight of each emotion's ratio image at expression ``level`` (0 at rest, 1 at the apex): the
        photo's own expression divided out, the performed mixture's emotions multiplied in, stronger with the
        intensity and by each emotion's shading gain."""
        level *= self.texture_gain
        scale = 0.5 + intensity
        weights = {e: -OWN_SHADING * level * p for e, p in portrait.expression.items() if e != "neutral"}
        for e, w in emotion.items():
            weights[e] = weights.get(e, 0.0) + level * scale * w * self.shading_gains.get(e, 1.0)
        return weights

    def render_frame(self, video: TalkingHeadVideo, k: int) -> np.ndarray:
        """Frame ``k`` of ``video``: shading, then the mesh moved by the frame's AUs, pose and gaze."""
        portrait = video.portrait
        image = portrait.image
        if portrait.texture is not None:
            weights = self.shading_weights(
                portrait, video.performance.emotion, float(video.performance.level[k]), video.performance.intensity
            )
            image = portrait.texture.shade(image, weights)
        moved = portrait.points.astype(np.float64).copy()
        moved[:, :2] = self.basis.to_image(portrait.points, self.basis.displacement(video.aus[k]))
        if video.blinks[k] > 0:
            for upper, lower in LIDS:
                moved[list(upper)] += 0.92 * video.blinks[k] * (moved[list(lower)] - moved[list(upper)])
        yaw, pitch, roll = video.pose[k]
        dst = rotate_points(moved, yaw, pitch, roll)
        eye_width = np.array([np.ptp(portrait.points[list(eye), 0]) for eye in EYES])
        irises = np.stack([dst[list(eye)].mean(axis=0) for eye in EYES]) + video.gaze[k][None] * eye_width[:, None]
        frame = portrait.warper.warp(image, np.concatenate([dst, irises]))
        closed = portrait.points.copy()  # the base image's mouth is closed (``close_mouth``): any opening is new
        closed[14] = closed[13]
        return fill_mouth(frame, closed, dst)

    def speak(
        self,
        image: np.ndarray,
        text: str,
        emotion: str | Mapping[str, float] | None = None,
        intensity: float | None = None,
        seed: int = 0,
    ) -> TalkingHeadVideo:
        """``prepare`` + ``perform``; with no ``emotion``, the text's own emotion (our text model) at the
        strength of its top probability."""
        portrait = self.prepare(image)
        if emotion is None:
            mixture, guessed = text_emotion(check_text(text))
            emotion = mixture
            intensity = guessed if intensity is None else intensity
        return self.perform(portrait, text, emotion, 0.6 if intensity is None else intensity, seed)


@functools.cache
def _text_model() -> Any:
    """The registry's text-emotion model, loaded once per process (the demo asks for it on every click)."""
    from affectlens.registry import create_text_emotion

    return create_text_emotion()


def text_emotion(text: str) -> tuple[dict[str, float], float]:
    """The emotion mixture (top one or two, ``generation.create.top_mixture``) our text model reads in ``text``,
    and an intensity in [0.3, 1]."""
    from generation.create import top_mixture

    probabilities = _text_model().predict([text], explain=False)[0].emotion.probabilities
    return canonical_mixture(top_mixture(probabilities)), float(np.clip(max(probabilities.values()), 0.3, 1.0))


#: The face a supporter shows for the emotion it hears: joy and surprise are shared, sadness met with a softened
#: sad face (compassion), fear with calm concern, anger and disgust never mirrored (a steady, concerned face).
EMPATHIC_DISPLAY: Final[dict[str, dict[str, float]]] = {
    "neutral": {"neutral": 1.0},
    "happiness": {"happiness": 1.0},
    "surprise": {"surprise": 1.0},
    "sadness": {"sadness": 1.0},
    "fear": {"sadness": 0.5, "neutral": 0.5},
    "anger": {"neutral": 0.6, "sadness": 0.4},
    "disgust": {"neutral": 0.6, "sadness": 0.4},
}
#: A supporter's face is gentler than the feeling it answers: negative emotions are shown at this share.
NEGATIVE_SOFTENING: Final[float] = 0.7


def tree_performance_inputs(tree: AffectTree) -> tuple[dict[str, float], float]:
    """What the talking head shows when it speaks the reply to a tree: the supporter's empathic display of the
    tree's emotion mixture (``EMPATHIC_DISPLAY``: a user's anger is met with calm concern, not anger) and an
    intensity from the top emotion's probability (at least 0.3), softened for negative emotions."""
    from generation.create import tree_emotion

    heard = canonical_mixture(tree_emotion(tree))
    shown: dict[str, float] = {}
    for emotion, weight in heard.items():
        for display, share in EMPATHIC_DISPLAY[emotion].items():
            shown[display] = shown.get(display, 0.0) + weight * share
    value = tree.emotion.value if isinstance(tree.emotion.value, dict) else {}
    probabilities = value.get("probabilities") or {}
    top = max((float(v) for v in probabilities.values()), default=0.6)
    if next(iter(heard)) in ("sadness", "fear", "anger", "disgust"):
        top *= NEGATIVE_SOFTENING
    return canonical_mixture(shown), float(np.clip(top, 0.3, 1.0))


def _plans_card(path: str | Path | None) -> tuple[Path, Any]:
    """(the file, its parsed JSON): ``path`` or the shipped ``talking-head-plans``."""
    path = weights.locate(PLANS_WEIGHT).path if path is None else Path(path)
    if not path.is_file():
        raise AffectLensError(f"{path}: talking-head plans file missing")
    try:
        return path, json.loads(path.read_text())
    except ValueError as error:
        raise AffectLensError(f"{path}: not a talking-head plans file ({error})") from None


def load_plans(path: str | Path | None = None) -> EmotionPrototypes:
    """The talking head's emotion prototypes: ``path`` or the shipped ``talking-head-plans`` (a JSON card
    with the prototypes, how they were fitted and their figures; ``scripts/fit_talking_head_plans.py``)."""
    path, card = _plans_card(path)
    try:
        return EmotionPrototypes.from_dict(card["prototypes"])
    except (ValueError, KeyError, TypeError) as error:
        raise AffectLensError(f"{path}: not a talking-head plans file ({error})") from None


def load_shading_gains(path: str | Path | None = None) -> dict[str, float]:
    """The per-emotion shading gains of the talking-head plans file (``path`` or the shipped
    ``talking-head-plans``); an emotion it does not name keeps gain 1 (a file without gains: none)."""
    path, card = _plans_card(path)
    try:
        gains = card.get("shading_gains", {})
        out = {str(emotion): float(gain) for emotion, gain in gains.items()}
    except (ValueError, AttributeError, TypeError) as error:
        raise AffectLensError(f"{path}: not a talking-head plans file ({error})") from None
    unknown = sorted(set(out) - set(CANONICAL_EMOTIONS))
    if unknown or any(not 0 < gain <= MAX_SHADING_GAIN for gain in out.values()):
        raise AffectLensError(
            f"{path}: shading gains must name canonical emotions and lie in (0, {MAX_SHADING_GAIN:g}]: {gains}"
        )
    return out


def build_talking_head(
    engine: EngineChoice = "auto", texture: bool = True, judge: bool = False, plans: bool = True
) -> TalkingHead:
    """The default talking head: the default expression editor (face finder, mesh, AU basis), the shipped
    expression shading, the shipped talking-head plans and shading gains (``plans=False``: the basis's
    prototypes, every shading gain 1) and the given TTS engine."""
    from generation.edit import build_expression_editor

    # The editor finds the face and carries the basis; the talking head shades frames itself (its own curve).
    editor = build_expression_editor(judge=judge, texture=False)
    return TalkingHead(
        editor,
        ExpressionTexture.load() if texture else None,
        engine,
        plans=load_plans() if plans else None,
        shading_gains=load_shading_gains() if plans else None,
    )
