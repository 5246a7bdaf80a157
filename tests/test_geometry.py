"""Mesh geometry: head pose recovers known rotations; AUs follow their measures; the reference loads."""

from __future__ import annotations

import numpy as np
import pytest

from perception.face import geometry

pytestmark = pytest.mark.weights


@pytest.fixture(scope="module")
def mesh(analyzer, portrait: np.ndarray) -> np.ndarray:
    face = analyzer.analyze(portrait).faces[0]
    assert face.landmarks is not None
    return face.landmarks[None].astype(np.float64)


def _rotate(points: np.ndarray, yaw: float = 0, pitch: float = 0, roll: float = 0) -> np.ndarray:
    centre = points[0].mean(0)
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return ((rz @ rx @ ry @ (points[0] - centre).T).T + centre)[None]


@pytest.mark.parametrize(("yaw", "pitch", "roll"), [(20, 0, 0), (-35, 0, 0), (0, 15, 0), (0, -10, 0), (0, 0, 12)])
def test_head_pose_recovers_a_known_rotation(mesh: np.ndarray, yaw: float, pitch: float, roll: float) -> None:
    base = geometry.head_pose(mesh)[0]
    turned = geometry.head_pose(_rotate(mesh, yaw, pitch, roll))[0]
    # The portrait is not exactly frontal, so large turns leak a few degrees into the other angles.
    assert np.allclose(turned - base, [yaw, pitch, roll], atol=3.5), turned - base


def test_measures_do_not_depend_on_face_size(mesh: np.ndarray) -> None:
    small = mesh.copy()
    small[..., :] *= 0.25
    a, b = geometry.geometric_measures(mesh), geometry.geometric_measures(small)
    for name in a:
        assert a[name] == pytest.approx(b[name], rel=1e-6, abs=1e-9), name


def test_opening_the_jaw_raises_au25_and_au26(mesh: np.ndarray) -> None:
    shape = geometry.FaceGeometry()
    opened = mesh.copy()
    lower = [geometry.LIP_INNER_BOTTOM, geometry.LIP_BOTTOM, geometry.CHIN]
    opened[0, lower, 1] += 0.15 * geometry.interocular(mesh)[0]
    before, after = shape(mesh)[0].aus, shape(opened)[0].aus
    assert before["AU25"] < 5.0 and after["AU25"] == after["AU26"] == 5.0  # her smile already parts the lips
    for measure in ("jaw_drop", "lip_gap"):
        moved = geometry.geometric_measures(opened)[measure] - geometry.geometric_measures(mesh)[measure]
        assert moved[0] == pytest.approx(0.15, abs=0.02), measure  # in interocular units, as displaced
    assert after["AU12"] <= before["AU12"] + 1e-6  # the lip corners did not move up


def test_closed_eyes_read_as_a_blink(mesh: np.ndarray) -> None:
    shape = geometry.FaceGeometry()
    closed = mesh.copy()
    for top, bottom in ((geometry.EYE_TOP_A, geometry.EYE_BOTTOM_A), (geometry.EYE_TOP_B, geometry.EYE_BOTTOM_B)):
        closed[0, top, :2] = closed[0, bottom, :2]
    result = shape(closed)[0]
    assert max(result.eye_openness) < 0.05 and result.aus["AU45"] >= 4.0


def test_au_table_is_complete() -> None:
    assert len(geometry.AU_NAMES) == 17 and set(geometry.AU_MEASURES) == set(geometry.AU_NAMES)
    reference = geometry.FaceGeometry().reference
    assert {m for m, _ in geometry.AU_MEASURES.values()} <= set(reference)
    assert all(std > 0 for _, std in reference.values())


def _shift_irises(image: np.ndarray, irises: tuple[tuple[float, float], ...], dx: int) -> np.ndarray:
    """Move a small disc around each iris centre ``dx`` pixels sideways (the eyes look elsewhere)."""
    out = image.copy()
    for x, y in irises:
        x, y, r = round(x), round(y), 4
        patch = image[y - r : y + r + 1, x - r : x + r + 1].copy()
        out[y - r : y + r + 1, x - r + dx : x + r + 1 + dx] = patch
    return out


def test_gaze_follows_the_irises(analyzer, portrait: np.ndarray) -> None:
    from perception.face.gaze import IrisGaze

    face = analyzer.analyze(portrait).faces[0]
    assert face.gaze is not None and abs(face.gaze.yaw) < 10 and abs(face.gaze.pitch) < 10  # she looks at us
    gaze = IrisGaze()
    straight = gaze(portrait, face.landmarks)
    right = gaze(_shift_irises(portrait, straight.irises, +3), face.landmarks)
    left = gaze(_shift_irises(portrait, straight.irises, -3), face.landmarks)
    assert right.yaw > straight.yaw + 5 and left.yaw < straight.yaw - 5, (left.yaw, straight.yaw, right.yaw)
