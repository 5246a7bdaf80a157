"""Export a GoEmotions split as a CSV with label names, the input of ``affectlens eval text-emotion``.

    python scripts/export_goemotions.py --split test --out /tmp/goemotions-ekman-test.csv
    affectlens eval text-emotion --data /tmp/goemotions-ekman-test.csv --text-col text --label-col labels --json

The TSVs in ``../shared/data/goemotions/<taxonomy>/`` have no header and store label ids; the CSV has the
columns ``text``, ``labels`` (comma-separated names; the eval scores the first) and ``id``. It goes outside
the repository: the data must never be committed.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "goemotions"


def export(root: Path, taxonomy: str, split: str, out: Path) -> int:
    names = (root / taxonomy / "labels.txt").read_text().split()
    rows = 0
    with (root / taxonomy / f"{split}.tsv").open(newline="") as src, out.open("w", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(["text", "labels", "id"])
        for text, ids, comment in csv.reader(src, delimiter="\t", quoting=csv.QUOTE_NONE):
            writer.writerow([text, ",".join(names[int(i)] for i in ids.split(",")), comment])
            rows += 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--taxonomy", choices=["ekman", "original", "group"], default="ekman")
    parser.add_argument("--split", choices=["train", "dev", "test"], default="test")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(f"wrote {export(args.root, args.taxonomy, args.split, args.out)} rows to {args.out}")


if __name__ == "__main__":
    main()
