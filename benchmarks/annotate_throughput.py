"""Annotation throughput: video-seconds annotated per wall-second by ``affectlens annotate`` and by ``fer``'s
``Video.analyze``, on the same 30 fps 640x360 single-face file in the same run, with their ratio.

- **fer** (baseline): ``fer`` 25.10.3's ``Video(path).analyze(FER(), ...)``, its own video API: every
  frame (``frequency=1``), Haar cascade + its mini-Xception through TensorFlow Lite, results as a DataFrame;
  frame saving, the output video, annotation and zipping are off. It runs in the benchmark-only environment
  of ``benchmarks/face_throughput.py`` (``fer_python``), to which this script adds ``pandas`` and ``tqdm``
  (``Video`` needs them) once; timed inside its process, so Python and TensorFlow imports are not counted.
  ``cv2.waitKey``, which ``analyze`` calls on every frame even without a display, is a no-op there (headless
  OpenCV has no GUI and raises).
- **ours**: ``affectlens.annotate.annotate_files`` (what ``affectlens annotate`` runs) into a fresh output
  folder each time, with the default ``Analyzer`` (CenterFace on key frames, mesh-following, expression,
  AUs, pose, gaze, tracking) and ``report=False``: decoding, analysis and the three Parquet tables. Face only
  at ``--fps`` (default 30: every frame, as fer does) and at the 5 fps default sampling; then face + voice +
  text (VAD, Whisper tiny.en, speech emotion, text emotion, speaker assignment) at the same two rates.

*Warm* (the number that counts) is the median of ``--repeat`` runs with the analyzer already loaded by an
earlier run; *cold* is one run with a fresh ``Analyzer``/``FER()``: model loading and first calls included.
The video is the sample portrait panned and zoomed (``demo/samples.py``) with, when ``espeak-ng`` is on PATH,
a few synthesised English sentences muxed in with PyAV as its sound track; without it the voice conditions are
skipped. Exit status 0 whether or not the targets are met (they are printed).

    .venv/bin/python benchmarks/annotate_throughput.py [--seconds 20] [--repeat 3] [--fps 30]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from affectlens.analyzer import Analyzer, build_face_pipeline
from affectlens.annotate import AnnotateSettings, Modality, annotate_files
from affectlens.errors import WeightsError
from demo.samples import make_sample_video
from perception.media import probe

try:  # `python benchmarks/annotate_throughput.py` puts benchmarks/ first on sys.path; `-m` puts the repo root
    from face_throughput import fer_python
except ModuleNotFoundError:
    from benchmarks.face_throughput import fer_python

FPS = 30
SIZE = (640, 360)
DEFAULT_SAMPLING = 5.0
#: ``fer.classes.Video`` imports these; ``FER_ENV_SPEC`` in face_throughput.py does not install them.
FER_VIDEO_EXTRAS = ("pandas>=2.2,<3", "tqdm>=4.66")
SPEECH = (
    "I can't believe we finally made it, this is the best day of my life! "
    "Honestly, I was terrified this morning. Nothing went the way we planned, and I was furious with everyone. "
    "Then the phone rang, and it was the news we had been waiting for. "
    "Now I just feel calm, and very grateful to all of you."
)
SPEECH_GAP = 0.8  # seconds of silence between repeats of the speech when the video is longer than it
TARGETS = {"face": 2.0, "voice": 1.0, "vs_fer": 1.5}

FER_RUNNER = """
import json, logging, statistics, sys, time
import cv2
# Video.analyze calls cv2.waitKey(1) every frame and destroyAllWindows at exit, even with display=False; the
# headless OpenCV of this environment raises there, so they become what they are without a window: no-ops.
cv2.waitKey = lambda delay=0: -1
cv2.destroyAllWindows = lambda: None
from fer.classes import Video  # fer 25.10 re-exports neither Video nor FER from the package
from fer.fer import FER
logging.getLogger("fer").setLevel(logging.WARNING)
path, outdir, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
options = dict(display=False, output="pandas", frequency=1, save_frames=False, save_video=False,
               annotate_frames=False, zip_images=False, use_async_io=False)

def run(detector):
    start = time.perf_counter()
    video = Video(path, outdir=outdir)
    rows = video.analyze(detector, **options)
    return time.perf_counter() - start, len(rows), video.frameCount

start = time.perf_counter()
detector = FER()
load = time.perf_counter() - start
first, faces, frames = run(detector)
warm = [run(detector)[0] for _ in range(repeat)]
print(json.dumps({"cold": load + first, "warm": statistics.median(warm), "faces": faces, "frames": frames}))
"""


@dataclass(frozen=True)
class TestVideo:
    """The benchmark's input: its path, length in seconds, frame count and whether it has a speech track."""

    path: Path
    seconds: float
    frames: int
    speech: bool


@dataclass(frozen=True)
class Condition:
    """One way of running ``annotate``: frames analysed per second of video and the modalities on."""

    label: str
    fps: float
    modalities: tuple[Modality, ...]


@dataclass(frozen=True)
class Measurement:
    """Wall seconds of one contender (``warm``: median of the repeats; ``cold``: first run, models loading)."""

    label: str
    warm: float
    cold: float | None
    frames: int
    face_rows: int
    utterances: int | None
    #: ``torch.get_num_threads()`` after the runs (building the voice pipeline's Whisper lowers it: see ``run_ours``).
    torch_threads: int | None = None


# --------------------------------------------------------------------------------------------------
# The test video


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit mono WAV as (int16 samples, sample rate in Hz)."""
    with wave.open(str(path)) as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise SystemExit(f"{path}: expected 16-bit mono WAV from espeak-ng")
        return np.frombuffer(wav.readframes(wav.getnframes()), np.int16), wav.getframerate()


def fill(samples: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """``samples`` repeated with ``SPEECH_GAP`` s of silence between repeats, cut to ``seconds``."""
    one = np.concatenate([samples, np.zeros(round(SPEECH_GAP * rate), np.int16)])
    n = round(seconds * rate)
    return np.tile(one, -(-n // len(one)))[:n]


def mux_audio(video: Path, samples: np.ndarray, rate: int, out: Path) -> Path:
    """Copy ``video``'s H.264 packets into ``out`` and add ``samples`` (int16 mono at ``rate`` Hz) as AAC."""
    import av

    with av.open(str(video)) as src, av.open(str(out), "w") as dst:
        v_in = src.streams.video[0]
        v_out = dst.add_stream_from_template(v_in)
        a_out = dst.add_stream("aac", rate=rate, layout="mono")
        for packet in src.demux(v_in):
            if packet.dts is None:  # the demuxer's empty flush packet
                continue
            packet.stream = v_out
            dst.mux(packet)
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*a_out.encode(frame), *a_out.encode(None)]:
            dst.mux(packet)
    return out


def make_test_video(folder: Path, seconds: float, voice: bool) -> TestVideo:
    """The sample portrait video at 30 fps 640x360, with a speech track when ``voice`` and espeak-ng allow."""
    silent = make_sample_video(folder / "face.mp4", seconds=seconds, fps=FPS, size=SIZE)
    path, speech = silent, False
    espeak = shutil.which("espeak-ng")
    if voice and espeak is None:
        print("espeak-ng is not on PATH: no speech track, the voice conditions are skipped")
    elif voice and espeak is not None:
        wav = folder / "speech.wav"
        subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(wav), SPEECH], check=True)
        samples, rate = read_wav(wav)
        path, speech = mux_audio(silent, fill(samples, rate, seconds), rate, folder / "face_speech.mp4"), True
    _, info = probe(path)
    assert info is not None and info.duration and info.frames
    return TestVideo(path, info.duration, info.frames, speech)


# --------------------------------------------------------------------------------------------------
# The contenders


def fer_video_python(root: Path) -> Path:
    """``fer_python``'s interpreter with ``FER_VIDEO_EXTRAS`` added once (a marker file records it)."""
    python = fer_python(root)
    key = hashlib.sha256(json.dumps(FER_VIDEO_EXTRAS).encode()).hexdigest()[:16]
    marker = python.parent.parent / f".video-extras-{key}"
    if not marker.exists():
        print(f"adding {', '.join(FER_VIDEO_EXTRAS)} to the fer benchmark environment (first time only)", flush=True)
        cmd = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *FER_VIDEO_EXTRAS]
        done = subprocess.run(cmd, capture_output=True, text=True)  # quiet: pip warns that fer's own deps are absent
        if done.returncode != 0:
            raise SystemExit(f"could not install {', '.join(FER_VIDEO_EXTRAS)} into {python}:\n{done.stderr[-3000:]}")
        marker.touch()
    return python


def run_fer(python: Path, video: TestVideo, repeat: int, tmp: Path) -> Measurement:
    """fer's ``Video.analyze`` on every frame, in its own interpreter; times exclude imports."""
    outdir = tmp / "fer-output"  # Video() creates it even with every kind of saving off
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TQDM_DISABLE": "1"}
    out = subprocess.run(
        [str(python), "-c", FER_RUNNER, str(video.path), str(outdir), str(repeat)],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0:
        raise SystemExit(f"the fer baseline failed ({python}):\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return Measurement("fer Video.analyze, every frame", r["warm"], r["cold"], r["frames"], r["faces"], None)


def annotate_once(
    video: TestVideo, condition: Condition, analyzer: Analyzer, tmp: Path
) -> tuple[float, dict[str, Any]]:
    """Wall seconds of one ``annotate_files`` call into a fresh folder, and the input's manifest entry."""
    out = Path(tempfile.mkdtemp(prefix="annotate-", dir=tmp))
    settings = AnnotateSettings(fps=condition.fps, modalities=condition.modalities, report=False)
    start = time.perf_counter()
    report = annotate_files([video.path], out, settings, analyzer=analyzer, progress=False)
    seconds = time.perf_counter() - start
    if not report.ok or len(report.done) != 1:
        raise SystemExit(f"annotate failed ({condition.label}): {report.failed}")
    entry = json.loads((out / "manifest.json").read_text())["videos"][report.done[0]]
    shutil.rmtree(out)
    return seconds, entry


def new_analyzer(expression: str | None = None) -> Analyzer:
    """A fresh default ``Analyzer`` (its parts load on first use); ``expression`` names another registered face
    expression model (``affectlens.registry.list_models("face_expression")``)."""
    return Analyzer() if expression is None else Analyzer(face=build_face_pipeline(expression=expression))


def run_ours(
    video: TestVideo, conditions: list[Condition], repeat: int, tmp: Path, expression: str | None = None
) -> list[Measurement]:
    """Each condition ``repeat`` times with one fresh ``Analyzer``, whose first run (the first condition's
    cold run: building the analyzer and loading its models) is reported apart.

    State outside the analyzer carries over, as it does between the inputs of one ``affectlens annotate`` run:
    building the voice pipeline (ctranslate2's Whisper, ``intra_threads=1``) leaves torch with one thread for
    the rest of the process, so the face-only conditions must run before any voice condition.
    """
    start = time.perf_counter()
    analyzer = new_analyzer(expression)
    built = time.perf_counter() - start
    results = []
    for k, condition in enumerate(conditions):
        cold = built + annotate_once(video, condition, analyzer, tmp)[0] if k == 0 else None
        runs = [annotate_once(video, condition, analyzer, tmp) for _ in range(repeat)]
        entry = runs[-1][1]
        utterances = entry["outputs"]["utterances"]["rows"] if "voice" in condition.modalities else None
        results.append(
            Measurement(
                f"ours, {condition.label}",
                statistics.median(s for s, _ in runs),
                cold,
                entry["frames"],
                entry["outputs"]["faces"]["rows"],
                utterances,
                torch_threads(),
            )
        )
    return results


def torch_threads() -> int | None:
    """Torch's intra-op threads in this process, if torch has been imported (by the models)."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


# --------------------------------------------------------------------------------------------------
# Report


def speed(video: TestVideo, seconds: float) -> float:
    """Video-seconds per wall-second (x real time)."""
    return video.seconds / seconds


def verdict(value: float, target: float) -> str:
    return f"{value:.2f}x (target >= {target:g}x: {'met' if value >= target else 'NOT met'})"


def print_report(video: TestVideo, results: list[Measurement], fer: Measurement, repeat: int) -> None:
    print(
        f"\ntest video: {video.seconds:.1f} s, {video.frames} frames, {SIZE[0]}x{SIZE[1]} at {FPS} fps, one face, "
        f"{'speech track (espeak-ng)' if video.speech else 'no sound track'}; {os.cpu_count()} CPU cores; "
        f"warm = median of {repeat} runs, cold = first run with fresh models"
    )
    print("(faces: frames with a face for fer, face rows for ours; utt: utterances; thr: torch threads)")
    print(f"{'contender':<48} {'video-s/wall-s':>14} {'warm s':>7} {'cold s':>7} {'frames':>6} {'faces':>6} utt thr")
    for m in [fer, *results]:
        cold = f"{m.cold:7.1f}" if m.cold is not None else " " * 7
        utt = f"{m.utterances:3d}" if m.utterances is not None else " " * 3
        threads = f"{m.torch_threads:3d}" if m.torch_threads is not None else ""
        row = f"{speed(video, m.warm):13.2f}x {m.warm:7.2f} {cold} {m.frames:6d} {m.face_rows:6d} {utt} {threads}"
        print(f"{m.label:<48} {row}")
    face, *rest = results
    print(f"\nours / fer ({face.label}): {verdict(fer.warm / face.warm, TARGETS['vs_fer'])}")
    print(f"{face.label}, x real time: {verdict(speed(video, face.warm), TARGETS['face'])}")
    voice = [m for m in rest if "voice" in m.label]
    if voice:
        print(f"{voice[0].label}, x real time: {verdict(speed(video, voice[0].warm), TARGETS['voice'])}")
    else:
        print("ours, face + voice + text: skipped (no speech track)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the generated 30 fps test video")
    parser.add_argument("--repeat", type=int, default=3, help="warm runs per contender (median reported)")
    parser.add_argument("--fps", type=float, default=float(FPS), help="our sampling rate (30: every frame, as fer)")
    parser.add_argument("--no-voice", action="store_true", help="skip the face + voice + text conditions")
    parser.add_argument("--no-default-fps", action="store_true", help="skip the 5 fps default-sampling lines")
    parser.add_argument(
        "--expression", default=None, help="our face expression model (default: the registry's default)"
    )
    parser.add_argument("--fer-python", type=Path, default=None, help="an interpreter with fer, TensorFlow, pandas")
    parser.add_argument("--venv-root", type=Path, default=Path.home() / ".cache" / "affectlens" / "venvs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    python = args.fer_python or fer_video_python(args.venv_root)
    every = f"every frame ({args.fps:g} fps)" if args.fps >= FPS else f"{args.fps:g} fps"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        video = make_test_video(tmp, args.seconds, voice=not args.no_voice)
        print(f"test video ready: {video.path.name}, {video.seconds:.1f} s, {video.frames} frames", flush=True)
        face = [Condition(f"face only, {every}", args.fps, ("face",))]
        voice = [Condition(f"face + voice + text, {every}", args.fps, ("face", "voice"))]
        if not args.no_default_fps:
            face.append(Condition("face only, 5 fps (default)", DEFAULT_SAMPLING, ("face",)))
            voice.append(Condition("face + voice + text, 5 fps (default)", DEFAULT_SAMPLING, ("face", "voice")))
        try:
            results = run_ours(video, face, args.repeat, tmp, args.expression)
        except WeightsError as exc:
            raise SystemExit(f"{exc}\n(--expression NAME picks another face expression model)") from exc
        print("ours, face only: done", flush=True)
        if video.speech:
            results += run_ours(video, voice, args.repeat, tmp, args.expression)
            print("ours, face + voice + text: done", flush=True)
        fer = run_fer(python, video, args.repeat, tmp)
    print_report(video, results, fer, args.repeat)


if __name__ == "__main__":
    main()
