"""Five affective trees on real inputs from ``../shared/data``, kept in ``docs/examples/``.

Inputs come only from the held-back parts of the data (FER2013 test faces, RAVDESS actors 23-24, GoEmotions test
comments), picked by label with a fixed seed, and go through the public API (``Analyzer().analyze``), as a user's
would: a FER2013 face is a 48x48 crop, so it is upscaled and padded into a 320x320 photo first. Each example is
written as ``<name>.json`` (the tree) and ``<name>.txt`` (its rendering). The face photos are made in ``/tmp/affectlens-examples``
and not kept: the data stays out of the repository; the trees name each by its FER2013 test index.

    python scripts/make_tree_examples.py            # with the LM writer (the shipped adapter + SmolLM2)
    python scripts/make_tree_examples.py --no-lm    # structured nodes and template texts only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from fusion_data import read_goemotions  # noqa: E402

from affectlens import Analyzer  # noqa: E402
from affectlens.labels import CANONICAL_EMOTIONS, canonical_label  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def fer_photo(label: str, rng: np.random.Generator, out: Path, analyzer: Analyzer) -> Path:
    """A FER2013 test face of ``label`` that the face detector finds, upscaled 4x and padded into a 320x320 grey
    photo (random picks until one is found: some FER2013 crops are not seen as faces by any detector)."""
    with np.load(DATA / "fer2013.npz") as d:
        names = [canonical_label(str(n)) for n in d["label_names"]]
        rows = np.flatnonzero((d["split"] == 1) & (d["labels"] == names.index(label)))
        picks = rng.permutation(rows)[:50]
        images = d["images"][picks]
    for index, image in zip(picks, images, strict=True):
        canvas = np.full((320, 320), int(np.median(image)), np.uint8)
        canvas[64:256, 64:256] = cv2.resize(image, (192, 192), interpolation=cv2.INTER_CUBIC)
        if analyzer.analyze_image(np.stack([canvas] * 3, -1)).num_faces == 1:
            path = out / f"fer2013-{index}-{label}.png"
            cv2.imwrite(str(path), canvas)
            return path
    raise RuntimeError(f"no detectable {label} face among 50 FER2013 test images")


def ravdess_clip(label: str, rng: np.random.Generator) -> Path:
    """A RAVDESS clip of ``label``, strong intensity, spoken by a held-out actor (23 or 24)."""
    labels = pd.read_csv(DATA / "ravdess_speech" / "labels.csv")
    rows = labels[(labels.actor >= 23) & (labels.label.map(canonical_label) == label) & (labels.intensity == "strong")]
    return (DATA / "ravdess_speech" / rows.path.iloc[int(rng.integers(len(rows)))]).relative_to(REPO.parent)


def goemotions_text(label: str, rng: np.random.Generator, min_words: int = 8) -> str:
    """A GoEmotions test comment with the single label ``label``, at least ``min_words`` long, no [NAME] mask."""
    texts, ys = read_goemotions("test")
    pool = [
        t
        for t, y in zip(texts, ys, strict=True)
        if y == CANONICAL_EMOTIONS.index(label) and len(t.split()) >= min_words and "[NAME]" not in t
    ]
    return pool[int(rng.integers(len(pool)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "examples")
    parser.add_argument("--no-lm", action="store_true", help="no LM writer: template texts")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    writer = None
    if not args.no_lm:
        from fusion.reasoner import build_default_writer

        writer = build_default_writer()
    analyzer = Analyzer(writer=writer)
    photos = Path(tempfile.gettempdir()) / "affectlens-examples"  # not kept in the repository
    photos.mkdir(exist_ok=True)
    os.chdir(REPO.parent)  # inputs are named relative to the folder that holds main/ and shared/
    examples = {
        "face-and-words": (
            [fer_photo("sadness", rng, photos, analyzer)],
            goemotions_text("sadness", rng),
        ),
        "face-and-voice": (
            [fer_photo("anger", rng, photos, analyzer), ravdess_clip("anger", rng)],
            None,
        ),
        "conflict-smile-sad-words": (
            [fer_photo("happiness", rng, photos, analyzer), ravdess_clip("sadness", rng)],
            goemotions_text("sadness", rng),
        ),
        "words-only": ([], goemotions_text("fear", rng)),
        "voice-only": ([ravdess_clip("happiness", rng)], None),
    }
    index = []
    for name, (sources, text) in examples.items():
        t0 = time.time()
        source = sources if len(sources) != 1 else sources[0]
        result = analyzer.analyze(source or None, text=text)
        tree = result.tree
        assert tree is not None
        (out / f"{name}.json").write_text(tree.to_json() + "\n")
        names = [
            f"FER2013 test face, fer2013.npz row {Path(s).stem.split('-')[1]} (upscaled)"
            if Path(s).suffix == ".png"
            else str(s)
            for s in sources
        ]
        header = [f"inputs: {', '.join(names) or '-'}"]
        if text:
            header.append(f"typed text: {text!r}")
        (out / f"{name}.txt").write_text("\n".join(header) + "\n\n" + tree.render() + "\n")
        seconds = round(time.time() - t0, 1)
        state = tree.emotion.value.get("state")
        index.append(
            {"name": name, "sources": [str(s) for s in sources], "text": text, "seconds": seconds, "emotion": state}
        )
        print(f"{name}: {state} ({seconds} s)")
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    print(f"wrote {len(index)} trees to {out}")


if __name__ == "__main__":
    main()
