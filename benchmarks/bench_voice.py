"""Voice pipeline real-time factor on ~60 s of RAVDESS speech, against baselines measured in the same run.

The file is RAVDESS clips (every 60th of the 1,434, all actors) joined with 0.4-1.2 s pauses and written as
16 kHz FLAC. Real-time factor (RTF) = processing seconds / audio seconds (below 1 is faster than real
time). Baselines: decoding + resampling alone (``iter_audio_chunks``), and that plus the Silero VAD.
Ours: VAD + Whisper tiny.en ASR + speech emotion (sharing the encoder pass) + prosody.

    python benchmarks/bench_voice.py [--seconds 60] [--repeat 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pandas as pd

from affectlens.registry import create
from perception.audio import SAMPLE_RATE, iter_audio_chunks, load_audio
from perception.voice.pipeline import VoicePipeline

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess_speech"


def assemble(path: Path, seconds: float) -> float:
    """Write RAVDESS clips with pauses until ``seconds`` of audio; returns the duration written."""
    labels = pd.read_csv(DATA / "labels.csv")
    rng = np.random.default_rng(0)
    parts, total = [], 0
    for rel in labels.path.iloc[::60]:
        pause = np.zeros(int(rng.uniform(0.4, 1.2) * SAMPLE_RATE), np.float32)
        clip = load_audio(DATA / rel)
        parts += [pause, clip]
        total += len(pause) + len(clip)
        if total >= seconds * SAMPLE_RATE:
            break
    audio = np.concatenate(parts)
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("flac", rate=SAMPLE_RATE)
        stream.layout = "mono"
        for i in range(0, len(pcm), 4096):
            frame = av.AudioFrame.from_ndarray(pcm[None, i : i + 4096], format="s16", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return len(audio) / SAMPLE_RATE


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="CTranslate2 threads for Whisper")
    args = parser.parse_args()
    vad = create("vad")
    asr = create("asr", threads=args.threads)
    probe = create("speech_emotion", encoder=asr)
    pipeline = VoicePipeline(vad, asr, probe)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ravdess_60s.flac"
        duration = assemble(path, args.seconds)

        def decode() -> int:
            return sum(len(c.samples) for c in iter_audio_chunks(path))

        def decode_vad() -> int:
            stream, found = vad.stream(), []
            for chunk in iter_audio_chunks(path):
                found += stream.feed(chunk.samples)
            return len(found + stream.flush())

        t_decode, _ = timed(decode, args.repeat)
        t_vad, n_segments = timed(decode_vad, args.repeat)
        t_full, utterances = timed(lambda: pipeline(path), args.repeat)
    assert isinstance(utterances, tuple)
    heard = sum("door" in (u.text or "").lower() for u in utterances)
    print(
        f"audio: {duration:.1f} s of RAVDESS speech with pauses, {n_segments} VAD segments; median of {args.repeat} runs"
    )
    print(f"decode + resample:                 {t_decode:7.3f} s   RTF {t_decode / duration:.4f}")
    print(f"decode + Silero VAD:               {t_vad:7.3f} s   RTF {t_vad / duration:.4f}")
    print(f"full voice pipeline:               {t_full:7.3f} s   RTF {t_full / duration:.4f}")
    print(f"  ({len(utterances)} utterances, {heard} transcripts with 'door'; Whisper threads {args.threads})")
    print(f"ratio full/decode: {t_full / t_decode:.1f}x   full/VAD: {t_full / t_vad:.1f}x")


if __name__ == "__main__":
    main()
