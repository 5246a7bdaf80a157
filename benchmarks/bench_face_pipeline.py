"""Face pipeline throughput on the sample video, as a ratio against a baseline measured in the same run.

Baseline: what ``fer`` does by default — the Haar cascade and mini-Xception, no mesh, no fallback.
Ours: CenterFace + MediaPipe mesh + mini-Xception + quality (the default ``Analyzer``).

    ./run shell python benchmarks/bench_face_pipeline.py [--frames 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from affectlens import Analyzer
from affectlens.analyzer import build_face_pipeline
from demo.samples import make_sample_video
from perception.media import iter_video_frames


def frames_per_second(analyzer: Analyzer, frames: list, repeat: int) -> tuple[float, int]:
    rates, found = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        found = sum(len(analyzer.face(f.image)) for f in frames)
        rates.append(len(frames) / (time.perf_counter() - started))
    return statistics.median(rates), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = make_sample_video(Path(tmp) / "sample.mp4", seconds=args.frames / 10)
        frames = list(iter_video_frames(video))
    baseline = Analyzer(build_face_pipeline(detector="haar", landmarker=None, fallback=None))
    ours = Analyzer()
    base_fps, base_found = frames_per_second(baseline, frames, args.repeat)
    our_fps, our_found = frames_per_second(ours, frames, args.repeat)
    print(
        f"frames: {len(frames)} ({frames[0].image.shape[1]}x{frames[0].image.shape[0]}), median of {args.repeat} runs"
    )
    print(f"baseline haar + mini-Xception:           {base_fps:7.1f} frames/s, faces found {base_found}")
    print(f"default centerface + mesh + mini-Xception: {our_fps:7.1f} frames/s, faces found {our_found}")
    print(f"ratio default/baseline: {our_fps / base_fps:.2f}x")


if __name__ == "__main__":
    main()
