"""Fit the expression ratio images (``generation.texture``) on FER2013 train, choose their gain on validation,
score them on test.

1. Fit: every meshed face of FER2013 train minus the expression model's validation split
   (``train_face_expression.validation_mask``) is warped into the canonical frame of the AU basis's neutral
   shape by its mesh (the meshes ``fit_expression_edit.py`` cached), brightness-normalised, and its log
   intensities averaged per emotion; each emotion's log ratio is its mean minus the neutral mean.
2. Choose on validation only: neutral validation faces edited to the six other emotions with the shipped AU
   basis at its default strength, the emotion's shading multiplied in at gains 0-3; the gain is the smallest
   reaching 90% of the best mean agreement (the rule ``fit_expression_edit.py`` uses for strength).
3. Test, once: neutral FER2013 test faces edited with and without the shading at the chosen gain.

Writes ``weights/expression-edit/texture.safetensors`` + ``texture.json`` (card, choice and metrics).

    python scripts/fit_expression_texture.py            # ~4 min CPU once fit_expression_edit.py cached the meshes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from fit_expression_edit import DEFAULT_NPZ, KNEE, SIZE, TARGETS, FaceSet, Judge, meshes  # noqa: E402
from train_face_expression import fer2013_split_indices  # noqa: E402

from affectlens import weights  # noqa: E402
from affectlens.labels import CANONICAL_EMOTIONS  # noqa: E402
from affectlens.registry import create_face_expression  # noqa: E402
from generation.edit import AU_NAMES, AUBasis, apply_plan  # noqa: E402
from generation.texture import CanonicalFrame, ExpressionTexture  # noqa: E402

DEFAULT_OUT = REPO / "weights" / "expression-edit" / "texture.safetensors"
GAINS = (0.0, 1.0, 2.0, 3.0)
SEED = 0


def agreement(judge: Judge, basis: AUBasis, faces: FaceSet, textures: list[Any], gain: float) -> dict[str, float]:
    """Share of faces the judge reads as each target after the edit (shape at the basis's default strength,
    shading at ``gain``)."""
    rows: dict[str, float] = {}
    for target in TARGETS:
        edited = []
        for i, image in enumerate(faces.images):
            plan = basis.plan(dict(zip(AU_NAMES, faces.aus[i].tolist(), strict=True)), target)
            shaded = textures[i].shade(image, {target: gain}) if gain else image
            edited.append(apply_plan(shaded, faces.points[i], plan, basis, faces.warpers[i])[0])
        probs, _ = judge(edited)
        rows[target] = float((probs.argmax(1) == CANONICAL_EMOTIONS.index(target)).mean())
    rows["mean"] = float(np.mean([rows[t] for t in TARGETS]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--faces", type=int, default=200, help="neutral faces per evaluation set")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.process_time()
    images, labels, splits = fer2013_split_indices(args.npz)
    emotion = np.array(CANONICAL_EMOTIONS)[labels]
    fit_idx, val_idx, test_idx = splits["train"], splits["val"], splits["test"]
    points = meshes(args.npz, images)  # at SIZE x SIZE (the 48x48 faces upscaled)
    meshed = np.isfinite(points).all(axis=(1, 2))
    scale = images.shape[1] / SIZE

    basis = AUBasis.load()
    frame = CanonicalFrame.from_shape(basis.neutral_shape)
    fit_i = fit_idx[meshed[fit_idx]]
    texture = ExpressionTexture.fit(frame, images[fit_i], points[fit_i] * scale, emotion[fit_i])
    print(f"fit on {len(fit_i)} faces: {texture.card['faces_per_emotion']}")

    geo_card = json.loads(weights.locate("face-geometry-neutral").path.read_text())
    reference = {k: (float(m), float(s)) for k, (m, s) in geo_card["measures"].items()}
    judge = Judge(create_face_expression())
    rng = np.random.default_rng(SEED)

    def neutral_set(idx: np.ndarray) -> tuple[FaceSet, list[Any]]:
        idx = idx[meshed[idx]]
        chosen = rng.permutation(idx[emotion[idx] == "neutral"])[: args.faces]
        faces = FaceSet.build(judge, images[chosen], points[chosen], ["neutral"] * len(chosen), reference)
        return faces, [texture.for_face(p, (SIZE, SIZE)) for p in faces.points]

    val_faces, val_textures = neutral_set(val_idx)
    grid = {}
    for gain in GAINS:
        grid[f"{gain:g}"] = agreement(judge, basis, val_faces, val_textures, gain)
        row = grid[f"{gain:g}"]
        print(f"validation gain {gain:g}: mean {row['mean']:.3f}  " + "  ".join(f"{t} {row[t]:.2f}" for t in TARGETS))
    best = max(grid.values(), key=lambda r: r["mean"])["mean"]
    gain = min(g for g in GAINS if grid[f"{g:g}"]["mean"] >= KNEE * best)
    print(f"chosen gain {gain:g} (smallest within {KNEE:g} of the best {best:.3f})")

    test_faces, test_textures = neutral_set(test_idx)
    test = {"shape only": agreement(judge, basis, test_faces, test_textures, 0.0)}
    test["shape + shading"] = agreement(judge, basis, test_faces, test_textures, gain)
    for name, row in test.items():
        print(f"test {name:<15}: mean {row['mean']:.3f}  " + "  ".join(f"{t} {row[t]:.2f}" for t in TARGETS))

    texture.card.update(
        {
            "description": "generation.texture.ExpressionTexture: per-emotion log ratio images (emotion mean minus "
            "neutral mean of brightness-normalised log intensities) in the canonical frame of the AU basis's "
            "neutral shape, after Liu, Shan & Zhang's expression ratio images (SIGGRAPH 2001)",
            "data": f"FER2013 train split minus the expression model's 10% validation split: {len(fit_i)} meshed faces",
            "gain": gain,
            "selection": f"gain chosen on {len(val_faces.images)} neutral validation faces edited to six emotions "
            f"(shape at the basis's default strength {basis.default_strength:g}): smallest gain within {KNEE:g} of "
            "the best mean agreement",
            "validation_grid": grid,
            "test": {"n_faces": len(test_faces.images), **test},
            "metric_note": "agreement: share of edited faces the default expression model reads as the target",
            "cpu_seconds": round(time.process_time() - started, 1),
            "command": "python scripts/fit_expression_texture.py",
        }
    )
    path = texture.save(args.out)
    print(f"-> {path}, {path.with_suffix('.json')}; CPU {texture.card['cpu_seconds']:.0f} s")


if __name__ == "__main__":
    main()
