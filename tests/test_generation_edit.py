"""Expression editing: the piecewise affine warp, the AU basis, the AU plan and the editor on a real portrait."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from affectlens.errors import AffectLensError
from generation.edit import (
    AU_NAMES,
    INNER_LIPS,
    MIDLINE_POINTS,
    AUBasis,
    EmotionPrototypes,
    anchor_components,
    fill_mouth,
    mirror_permutation,
    plan_edit,
)
from generation.warp import MeshWarper, face_ring, piecewise_affine_warp

REPO = Path(__file__).resolve().parents[1]
BASIS = REPO / "weights" / "expression-edit" / "au-basis.safetensors"


def _pattern(size: int = 256) -> np.ndarray:
    """A checkerboard with a colour gradient: every pixel differs from its neighbours."""
    yy, xx = np.mgrid[:size, :size]
    board = ((yy // 8 + xx // 8) % 2).astype(np.uint8) * 120
    return np.stack([board + xx % 100, board + yy % 100, np.full_like(board, 60)], axis=-1).astype(np.uint8)


def _controls(centre: float = 128.0) -> np.ndarray:
    """A 'face' of control points: two rings and the centre."""
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    rings = [np.stack([centre + r * np.cos(angles), centre + r * np.sin(angles)], 1) for r in (20.0, 40.0)]
    return np.concatenate([[[centre, centre]], *rings])


def test_warp_moves_a_point_and_keeps_everything_outside_the_ring() -> None:
    image = _pattern()
    src = _controls()
    cv2.circle(image, (128, 128), 3, (255, 255, 255), -1)  # a white dot on the moving point
    dst = src.copy()
    dst[0] += (7.0, -5.0)
    out = piecewise_affine_warp(image, src, dst)
    assert out.shape == image.shape and out.dtype == np.uint8
    white = np.argwhere((out == 255).all(axis=-1))
    assert len(white) > 10
    assert np.allclose(white.mean(axis=0)[::-1], dst[0], atol=1.0)  # (y, x) centroid -> (x, y)
    ring = face_ring(src).astype(np.float32).reshape(-1, 1, 2)
    inside = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(ring).astype(np.int32)], 1)
    outside = cv2.dilate(inside, np.ones((3, 3), np.uint8)) == 0
    assert np.array_equal(out[outside], image[outside])


def test_identity_warp_returns_the_image() -> None:
    image = _pattern()
    src = _controls()
    out = MeshWarper(src, image.shape[:2]).warp(image, src)
    assert np.abs(out.astype(int) - image).max() <= 1


def test_warper_is_reusable_and_checks_shapes() -> None:
    image = _pattern()
    src = _controls()
    warper = MeshWarper(src, image.shape[:2])
    for shift in (1.0, 2.0, 3.0):
        dst = src.copy()
        dst[1:25] *= 1.0 + shift / 100
        assert warper.warp(image, dst).shape == image.shape
    with pytest.raises(ValueError, match="destination points"):
        warper.warp(image, src[:10])
    with pytest.raises(ValueError, match="built for"):
        warper.warp(image[:100], src)


def _synthetic_face(rng: np.random.Generator) -> np.ndarray:
    """468x3 points with eye corners, forehead and chin where ``geometry`` expects them (interocular 1)."""
    base = np.zeros((468, 3))
    base[:, :2] = rng.uniform(-0.8, 0.8, size=(468, 2))
    base[33, :2], base[263, :2] = (-0.5, 0.0), (0.5, 0.0)
    base[10, :2], base[152, :2] = (0.0, -1.0), (0.0, 1.2)
    return base


def test_au_basis_recovers_a_known_linear_displacement() -> None:
    rng = np.random.default_rng(0)
    base = _synthetic_face(rng)
    truth = np.zeros((len(AU_NAMES), 468, 3))
    fixed = [33, 263, 10, 152]  # the frame's points stay put, and each displacement has zero mean
    for k in (AU_NAMES.index("AU12"), AU_NAMES.index("AU26")):
        d = rng.normal(scale=0.05, size=(468, 2))
        d[fixed] = 0.0
        free = np.setdiff1d(np.arange(468), fixed)
        d[free] -= d[free].mean(axis=0)
        truth[k, :, :2] = d
    n = 400
    aus = rng.uniform(0, 3, size=(n, len(AU_NAMES)))
    shapes = base[None] + np.tensordot(aus, truth, axes=1) + rng.normal(scale=1e-4, size=(n, 468, 3))
    roll = rng.uniform(-0.3, 0.3, n)
    scale = rng.uniform(40, 120, n)
    c, s = np.cos(roll), np.sin(roll)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    points = shapes.copy()
    points[:, :, :2] = np.einsum("nij,nkj->nki", rot, shapes[:, :, :2]) * scale[:, None, None]
    points[:, :, :2] += rng.uniform(100, 300, size=(n, 1, 2))
    points[:, :, 2] *= scale[:, None]
    basis = AUBasis.fit(points, aus, ridge=1e-6, symmetric=False, rigid=None)
    assert np.allclose(basis.components[:, :, :2], truth[:, :, :2], atol=2e-3)
    # And back to pixels: one face moved by AU12 gets that AU's displacement, rotated and scaled.
    moved = basis.to_image(points[0], basis.displacement({"AU12": 1.0}))
    expected = points[0, :, :2] + (truth[AU_NAMES.index("AU12"), :, :2] @ rot[0].T) * scale[0]
    assert np.allclose(moved, expected, atol=0.3)


def test_anchoring_removes_a_rigid_motion_and_mirroring_pairs_points() -> None:
    rng = np.random.default_rng(1)
    shape = np.zeros((468, 3))  # mirror-symmetric about x = 0, the midline points on it
    shape[list(MIDLINE_POINTS), 1] = rng.uniform(-0.8, 0.8, len(MIDLINE_POINTS))
    others = rng.permutation(np.setdiff1d(np.arange(468), MIDLINE_POINTS))
    left, right, rest = others[:228], others[228:456], others[456:]
    shape[left, :2] = rng.uniform(0.05, 0.8, size=(228, 2))
    shape[right, :2] = shape[left, :2] * [-1, 1]
    shape[rest, 1] = 0.9
    mirror = mirror_permutation(shape)
    assert np.allclose(shape[mirror, 0], -shape[:, 0], atol=1e-9) and np.array_equal(mirror[mirror], np.arange(468))
    translation = np.zeros((1, 468, 3))
    translation[0, :, :2] = (0.03, -0.02)
    assert np.abs(anchor_components(translation, shape, (0, 1, 2, 3))).max() < 1e-9


@pytest.fixture(scope="module")
def basis() -> AUBasis:
    return AUBasis.load(BASIS)


def test_shipped_basis_card(basis: AUBasis) -> None:
    assert basis.prototypes is not None and 0 < basis.default_strength <= 3
    card = json.loads(BASIS.with_suffix(".json").read_text())
    assert set(card["per_au"]) == set(AU_NAMES) and "FER2013" in card["data"]


def test_plan_raises_the_prototype_aus(basis: AUBasis) -> None:
    calm = dict.fromkeys(AU_NAMES, 0.2)
    happy = plan_edit(calm, "happiness", prototypes=basis.prototypes)
    assert happy.delta["AU12"] > 0.3 and happy.delta["AU06"] > 0.3 and happy.target == "happiness"
    assert any("AU12" in r for r in happy.reasons)
    surprised = plan_edit(calm, "surprised", 1.5, prototypes=basis.prototypes)  # dataset names are mapped
    assert all(surprised.delta[au] > 0.3 for au in ("AU01", "AU02", "AU26")) and surprised.opens_mouth
    smiling = {**calm, "AU12": 3.0}
    sad = plan_edit(smiling, "sadness", prototypes=basis.prototypes)
    assert sad.delta["AU12"] < 0 and sad.delta["AU15"] > 0
    assert plan_edit(calm, "happiness", 0.0, prototypes=basis.prototypes).delta == {}
    limits = basis.prototypes.limits  # type: ignore[union-attr]
    strong = plan_edit(calm, "surprise", 3.0, prototypes=basis.prototypes)
    assert all(strong.planned[au] <= max(limits[au], calm[au]) + 1e-3 for au in AU_NAMES)


def test_plan_holds_the_aus_it_is_told_to(basis: AUBasis) -> None:
    squinting = {**dict.fromkeys(AU_NAMES, 0.2), "AU45": 2.0, "AU12": 3.0}
    free = plan_edit(squinting, "sadness", prototypes=basis.prototypes)
    held = plan_edit(squinting, "sadness", prototypes=basis.prototypes, held=("AU45",))
    assert free.delta["AU45"] < 0  # unheld, the photo's eye closure is relaxed like an expression...
    assert "AU45" not in held.delta and held.planned["AU45"] == 2.0  # ...held, it stays where it was
    assert not any("AU45" in r for r in held.reasons)
    assert {au: d for au, d in free.delta.items() if au != "AU45"} == held.delta  # nothing else changes
    with pytest.raises(AffectLensError, match="unknown action units"):
        plan_edit(squinting, "sadness", prototypes=basis.prototypes, held=("AU99",))


def test_plan_errors(basis: AUBasis) -> None:
    with pytest.raises(AffectLensError, match="allowed: neutral, happiness"):
        plan_edit({}, "smug", prototypes=basis.prototypes)
    for bad in (-0.5, 3.5, float("nan")):
        with pytest.raises(AffectLensError, match="strength"):
            plan_edit({}, "anger", bad, prototypes=basis.prototypes)


def test_prototype_modes() -> None:
    means = {e: dict.fromkeys(AU_NAMES, 0.4) for e in ("neutral", "happiness", "sadness", "surprise", "fear")}
    means |= {e: dict.fromkeys(AU_NAMES, 0.4) for e in ("disgust", "anger")}
    means["happiness"] = {**means["happiness"], "AU14": 2.0}
    limits = dict.fromkeys(AU_NAMES, 3.0)
    data = EmotionPrototypes.build(means, limits, "data")
    facs = EmotionPrototypes.build(means, limits, "facs", facs_floor=2.0)
    assert data.raised["happiness"] == ("AU14",)
    assert facs.raised["happiness"] == ("AU06", "AU12") and facs.targets["happiness"]["AU12"] == 2.0
    assert EmotionPrototypes.from_dict(json.loads(json.dumps(facs.to_dict()))) == facs
    with pytest.raises(ValueError, match="prototype mode"):
        EmotionPrototypes.build(means, limits, "mixed")


@pytest.fixture(scope="module")
def editor():
    from generation.edit import build_expression_editor

    return build_expression_editor(BASIS)


def test_editor_changes_the_face_and_not_the_corners(editor, portrait: np.ndarray) -> None:
    result = editor.edit(portrait, "surprise", 2.0)
    out = result.image
    assert out.shape == portrait.shape and out.dtype == np.uint8
    x1, y1, x2, y2 = (int(v) for v in result.box)
    face = np.abs(out[y1:y2, x1:x2].astype(int) - portrait[y1:y2, x1:x2]).mean()
    assert face > 2.0
    for corner in (np.s_[:40, :40], np.s_[:40, -40:], np.s_[-40:, :40], np.s_[-40:, -40:]):
        assert np.array_equal(out[corner], portrait[corner])
    assert result.plan.delta and result.plan.reasons and result.target_points.shape == (468, 2)
    assert result.reading is not None and abs(sum(result.reading.probabilities.values()) - 1) < 1e-4
    json.dumps(result.to_dict())


def test_mouth_fill_darkens_an_opened_mouth(editor, portrait: np.ndarray) -> None:
    points, _ = editor.locate(portrait)
    dst = points[:, :2].copy()
    lower = [14, 87, 178, 88, 95, 317, 402, 318, 324, 17, 84, 181, 91, 146, 314, 405, 321, 375]
    dst[lower, 1] += 8.0
    warped = MeshWarper(points[:, :2], portrait.shape[:2]).warp(portrait, dst)
    filled = fill_mouth(warped, points, dst)
    mask = np.zeros(portrait.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(dst[list(INNER_LIPS)]).astype(np.int32)], 1)
    assert filled[mask == 1].mean() < warped[mask == 1].mean() - 20


def test_editor_errors(editor, portrait: np.ndarray) -> None:
    with pytest.raises(AffectLensError, match="no face"):
        editor.edit(np.full((256, 256, 3), 128, np.uint8), "happiness")
    with pytest.raises(AffectLensError, match="2 faces"):
        editor.edit(np.concatenate([portrait, portrait], axis=1), "happiness")
    with pytest.raises(AffectLensError, match="unknown target emotion"):
        editor.edit(portrait, "smug")
    with pytest.raises(AffectLensError, match="strength"):
        editor.edit(portrait, "anger", 4.0)
    with pytest.raises(AffectLensError, match="too small"):
        editor.edit(portrait[:40, :40], "anger")
    with pytest.raises(AffectLensError, match="too large"):
        editor.edit(np.zeros((4100, 64, 3), np.uint8), "anger")
    with pytest.raises(AffectLensError, match="uint8"):
        editor.edit(portrait.astype(np.float32), "anger")
    with pytest.raises(AffectLensError, match="HxWx3"):
        editor.edit(portrait[..., 0], "anger")


@pytest.mark.weights
def test_cli_edits_a_portrait_and_names_the_file_on_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from affectlens.cli import main
    from demo.samples import PORTRAIT

    out = tmp_path / "edited.png"
    assert main(["generate", "edit", "--image", str(PORTRAIT), "--emotion", "surprise", "-o", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["plan"]["target"] == "surprise" and printed["output"] == str(out)
    assert printed["reading"] is not None and "reads the edited face as" in printed["notes"][0]
    edited, original = np.asarray(Image.open(out)), np.asarray(Image.open(PORTRAIT).convert("RGB"))
    assert edited.shape == original.shape and not np.array_equal(edited, original)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    assert main(["generate", "edit", "--image", str(blank), "--emotion", "surprise", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "blank.png" in err and "no face" in err
    assert main(["generate", "edit", "--image", str(PORTRAIT), "--emotion", "smug", "-o", str(out)]) == 1
    assert "smug" in capsys.readouterr().err
