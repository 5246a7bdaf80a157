"""Choose the guidance scale of the emotion diffusion pipeline and judge it with our expression model.

1. **Choose** (selection seeds): for each guidance scale in ``--grid``, draw ``--select-per-emotion`` faces per
   emotion and keep the smallest scale whose mean agreement is within 0.01 of the best (stronger guidance costs
   diversity). The choice is saved as the pipeline's ``default_guidance`` in ``model_index.json``.
2. **Report** (fresh seeds, never used for the choice): ``--per-emotion`` faces per emotion at the chosen scale:
   agreement per emotion (share our expression model classifies as the requested emotion), the confusion, the
   diversity of our face embeddings next to real FER2013 test faces, seconds per image. Written to
   ``<pipeline>/metrics.json`` (keeping the training section the trainer wrote) and a grid of samples to
   ``--grid-image``.

    python scripts/judge_emotion_diffusion.py [--pipeline weights/emotion-diffusion]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affectlens.analyzer import build_face_pipeline  # noqa: E402
from affectlens.labels import CANONICAL_EMOTIONS, canonical_label  # noqa: E402
from affectlens.registry import create  # noqa: E402
from generation.diffusion import (  # noqa: E402
    face_embeddings,
    face_finder,
    image_grid,
    judge,
    load_emotion_pipeline,
    mean_pairwise_distance,
    to_expression_input,
)

DEFAULT_NPZ = REPO.parent / "shared" / "data" / "fer2013.npz"
SELECT_SEED, REPORT_SEED = 100, 0


def real_diversity(npz: Path, expression: object, per_emotion: int = 100) -> tuple[np.ndarray, dict[str, float]]:
    """350 random FER2013 test faces (the all-class reference ``judge`` takes) and, per emotion, the same
    diversity measure over ``per_emotion`` real test faces of that emotion (the within-class scale)."""
    with np.load(npz) as data:
        test = data["split"] == list(data["split_names"]).index("test")
        images, labels, names = data["images"][test], data["labels"][test], [str(n) for n in data["label_names"]]
    rng = np.random.default_rng(0)
    reference = images[rng.choice(len(images), 350, replace=False)]
    by_emotion: dict[str, float] = {}
    for k, name in enumerate(names):
        members = np.flatnonzero(labels == k)
        chosen = images[rng.choice(members, min(per_emotion, len(members)), replace=False)]
        crops = to_expression_input(chosen.astype(np.float32) / 255.0, expression.input_size)  # type: ignore[attr-defined]
        by_emotion[canonical_label(name) or name] = mean_pairwise_distance(face_embeddings(expression, crops))
    return reference, {e: by_emotion[e] for e in CANONICAL_EMOTIONS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", type=Path, default=REPO / "weights" / "emotion-diffusion")
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    # counting only samples with a face, agreement peaks at 5 and falls beyond it (docs/generation.md)
    parser.add_argument("--grid", type=float, nargs="+", default=[3.0, 4.0, 5.0, 6.0, 8.0, 10.0])
    parser.add_argument("--select-per-emotion", type=int, default=40)
    parser.add_argument("--per-emotion", type=int, default=100)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--grid-image", type=Path, default=REPO / "docs" / "generation" / "emotion-grid.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = load_emotion_pipeline(args.pipeline)
    expression = create("face_expression")
    # a sample agrees only if our face pipeline also finds a face in it: strong guidance turns sad, fearful and
    # surprised samples into shadows the classifier still reads as those emotions (docs/generation.md)
    finder = face_finder(build_face_pipeline())
    selection = {}
    for g in args.grid:
        r = judge(pipe, expression, per_emotion=args.select_per_emotion, seed=SELECT_SEED,
                  guidance_scale=g, num_inference_steps=args.steps, finder=finder)  # fmt: skip
        found = float(np.mean(list(r.face_found.values()))) if r.face_found else 0.0
        selection[g] = {"mean_agreement": r.mean_agreement, "mean_diversity": r.mean_diversity, "face_found": found}
        print(f"guidance {g}: agreement {r.mean_agreement:.3f} faces found {found:.3f} "
              f"diversity {r.mean_diversity:.3f}", flush=True)  # fmt: skip
    best = max(v["mean_agreement"] for v in selection.values())
    chosen = min(g for g, v in selection.items() if v["mean_agreement"] >= best - 0.01)
    print(f"chosen guidance {chosen}")

    reference, by_emotion = real_diversity(args.npz, expression)
    report = judge(pipe, expression, per_emotion=args.per_emotion, seed=REPORT_SEED, reference=reference,
                   guidance_scale=chosen, num_inference_steps=args.steps, finder=finder)  # fmt: skip
    start = time.perf_counter()
    pipe("happiness", num_images=1, generator=torch.Generator().manual_seed(0), guidance_scale=chosen)
    single = time.perf_counter() - start

    pipe.register_to_config(default_guidance=chosen)
    index = args.pipeline / "model_index.json"
    config = json.loads(index.read_text())
    config["default_guidance"] = chosen
    index.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    metrics_path = args.pipeline / "metrics.json"
    previous = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    metrics = {
        "training": previous.get("training"),
        "judge": "affectlens-expression (the shipped expression model) on each sample upscaled to 48x48 (bicubic); "
        "a sample agrees only when our face pipeline also finds a face in it (192 px, padded; face_found)",
        "guidance_selection": {
            "seed": SELECT_SEED,
            "per_emotion": args.select_per_emotion,
            "results": {str(g): v for g, v in selection.items()},
            "chosen": chosen,
            "rule": "smallest scale within 0.01 of the best mean agreement",
        },
        "sampling": {"guidance_scale": chosen, "num_inference_steps": args.steps, "seed": REPORT_SEED},
        **report.to_dict(),
        "reference_diversity_by_emotion": by_emotion,
        "seconds_single_image": round(single, 3),
        "threads": args.threads,
    }
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")

    rows = [
        pipe(e, num_images=8, generator=torch.Generator().manual_seed(1), display_size=96, return_dict=False)[0]
        for e in pipe.emotions
    ]
    args.grid_image.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, labels=list(pipe.emotions)).save(args.grid_image)
    print(json.dumps({k: metrics[k] for k in ("agreement", "face_found", "mean_agreement", "mean_diversity", "reference_diversity",
                                               "seconds_per_image", "seconds_single_image")}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
