"""Talking-head rendering speed on CPU: frames per second of ``TalkingHead.render_frame`` on the sample portrait
(512x512), of the whole MP4 write (render + H.264/AAC encoding), and of the speech engine.

Baseline, measured in the same run on the same frames: the naive renderer that triangulates the mesh again for
every frame (``generation.warp.piecewise_affine_warp``, what a one-off edit does) instead of reusing the
portrait's ``MeshWarper``. Ratios: ours over that baseline, and ours over real time (25 fps: above 1, a video
renders faster than it plays).

    python benchmarks/talking_head.py [--engine auto|piper|espeak-ng] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from demo.samples import load_portrait
from generation.edit import fill_mouth
from generation.talking_head import FPS, TalkingHeadVideo, build_talking_head, rotate_points
from generation.warp import piecewise_affine_warp

TEXT = "I hear you, and I am right here with you. Tell me more about what happened today."


def naive_frame(video: TalkingHeadVideo, k: int) -> np.ndarray:
    """Frame ``k`` as ``render_frame`` draws it, but triangulating the mesh afresh (no cached warper)."""
    head, portrait = video.renderer, video.portrait
    image = portrait.image
    moved = portrait.points.astype(np.float64).copy()
    moved[:, :2] = head.basis.to_image(portrait.points, head.basis.displacement(video.aus[k]))
    dst = rotate_points(moved, *video.pose[k])
    src = np.concatenate([portrait.points[:, :2], portrait.irises])
    frame = piecewise_affine_warp(image, src, np.concatenate([dst, portrait.irises]))
    return fill_mouth(frame, portrait.points, dst)


def timed(fn: object, frames: int, repeat: int) -> float:
    """Median frames per second of ``fn(k)`` over ``frames`` frames, ``repeat`` times."""
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        for k in range(frames):
            fn(k)  # type: ignore[operator]
        rates.append(frames / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="auto", choices=("auto", "piper", "espeak-ng"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    started = time.perf_counter()
    head = build_talking_head(engine=args.engine)
    load_s = time.perf_counter() - started
    image = load_portrait()
    started = time.perf_counter()
    portrait = head.prepare(image)
    prepare_s = time.perf_counter() - started
    started = time.perf_counter()
    video = head.perform(portrait, TEXT, "sadness", 0.7, seed=0)
    perform_s = time.perf_counter() - started
    n = video.num_frames
    ours = timed(lambda k: head.render_frame(video, k), n, args.repeat)
    baseline = timed(lambda k: naive_frame(video, k), n, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        write = video.write(Path(tmp) / "bench.mp4")
    print(f"models loaded in {load_s:.1f} s; portrait prepared in {prepare_s:.2f} s")
    print(
        f"speech ({video.speech.engine}): {video.speech.seconds:.2f} s for {video.speech.duration:.2f} s of audio "
        f"(real-time factor {video.speech.seconds / video.speech.duration:.2f}); plan + lip sync "
        f"{perform_s - video.speech.seconds:.3f} s"
    )
    print(f"{n} frames of {image.shape[1]}x{image.shape[0]}:")
    print(f"  render_frame (cached warper)          {ours:7.1f} fps")
    print(f"  baseline: triangulate every frame     {baseline:7.1f} fps")
    print(f"  MP4 write (render + H.264/AAC)        {write['render_fps']:7.1f} fps")
    print(f"ratio ours / baseline: {ours / baseline:.2f}x")
    print(f"ratio MP4 write / real time ({FPS:g} fps): {write['render_fps'] / FPS:.2f}x")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
