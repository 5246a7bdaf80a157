"""Arrange RAVDESS speech as a folder per label (symlinks), the input of ``affectlens eval speech-emotion``.

    python scripts/export_ravdess.py --actors 23 24 --out /tmp/ravdess-a23-24
    affectlens eval speech-emotion --data /tmp/ravdess-a23-24 --json

``calm`` has no canonical class: its folder is reported under ``excluded`` by the eval. The links point into
``../shared/data``; nothing is copied into the repository.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ravdess_speech"


def export(root: Path, out: Path, actors: set[int] | None) -> int:
    count = 0
    with (root / "labels.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if actors and int(row["actor"]) not in actors:
                continue
            target = out / row["label"] / Path(row["path"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to((root / row["path"]).resolve())
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--actors", type=int, nargs="*", help="only these actors (default: all 24)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    n = export(args.root, args.out, set(args.actors) if args.actors else None)
    print(f"linked {n} clips under {args.out}")


if __name__ == "__main__":
    main()
