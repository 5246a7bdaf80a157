"""Export FER2013 from ``../shared/data/fer2013.npz`` as an image folder (one sub-folder per label).

    python scripts/export_fer2013.py --split test --out /tmp/fer2013-test
    affectlens eval face-expression --data /tmp/fer2013-test --json

``--size 192`` writes each crop at 192x192 instead (bicubic), as datasets of larger face crops come; the default
``eval`` reads such crops whole (``--per-class 60``: 390 of 420) or by their face.

``--scene`` places each face in a 640x360 frame instead (random size 64-160 pixels, position, rotation up to
15 degrees, brightness and a textured background), so that ``--detect`` evaluates the whole inference path
(detection, crop from the detector's box, expression) rather than the dataset's own crops:

    python scripts/export_fer2013.py --split test --scene --out /tmp/fer2013-test-scene
    affectlens eval face-expression --data /tmp/fer2013-test-scene --detect --json

The export goes outside the repository: the data must never be committed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

DEFAULT_NPZ = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fer2013.npz"


def export(
    npz: Path,
    split: str,
    out: Path,
    limit: int | None = None,
    scene: bool = False,
    per_class: int | None = None,
    size: int | None = None,
) -> int:
    with np.load(npz) as data:  # each data[key] decompresses the whole array: read each once
        images, labels, splits = data["images"], data["labels"], data["split"]
        names, split_names = data["label_names"], list(data["split_names"])
    chosen = np.flatnonzero(splits == split_names.index(split))[:limit]
    if per_class is not None:  # the first N of every label, in the split's order
        chosen = np.concatenate([chosen[labels[chosen] == k][:per_class] for k in range(len(names))])
    for name in names:
        (out / str(name)).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in chosen:
        face = place_in_scene(images[i], rng) if scene else images[i]
        if size is not None and not scene:  # a larger crop, as datasets of bigger face crops come
            face = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
        Image.fromarray(face).save(out / str(names[labels[i]]) / f"{i:05d}.png")
    return len(chosen)


def place_in_scene(face: np.ndarray, rng: np.random.Generator, width: int = 640, height: int = 360) -> np.ndarray:
    """A 640x360 RGB frame with the grey 48x48 ``face`` resized, rotated, brightened or darkened, and pasted
    at a random place on a smooth random background (the face's own border colour blended in)."""
    side = int(rng.integers(64, 161))
    noise = rng.integers(0, 256, (height // 40, width // 40, 3)).astype(np.float32) * 0.6 + 50  # muted colours
    background = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    angle = float(rng.uniform(-15, 15))
    pad = side // 2
    canvas = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    centre = (canvas.shape[1] / 2, canvas.shape[0] / 2)
    rotated = cv2.warpAffine(canvas, cv2.getRotationMatrix2D(centre, angle, 1.0), canvas.shape[::-1],
                             borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    patch = rotated[pad // 2 : -pad // 2 or None, pad // 2 : -pad // 2 or None]
    patch = np.clip(patch.astype(np.float32) * rng.uniform(0.6, 1.3), 0, 255).astype(np.uint8)
    ph, pw = patch.shape
    x, y = int(rng.integers(0, width - pw)), int(rng.integers(0, height - ph))
    # Feather the patch's edge into the background so there is no hard square for the detector to find.
    mask = np.zeros((ph, pw), np.float32)
    cv2.circle(mask, (pw // 2, ph // 2), int(min(ph, pw) * 0.48), 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(ph / 20, 1))[..., None]
    region = background[y : y + ph, x : x + pw].astype(np.float32)
    background[y : y + ph, x : x + pw] = (mask * patch[..., None] + (1 - mask) * region).astype(np.uint8)
    return background


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    parser.add_argument("--split", choices=["train", "test"], default="test")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images of the split")
    parser.add_argument("--per-class", type=int, default=None, help="only the first N images of each label")
    parser.add_argument("--scene", action="store_true", help="place each face in a 640x360 frame (see above)")
    parser.add_argument("--size", type=int, default=None, help="crops resized to SIZE x SIZE (bicubic)")
    args = parser.parse_args()
    if args.size is not None and (args.scene or args.size < 1):
        parser.error("--size takes a positive side and does not go with --scene")
    n = export(args.npz, args.split, args.out, args.limit, args.scene, args.per_class, args.size)
    print(f"wrote {n} images to {args.out}")


if __name__ == "__main__":
    main()
