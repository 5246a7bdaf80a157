"""Face throughput on a 640x360 single-face video: our pipeline against ``fer``'s ``FER().detect_emotions``,
measured in the same run on the same decoded frames, printed as ratios.

- **fer** (baseline): ``fer`` 25.10.3 as users run it (``FER()``: Haar cascade + its quantised mini-Xception
  through TensorFlow Lite), one ``detect_emotions`` call per frame. It needs TensorFlow, which AffectLens does
  not depend on, so it runs in a benchmark-only environment that this script builds once under
  ``~/.cache/affectlens/venvs/bench-fer-<hash>`` (``--fer-python`` points at another interpreter).
- **ours, full**: ``FacePipeline.stream()`` as ``Analyzer.analyze_video`` runs it: CenterFace on key frames
  (every 15th frame, 0.5 s at 30 fps) and mesh-following in between, the 468-point mesh, expression,
  AUs, head pose, eye openness, iris gaze, quality, track ids and smoothing, in chunks of 8 frames.
- **ours, expression only** (``build_face_pipeline(geometry=False)``, ``affectlens analyze --expression-only``):
  the same detection, mesh-following, expression, quality and tracking; no AUs, pose or gaze.

The default video is the sample portrait panned and zoomed at 30 fps (``demo/samples.py``); ``--video`` takes
any other single-face clip. Frames are decoded once before timing (decoding is the same for every contender); each contender runs
``--repeat`` times and the median frames/s is reported.

    ./run shell python benchmarks/face_throughput.py [--seconds 6] [--repeat 3] [--expression-model NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from affectlens.analyzer import build_face_pipeline
from demo.samples import make_sample_video
from perception.face.pipeline import FacePipeline
from perception.face.tracking import FaceTimeline
from perception.media import iter_video_frames

FER_ENV_SPEC = ("tensorflow-cpu==2.21.0", "opencv-python-headless<5", "requests", "pillow", "setuptools<81", "numpy<3")
FER_PACKAGE = "fer==25.10.3"  # installed without its dependencies (facenet-pytorch, moviepy: not needed here)
CHUNK = 8
KEYFRAME_INTERVAL = 15

FER_RUNNER = """
import json, statistics, sys, time
import numpy as np
from fer.fer import FER  # fer 25.10 no longer re-exports FER from the package
frames = np.load(sys.argv[1])["frames"]  # BGR, as fer expects from cv2
repeat = int(sys.argv[2])
detector = FER()
for frame in frames[:5]:
    detector.detect_emotions(frame)  # warm-up: model load and first calls
rates, found = [], 0
for _ in range(repeat):
    start = time.perf_counter()
    found = sum(len(detector.detect_emotions(frame)) for frame in frames)
    rates.append(len(frames) / (time.perf_counter() - start))
print(json.dumps({"fps": statistics.median(rates), "faces": found}))
"""


def fer_python(root: Path) -> Path:
    """The benchmark-only interpreter with ``fer`` and TensorFlow, built on first use."""
    key = hashlib.sha256(json.dumps([FER_ENV_SPEC, FER_PACKAGE, sys.version]).encode()).hexdigest()[:16]
    venv = root / f"bench-fer-{key}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        print(f"building the fer benchmark environment in {venv} (first time only)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *FER_ENV_SPEC], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", FER_PACKAGE], check=True)
        (venv / ".complete").touch()
    return python


def run_fer(python: Path, frames: list[np.ndarray], repeat: int, tmp: Path) -> dict[str, float]:
    path = tmp / "frames.npz"
    np.savez(path, frames=np.stack([f[:, :, ::-1] for f in frames]))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [str(python), "-c", FER_RUNNER, str(path), str(repeat)], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise SystemExit(f"the fer baseline failed ({python}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_ours(pipeline: FacePipeline, frames: list[np.ndarray], repeat: int) -> dict[str, float]:
    """Frames/s of ``pipeline.stream()`` + track ids and smoothing, as ``Analyzer.analyze_video`` runs them."""
    rates, found, detections = [], 0, 0
    for _ in range(repeat + 1):  # the first pass warms up
        stream = pipeline.stream(keyframe_interval=KEYFRAME_INTERVAL)
        timeline = FaceTimeline(geometry=pipeline.geometry)
        start = time.perf_counter()
        found = 0
        for i in range(0, len(frames), CHUNK):
            chunk = frames[i : i + CHUNK]
            for image, faces in zip(chunk, stream(chunk), strict=True):
                found += len(timeline(image, faces))
        rates.append(len(frames) / (time.perf_counter() - start))
        detections = stream.detections
    return {"fps": statistics.median(rates[1:]), "faces": found, "detections": detections}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the 30 fps test video")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--video", type=Path, default=None, help="another single-face video (resized to 640x360)")
    parser.add_argument("--max-frames", type=int, default=300)
    parser.add_argument("--fer-python", type=Path, default=None, help="an interpreter that has fer + TensorFlow")
    parser.add_argument(
        "--expression-model", default=None, help="a registered expression model (default: the registry's default)"
    )
    parser.add_argument("--venv-root", type=Path, default=Path.home() / ".cache" / "affectlens" / "venvs")
    args = parser.parse_args()
    python = args.fer_python or fer_python(args.venv_root)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        video = args.video or make_sample_video(tmp / "sample.mp4", seconds=args.seconds, fps=30, size=(640, 360))
        frames = [
            cv2.resize(f.image, (640, 360), interpolation=cv2.INTER_AREA)
            if f.image.shape[:2] != (360, 640)
            else f.image
            for f in iter_video_frames(video, fps=None, max_frames=args.max_frames)
        ]
        pipeline = build_face_pipeline(expression=args.expression_model)
        ours_full = run_ours(pipeline, frames, args.repeat)
        ours_expr = run_ours(build_face_pipeline(expression=args.expression_model, geometry=False), frames, args.repeat)
        fer = run_fer(python, frames, args.repeat, tmp)
    h, w = frames[0].shape[:2]
    source = args.video or "the sample portrait panned at 30 fps"
    print(f"{len(frames)} frames {w}x{h} of {source}, median of {args.repeat} runs, {os.cpu_count()} CPU cores")
    print(f"fer FER().detect_emotions (Haar + mini-Xception TFLite): {fer['fps']:6.1f} frames/s, faces {fer['faces']}")
    print(
        f"ours, full ({pipeline.describe()['expression']}, mesh, AUs, pose, gaze, tracking): {ours_full['fps']:6.1f} "
        f"frames/s, faces {ours_full['faces']}, key frames {ours_full['detections']}"
    )
    print(f"ours, expression only: {ours_expr['fps']:6.1f} frames/s, faces {ours_expr['faces']}")
    print(f"ratio full / fer: {ours_full['fps'] / fer['fps']:.2f}x")
    print(f"ratio expression-only / fer: {ours_expr['fps'] / fer['fps']:.2f}x")


if __name__ == "__main__":
    main()
