"""Fit the expression-editing AU basis on FER2013 train, choose its settings on validation, evaluate on test.

1. Mesh: the MediaPipe mesh on every FER2013 face, upscaled to 192x192 as ``calibrate_face_geometry.py`` does
   (cached in ``~/.cache/affectlens/train/expression-edit/``, keyed by the data's and the model's sha256).
2. Fit (``generation.edit.AUBasis``): ridge regression of the normalised mesh shape on the 17 AU intensities,
   head yaw and pitch as nuisance regressors, on FER2013 train minus the expression model's 10% validation
   split (``train_face_expression.validation_mask``, the split the expression model held out). Per-emotion
   mean AU intensities and the per-AU 99th percentiles on the same faces give the emotion prototypes.
3. Choose on the validation split only: the prototype mode (``data``, ``facs``, ``both``; see
   ``EmotionPrototypes.build``) and the default strength, by editing neutral validation faces to the six other
   emotions. Rule: the mode with the highest mean agreement with the target, and its smallest strength that
   reaches 90% of that agreement (edits grow and identity measures fall with strength, for little more gain).
4. Evaluate once on FER2013 test: neutral test faces edited to the six other emotions at several strengths,
   and faces of every class edited to every other emotion at the chosen strength. Per target: agreement (share
   the default expression model classifies as the target), baseline (share of the unedited faces already
   classified as the target), identity (cosine of pooled features to the source; identification rate), pixel
   SSIM, and how much of the AU plan the edited mesh shows when meshed again.

Writes ``weights/expression-edit/au-basis.safetensors`` + ``au-basis.json`` (the card) and ``metrics.json``.

    python scripts/fit_expression_edit.py                      # full run: ~11 min CPU (+1 min to mesh, first run)
    python scripts/fit_expression_edit.py --faces 60 --out /tmp/edit   # quick run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affectlens import weights  # noqa: E402
from affectlens.labels import CANONICAL_EMOTIONS  # noqa: E402
from affectlens.registry import create_face_expression  # noqa: E402
from generation.edit import (  # noqa: E402
    AU_NAMES,
    NUM_POINTS,
    AUBasis,
    EmotionPrototypes,
    PrototypeMode,
    apply_plan,
    normalise_shapes,
    refine_components,
    regress_shapes,
)
from generation.warp import MeshWarper  # noqa: E402
from perception.face import geometry  # noqa: E402
from perception.face.expression import ExpressionModel  # noqa: E402
from perception.face.landmarks import FaceMesh  # noqa: E402

DEFAULT_NPZ = REPO.parent / "shared" / "data" / "fer2013.npz"
DEFAULT_OUT = REPO / "weights" / "expression-edit"
CACHE = Path.home() / ".cache" / "affectlens" / "train" / "expression-edit"
SIZE = 192
BOX = np.array([32.0, 32.0, 160.0, 160.0])  # x1.5 by the mesh ROI rule = the whole 192x192 image
SEED = 0
RIDGE = 10.0
POSE_SCALE = 30.0  # degrees per covariate unit
MODES: tuple[PrototypeMode, ...] = ("data", "facs", "both")
FACS_FLOOR = 2.0
LIMIT_PERCENTILE = 99.0
VAL_STRENGTHS = (1.0, 1.5, 2.0, 2.5, 3.0)
TEST_STRENGTHS = (1.0, 1.5, 2.0, 3.0)
KNEE = 0.9  # the default strength is the smallest reaching this share of the best validation agreement
TARGETS = tuple(e for e in CANONICAL_EMOTIONS if e != "neutral")


def upscale(grey: np.ndarray) -> np.ndarray:
    """A 48x48 FER2013 face as the 192x192 RGB image the mesh and the editor see."""
    return cv2.cvtColor(cv2.resize(grey, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2RGB)


def meshes(npz: Path, images: np.ndarray) -> np.ndarray:
    """Nx468x3 mesh points of every image (NaN where the mesh finds no face), cached.

    The mesh runs with the whole 192x192 image as its region, not as the face pipeline runs it (a region from the
    detector's box): its points hug the face tighter, their box about 1.24x smaller than the pipeline's mesh box
    on the same faces (median side 145 vs 179 px on 1,025 validation faces; CenterFace's: 180 px). Fine for shapes
    and the canonical frame; an expression crop from their box zooms in past FER2013's framing."""
    model = weights.locate("mediapipe-face-landmark")
    key = hashlib.sha256((weights.sha256_of(npz) + model.sha256 + f"{SIZE}").encode()).hexdigest()[:16]
    path = CACHE / f"meshes-{key}.npy"
    if path.is_file():
        print(f"meshes: cached {path}")
        return np.load(path)
    mesh = FaceMesh(num_threads=1)
    out = np.full((len(images), NUM_POINTS, 3), np.nan, np.float32)
    started = time.time()
    for i, grey in enumerate(images):
        found, _ = mesh(upscale(grey), BOX, None)
        if found is not None:
            out[i] = found
        if i % 5000 == 0:
            print(f"meshes: {i}/{len(images)} ({time.time() - started:.0f} s)", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def r2(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(1.0 - ((actual - predicted) ** 2).sum() / (((actual - actual.mean(0)) ** 2).sum() + 1e-12))


class Judge:
    """The default expression model on whole 192x192 FER-framed images: probabilities and pooled features."""

    def __init__(self, model: ExpressionModel) -> None:
        self.model = model

    def __call__(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        crops = np.stack([self.model.preprocess(im) for im in images])
        probs = self.model.predict_batch(crops)
        net = self.model.model
        members = list(net.members) if hasattr(net, "members") else [net]
        x = torch.from_numpy(crops)[:, None]
        with torch.inference_mode():
            feats = torch.cat([m.features(x).mean(dim=(2, 3)) for m in members], 1)
        return probs, torch.nn.functional.normalize(feats.float(), dim=1).numpy()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a[..., 0], b[..., 0], data_range=255))


def score(judge: Judge, faces: FaceSet, edited: list[np.ndarray], source: np.ndarray, target: str) -> dict[str, Any]:
    """Agreement, baseline and identity of edited faces (``source[i]`` indexes the original of edit i)."""
    probs, feats = judge(edited)
    k = CANONICAL_EMOTIONS.index(target)
    sims = feats @ faces.feats.T  # edits x originals
    return {
        "n": len(edited),
        "agreement": float((probs.argmax(1) == k).mean()),
        "baseline": float((faces.probs[source].argmax(1) == k).mean()),
        "target_probability": float(probs[:, k].mean()),
        "identity_cosine": float(sims[np.arange(len(edited)), source].mean()),
        "identification_rate": float((sims.argmax(1) == source).mean()),
        "ssim": float(np.mean([ssim(faces.images[s], e) for s, e in zip(source, edited, strict=True)])),
    }


@dataclass
class FaceSet:
    """Faces to edit: 192x192 RGB images, meshes, current AUs, labels, a warper per face (the triangulation is
    reused across targets and strengths) and the judge's reading of the unedited faces."""

    images: list[np.ndarray]
    points: np.ndarray
    aus: np.ndarray
    labels: list[str]
    warpers: list[MeshWarper]
    probs: np.ndarray
    feats: np.ndarray

    @classmethod
    def build(
        cls,
        judge: Judge,
        grey: np.ndarray,
        points: np.ndarray,
        labels: list[str],
        reference: dict[str, tuple[float, float]],
    ) -> FaceSet:
        images = [upscale(g) for g in grey]
        probs, feats = judge(images)
        warpers = [MeshWarper(p[:, :2], (SIZE, SIZE)) for p in points]
        return cls(images, points, geometry.action_units(points, reference), labels, warpers, probs, feats)


def per_target(
    judge: Judge,
    basis: AUBasis,
    faces: FaceSet,
    strength: float,
    mesh: FaceMesh | None = None,
    reference: dict[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Every face edited to every target emotion other than its own label; scores per target and their mean."""
    rows: dict[str, Any] = {}
    for target in (*TARGETS, "neutral"):
        keep = [i for i, label in enumerate(faces.labels) if label != target]
        if not keep:
            continue
        edited, deltas = [], []
        for i in keep:
            plan = basis.plan(dict(zip(AU_NAMES, faces.aus[i].tolist(), strict=True)), target, strength)
            image, _ = apply_plan(faces.images[i], faces.points[i], plan, basis, faces.warpers[i])
            edited.append(image)
            deltas.append(plan.delta)
        row = score(judge, faces, edited, np.array(keep), target)
        if mesh is not None and reference is not None:
            row.update(plan_realised(mesh, reference, edited, faces.aus[keep], deltas))
        rows[target] = row
    scored = list(rows.values())
    rows["mean_over_targets"] = {k: float(np.mean([r[k] for r in scored])) for k in scored[0] if k != "n"}
    rows["mean_over_targets"]["n"] = sum(r["n"] for r in scored)
    return rows


def plan_realised(
    mesh: FaceMesh,
    reference: dict[str, tuple[float, float]],
    edited: list[np.ndarray],
    before: np.ndarray,
    deltas: list[dict[str, float]],
) -> dict[str, float]:
    """Mesh the edited faces again: the correlation between the planned and the measured AU changes (over the
    AUs the plan moves, pooled), and the measured change per planned step (the slope)."""
    planned, measured = [], []
    for image, au_before, delta in zip(edited, before, deltas, strict=True):
        found, _ = mesh(image, BOX, None)
        if found is None or not delta:
            continue
        after = geometry.action_units(found[None], reference)[0]
        for au, change in delta.items():
            k = AU_NAMES.index(au)
            planned.append(change)
            measured.append(float(after[k] - au_before[k]))
    p, m = np.array(planned), np.array(measured)
    if len(p) < 3:
        return {"plan_correlation": float("nan"), "plan_slope": float("nan")}
    return {
        "plan_correlation": float(np.corrcoef(p, m)[0, 1]),
        "plan_slope": float((p * m).sum() / ((p * p).sum() + 1e-12)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--faces", type=int, default=300, help="neutral faces per evaluation set")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started, started_wall = time.process_time(), time.time()

    sys.path.insert(0, str(REPO / "scripts"))
    from train_face_expression import fer2013_split_indices  # the split the expression model was trained without

    images, labels, splits = fer2013_split_indices(args.npz)
    emotion = np.array(CANONICAL_EMOTIONS)[labels]
    fit_idx, val_idx, test_idx = splits["train"], splits["val"], splits["test"]

    points = meshes(args.npz, images)
    meshed = np.isfinite(points).all(axis=(1, 2))
    geo_card = json.loads(weights.locate("face-geometry-neutral").path.read_text())
    reference = {k: (float(m), float(s)) for k, (m, s) in geo_card["measures"].items()}
    pitch_offset = float(geo_card["pitch_offset"])

    def features(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = idx[meshed[idx]]
        pose = geometry.head_pose(points[idx], pitch_offset)
        covariates = pose[:, :2] / POSE_SCALE
        return idx, geometry.action_units(points[idx], reference), covariates

    # ---- fit ----
    fit_i, fit_aus, fit_cov = features(fit_idx)
    val_i, val_aus, val_cov = features(val_idx)
    fit_shapes = normalise_shapes(points[fit_i])
    components, neutral, pose_components = regress_shapes(fit_shapes, fit_aus, fit_cov, RIDGE)
    basis = AUBasis(neutral, refine_components(components, neutral))
    val_shapes = normalise_shapes(points[val_i]).reshape(len(val_i), -1)
    pose_part = neutral[None] + np.tensordot(val_cov, pose_components, axes=1)
    raw = pose_part + np.tensordot(val_aus, components, axes=1)
    recon = pose_part + np.tensordot(val_aus, basis.components, axes=1)  # what the shipped basis reproduces
    shape_r2 = r2(val_shapes, raw.reshape(len(val_i), -1))
    refined_r2 = r2(val_shapes, recon.reshape(len(val_i), -1))
    recon_aus = geometry.action_units(recon * 100.0, reference)
    gain = np.diag(basis.response(reference))
    per_au = {au: {"r2": r2(val_aus[:, k], recon_aus[:, k]), "gain": float(gain[k])} for k, au in enumerate(AU_NAMES)}
    fit_emotion = emotion[fit_i]
    means = {
        e: {au: float(v) for au, v in zip(AU_NAMES, fit_aus[fit_emotion == e].mean(0), strict=True)}
        for e in CANONICAL_EMOTIONS
    }
    limits = dict(zip(AU_NAMES, np.percentile(fit_aus, LIMIT_PERCENTILE, axis=0).tolist(), strict=True))
    print(f"fit on {len(fit_i)} faces; validation shape R^2 {shape_r2:.3f} (refined components {refined_r2:.3f})")
    print("AU     R^2   gain")
    for au, row in per_au.items():
        print(f"{au}  {row['r2']:5.2f}  {row['gain']:5.2f}")

    # ---- choose on validation ----
    judge = Judge(create_face_expression())
    rng = np.random.default_rng(SEED)
    val_neutral = rng.permutation(val_i[emotion[val_i] == "neutral"])[: args.faces]
    val_set = FaceSet.build(judge, images[val_neutral], points[val_neutral], ["neutral"] * len(val_neutral), reference)
    grid: list[dict[str, Any]] = []
    print(f"\nvalidation: {len(val_neutral)} neutral faces edited to {', '.join(TARGETS)}")
    for mode in MODES:
        candidate = basis.replace(prototypes=EmotionPrototypes.build(means, limits, mode, FACS_FLOOR))
        for strength in VAL_STRENGTHS:
            rows = per_target(judge, candidate, val_set, strength)
            mean = rows["mean_over_targets"]
            grid.append(
                {
                    "mode": mode,
                    "strength": strength,
                    "mean": mean,
                    "agreement": {t: rows[t]["agreement"] for t in TARGETS},
                }
            )
            print(
                f"  {mode:<5} strength {strength:.1f}: agreement {mean['agreement']:.3f}, "
                f"identification {mean['identification_rate']:.3f}, cosine {mean['identity_cosine']:.3f}",
                flush=True,
            )
    top = max(grid, key=lambda g: g["mean"]["agreement"])
    near = [g for g in grid if g["mode"] == top["mode"] and g["mean"]["agreement"] >= KNEE * top["mean"]["agreement"]]
    best = min(near, key=lambda g: g["strength"])
    print(f"chosen: mode {best['mode']}, strength {best['strength']}")
    prototypes = EmotionPrototypes.build(means, limits, best["mode"], FACS_FLOOR)

    fit_seconds = time.process_time() - started
    card = {
        "description": "generation.edit.AUBasis: ridge regression of the normalised 468-point mesh shape (x, y, "
        "depth; centred, roll removed, divided by the interocular distance) on the 17 mesh AUs, head yaw and "
        "pitch as nuisance regressors",
        "data": f"FER2013 train split minus the expression model's 10% validation split: {len(fit_i)} faces meshed "
        f"of {len(fit_idx)} (48x48 upscaled to {SIZE}x{SIZE})",
        "ridge": RIDGE,
        "pose_scale_degrees": POSE_SCALE,
        "validation_shape_r2": shape_r2,
        "validation_shape_r2_refined": refined_r2,
        "refinement": "components averaged with their mirror images and anchored on rigid points (eye corners, "
        "nose bridge, upper forehead): generation.edit.refine_components",
        "per_au": per_au,
        "per_au_note": "r2: the AU measured on the basis's reconstruction of each validation face (its AUs and "
        "pose) against the AU measured on its mesh; gain: measured AU change per planned step at the neutral shape",
        "emotion_means": means,
        "limits_percentile": LIMIT_PERCENTILE,
        "selection": f"prototype mode and default strength chosen on {len(val_neutral)} neutral faces of the "
        f"validation split: the mode with the highest mean agreement, and its smallest strength reaching {KNEE:g} "
        "of that agreement (beyond it edits grow and identity measures fall for little gain)",
        "command": "python scripts/fit_expression_edit.py",
    }
    basis = basis.replace(prototypes=prototypes, default_strength=best["strength"], card=card)
    tensors_path, card_path = basis.save(args.out)
    print(f"-> {tensors_path}, {card_path}")

    # ---- test, scored once ----
    test_i = test_idx[meshed[test_idx]]
    t_neutral = rng.permutation(test_i[emotion[test_i] == "neutral"])[: args.faces]
    test_set = FaceSet.build(judge, images[t_neutral], points[t_neutral], ["neutral"] * len(t_neutral), reference)
    mesh = FaceMesh(num_threads=1)
    neutral_rows: dict[str, Any] = {}
    print(f"\ntest: {len(t_neutral)} neutral faces (true label neutral, meshed) edited to each emotion")
    for strength in sorted({*TEST_STRENGTHS, best["strength"]}):
        rows = per_target(judge, basis, test_set, strength, mesh, reference)
        neutral_rows[f"{strength:g}"] = rows
        print(f"strength {strength:g}")
        print("  target      agree  base   p(t)   cos    ident  ssim   plan r  slope")
        for target in (*TARGETS, "mean_over_targets"):
            r = rows[target]
            print(
                f"  {target[:10]:<10}  {r['agreement']:.3f}  {r['baseline']:.3f}  {r['target_probability']:.3f}  "
                f"{r['identity_cosine']:.3f}  {r['identification_rate']:.3f}  {r['ssim']:.3f}  "
                f"{r['plan_correlation']:.2f}    {r['plan_slope']:.2f}",
                flush=True,
            )
    t_all = rng.permutation(test_i)[: args.faces]
    all_set = FaceSet.build(judge, images[t_all], points[t_all], list(emotion[t_all]), reference)
    all_rows = per_target(judge, basis, all_set, best["strength"])
    print(f"\ntest: {len(t_all)} faces of every class edited to every other emotion (strength {best['strength']:g})")
    for target, r in all_rows.items():
        print(f"  {target[:10]:<10}  agreement {r['agreement']:.3f}  baseline {r['baseline']:.3f}  n {r['n']}")
    nearest_other = float(
        np.mean(np.sort(test_set.feats @ test_set.feats.T, axis=1)[:, -2])  # the most similar *other* original
    )
    metrics = {
        "description": "expression editing (generation.edit) scored by the default expression model "
        "(affectlens-expression) on FER2013 test faces upscaled to 192x192; agreement: share classified as the "
        "target; baseline: share of the unedited faces already classified as the target; identity_cosine: cosine "
        "of the expression network's pooled features between edited face and source; identification_rate: share "
        "of edited faces whose most similar original (among the set) is their own source; ssim: grey SSIM between "
        "source and edited image; plan_correlation / plan_slope: planned vs re-measured AU changes",
        "chosen": {"mode": best["mode"], "strength": best["strength"], "facs_floor": FACS_FLOOR},
        "validation_grid": grid,
        "test_neutral_faces": {"n_faces": len(t_neutral), "by_strength": neutral_rows},
        "test_all_classes": {"n_faces": len(t_all), "strength": best["strength"], "by_target": all_rows},
        "reference_nearest_other_cosine": nearest_other,
        "fit_cpu_seconds": fit_seconds,
        "total_cpu_seconds": time.process_time() - started,
        "wall_seconds": time.time() - started_wall,
        "command": "python scripts/fit_expression_edit.py",
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(f"\nreference: mean cosine of a neutral test face to its most similar other face {nearest_other:.3f}")
    print(
        f"-> {args.out / 'metrics.json'}; CPU time {metrics['total_cpu_seconds']:.0f} s "
        f"(wall {metrics['wall_seconds']:.0f} s)"
    )


if __name__ == "__main__":
    main()
