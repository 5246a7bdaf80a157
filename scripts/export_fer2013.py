"""Export FER2013 from ``../shared/data/fer2013.npz`` as an image folder (one sub-folder per label).

    python scripts/export_fer2013.py --split test --out /tmp/fer2013-test
    affectlens eval face-expression --data /tmp/fer2013-test --json

The export goes outside the repository: the data must never be committed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_NPZ = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fer2013.npz"


def export(npz: Path, split: str, out: Path, limit: int | None = None) -> int:
    with np.load(npz) as data:  # each data[key] decompresses the whole array: read each once
        images, labels, splits = data["images"], data["labels"], data["split"]
        names, split_names = data["label_names"], list(data["split_names"])
    chosen = np.flatnonzero(splits == split_names.index(split))[:limit]
    for name in names:
        (out / str(name)).mkdir(parents=True, exist_ok=True)
    for i in chosen:
        Image.fromarray(images[i]).save(out / str(names[labels[i]]) / f"{i:05d}.png")
    return len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    parser.add_argument("--split", choices=["train", "test"], default="test")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images of the split")
    args = parser.parse_args()
    n = export(args.npz, args.split, args.out, args.limit)
    print(f"wrote {n} images to {args.out}")


if __name__ == "__main__":
    main()
