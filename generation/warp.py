"""Piecewise affine image warping on a face mesh: move the pixels at control points to new places.

The control points (the 468 mesh points of a face, x/y pixels) are triangulated once, with fixed anchors: a
ring of points around the face's convex hull (the hull pushed out from its centre by ``ring_scale``), the image
corners and the edge midpoints. Anchors never move, so everything outside the ring stays exactly as it was
(background, hair, shoulders) and the warp fades out between the face and the ring. For every pixel of the
destination, the triangle of the *moved* mesh that holds it gives an affine map back to the source triangle
(barycentric coordinates); ``cv2.remap`` then samples the source image there (bilinear, replicated border).

Only the ring's bounding box is recomputed, so the cost depends on the face's size, not the frame's:
``MeshWarper`` keeps the triangulation and the pixel grid, because the talking head warps the same portrait
many times per second (one ``warp`` per frame).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from scipy.spatial import ConvexHull, Delaunay

logger = logging.getLogger(__name__)

_SHIFT = 4  # fractional bits of the triangle rasteriser (1/16 pixel)
_MIN_AREA = 1e-6  # destination triangles smaller than this (pixels squared) are skipped as degenerate


def face_ring(points: np.ndarray, scale: float = 1.35, count: int = 40) -> np.ndarray:
    """``count`` x 2 points evenly spaced along the convex hull of ``points`` (Nx2), pushed out from the hull's
    centre by ``scale``: the fixed boundary of the warped region."""
    hull = points[ConvexHull(points).vertices]
    centre = hull.mean(axis=0)
    polygon = centre + scale * (hull - centre)
    closed = np.concatenate([polygon, polygon[:1]])
    lengths = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    along = np.concatenate([[0.0], np.cumsum(lengths)])
    stops = np.linspace(0.0, along[-1], count, endpoint=False)
    return np.stack([np.interp(stops, along, closed[:, 0]), np.interp(stops, along, closed[:, 1])], axis=1)


class MeshWarper:
    """A triangulation of a face's control points built once; ``warp`` moves them to new positions.

    ``src`` is Nx2 (or Nx3; z is ignored) pixels in an image of ``image_shape`` (height, width).
    ``ring_scale`` sets how far around the face the warp reaches (1.35: a third of the face's half-size beyond
    its hull); pixels outside that ring are never touched.
    """

    def __init__(
        self, src: np.ndarray, image_shape: tuple[int, int], ring_scale: float = 1.35, ring_count: int = 40
    ) -> None:
        src = np.asarray(src, dtype=np.float64)
        if src.ndim != 2 or src.shape[1] not in (2, 3) or len(src) < 3:
            raise ValueError(f"control points must be Nx2 (N >= 3), got shape {src.shape}")
        if not np.isfinite(src).all():
            raise ValueError("control points contain NaN or infinite values")
        if ring_scale <= 1.0:
            raise ValueError(f"ring_scale must be > 1 (the ring lies outside the face), got {ring_scale}")
        height, width = int(image_shape[0]), int(image_shape[1])
        self.image_shape = (height, width)
        self.src = src[:, :2].copy()
        self.num_controls = len(src)
        ring = face_ring(self.src, ring_scale, ring_count)
        right, bottom = width - 1.0, height - 1.0
        frame = np.array(
            [
                [0, 0],
                [right / 2, 0],
                [right, 0],
                [right, bottom / 2],
                [right, bottom],
                [right / 2, bottom],
                [0, bottom],
                [0, bottom / 2],
            ]
        )
        # A frame anchor inside the ring (a face touching the image border) would pin the warp there and tear it.
        contour = ring.astype(np.float32).reshape(-1, 1, 2)
        outside = [cv2.pointPolygonTest(contour, (float(x), float(y)), False) < 0 for x, y in frame]
        self.anchors = np.concatenate([ring, frame[outside]])
        self._src_all = np.concatenate([self.src, self.anchors])
        # "QJ" joggles the input so that every point, even one lying on a neighbour's edge, is a vertex.
        simplices = Delaunay(self._src_all, qhull_options="QJ").simplices
        # Triangles made of anchors only map onto themselves: leaving them out keeps their pixels untouched.
        self.triangles = simplices[(simplices < self.num_controls).any(axis=1)].astype(np.int64)
        x0, y0 = np.floor(ring.min(axis=0)).astype(int)
        x1, y1 = np.ceil(ring.max(axis=0)).astype(int) + 1
        self.region = (max(x0, 0), max(y0, 0), min(x1, width), min(y1, height))  # x0, y0, x1, y1 (exclusive)
        rx0, ry0, rx1, ry1 = self.region
        self._xs, self._ys = np.meshgrid(
            np.arange(rx0, rx1, dtype=np.float32), np.arange(ry0, ry1, dtype=np.float32), indexing="xy"
        )
        logger.debug("mesh warper: %d triangles, region %s", len(self.triangles), self.region)

    def inverse_maps(self, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source x and y (float32, the region's shape) for every destination pixel of the region."""
        dst = np.asarray(dst, dtype=np.float64)
        if dst.shape[0] != self.num_controls or dst.ndim != 2 or dst.shape[1] not in (2, 3):
            raise ValueError(f"destination points must be {self.num_controls}x2, got shape {dst.shape}")
        if not np.isfinite(dst).all():
            raise ValueError("destination points contain NaN or infinite values")
        dst_all = np.concatenate([dst[:, :2], self.anchors])
        d = dst_all[self.triangles]  # Mx3x2 destination triangles
        s = self._src_all[self.triangles]  # Mx3x2 source triangles
        ones = np.ones((len(d), 3, 1))
        dh = np.concatenate([d, ones], axis=2)  # rows (x, y, 1) of the destination triangle
        det = np.linalg.det(dh)
        ok = np.abs(det) > 2 * _MIN_AREA
        # affine[k] (3x2) solves dh[k] @ affine[k] = s[k]: destination (x, y, 1) -> source (x, y).
        affine = np.zeros((len(d), 3, 2))
        affine[ok] = np.linalg.solve(dh[ok], s[ok])
        rx0, ry0, rx1, ry1 = self.region
        ids = np.full((ry1 - ry0, rx1 - rx0), -1, dtype=np.int32)
        fixed = np.round((d - np.array([rx0, ry0])) * (1 << _SHIFT)).astype(np.int32)
        for k in np.flatnonzero(ok).tolist():
            cv2.fillConvexPoly(ids, fixed[k], k, lineType=cv2.LINE_8, shift=_SHIFT)
        map_x, map_y = self._xs.copy(), self._ys.copy()
        inside = ids >= 0
        tri = ids[inside]
        x, y = self._xs[inside], self._ys[inside]
        a = affine.astype(np.float32)
        map_x[inside] = a[tri, 0, 0] * x + a[tri, 1, 0] * y + a[tri, 2, 0]
        map_y[inside] = a[tri, 0, 1] * x + a[tri, 1, 1] * y + a[tri, 2, 1]
        return map_x, map_y

    def warp(self, image: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """``image`` (HxW or HxWxC, the shape given at construction) with the control points moved to ``dst``
        (Nx2 pixels); a new array of the same shape and dtype."""
        if image.shape[:2] != self.image_shape:
            raise ValueError(f"image is {image.shape[:2]}, the warper was built for {self.image_shape}")
        map_x, map_y = self.inverse_maps(dst)
        rx0, ry0, rx1, ry1 = self.region
        out = image.copy()
        if rx1 > rx0 and ry1 > ry0:
            out[ry0:ry1, rx0:rx1] = cv2.remap(
                image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            ).reshape(out[ry0:ry1, rx0:rx1].shape)
        return out


def piecewise_affine_warp(image: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Move the pixels at ``src`` (Nx2 pixels) to ``dst`` (Nx2), keeping everything outside a ring around the
    points unchanged (see ``MeshWarper``; build one directly to warp the same face many times)."""
    return MeshWarper(src, image.shape[:2]).warp(image, dst)
