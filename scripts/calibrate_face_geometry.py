"""Calibrate the mesh-geometry AUs on FER2013 and show that they mean something.

1. Fit: run the face mesh on the neutral faces of FER2013 *train*; the mean and standard deviation of each
   geometric measure (``perception.face.geometry``) and the mean head pitch become the neutral reference,
   written to ``weights/face-geometry/neutral_reference.json``.
2. Check: run the mesh on FER2013 *test*; print the mean intensity of each AU per emotion and the effect
   size (Cohen's d, this emotion against all others), and save them as JSON.

    python scripts/calibrate_face_geometry.py [--report /tmp/au_report.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from affectlens.labels import CANONICAL_EMOTIONS, canonical_label
from perception.face import geometry
from perception.face.landmarks import FaceMesh

REPO = Path(__file__).resolve().parents[1]
DEFAULT_NPZ = REPO.parent / "shared" / "data" / "fer2013.npz"
OUT = REPO / "weights" / "face-geometry" / "neutral_reference.json"
SIZE = 192
BOX = np.array([32.0, 32.0, 160.0, 160.0])  # x1.5 by the mesh ROI rule = the whole 192x192 image


def mesh_points(mesh: FaceMesh, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks (Nx468x3) of the images whose mesh found a face, and their indices."""
    points, kept = [], []
    for i, grey in enumerate(images):
        rgb = cv2.cvtColor(cv2.resize(grey, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2RGB)
        found, _ = mesh(rgb, BOX, None)
        if found is not None:
            points.append(found)
            kept.append(i)
    return np.stack(points), np.array(kept)


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return float((a.mean() - b.mean()) / (pooled + 1e-9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    parser.add_argument("--report", type=Path, default=Path("/tmp/au_report.json"))
    args = parser.parse_args()
    started = time.process_time()
    with np.load(args.npz) as data:
        images, labels, split = data["images"], data["labels"], data["split"]
        names = [canonical_label(str(n)) for n in data["label_names"]]
    mesh = FaceMesh()

    neutral = np.flatnonzero((split == 0) & (np.array(names)[labels] == "neutral"))
    points, _ = mesh_points(mesh, images[neutral])
    measures = geometry.geometric_measures(points)
    reference = {k: [float(v.mean()), float(v.std())] for k, v in measures.items()}
    pitch = float(np.median(geometry.head_pose(points)[:, 1]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "description": "neutral reference for perception.face.geometry (mean, std per measure)",
                "data": "FER2013 train, label neutral",
                "faces": len(points),
                "pitch_offset": pitch,
                "measures": reference,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"neutral reference from {len(points)}/{len(neutral)} FER2013 train neutral faces -> {OUT}")

    test = np.flatnonzero(split == 1)
    points, kept = mesh_points(mesh, images[test])
    aus = geometry.action_units(points, reference={k: (m, s) for k, (m, s) in reference.items()})
    truth = np.array([names[labels[i]] for i in test[kept]])
    table: dict[str, dict[str, dict[str, float]]] = {}
    header = "emotion    n     " + " ".join(f"{au:>5}" for au in geometry.AU_NAMES)
    print(f"\nmean AU intensity (0-5) per emotion on FER2013 test ({len(points)}/{len(test)} faces meshed)")
    print(header)
    for emotion in CANONICAL_EMOTIONS:
        mask = truth == emotion
        row = {
            au: {"mean": float(aus[mask, k].mean()), "d": cohens_d(aus[mask, k], aus[~mask, k])}
            for k, au in enumerate(geometry.AU_NAMES)
        }
        table[emotion] = row
        print(f"{emotion:<10} {mask.sum():<5} " + " ".join(f"{row[au]['mean']:5.2f}" for au in geometry.AU_NAMES))
    print("\nCohen's d (this emotion vs all others)")
    print(header)
    for emotion, row in table.items():
        print(f"{emotion:<10} {'':<5} " + " ".join(f"{row[au]['d']:+5.2f}" for au in geometry.AU_NAMES))
    args.report.write_text(json.dumps({"faces": len(points), "table": table}, indent=1))
    print(f"\nreport -> {args.report}; CPU time {time.process_time() - started:.0f} s")


if __name__ == "__main__":
    main()
