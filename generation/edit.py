"""Expression editing: re-render a portrait with a target emotion by moving its face mesh along an AU plan.

Three parts, each reusable by the talking head:

1. ``AUBasis``: a linear model of how each of the 17 mesh AUs (``perception.face.geometry``) moves the 468
   mesh points, fitted by ridge regression on FER2013 train faces (``scripts/fit_expression_edit.py``). Shapes
   are *normalised* (``FaceFrame``): centred on the mesh mean, rotated so the eye line is horizontal, divided
   by the interocular distance; head yaw and pitch are nuisance regressors, so a component is "this AU, pose
   and the other AUs held fixed". Working from data rather than hand-made FACS displacements keeps the
   movements that come with an AU in real faces (a smile also lifts the cheeks and narrows the eyes).
2. ``plan_edit``: the AU plan from a face's current AUs to a target emotion's prototype (``EmotionPrototypes``,
   from FER2013 train means sharpened with FACS prototypes), with one readable reason per moved AU: the talking
   head's chain of thought.
3. ``apply_plan`` / ``ExpressionEditor``: shade the face with the target emotion's ratio image
   (``generation.texture``), move the mesh, warp the image (``generation.warp``, piecewise affine,
   background untouched), darken the mouth's interior when the plan opens it, and let our expression model
   read the result. The editor also finds the face and refuses what it cannot edit.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import cv2
import numpy as np

from affectlens import weights
from affectlens.errors import AffectLensError
from affectlens.labels import CANONICAL_EMOTIONS, FACS_NAMES, canonical_emotion
from affectlens.types import EmotionPrediction
from generation.warp import MeshWarper
from perception.face import geometry

if TYPE_CHECKING:
    from generation.texture import ExpressionTexture
    from perception.face.expression import ExpressionModel
    from perception.face.geometry import FaceGeometry
    from perception.face.pipeline import FacePipeline

logger = logging.getLogger(__name__)

AU_NAMES: Final[tuple[str, ...]] = geometry.AU_NAMES
NUM_POINTS: Final[int] = 468
MIN_SIDE: Final[int] = 64
MAX_SIDE: Final[int] = 4096
MAX_STRENGTH: Final[float] = 3.0

#: FACS prototypes (EMFACS-style, as commonly tabulated after Ekman, Friesen & Hager 2002): the AUs each emotion raises.
FACS_PROTOTYPES: Final[dict[str, tuple[str, ...]]] = {
    "neutral": (),
    "happiness": ("AU06", "AU12"),
    "sadness": ("AU01", "AU04", "AU15"),
    "surprise": ("AU01", "AU02", "AU05", "AU26"),
    "fear": ("AU01", "AU02", "AU04", "AU05", "AU20", "AU26"),
    "disgust": ("AU09", "AU10", "AU15"),
    "anger": ("AU04", "AU05", "AU07", "AU23"),
}

#: Inner-lip contour of the MediaPipe mesh (upper lip left to right, then lower lip right to left).
INNER_LIPS: Final[tuple[int, ...]] = (
    78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95,
)  # fmt: skip

#: Mesh points that expressions barely move: eye corners, nose bridge, upper forehead. Components are made
#: relative to them (``anchor_components``), so a jaw drop moves the chin, not the whole face.
RIGID_POINTS: Final[tuple[int, ...]] = (33, 133, 362, 263, 168, 6, 197, 195, 10, 151)
#: Midline points of the mesh (forehead, nose, lips, chin), which locate the face's symmetry axis.
MIDLINE_POINTS: Final[tuple[int, ...]] = (10, 151, 168, 6, 1, 2, 0, 13, 14, 17, 152)

#: How emotion prototypes are built from data (see ``EmotionPrototypes.build``).
PrototypeMode = Literal["data", "facs", "both"]

BASIS_WEIGHT = "expression-edit-basis"
CARD_WEIGHT = "expression-edit-card"


# ---- normalised shapes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceFrame:
    """Where a face sits in its image: mesh centre (x, y pixels), roll (radians, eye line against the image's
    x axis) and scale (interocular distance, pixels): what ``normalise_shapes`` takes away and ``to_image``
    puts back."""

    centre: np.ndarray
    roll: float
    scale: float

    @classmethod
    def from_points(cls, points: np.ndarray) -> FaceFrame:
        """The frame of one 468x3 mesh (pixels, as ``FaceMesh`` returns it)."""
        centres, rolls, scales = frames_of(points[None])
        return cls(centres[0], float(rolls[0]), float(scales[0]))

    def rotation(self) -> np.ndarray:
        """2x2 rotation from the upright frame to the image."""
        c, s = np.cos(self.roll), np.sin(self.roll)
        return np.array([[c, -s], [s, c]])

    def to_image(self, displacement: np.ndarray) -> np.ndarray:
        """A 468x2 displacement in normalised units -> the same displacement in image pixels."""
        return (displacement[:, :2] @ self.rotation().T) * self.scale


def frames_of(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (Nx2), rolls (N radians) and scales (N interocular pixels) of Nx468x3 meshes."""
    axes = geometry.face_axes(points.astype(np.float64))
    rolls = np.arctan2(axes[:, 1, 0], axes[:, 0, 0])  # the eye line's angle in the image plane
    return points[:, :, :2].mean(axis=1), rolls, geometry.interocular(points)


def normalise_shapes(points: np.ndarray) -> np.ndarray:
    """Nx468x3 meshes (pixels) -> Nx468x3 shapes: centred, rotated upright (roll removed), divided by the
    interocular distance; z is centred on its mean and scaled the same way."""
    points = points.astype(np.float64)
    centres, rolls, scales = frames_of(points)
    c, s = np.cos(-rolls), np.sin(-rolls)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # Nx2x2, undoes the roll
    xy = np.einsum("nij,nkj->nki", rot, points[:, :, :2] - centres[:, None])
    z = points[:, :, 2:] - points[:, :, 2:].mean(axis=1, keepdims=True)
    return np.concatenate([xy, z], axis=-1) / scales[:, None, None]


def signed_aus(points: np.ndarray, reference: Mapping[str, tuple[float, float]]) -> np.ndarray:
    """Nx17 AU values like ``geometry.action_units`` but not clipped to 0-5: negative when the measure lies
    on the other side of the neutral mean (``AUBasis.response`` uses them: clipping would hide changes)."""
    measures = geometry.geometric_measures(points)
    out = np.zeros((points.shape[0], len(AU_NAMES)))
    for k, au in enumerate(AU_NAMES):
        measure, direction = geometry.AU_MEASURES[au]
        mean, std = reference[measure]
        out[:, k] = direction * (measures[measure] - mean) / std
    return out


# ---- the AU basis ------------------------------------------------------------------------------------------


def _au_vector(aus: Mapping[str, float] | np.ndarray) -> np.ndarray:
    if isinstance(aus, np.ndarray):
        if aus.shape != (len(AU_NAMES),):
            raise ValueError(f"an AU vector has {len(AU_NAMES)} values ordered as AU_NAMES, got shape {aus.shape}")
        return aus.astype(np.float64)
    unknown = sorted(set(aus) - set(AU_NAMES))
    if unknown:
        raise AffectLensError(f"unknown action units {unknown}; known: {', '.join(AU_NAMES)}")
    return np.array([float(aus.get(au, 0.0)) for au in AU_NAMES])


def regress_shapes(
    shapes: np.ndarray, aus: np.ndarray, covariates: np.ndarray | None = None, ridge: float = 10.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression of NxPx3 normalised ``shapes`` on NxK ``aus`` (+ NxC nuisance ``covariates``).

    Returns (KxPx3 AU components, Px3 shape at zero AUs and zero covariates, CxPx3 covariate components).
    Only the slopes are penalised (``ridge``, on the centred design).
    """
    n, num_points = shapes.shape[:2]
    design = aus if covariates is None else np.concatenate([aus, covariates], axis=1)
    design = design.astype(np.float64)
    targets = shapes.reshape(n, -1).astype(np.float64)
    x_mean, y_mean = design.mean(axis=0), targets.mean(axis=0)
    xc = design - x_mean
    slopes = np.linalg.solve(xc.T @ xc + ridge * np.eye(design.shape[1]), xc.T @ (targets - y_mean))
    intercept = y_mean - x_mean @ slopes
    k = aus.shape[1]
    return (
        slopes[:k].reshape(k, num_points, 3),
        intercept.reshape(num_points, 3),
        slopes[k:].reshape(-1, num_points, 3),
    )


def mirror_permutation(shape: np.ndarray) -> np.ndarray:
    """468 indices: the mesh point that mirrors each point across the face's midline, found on an upright
    ``shape`` (468x2 or 468x3, e.g. the basis's neutral shape) by the one-to-one matching of the points with
    their reflections that moves them least (Hungarian algorithm); midline points map to themselves."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    xy = shape[:, :2]
    mid = xy[list(MIDLINE_POINTS), 0].mean()
    reflected = np.stack([2 * mid - xy[:, 0], xy[:, 1]], axis=1)
    _, mirror = linear_sum_assignment(cdist(xy, reflected))
    return mirror


def symmetrise_components(components: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Kx468x3 components averaged with their mirror images (x flipped, points swapped by ``mirror``): the
    prototypes are bilateral, and the average removes what head turns left in the regression."""
    flipped = components[:, mirror] * np.array([-1.0, 1.0, 1.0])
    return (components + flipped) / 2


def anchor_components(components: np.ndarray, neutral: np.ndarray, rigid: tuple[int, ...]) -> np.ndarray:
    """Kx468x3 components minus the small similarity motion (shift, rotation, scale in the image plane; shift
    in depth) that best explains their movement of the ``rigid`` points: centring on the whole mesh would
    otherwise turn "the chin drops" into "the chin drops and the forehead rises"."""
    p = neutral[:, :2] - neutral[list(rigid), :2].mean(axis=0)

    def similarity(q: np.ndarray) -> np.ndarray:  # (2N)x4 design: displacement = t + a q + b perp(q)
        n = len(q)
        rows = np.zeros((2 * n, 4))
        rows[0::2, 0], rows[1::2, 1] = 1.0, 1.0
        rows[0::2, 2], rows[1::2, 2] = q[:, 0], q[:, 1]
        rows[0::2, 3], rows[1::2, 3] = -q[:, 1], q[:, 0]
        return rows

    design = similarity(p[list(rigid)])
    full = similarity(p)
    out = components.copy()
    for k, component in enumerate(components):
        params, *_ = np.linalg.lstsq(design, component[list(rigid), :2].reshape(-1), rcond=None)
        out[k, :, :2] -= (full @ params).reshape(-1, 2)
        out[k, :, 2] -= component[list(rigid), 2].mean()
    return out


def refine_components(
    components: np.ndarray, neutral: np.ndarray, symmetric: bool = True, rigid: tuple[int, ...] | None = RIGID_POINTS
) -> np.ndarray:
    """Regression components made bilateral (``symmetrise_components``) and anchored on ``rigid`` points."""
    if symmetric:
        components = symmetrise_components(components, mirror_permutation(neutral))
    if rigid is not None:
        components = anchor_components(components, neutral, rigid)
    return components


@dataclass(frozen=True)
class EmotionPrototypes:
    """What an AU plan aims at: ``targets[emotion][au]`` (intensity), ``raised[emotion]`` (the AUs the emotion
    may raise) and ``limits[au]`` (the highest intensity a plan may reach: the 99th percentile of FER2013 train
    faces, so that no plan asks for a face no one in the data made). Built by ``EmotionPrototypes.build``."""

    targets: dict[str, dict[str, float]]
    raised: dict[str, tuple[str, ...]]
    limits: dict[str, float]
    description: str = ""

    @classmethod
    def build(
        cls,
        emotion_means: Mapping[str, Mapping[str, float]],
        limits: Mapping[str, float],
        mode: PrototypeMode = "both",
        facs_floor: float = 2.0,
        margin: float = 0.15,
    ) -> EmotionPrototypes:
        """Prototypes from the per-emotion mean AU intensities of FER2013 train (``emotion_means``).

        ``mode``: ``"data"`` lets an emotion raise the AUs whose train mean exceeds the neutral faces' by
        ``margin``, aiming at that mean; ``"facs"`` lets it raise only its ``FACS_PROTOTYPES`` AUs, aiming at
        least at ``facs_floor`` (the geometric AUs of 48-pixel faces are weak, so the means alone are mild);
        ``"both"`` does both. The targets of the AUs an emotion does not raise are its train means, down to
        which a plan relaxes a conflicting AU (a smile when the target is sadness). The shipped prototypes use
        ``"both"``: on FER2013 validation faces it made edits our expression model reads as the target far more
        often than either alone (``scripts/fit_expression_edit.py``; the numbers are in the basis's card).
        """
        if mode not in get_args(PrototypeMode):
            raise ValueError(f"unknown prototype mode {mode!r}; expected one of {', '.join(get_args(PrototypeMode))}")
        missing = [e for e in CANONICAL_EMOTIONS if e not in emotion_means]
        if missing:
            raise ValueError(f"emotion means lack {missing}")
        neutral = emotion_means["neutral"]
        targets: dict[str, dict[str, float]] = {}
        raised: dict[str, tuple[str, ...]] = {}
        for emotion in CANONICAL_EMOTIONS:
            means = emotion_means[emotion]
            row = {au: float(means[au]) for au in AU_NAMES}
            up: set[str] = set()
            if emotion != "neutral" and mode in ("data", "both"):
                up |= {au for au in AU_NAMES if means[au] - neutral[au] >= margin}
            if mode in ("facs", "both"):
                for au in FACS_PROTOTYPES[emotion]:
                    row[au] = max(row[au], facs_floor)
                    up.add(au)
            targets[emotion] = row
            raised[emotion] = tuple(au for au in AU_NAMES if au in up)
        description = f"mode={mode}, facs_floor={facs_floor:g}, margin={margin:g}"
        return cls(targets, raised, {au: float(limits[au]) for au in AU_NAMES}, description)

    def with_targets(self, emotion: str, targets: Mapping[str, float]) -> EmotionPrototypes:
        """A copy with ``emotion`` aiming at ``targets``. An AU whose target is unchanged keeps its role (raised
        to the target, or relaxed down to it: ``plan_edit``'s rule); a changed one is raised when its new target
        is above the neutral prototype's, relaxed otherwise."""
        neutral, old = self.targets["neutral"], self.targets[emotion]
        raised = tuple(
            au
            for au in AU_NAMES
            if (targets[au] > neutral[au] + 1e-6 if abs(targets[au] - old[au]) > 1e-6 else au in self.raised[emotion])
        )
        return dataclasses.replace(
            self,
            targets={**self.targets, emotion: {au: float(targets[au]) for au in AU_NAMES}},
            raised={**self.raised, emotion: raised},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "targets": self.targets,
            "raised": {e: list(v) for e, v in self.raised.items()},
            "limits": self.limits,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmotionPrototypes:
        return cls(
            {e: {au: float(v) for au, v in row.items()} for e, row in data["targets"].items()},
            {e: tuple(v) for e, v in data["raised"].items()},
            {au: float(v) for au, v in data["limits"].items()},
            str(data.get("description", "")),
        )


@dataclass(frozen=True)
class AUBasis:
    """How each AU moves the normalised mesh, and the emotion prototypes AU plans aim at.

    ``components`` is 17x468x3 (normalised units per AU intensity step, ``AU_NAMES`` order; image-plane x, y
    and depth); ``neutral_shape`` 468x3 the shape with no AU and a frontal pose; ``default_strength`` the
    strength chosen on validation faces; ``card`` the fit's description (data, R^2, settings).
    """

    neutral_shape: np.ndarray
    components: np.ndarray
    prototypes: EmotionPrototypes | None = None
    default_strength: float = 1.0
    card: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.components.shape != (len(AU_NAMES), NUM_POINTS, 3):
            raise ValueError(f"components must be {len(AU_NAMES)}x{NUM_POINTS}x3, got {self.components.shape}")
        if self.neutral_shape.shape != (NUM_POINTS, 3):
            raise ValueError(f"neutral_shape must be {NUM_POINTS}x3, got {self.neutral_shape.shape}")

    @classmethod
    def fit(
        cls,
        points: np.ndarray,
        aus: np.ndarray,
        covariates: np.ndarray | None = None,
        ridge: float = 10.0,
        symmetric: bool = True,
        rigid: tuple[int, ...] | None = RIGID_POINTS,
    ) -> AUBasis:
        """Fit on Nx468x3 meshes (pixels) and their Nx17 AU intensities (``geometry.action_units``).

        ``covariates`` (NxC nuisance regressors, e.g. scaled head yaw and pitch) are regressed out and dropped,
        so a component is "this AU, everything else held fixed". ``symmetric`` averages each component with
        its mirror image; ``rigid`` anchors the components on points expressions do not move (None: neither).
        Prototypes come later (``replace``).
        """
        components, neutral, _ = regress_shapes(normalise_shapes(points), aus, covariates, ridge)
        return cls(neutral, refine_components(components, neutral, symmetric, rigid))

    def replace(self, **changes: Any) -> AUBasis:
        """A copy with some fields changed (``prototypes``, ``default_strength``, ``card``)."""
        return dataclasses.replace(self, **changes)

    def displacement3d(self, au_delta: Mapping[str, float] | np.ndarray) -> np.ndarray:
        """468x3 normalised displacement for an AU change (dict by AU name, or 17 values in ``AU_NAMES`` order)."""
        return np.tensordot(_au_vector(au_delta), self.components, axes=1)

    def displacement(self, au_delta: Mapping[str, float] | np.ndarray) -> np.ndarray:
        """468x2 normalised (upright, interocular units) image-plane displacement for an AU change."""
        return self.displacement3d(au_delta)[:, :2]

    def to_image(self, points: np.ndarray, displacement: np.ndarray) -> np.ndarray:
        """468x2 pixel positions: the face's ``points`` (468x3 pixels, or 468x2 when the depth is unknown)
        moved by a normalised ``displacement`` (rotated by the face's roll, scaled by its interocular
        distance)."""
        if points.shape[-1] == 2:
            points = np.concatenate([points, np.zeros((len(points), 1))], axis=1)
        return points[:, :2] + FaceFrame.from_points(points).to_image(displacement)

    def plan(self, current_aus: Mapping[str, float], target: str, strength: float | None = None) -> AUPlan:
        """``plan_edit`` with this basis's prototypes (and its default strength when ``strength`` is None)."""
        if self.prototypes is None:
            raise AffectLensError("this AU basis has no emotion prototypes: fit them before planning edits")
        strength = self.default_strength if strength is None else strength
        return plan_edit(current_aus, target, strength, prototypes=self.prototypes)

    def response(self, reference: Mapping[str, tuple[float, float]]) -> np.ndarray:
        """17x17: row k is how much each (signed) measured AU changes when one step of AU k's component is
        added to the neutral shape; the diagonal is each AU's gain (1 would be a perfectly faithful basis)."""
        base = signed_aus(self.neutral_shape[None] * 100.0, reference)[0]  # measures are scale-free
        return signed_aus((self.neutral_shape[None] + self.components) * 100.0, reference) - base

    def save(self, directory: str | Path, stem: str = "au-basis") -> tuple[Path, Path]:
        """Write ``<stem>.safetensors`` (neutral shape, components) and ``<stem>.json`` (card, prototypes)."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors_path, card_path = directory / f"{stem}.safetensors", directory / f"{stem}.json"
        save_file(
            {
                "neutral_shape": np.ascontiguousarray(self.neutral_shape, dtype=np.float32),
                "components": np.ascontiguousarray(self.components, dtype=np.float32),
            },
            str(tensors_path),
        )
        card = {
            **self.card,
            "au_names": list(AU_NAMES),
            "default_strength": self.default_strength,
            "prototypes": None if self.prototypes is None else self.prototypes.to_dict(),
        }
        card_path.write_text(json.dumps(card, indent=1) + "\n")
        return tensors_path, card_path

    @classmethod
    def load(cls, path: str | Path | None = None) -> AUBasis:
        """Load a basis: ``path`` (its ``.safetensors``, the ``.json`` card beside it) used as is, or the
        shipped ``expression-edit-basis`` and ``expression-edit-card`` through the weights lookup order."""
        from safetensors.numpy import load_file

        if path is None:
            tensors_path, card_path = weights.locate(BASIS_WEIGHT).path, weights.locate(CARD_WEIGHT).path
        else:
            tensors_path = Path(path)
            card_path = tensors_path.with_suffix(".json")
            for p in (tensors_path, card_path):
                if not p.is_file():
                    raise AffectLensError(f"{p}: expression-edit basis file missing")
        arrays = load_file(str(tensors_path))
        card = json.loads(card_path.read_text())
        if tuple(card.get("au_names", ())) != AU_NAMES:
            raise AffectLensError(f"{card_path}: the basis was fitted for other AUs {card.get('au_names')}")
        meta = {k: v for k, v in card.items() if k not in ("au_names", "default_strength", "prototypes")}
        prototypes = card.get("prototypes")
        return cls(
            arrays["neutral_shape"].astype(np.float64),
            arrays["components"].astype(np.float64),
            None if prototypes is None else EmotionPrototypes.from_dict(prototypes),
            float(card["default_strength"]),
            meta,
        )


@functools.cache
def shipped_basis() -> AUBasis:
    """The shipped basis (``AUBasis.load()``), loaded once."""
    return AUBasis.load()


# ---- the AU plan -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AUPlan:
    """An AU plan: the per-AU change (``delta``, intensity steps, only the AUs that move), the face's current
    and planned AUs, and one readable reason per moved AU, largest change first."""

    target: str
    strength: float
    delta: dict[str, float]
    current: dict[str, float]
    planned: dict[str, float]
    reasons: tuple[str, ...]

    @property
    def opens_mouth(self) -> bool:
        """Whether the plan parts the lips or drops the jaw (AU25, AU26)."""
        return self.delta.get("AU25", 0.0) > 0 or self.delta.get("AU26", 0.0) > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "strength": self.strength,
            "delta": self.delta,
            "current": self.current,
            "planned": self.planned,
            "reasons": list(self.reasons),
        }


def resolve_emotion(name: str) -> str:
    """The canonical emotion for a canonical or dataset name (``happy`` -> ``happiness``)."""
    return canonical_emotion(name, "target emotion")


def check_strength(strength: float) -> float:
    """``strength`` as a float, or ``AffectLensError`` when it is outside [0, 3]."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise AffectLensError(f"strength must be a number within [0, {MAX_STRENGTH:g}], got {strength!r}") from None
    if not np.isfinite(value) or not 0.0 <= value <= MAX_STRENGTH:
        raise AffectLensError(f"strength must be within [0, {MAX_STRENGTH:g}], got {strength}")
    return value


def plan_edit(
    current_aus: Mapping[str, float],
    target_emotion: str,
    strength: float = 1.0,
    *,
    prototypes: EmotionPrototypes | None = None,
    min_change: float = 0.05,
    held: Collection[str] = (),
) -> AUPlan:
    """The AU plan that takes a face from ``current_aus`` (intensities 0-5) to ``target_emotion``.

    Each AU the emotion raises goes up to the prototype's target (never down: a face already showing more
    keeps it); each other AU above the emotion's target is relaxed down to it (a smile does not survive an
    edit to sadness); nothing else moves, so the face keeps its own resting shape. Changes are scaled by
    ``strength``, planned intensities kept within 0 and the prototypes' ``limits`` (an AU already beyond its
    limit is not lowered for that), and changes under ``min_change`` dropped. ``prototypes`` defaults to the
    shipped basis's. The AUs in ``held`` never move (the talking head holds AU45: its blinks are drawn
    geometrically, and the fitted AU45 component moves the chin more than the lids).
    """
    emotion = resolve_emotion(target_emotion)
    strength = check_strength(strength)
    prototypes = prototypes or shipped_basis().prototypes
    if prototypes is None:
        raise AffectLensError("the AU basis has no emotion prototypes")
    unknown = sorted((set(current_aus) | set(held)) - set(AU_NAMES))
    if unknown:
        raise AffectLensError(f"unknown action units {unknown}; known: {', '.join(AU_NAMES)}")
    target, up = prototypes.targets[emotion], set(prototypes.raised[emotion])
    current = {au: float(current_aus.get(au, 0.0)) for au in AU_NAMES}
    delta: dict[str, float] = {}
    reasons: list[tuple[float, str]] = []
    for au in AU_NAMES:
        if au in held:
            continue
        gap = target[au] - current[au]
        change = max(gap, 0.0) if au in up else min(gap, 0.0)
        ceiling = max(prototypes.limits[au], current[au])
        planned = float(np.clip(current[au] + strength * change, 0.0, ceiling))
        change = planned - current[au]
        if abs(change) < min_change:
            continue
        delta[au] = round(change, 4)
        verb, why = ("raise", f"{emotion} raises it") if change > 0 else ("lower", f"{emotion} shows less of it")
        reasons.append((abs(change), f"{verb} {au} ({FACS_NAMES[au]}) {current[au]:.2f} -> {planned:.2f}: {why}"))
    reasons.sort(key=lambda r: -r[0])
    planned_all = {au: round(current[au] + delta.get(au, 0.0), 4) for au in AU_NAMES}
    text = tuple(r for _, r in reasons) or (f"no AU needs to move: the face already shows {emotion}'s AUs",)
    return AUPlan(emotion, strength, delta, current, planned_all, text)


# ---- the editor --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditResult:
    """An edited portrait: the RGB uint8 ``image`` (same size as the input), the ``plan``, the face's mesh
    before (``source_points``, 468x3 pixels) and after (``target_points``, 468x2 pixels), the face box (XYXY
    pixels) and, when the editor has an expression model, its ``reading`` of the edited face."""

    image: np.ndarray
    plan: AUPlan
    source_points: np.ndarray
    target_points: np.ndarray
    box: tuple[float, float, float, float]
    reading: EmotionPrediction | None = None

    def to_dict(self) -> dict[str, Any]:
        """Everything but the pixels and the meshes, JSON-ready."""
        return {
            "plan": self.plan.to_dict(),
            "box": list(self.box),
            "reading": None if self.reading is None else self.reading.to_dict(),
            "image_shape": list(self.image.shape),
        }


def check_image(image: np.ndarray) -> None:
    """Raise ``AffectLensError`` unless ``image`` is an RGB uint8 HxWx3 array with sides within [64, 4096]."""
    if not isinstance(image, np.ndarray):
        raise AffectLensError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise AffectLensError(f"image must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise AffectLensError(f"image must be HxWx3 RGB, got shape {image.shape}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise AffectLensError(f"image is {w}x{h}: too small to edit (each side must be at least {MIN_SIDE} px)")
    if max(h, w) > MAX_SIDE:
        raise AffectLensError(f"image is {w}x{h}: too large to edit (each side must be at most {MAX_SIDE} px)")


def fill_mouth(image: np.ndarray, source: np.ndarray, target: np.ndarray, darkness: float = 0.25) -> np.ndarray:
    """Darken the opening between the inner lips of the ``target`` mesh, where the warp stretched lip skin.

    The fill's opacity is the share of the opening the source did not have (``1 - source gap / target gap``,
    the gap between mesh points 13 and 14), so an already open mouth keeps most of its own interior; the colour
    is ``darkness`` times the mean colour under the opening, and the mask's edge is feathered."""
    gap_src = float(np.linalg.norm(source[13, :2] - source[14, :2]))
    gap_dst = float(np.linalg.norm(target[13, :2] - target[14, :2]))
    if gap_dst < 1.0 or gap_dst <= gap_src:
        return image
    opacity = float(np.clip(1.0 - gap_src / gap_dst, 0.0, 1.0))
    polygon = target[list(INNER_LIPS), :2]
    h, w = image.shape[:2]
    x0, y0 = np.maximum(np.floor(polygon.min(axis=0)).astype(int) - 3, 0)
    x1, y1 = np.minimum(np.ceil(polygon.max(axis=0)).astype(int) + 4, [w, h])
    if x1 <= x0 or y1 <= y0:
        return image
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    cv2.fillPoly(mask, [np.round((polygon - [x0, y0]) * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
    if not mask.any():
        return image
    patch = image[y0:y1, x0:x1].astype(np.float32)
    colour = patch[mask > 0.5].mean(axis=0) * darkness if (mask > 0.5).any() else patch.mean(axis=(0, 1)) * darkness
    feather = 2 * max(1, round(gap_dst / 6)) + 1
    alpha = (cv2.GaussianBlur(mask, (feather, feather), 0) * opacity)[..., None]
    out = image.copy()
    out[y0:y1, x0:x1] = np.round(patch * (1 - alpha) + colour * alpha).astype(np.uint8)
    return out


def apply_plan(
    image: np.ndarray,
    points: np.ndarray,
    plan: AUPlan,
    basis: AUBasis,
    warper: MeshWarper | None = None,
    mouth_fill: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(edited image, 468x2 destination points): the face whose mesh is ``points`` (468x3 pixels) moved by
    ``plan`` through ``basis``. ``warper`` reuses a triangulation built on these points (the talking head
    builds one per portrait and calls this once per frame)."""
    dst = basis.to_image(points, basis.displacement(plan.delta))
    warper = warper or MeshWarper(points[:, :2], image.shape[:2])
    edited = warper.warp(image, dst)
    if mouth_fill and plan.opens_mouth:
        edited = fill_mouth(edited, points, dst)
    return edited, dst


class ExpressionEditor:
    """Edit a portrait's expression: ``edit(image, "happiness")`` -> ``EditResult``.

    Wires injected parts: ``basis`` (``AUBasis`` with prototypes), ``pipeline`` (a ``FacePipeline`` with a
    landmarker: finds the face and its mesh), ``geometry`` (``FaceGeometry``: the face's current AUs) and,
    optionally, ``expression`` (reads the edited face) and ``texture`` (``generation.texture``: the target
    emotion's shading, multiplied in before the warp). ``build_expression_editor`` assembles the defaults.
    """

    def __init__(
        self,
        basis: AUBasis,
        pipeline: FacePipeline,
        geometry: FaceGeometry,
        expression: ExpressionModel | None = None,
        mouth_fill: bool = True,
        texture: ExpressionTexture | None = None,
    ) -> None:
        if pipeline.landmarker is None:
            raise ValueError("expression editing needs a face pipeline with a landmarker (the 468-point mesh)")
        if basis.prototypes is None:
            raise ValueError("expression editing needs an AU basis with emotion prototypes")
        self.basis = basis
        self.pipeline = pipeline
        self.geometry = geometry
        self.expression = expression
        self.mouth_fill = mouth_fill
        self.texture = texture

    def locate(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(468x3 mesh, XYXY box) of the one face in ``image``; ``AffectLensError`` for none or several."""
        check_image(image)
        faces = [f for f in self.pipeline.locate(image) if f.points is not None]
        if not faces:
            raise AffectLensError("no face found in the image: expression editing needs exactly one face")
        if len(faces) > 1:
            raise AffectLensError(f"{len(faces)} faces found in the image: expression editing needs exactly one")
        points = faces[0].points
        assert points is not None
        return points, faces[0].box

    def edit(self, image: np.ndarray, target: str, strength: float | None = None) -> EditResult:
        """``image`` (RGB uint8 HxWx3 with one face) re-rendered with the ``target`` emotion; ``strength``
        within [0, 3] scales the AU plan (None: the basis's default, chosen on validation faces)."""
        emotion = resolve_emotion(target)
        strength = check_strength(self.basis.default_strength if strength is None else strength)
        points, box = self.locate(image)
        return self.edit_face(image, points, emotion, strength, box=box)

    def edit_face(
        self,
        image: np.ndarray,
        points: np.ndarray,
        target: str,
        strength: float | None = None,
        box: np.ndarray | None = None,
        warper: MeshWarper | None = None,
    ) -> EditResult:
        """Edit a face whose mesh (468x3 pixels) is already known (followed through a video, say); ``box``
        (XYXY) frames the expression model's crop, the mesh's box when None."""
        from perception.face.pipeline import mesh_box

        check_image(image)
        plan = self.basis.plan(self.geometry(points[None])[0].aus, target, strength)
        if self.texture is not None and plan.target != "neutral":
            # The emotion's shading, at the gain chosen on validation faces for the default strength.
            gain = float(self.texture.card.get("gain", 1.0)) * plan.strength / self.basis.default_strength
            image = self.texture.for_face(points, image.shape[:2]).shade(image, {plan.target: gain})
        edited, dst = apply_plan(image, points, plan, self.basis, warper, self.mouth_fill)
        box = mesh_box(points) if box is None else np.asarray(box, np.float32)
        reading = None
        if self.expression is not None:
            probs = self.expression.predict_batch(self.expression.preprocess(edited, box)[None])[0]
            reading = EmotionPrediction.from_vector(probs, self.expression.name)
        logger.debug("edit to %s: %s", plan.target, "; ".join(plan.reasons))
        return EditResult(
            edited, plan, points, dst, (float(box[0]), float(box[1]), float(box[2]), float(box[3])), reading
        )


def build_expression_editor(
    basis_path: str | Path | None = None, expression: str | None = None, judge: bool = True, texture: bool = False
) -> ExpressionEditor:
    """The default editor: CenterFace (Haar fallback) + the MediaPipe mesh + the mesh geometry + the shipped
    basis (or ``basis_path``); with ``texture``, the shipped expression shading too (off by default: it doubles
    how often our FER2013-trained model reads the target on FER2013 faces, 18% -> 37%, but it is learned from
    48x48 grey faces and shows as blotches on colour photos); with ``judge``, the registry's expression model
    (or ``expression``) reads the edited face."""
    from affectlens.registry import create_face_detector, create_face_expression, create_face_landmarker
    from generation.texture import ExpressionTexture
    from perception.face.geometry import FaceGeometry
    from perception.face.pipeline import FacePipeline

    model = create_face_expression(expression)
    pipeline = FacePipeline(
        detector=create_face_detector("centerface"),
        expression=model,
        landmarker=create_face_landmarker("mediapipe-facemesh"),
        fallback=create_face_detector("haar"),
    )
    shading = ExpressionTexture.load() if texture else None
    return ExpressionEditor(
        AUBasis.load(basis_path), pipeline, FaceGeometry(), model if judge else None, texture=shading
    )
