"""Check the talking head with our own perception: does the face read as the emotion, does the mouth follow
the voice, how fast does it render?

For each emotion, one sentence is spoken (piper with the Joe voice, espeak-ng when piper is missing) and
rendered from

- two public-domain colour portraits: the sample portrait (``demo/assets/astronaut.jpg``, NASA; she smiles
  broadly in the photo, which every other emotion has to overcome) and Grace Hopper (US Navy; matplotlib's
  sample data ``grace_hopper.jpg``, shipped with a dependency; closed lips, glasses, the expression model reads
  her as neutral), and
- ``--faces`` FER2013 *test* faces labelled neutral (48x48 upscaled to 192x192, meshed as in
  ``fit_expression_edit.py``; never written anywhere).

Agreement: the share of frames after the onset (from the apex's start to the end) that the default expression
model (``affectlens-expression``) classifies as the requested emotion, per emotion, each face cropped as our face
pipeline frames it (the box it locates on the rest image). Sync: our MediaPipe mesh
run again on every rendered frame of the portraits, the inner-lip gap (mesh points 13-14) divided by the
interocular distance, against the speech's RMS envelope at the same frame: Pearson r, per emotion (the sample
portrait) and pooled (both portraits).
Speed: frames per second of rendering (``render_frame``, no encoding) and of the whole MP4 write, and the TTS's
real-time factor. Key frames of each portrait go to ``docs/talking-head/``; the figures to ``--json``.

    python scripts/judge_talking_head.py                    # ~80 s on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from affectlens.errors import AffectLensError  # noqa: E402
from affectlens.labels import CANONICAL_EMOTIONS  # noqa: E402
from affectlens.registry import create_face_expression  # noqa: E402
from demo.samples import load_portrait  # noqa: E402
from generation.lipsync import envelope_correlation  # noqa: E402
from generation.speech import synthesize  # noqa: E402
from generation.talking_head import LEAD_IN, Portrait, TalkingHead, TalkingHeadVideo, build_talking_head  # noqa: E402
from perception.face.landmarks import FaceMesh  # noqa: E402
from perception.face.pipeline import mesh_box  # noqa: E402

SENTENCE = "I hear you, and I am right here with you. Tell me more about what happened today."
DOCS = REPO / "docs" / "talking-head"
INTENSITY = 0.8
SEED = 0


def load_hopper() -> np.ndarray:
    """Grace Hopper's portrait (US Navy, public domain) from matplotlib's sample data, as RGB uint8."""
    from matplotlib import cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise FileNotFoundError(f"{path}: matplotlib's sample portrait is missing")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


#: The judge's portraits: name -> (loader, where it comes from). The first is the sample portrait (per-emotion
#: sync, the MP4 write, ``key-frames.jpg``); every portrait's key frames go to ``key-frames[-NAME].jpg``.
PORTRAITS: dict[str, tuple[Callable[[], np.ndarray], str]] = {
    "astronaut": (load_portrait, "demo/assets/astronaut.jpg (NASA, public domain)"),
    "hopper": (load_hopper, "matplotlib sample data grace_hopper.jpg (US Navy, public domain)"),
}


def read_frames(model: Any, frames: list[np.ndarray], box: np.ndarray) -> np.ndarray:
    """The expression model's argmax per frame (crops from ``box``)."""
    crops = np.stack([model.preprocess(f, box) for f in frames])
    return np.concatenate([model.predict_batch(crops[i : i + 64]).argmax(1) for i in range(0, len(crops), 64)])


def read_shares(reads: np.ndarray) -> dict[str, float]:
    """Share of the frames read as each emotion (those read at all)."""
    return {CANONICAL_EMOTIONS[c]: float((reads == c).mean()) for c in np.unique(reads)}


def after_onset(video: TalkingHeadVideo) -> slice:
    start = int(np.ceil(video.performance.apex[0] * video.fps))
    return slice(start, video.num_frames)


def mouth_gaps(mesh: FaceMesh, frames: list[np.ndarray], box: np.ndarray) -> np.ndarray:
    """Inner-lip gap / interocular distance per frame (NaN where the mesh finds no face)."""
    out = np.full(len(frames), np.nan)
    for i, frame in enumerate(frames):
        points, _ = mesh(frame, box, None)
        if points is not None:
            out[i] = np.linalg.norm(points[13, :2] - points[14, :2]) / np.linalg.norm(points[33, :2] - points[263, :2])
    return out


def key_frames(video: TalkingHeadVideo, frames: list[np.ndarray], box: np.ndarray, size: int = 200) -> np.ndarray:
    """Four frames side by side: rest, apex while speaking (mouth open), apex (mouth closed), offset."""
    x0, y0, x1, y1 = box
    pad = 0.35 * (x1 - x0)
    h, w = frames[0].shape[:2]
    cx0, cy0 = int(max(0, x0 - pad)), int(max(0, y0 - pad))
    cx1, cy1 = int(min(w, x1 + pad)), int(min(h, y1 + pad))
    apex = after_onset(video)
    opening = video.mouth.open
    lead = round(LEAD_IN * video.fps)
    speaking = [k for k in range(apex.start, video.num_frames) if 0 <= k - lead < len(opening)]
    opened = max(speaking, key=lambda k: opening[k - lead]) if speaking else apex.start
    closed = min(speaking, key=lambda k: opening[k - lead]) if speaking else apex.start
    picks = [0, opened, closed, video.num_frames - 1]
    tiles = [cv2.resize(frames[k][cy0:cy1, cx0:cx1], (size, int(size * (cy1 - cy0) / (cx1 - cx0)))) for k in picks]
    return np.concatenate(tiles, axis=1)


def write_key_frames(tiles: list[np.ndarray], path: Path) -> None:
    """One row of key frames per emotion, labelled, as a JPEG."""
    grid = np.concatenate(tiles, axis=0)
    for row, emotion in enumerate(CANONICAL_EMOTIONS):
        y = row * tiles[0].shape[0] + 22
        cv2.putText(grid, emotion, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 3, cv2.LINE_AA)
        cv2.putText(grid, emotion, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (20, 20, 20), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])


def fer_neutral_faces(npz: Path, count: int, split_name: str = "test") -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` FER2013 faces labelled neutral as (192x192 RGB, 468x3 mesh), from the test split or (``val``)
    the expression model's validation split of train, which settings are chosen on."""
    from fit_expression_edit import DEFAULT_NPZ, meshes, upscale
    from train_face_expression import fer2013_split_indices

    images, labels, splits = fer2013_split_indices(npz or DEFAULT_NPZ)
    points = meshes(npz or DEFAULT_NPZ, images)
    pool = splits["val" if split_name == "val" else "test"]
    ok = np.isfinite(points[pool]).all(axis=(1, 2)) & (labels[pool] == CANONICAL_EMOTIONS.index("neutral"))
    candidates = pool[ok]
    chosen = np.random.default_rng(SEED).permutation(candidates)[:count]
    return [(upscale(images[i]), points[i]) for i in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=20, help="FER2013 test neutral faces (0: the portraits only)")
    parser.add_argument("--npz", type=Path, default=None)
    parser.add_argument(
        "--portraits", nargs="+", choices=tuple(PORTRAITS), default=list(PORTRAITS), help="the first is the sample"
    )
    parser.add_argument(
        "--split", choices=("test", "val"), default="test", help="FER2013 faces: val to choose settings"
    )
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--json", type=Path, default=DOCS / "metrics.json")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument(
        "--expression-model", default=None, help="the reader (default: the registry's default expression model)"
    )
    parser.add_argument(
        "--basis-prototypes",
        action="store_true",
        help="plan with the AU basis's prototypes (still editing's) instead of the talking head's fitted ones",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a setting of generation.talking_head or generation.texture (e.g. JAW_GAIN=2, MAX_SHADE=0.6) "
        "to compare settings on --split val",
    )
    args = parser.parse_args()
    import generation.talking_head as talking_head_module
    import generation.texture as texture_module

    for item in args.set:
        name, _, value = item.partition("=")
        module = next((m for m in (talking_head_module, texture_module) if hasattr(m, name)), None)
        if module is None:
            parser.error(f"--set {item}: no setting {name!r} in generation.talking_head or generation.texture")
        setattr(module, name, float(value))
    torch.set_num_threads(1)
    started = time.time()
    head: TalkingHead = build_talking_head(engine=args.engine, plans=not args.basis_prototypes)
    model = create_face_expression(args.expression_model)
    mesh = FaceMesh(num_threads=1)
    speeches = {e: synthesize(SENTENCE, e, intensity=INTENSITY, engine=args.engine) for e in CANONICAL_EMOTIONS}
    results: dict[str, dict[str, Any]] = {e: {"portraits": {}} for e in CANONICAL_EMOTIONS}
    portraits: dict[str, Any] = {}
    prepared: dict[str, Portrait] = {}
    gaps_pooled, env_pooled = [], []
    for name in args.portraits:
        load, source = PORTRAITS[name]
        image = load()
        portrait = prepared[name] = head.prepare(image)
        box = np.asarray(portrait.box, np.float32)
        rest = CANONICAL_EMOTIONS[read_frames(model, [image], box)[0]]
        print(f"portrait {name} reads as {rest} before any change", flush=True)
        tiles = []
        for emotion in CANONICAL_EMOTIONS:
            speech = speeches[emotion]
            video = head.perform(portrait, SENTENCE, emotion, INTENSITY, SEED, speech=speech)
            t0 = time.perf_counter()
            frames = list(video.frames())
            render_s = time.perf_counter() - t0
            k = CANONICAL_EMOTIONS.index(emotion)
            reads = read_frames(model, frames, box)[after_onset(video)]
            gaps = mouth_gaps(mesh, frames, box)
            lead = round(LEAD_IN * video.fps)
            env = np.zeros(video.num_frames)
            env[lead : lead + len(video.mouth.envelope)] = video.mouth.envelope[: video.num_frames - lead]
            valid = np.isfinite(gaps)
            sync = envelope_correlation(gaps[valid], env[valid])
            gaps_pooled.append(gaps)
            env_pooled.append(env)
            entry = {
                "agreement": float((reads == k).mean()),
                "reads": read_shares(reads),
                "sync_r": sync,
                "render_fps": video.num_frames / render_s,
            }
            results[emotion]["portraits"][name] = entry
            if name == args.portraits[0]:  # the sample portrait's figures keep their old keys
                results[emotion].update(
                    portrait_agreement=entry["agreement"],
                    portrait_reads=entry["reads"],
                    sync_r=sync,
                    frames=video.num_frames,
                    speech_seconds=speech.duration,
                    tts_seconds=speech.seconds,
                    render_fps=entry["render_fps"],
                    performance=video.performance.to_dict(),
                )
            tiles.append(key_frames(video, frames, box))
            print(
                f"{emotion:<10} portrait {name} agreement {entry['agreement']:.2f}  sync r {sync:.2f}  "
                f"render {entry['render_fps']:.0f} fps  tts {speech.seconds:.2f} s for {speech.duration:.2f} s",
                flush=True,
            )
        portraits[name] = {
            "source": source,
            "rest_read": rest,
            "mean_agreement": float(np.mean([r["portraits"][name]["agreement"] for r in results.values()])),
        }
        if not args.no_figures:
            write_key_frames(
                tiles, DOCS / ("key-frames.jpg" if name == args.portraits[0] else f"key-frames-{name}.jpg")
            )

    rest_reads: dict[str, float] | None = None
    if args.faces:
        faces = fer_neutral_faces(args.npz, args.faces, args.split)
        # Frames are read as our face pipeline frames each face (its located box), not by the cached mesh's box:
        # those meshes were fitted on the whole image and hug the face tighter (``fit_expression_edit.meshes``).
        located = [head.editor.pipeline.locate(face) for face, _ in faces]
        boxes = [found[0].box if found else mesh_box(points) for found, (_, points) in zip(located, faces, strict=True)]
        # what the reader makes of the faces before any change (FER2013 labels them neutral): the agreement of an
        # emotion the rest faces already lean towards is partly given, not rendered
        rest = np.concatenate([read_frames(model, [face], b) for (face, _), b in zip(faces, boxes, strict=True)])
        rest_reads = read_shares(rest)
        print(f"FER2013 {args.split} neutral faces at rest read as {rest_reads}", flush=True)
        for emotion in CANONICAL_EMOTIONS:
            k = CANONICAL_EMOTIONS.index(emotion)
            shares, refused, pooled_reads = [], 0, []
            for (face, points), face_box in zip(faces, boxes, strict=True):
                try:
                    fp = head.prepare(face, points)
                except AffectLensError:  # turned too far, too small: the talking head refuses, so do we
                    refused += 1
                    continue
                video = head.perform(fp, SENTENCE, emotion, INTENSITY, SEED, speech=speeches[emotion])
                frames = list(video.frames())
                reads = read_frames(model, frames, face_box)[after_onset(video)]
                shares.append(float((reads == k).mean()))
                pooled_reads.append(reads)
            results[emotion]["fer_agreement"] = float(np.mean(shares))
            results[emotion]["fer_reads"] = read_shares(np.concatenate(pooled_reads))
            results[emotion]["fer_faces_majority"] = float(np.mean(np.array(shares) > 0.5))
            results[emotion]["fer_faces"] = len(shares)
            results[emotion]["fer_refused"] = refused
            print(f"{emotion:<10} FER2013 {args.split} neutral faces: agreement {np.mean(shares):.2f}", flush=True)

    pooled_gaps, pooled_env = np.concatenate(gaps_pooled), np.concatenate(env_pooled)
    valid = np.isfinite(pooled_gaps)
    pooled = envelope_correlation(pooled_gaps[valid], pooled_env[valid])
    video = head.perform(
        prepared[args.portraits[0]], SENTENCE, "happiness", INTENSITY, SEED, speech=speeches["happiness"]
    )
    DOCS.mkdir(parents=True, exist_ok=True)
    write = video.write(Path("/tmp") / "affectlens-judge-talking-head.mp4")
    summary = {
        "sentence": SENTENCE,
        "intensity": INTENSITY,
        "engine": speeches["neutral"].engine,
        "portrait": PORTRAITS[args.portraits[0]][1],
        "portraits": portraits,
        "reader": model.name,
        "fer_faces": args.faces,
        "fer_split": args.split,
        "fer_rest_reads": rest_reads,
        "overrides": args.set,
        "prototypes": "the AU basis's" if args.basis_prototypes else "the talking head's (talking-head-plans)",
        "per_emotion": results,
        "mean_portrait_agreement": float(np.mean([r["portrait_agreement"] for r in results.values()])),
        "mean_fer_agreement": (float(np.mean([r["fer_agreement"] for r in results.values()])) if args.faces else None),
        "sync_r_pooled": pooled,
        "render_fps_mean": float(np.mean([r["render_fps"] for r in results.values()])),
        "mp4_write": write,
        "tts_real_time_factor": float(
            sum(s.seconds for s in speeches.values()) / sum(s.duration for s in speeches.values())
        ),
        "wall_seconds": time.time() - started,
        "command": " ".join(["python scripts/judge_talking_head.py", *sys.argv[1:]]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1) + "\n")
    print(
        "mean portrait agreement "
        + ", ".join(f"{name} {entry['mean_agreement']:.2f}" for name, entry in portraits.items())
        + f"; FER {summary['mean_fer_agreement']}; "
        f"sync r pooled {pooled:.2f}; render {summary['render_fps_mean']:.0f} fps; "
        f"MP4 write {write['render_fps']:.0f} fps; TTS RTF {summary['tts_real_time_factor']:.2f} -> {args.json}"
    )


if __name__ == "__main__":
    main()
