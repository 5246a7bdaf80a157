"""Expression ratio images: the shading an emotion adds to a face, carried over onto a portrait.

Moving the mesh (``generation.edit``) changes a face's *shape*; an expression also changes its *shading*:
furrows between lowered brows, the deepened nasolabial folds and raised cheeks of a smile, the wrinkled nose
of disgust. Liu, Shan & Zhang ("Expressive expression mapping with ratio images", SIGGRAPH 2001) carry those
over as a ratio image: expressive face / neutral face, aligned point for point, multiplied onto another face.

Here the ratio images are *learned from data*: every FER2013 train face is warped into one canonical frame by
its 468-point mesh (``CanonicalFrame``; piecewise affine, so eyes, brows and mouth line up whatever the face's
shape), its brightness normalised, and the log intensities averaged per emotion; an emotion's log ratio is its
mean minus the neutral mean (``ExpressionTexture.fit``). Identity and lighting average out over thousands of
faces; what is left is what the emotion does to the skin (low frequencies only: 48x48 faces carry no pores).

On a portrait, ``ExpressionTexture.for_face`` maps the log ratios from the canonical frame onto the face's
own (source) mesh once; ``shade`` then multiplies the weighted ratio into the portrait before the mesh warp,
so the shading moves with the features it belongs to. Outside the face's mesh the ratio is 1 (a feathered
edge), so background, hair and shoulders are untouched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
from scipy.spatial import Delaunay

from affectlens import weights
from affectlens.errors import AffectLensError
from affectlens.labels import CANONICAL_EMOTIONS

logger = logging.getLogger(__name__)

SIZE: Final[int] = 96  # side of the canonical frame, pixels
TEXTURE_WEIGHT = "expression-texture"
CARD_WEIGHT = "expression-texture-card"
#: Outer lip contour and lower jaw of the MediaPipe mesh: the mouth-and-chin region ``for_face`` can leave out.
#: There FER2013's open mouths put their dark interior below the mesh's lips (the mesh lags a dropped jaw), so
#: a renderer that draws its own mouth (the talking head's lip sync) should not take that shading.
MOUTH_JAW: Final[tuple[int, ...]] = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
    152, 148, 176, 149, 150, 377, 400, 378, 379,
)  # fmt: skip
#: Largest absolute log shading ``FaceTexture.shade`` applies (a factor of 1.8 at most; chosen on FER2013 validation faces with
#: ``scripts/judge_talking_head.py --split val``, where 0.9 gave the same agreement): beyond it, ratios learned
#: on 48x48 grey faces turn into glare or blotches on a photo.
MAX_SHADE: Final[float] = 0.6
#: Largest absolute log ratio kept (a factor of e^0.6 = 1.8 brighter or darker at most).
MAX_LOG_RATIO: Final[float] = 0.6


def _affines(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per triangle (Mx3x2 ``src`` and ``dst`` corners), the 3x2 affine taking dst (x, y, 1) to src (x, y),
    and which triangles are not degenerate."""
    dh = np.concatenate([dst, np.ones((len(dst), 3, 1))], axis=2)
    ok = np.abs(np.linalg.det(dh)) > 1e-6
    affine = np.zeros((len(dst), 3, 2))
    affine[ok] = np.linalg.solve(dh[ok], src[ok])
    return affine, ok


def _rasterise(corners: np.ndarray, ok: np.ndarray, shape: tuple[int, int], origin: np.ndarray) -> np.ndarray:
    """Triangle id per pixel of a ``shape`` (h, w) grid whose top-left pixel is ``origin`` (x, y); -1 outside."""
    ids = np.full(shape, -1, dtype=np.int32)
    fixed = np.round((corners - origin) * 16).astype(np.int32)
    for k in np.flatnonzero(ok).tolist():
        cv2.fillConvexPoly(ids, fixed[k], k, lineType=cv2.LINE_8, shift=4)
    return ids


def _maps(ids: np.ndarray, affine: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sampling maps (x, y) for ``cv2.remap`` from triangle ids and affines, and the inside mask."""
    h, w = ids.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs += float(origin[0])
    ys += float(origin[1])
    inside = ids >= 0
    map_x = np.full((h, w), -1.0, np.float32)
    map_y = np.full((h, w), -1.0, np.float32)
    a = affine.astype(np.float32)[ids[inside]]
    x, y = xs[inside], ys[inside]
    map_x[inside] = a[:, 0, 0] * x + a[:, 1, 0] * y + a[:, 2, 0]
    map_y[inside] = a[:, 0, 1] * x + a[:, 1, 1] * y + a[:, 2, 1]
    return map_x, map_y, inside


@dataclass(frozen=True)
class CanonicalFrame:
    """The canonical face frame: 468 mesh points (pixels of a ``SIZE`` x ``SIZE`` image) and their
    triangulation; ``sample`` warps any face into it by its mesh."""

    points: np.ndarray  # 468x2
    triangles: np.ndarray  # Mx3 indices into points
    ids: np.ndarray = field(repr=False)  # SIZExSIZE triangle id per canonical pixel (-1: outside the face)

    @classmethod
    def from_shape(cls, shape: np.ndarray, size: int = SIZE, margin: float = 0.06) -> CanonicalFrame:
        """The frame for a normalised shape (468x2 or 468x3, e.g. ``AUBasis.neutral_shape``), scaled to fill
        a ``size`` square with ``margin`` (a share of the side) on each side."""
        xy = np.asarray(shape, np.float64)[:, :2]
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        scale = size * (1 - 2 * margin) / float((hi - lo).max())
        points = (xy - (lo + hi) / 2) * scale + size / 2
        triangles = Delaunay(points).simplices.astype(np.int64)
        ids = _rasterise(points[triangles], np.ones(len(triangles), bool), (size, size), np.zeros(2))
        return cls(points, triangles, ids)

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])

    @property
    def mask(self) -> np.ndarray:
        """SIZExSIZE bool: canonical pixels inside the face's mesh."""
        return self.ids >= 0

    def sample(self, image: np.ndarray, points: np.ndarray) -> np.ndarray:
        """``image`` (HxW or HxWxC) warped into the canonical frame by the face's mesh ``points`` (468x2+,
        pixels); float32, 0 outside the mesh."""
        affine, _ = _affines(points[:, :2][self.triangles].astype(np.float64), self.points[self.triangles])
        map_x, map_y, inside = _maps(self.ids, affine, np.zeros(2))
        out = cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[~inside] = 0.0
        return out

    def to_face(self, points: np.ndarray, image_shape: tuple[int, int]) -> FaceMaps:
        """Maps that carry canonical images onto the face with mesh ``points`` in an image of ``image_shape``."""
        dst = points[:, :2].astype(np.float64)
        h, w = image_shape
        x0, y0 = np.maximum(np.floor(dst.min(axis=0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(dst.max(axis=0)).astype(int) + 3, [w, h])
        if x1 <= x0 or y1 <= y0:
            raise AffectLensError("the face's mesh lies outside the image")
        origin = np.array([x0, y0], np.float64)
        affine, ok = _affines(self.points[self.triangles], dst[self.triangles])
        ids = _rasterise(dst[self.triangles], ok, (int(y1 - y0), int(x1 - x0)), origin)
        map_x, map_y, inside = _maps(ids, affine, origin)
        return FaceMaps((int(x0), int(y0), int(x1), int(y1)), map_x, map_y, inside)


@dataclass(frozen=True)
class FaceMaps:
    """Where the canonical frame lands on one face: the region (x0, y0, x1, y1) and remap maps for it."""

    region: tuple[int, int, int, int]
    map_x: np.ndarray
    map_y: np.ndarray
    inside: np.ndarray

    def carry(self, canonical: np.ndarray, feather: float = 0.0) -> np.ndarray:
        """A canonical image (SxS or SxSxC, 0 outside the face) sampled onto the region; 0 outside the mesh.
        ``feather`` > 0 blurs the edge by that many pixels so it fades out instead of stepping."""
        out = cv2.remap(canonical.astype(np.float32), self.map_x, self.map_y, cv2.INTER_LINEAR)
        out[~self.inside] = 0.0
        if feather > 0:
            k = 2 * max(1, round(feather)) + 1
            out = cv2.GaussianBlur(out, (k, k), 0)
        return out


@dataclass(frozen=True)
class ExpressionTexture:
    """Per-emotion log ratio images in a canonical frame (``CanonicalFrame``), learned from FER2013 train.

    ``log_ratio[e]`` (SIZExSIZE float32) is emotion e's mean log intensity minus the neutral mean; neutral's is
    0. ``card`` describes the fit (data, counts)."""

    frame: CanonicalFrame
    log_ratio: dict[str, np.ndarray]
    card: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        frame: CanonicalFrame,
        images: np.ndarray,
        points: np.ndarray,
        labels: list[str] | np.ndarray,
        smooth: float = 1.0,
    ) -> ExpressionTexture:
        """Fit on grey faces (NxHxW uint8), their meshes (Nx468x2+ pixels of those images, at the images'
        scale) and emotion labels; each face's brightness is normalised to the mean of its canonical mask, so
        lighting does not leak into the ratios. ``smooth``: Gaussian sigma (canonical pixels) of the result."""
        mask = frame.mask
        sums = {e: np.zeros(mask.shape, np.float64) for e in CANONICAL_EMOTIONS}
        counts = dict.fromkeys(CANONICAL_EMOTIONS, 0)
        for grey, pts, label in zip(images, points, labels, strict=True):
            if label not in sums or not np.isfinite(pts).all():
                continue
            canonical = frame.sample(grey, pts)
            level = float(canonical[mask].mean())
            if level < 8.0:  # a black or failed crop
                continue
            sums[label] += np.log((canonical + 4.0) / (level + 4.0))
            counts[label] += 1
        if counts["neutral"] == 0:
            raise AffectLensError("fitting expression textures needs neutral faces")
        neutral = sums["neutral"] / counts["neutral"]
        log_ratio: dict[str, np.ndarray] = {}
        for e in CANONICAL_EMOTIONS:
            if counts[e] == 0:
                continue
            diff = np.where(mask, sums[e] / counts[e] - neutral, 0.0)
            if smooth > 0:
                diff = cv2.GaussianBlur(diff, (0, 0), smooth) * mask
            log_ratio[e] = np.clip(diff, -MAX_LOG_RATIO, MAX_LOG_RATIO).astype(np.float32)
        card = {"faces_per_emotion": counts, "size": frame.size, "smooth": smooth}
        return cls(frame, log_ratio, card)

    def log_ratio_of(self, emotions: Mapping[str, float]) -> np.ndarray:
        """The weighted sum of the emotions' log ratios (weights may exceed 1 to exaggerate)."""
        total = np.zeros(self.frame.ids.shape, np.float32)
        for emotion, weight in emotions.items():
            if weight and emotion in self.log_ratio:
                total += np.float32(weight) * self.log_ratio[emotion]
        return total

    def mouth_mask(self) -> np.ndarray:
        """SIZExSIZE float32: 1 on the canonical mouth-and-chin region (``MOUTH_JAW``'s hull), fading to 0
        over a few pixels around it."""
        mask = np.zeros(self.frame.ids.shape, np.float32)
        hull = cv2.convexHull(np.round(self.frame.points[list(MOUTH_JAW)] * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1.0, cv2.LINE_AA, shift=4)
        return cv2.GaussianBlur(cv2.dilate(mask, np.ones((5, 5), np.uint8)), (0, 0), 2.0)

    def for_face(
        self, points: np.ndarray, image_shape: tuple[int, int], mouth: bool = True, soften: float = 0.0
    ) -> FaceTexture:
        """This texture carried onto one face (mesh ``points``, pixels): ready to ``shade`` many frames.
        ``mouth=False`` leaves the mouth-and-chin region unshaded (``MOUTH_JAW``); ``soften`` > 0 blurs the
        shading by that many interocular distances (sigma)."""
        maps = self.frame.to_face(points, image_shape)
        interocular = float(np.linalg.norm(points[33, :2] - points[263, :2]))
        feather = max(1.0, interocular / 25)
        keep = 1.0 if mouth else 1.0 - self.mouth_mask()
        carried = {e: maps.carry(r * keep, feather) for e, r in self.log_ratio.items() if np.any(r)}
        if soften > 0:  # broad shading: a photo's own folds never line up exactly with the learned ones
            sigma = soften * interocular
            carried = {e: cv2.GaussianBlur(r, (0, 0), sigma) for e, r in carried.items()}
        return FaceTexture(maps.region, carried)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (safetensors: the canonical points, triangles and log ratios) and its ``.json`` card."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, np.ndarray] = {
            "points": self.frame.points.astype(np.float32),
            "triangles": self.frame.triangles.astype(np.int32),
            **{f"log_ratio.{e}": r.astype(np.float16) for e, r in self.log_ratio.items()},
        }
        save_file(tensors, str(path))
        path.with_suffix(".json").write_text(json.dumps(self.card, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path | None = None) -> ExpressionTexture:
        """Load ``path`` (its ``.json`` card beside it, when present) or the shipped ``expression-texture`` and
        its card through the weights lookup order."""
        from safetensors.numpy import load_file

        if path is None:
            path, card_path = weights.locate(TEXTURE_WEIGHT).path, weights.locate(CARD_WEIGHT).path
        else:
            path = Path(path)
            card_path = path.with_suffix(".json")
        if not path.is_file():
            raise AffectLensError(f"{path}: expression texture file missing")
        arrays = load_file(str(path))
        points = arrays["points"].astype(np.float64)
        triangles = arrays["triangles"].astype(np.int64)
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        size = int(card.get("size", SIZE))
        ids = _rasterise(points[triangles], np.ones(len(triangles), bool), (size, size), np.zeros(2))
        ratios = {k.split(".", 1)[1]: v.astype(np.float32) for k, v in arrays.items() if k.startswith("log_ratio.")}
        return cls(CanonicalFrame(points, triangles, ids), ratios, card)


@dataclass(frozen=True)
class FaceTexture:
    """An ``ExpressionTexture`` carried onto one face: log ratios over the face's region (x0, y0, x1, y1)."""

    region: tuple[int, int, int, int]
    log_ratio: dict[str, np.ndarray]

    def log_shading(self, emotions: Mapping[str, float]) -> np.ndarray | None:
        """The summed log shading over ``region`` before the clip (None: no weight on any emotion here)."""
        total: np.ndarray | None = None
        for emotion, weight in emotions.items():
            ratio = self.log_ratio.get(emotion)
            if ratio is None or not weight:
                continue
            total = ratio * np.float32(weight) if total is None else total + ratio * np.float32(weight)
        return total

    def saturated_share(self, emotions: Mapping[str, float]) -> float:
        """Share of the shaded pixels (where any of the emotions' ratios is non-zero) whose summed log shading
        reaches the clip, ``MAX_SHADE``: how much of the face the shading would flatten into glare or blotches."""
        total = self.log_shading(emotions)
        if total is None:
            return 0.0
        shaded = np.zeros(total.shape, bool)
        for emotion, weight in emotions.items():
            if weight and emotion in self.log_ratio:
                shaded |= np.abs(self.log_ratio[emotion]) > 1e-4
        return float((np.abs(total[shaded]) >= MAX_SHADE).mean()) if shaded.any() else 0.0

    def shade(self, image: np.ndarray, emotions: Mapping[str, float]) -> np.ndarray:
        """``image`` (RGB uint8, the face's image) with the emotions' shading multiplied in (weights: how
        much of each emotion's ratio; 0 everywhere returns the image unchanged); the summed log shading is
        clipped to +-``MAX_SHADE``."""
        total = self.log_shading(emotions)
        if total is None:
            return image
        x0, y0, x1, y1 = self.region
        out = image.copy()
        patch = out[y0:y1, x0:x1].astype(np.float32) * np.exp(np.clip(total, -MAX_SHADE, MAX_SHADE))[..., None]
        out[y0:y1, x0:x1] = np.clip(np.round(patch), 0, 255).astype(np.uint8)
        return out
