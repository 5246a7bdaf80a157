"""Peak memory of ``affectlens annotate`` against video length: a short and a long 640x360 single-face video,
each annotated by the CLI in a fresh process whose peak resident set size is read when it exits.

Both videos are one clip of the sample portrait (``demo/samples.py``, 30 fps) repeated: its H.264 packets are
copied ``n`` times with shifted timestamps (no re-encoding), so the long video costs seconds to make and both
hold the same frames. Each runs ``python -m affectlens.cli annotate VIDEO -o OUT --quiet --fps F --modalities
face`` (with its default HTML report; ``--no-report`` drops it); the peak RSS is ``ru_maxrss`` from ``wait4``
on that process, and RSS sampled every 0.25 s shows when memory was taken (its maximum per quarter of the run).
A flat curve and a long/short peak ratio near 1.0 mean memory does not grow with the video's length.

    .venv/bin/python benchmarks/annotate_memory.py [--minutes 10] [--short-minutes 1] [--fps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av

from demo.samples import make_sample_video

if TYPE_CHECKING:
    from affectlens.analyzer import Analyzer

REPO = Path(__file__).resolve().parents[1]
FPS = 30
SIZE = (640, 360)
SAMPLE_EVERY = 0.25  # seconds between RSS samples
#: Read by ``analyzer_from_env`` in the annotate process (``--expression``).
EXPRESSION_ENV = "AFFECTLENS_BENCH_EXPRESSION"


@dataclass(frozen=True)
class MemoryRun:
    """One annotate process: peak RSS (MiB), wall seconds, RSS maxima per quarter of the run, and its output."""

    peak_mib: float
    seconds: float
    quarters_mib: tuple[float, ...]
    frames: int
    face_rows: int


def analyzer_from_env() -> Analyzer:
    """``$AFFECTLENS_ANNOTATE_ANALYZER`` hook: the default analyzer with ``$AFFECTLENS_BENCH_EXPRESSION`` as its
    face expression model (``--expression``)."""
    from affectlens.analyzer import Analyzer, build_face_pipeline

    return Analyzer(face=build_face_pipeline(expression=os.environ[EXPRESSION_ENV]))


def loop_video(clip: Path, times: int, out: Path) -> Path:
    """Write ``clip``'s video packets ``times`` times over into ``out``, each copy shifted by the clip's length."""
    with av.open(str(clip)) as src:
        stream = src.streams.video[0]
        frames, rate, time_base = stream.frames, stream.average_rate, stream.time_base
    assert frames and rate and time_base, f"{clip}: frame count, rate or time base unknown"
    shift = round(frames / rate / time_base)  # the clip's length in time_base units
    with av.open(str(out), "w") as dst:
        for k in range(times):
            with av.open(str(clip)) as src:
                v_in = src.streams.video[0]
                v_out = dst.streams.video[0] if k else dst.add_stream_from_template(v_in)
                for packet in src.demux(v_in):
                    if packet.dts is None:  # the demuxer's empty flush packet
                        continue
                    packet.pts = None if packet.pts is None else packet.pts + k * shift
                    packet.dts += k * shift
                    packet.stream = v_out
                    dst.mux(packet)
    return out


def make_videos(folder: Path, short_s: float, long_s: float, clip_s: float) -> tuple[Path, Path, float]:
    """The short and long test videos from one clip of ``clip_s`` seconds (shortened to fit ``short_s``)."""
    clip_s = min(clip_s, short_s)
    clip = make_sample_video(folder / "clip.mp4", seconds=clip_s, fps=FPS, size=SIZE)
    short = loop_video(clip, max(1, round(short_s / clip_s)), folder / "short.mp4")
    long = loop_video(clip, max(1, round(long_s / clip_s)), folder / "long.mp4")
    return short, long, clip_s


def video_seconds(path: Path) -> float:
    """Length of ``path``'s video stream in seconds, from its frame count and average rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if not stream.frames or not stream.average_rate:
            raise SystemExit(f"{path}: frame count or rate unknown")
        return float(stream.frames / stream.average_rate)


def vm_rss_mib(pid: int) -> float | None:
    """The process's current RSS in MiB from ``/proc/<pid>/status`` (``None`` once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def run_annotate(video: Path, out: Path, fps: float, report: bool, expression: str | None) -> MemoryRun:
    """Annotate ``video`` in a fresh CLI process; its peak RSS comes from ``wait4`` when it exits."""
    cmd = [sys.executable, "-m", "affectlens.cli", "annotate", str(video), "-o", str(out), "--quiet"]
    cmd += ["--fps", f"{fps:g}", "--modalities", "face", *([] if report else ["--no-report"])]
    env = dict(os.environ)
    if expression is not None:
        env["AFFECTLENS_ANNOTATE_ANALYZER"] = f"benchmarks.annotate_memory:{analyzer_from_env.__name__}"
        env[EXPRESSION_ENV] = expression
    log = out.with_suffix(".log")
    samples: list[tuple[float, float]] = []
    with log.open("w") as fh:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = vm_rss_mib(proc.pid)
            if rss is not None:
                samples.append((time.perf_counter() - start, rss))
            time.sleep(SAMPLE_EVERY)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    if proc.returncode != 0:
        raise SystemExit(f"annotate failed on {video} (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
    entry = next(iter(json.loads((out / "manifest.json").read_text())["videos"].values()))
    quarters = tuple(
        max((rss for t, rss in samples if q * seconds / 4 <= t < (q + 1) * seconds / 4), default=float("nan"))
        for q in range(4)
    )
    return MemoryRun(usage.ru_maxrss / 1024, seconds, quarters, entry["frames"], entry["outputs"]["faces"]["rows"])


def describe(name: str, minutes: float, run: MemoryRun) -> str:
    quarters = " ".join(f"{q:.0f}" for q in run.quarters_mib)
    return (
        f"{name} ({minutes:.2f} min, {run.frames} frames analysed, {run.face_rows} face rows): peak RSS "
        f"{run.peak_mib:.0f} MiB; {run.seconds:.1f} s wall ({minutes * 60 / run.seconds:.2f}x real time); "
        f"max RSS per quarter of the run (MiB): {quarters}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long video")
    parser.add_argument("--short-minutes", type=float, default=1.0, help="length of the short video")
    parser.add_argument("--fps", type=float, default=5.0, help="annotate --fps (frames analysed per second)")
    parser.add_argument("--clip-seconds", type=float, default=20.0, help="length of the clip the videos repeat")
    parser.add_argument("--no-report", action="store_true", help="annotate --no-report (no HTML reports)")
    parser.add_argument(
        "--expression", default=None, help="face expression model for annotate (default: the registry's default)"
    )
    args = parser.parse_args()
    if not 0 < args.short_minutes <= args.minutes:
        parser.error("need 0 < --short-minutes <= --minutes")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        start = time.perf_counter()
        short, long, clip_s = make_videos(tmp, args.short_minutes * 60, args.minutes * 60, args.clip_seconds)
        lengths = {path: video_seconds(path) for path in (short, long)}
        print(
            f"videos made in {time.perf_counter() - start:.1f} s from a {clip_s:g} s clip ({SIZE[0]}x{SIZE[1]}, "
            f"{FPS} fps): short {lengths[short]:.0f} s, long {lengths[long]:.0f} s; {os.cpu_count()} CPU cores; "
            f"annotate --fps {args.fps:g} --modalities face{' --no-report' if args.no_report else ''}",
            flush=True,
        )
        runs: dict[str, MemoryRun] = {}
        for name, path in (("short", short), ("long", long)):
            runs[name] = run_annotate(path, tmp / f"out-{name}", args.fps, not args.no_report, args.expression)
            print(describe(name, lengths[path] / 60, runs[name]), flush=True)
    ratio = runs["long"].peak_mib / runs["short"].peak_mib
    print(f"peak RSS long / short: {ratio:.2f} (target about 1.0: memory flat in video length)")


if __name__ == "__main__":
    main()
