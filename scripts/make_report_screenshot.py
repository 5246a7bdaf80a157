"""Reproduce ``docs/report-screenshot.png``: annotate a generated 10 s talk with the default analyzer, then render
its ``report.html`` in headless Chromium.

    python scripts/make_report_screenshot.py                      # needs `affectlens weights fetch` and chromium
    python scripts/make_report_screenshot.py --work /tmp/shot --expression fer-mini-xception

The video is ``demo/samples.py``'s portrait pan with a speech track spoken by ``espeak-ng`` when it is
installed (face only otherwise). Everything but the screenshot goes to ``--work`` (a temporary folder unless given).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LINES = (  # about 9 s at 140 words a minute: the whole of it fits the 10 s video
    "Good morning everyone.",
    "I am really happy with these results.",
    "But the last session was a disaster.",
)


def speech(folder: Path) -> Path | None:
    """``LINES`` spoken by espeak-ng into a WAV, with a pause between them; ``None`` without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        print("espeak-ng not found: the video gets no sound track")
        return None
    wav = folder / "speech.wav"
    text = " ".join(f"{line} [[_::_::]]" for line in LINES)  # the brackets are a short silence in espeak
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-g", "8", "-w", str(wav), text], check=True)
    return wav


def talk_video(folder: Path, seconds: float = 10.0) -> Path:
    """The sample portrait pan (``make_sample_video``) with the speech, if any, muxed in as AAC."""
    import av

    from demo.samples import make_sample_video

    silent = make_sample_video(folder / "face.mp4", seconds=seconds, fps=10, size=(640, 480))
    wav = speech(folder)
    if wav is None:
        return silent
    out = folder / "talk.mp4"
    with av.open(str(wav)) as ain:
        rate = ain.streams.audio[0].rate
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in ain.decode(audio=0)]).astype(np.float32)
    samples = (samples / 32768.0 if np.abs(samples).max() > 2 else samples)[: int(seconds * rate)]
    with av.open(str(silent)) as vin, av.open(str(out), "w") as container:
        vstream = container.add_stream("libx264", rate=10)  # every stream is added before the first packet
        vstream.width, vstream.height, vstream.pix_fmt = 640, 480, "yuv420p"
        astream = container.add_stream("aac", rate=rate)
        for frame in vin.decode(video=0):
            for packet in vstream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), "rgb24")):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        audio = av.AudioFrame.from_ndarray(samples[None], format="fltp", layout="mono")
        audio.sample_rate, audio.pts, audio.time_base = rate, 0, Fraction(1, rate)
        for packet in [*astream.encode(audio), *astream.encode()]:
            container.mux(packet)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the video and the annotations")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "report-screenshot.png")
    parser.add_argument("--expression", default=None, help="face expression model (default: the Analyzer's)")
    parser.add_argument("--size", default="1280,1800", help="browser window, width,height")
    args = parser.parse_args()

    from affectlens import Analyzer, build_face_pipeline
    from affectlens.annotate import AnnotateSettings, annotate_files

    work = args.work or Path(tempfile.mkdtemp(prefix="affectlens-report-"))
    work.mkdir(parents=True, exist_ok=True)
    video = talk_video(work)
    analyzer = Analyzer(face=build_face_pipeline(expression=args.expression)) if args.expression else Analyzer()
    out = work / "annotations"
    result = annotate_files([video], out, AnnotateSettings(fps=5), analyzer=analyzer)
    if not result.ok:
        print(f"annotate failed: {result.failed}")
        return 1
    report = out / result.done[0] / "report.html" if result.done else next(out.glob("*/report.html"))
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print(f"no chromium found; the report is at {report}")
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
            f"--screenshot={args.out}", f"--window-size={args.size}", report.resolve().as_uri(),
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    print(f"{args.out} (report: {report})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
