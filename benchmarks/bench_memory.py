"""Peak memory of scoring one long recording, end to end, in a fresh process.

Run: ``python benchmarks/bench_memory.py`` (``--duration-s`` to change the 30-minute
default, ``--cases`` to pick some of them). For each case the benchmark writes a
synthetic call to a temporary folder, then starts a fresh Python process that imports
voicecheck, loads the default model, and scores the file from its path with
``voicecheck.scoring.analyze`` (``load_audio`` and every channel's features and
scores). Peak resident memory is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of
that process, so it counts everything: Python, the libraries, the decoders' own
buffers.

Prints JSON, one entry per case: the peak in MB, the baseline of the same process
after importing voicecheck and loading the model, the increase over the baseline, and
both figures as ratios of the decoded audio at the analysis rate (float32, 8 kHz, every
channel), the smallest array that scoring needs.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

# name: (sample rate in Hz, channels, libsndfile major format, subtype, suffix)
CASES: dict[str, tuple[int, int, str, str, str]] = {
    "g711_8k_mono_wav": (8000, 1, "WAV", "ULAW", ".wav"),
    "pcm16_48k_stereo_wav": (48000, 2, "WAV", "PCM_16", ".wav"),
    "flac_48k_stereo": (48000, 2, "FLAC", "PCM_16", ".flac"),
    "vorbis_48k_stereo_ogg": (48000, 2, "OGG", "VORBIS", ".ogg"),
}

BLOCK_S = 10.0  # seconds written at a time, so that writing the file stays small too
MB = 1e6


def speech_like(start: int, n: int, *, sr: int, f0: float) -> np.ndarray:
    """A harmonic complex with vibrato and syllable-rate loudness, samples start..start+n."""
    t = (start + np.arange(n)) / sr
    phase = 2 * np.pi * (f0 * t - f0 * 0.05 * np.cos(2 * np.pi * 4 * t) / (2 * np.pi * 4))
    y = sum(np.sin(k * phase) / k for k in range(1, 20) if k * f0 < min(sr / 2, 3800))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t - np.pi / 2)) ** 2
    return (0.1 * y * envelope).astype(np.float32)


def write_call(path: Path, duration_s: float, case: str) -> None:
    """Write ``duration_s`` seconds of a two-party-like call in the format of ``case``."""
    sr, channels, major, subtype, _ = CASES[case]
    total = int(duration_s * sr)
    block = int(BLOCK_S * sr)
    with sf.SoundFile(path, "w", sr, channels, subtype, format=major) as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            cols = [speech_like(start, n, sr=sr, f0=110.0 + 70.0 * c) for c in range(channels)]
            f.write(np.stack(cols, axis=1))


def child(path: str) -> None:
    """Score ``path`` in this (fresh) process and print the memory figures as JSON."""
    import resource

    def rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB  # KiB on Linux

    from voicecheck.model import load_model
    from voicecheck.scoring import analyze

    detector = load_model()
    baseline = rss_mb()
    result = analyze(path, detector)
    peak = rss_mb()
    audio = result.audio
    n_out = int(round(audio["duration_s"] * 8000)) * audio["channels"]
    print(
        json.dumps(
            {
                "baseline_mb": round(baseline, 1),
                "peak_mb": round(peak, 1),
                "decoded_8k_mb": round(n_out * 4 / MB, 1),
                "segments": len(result.segments),
                "audio": audio,
            }
        )
    )


def measure(path: Path, case: str, duration_s: float) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path)], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"{case}: the scoring process failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    decoded = r["decoded_8k_mb"]
    return {
        "audio_s": duration_s,
        "input_mb": round(path.stat().st_size / MB, 1),
        "decoded_native_mb": round(duration_s * CASES[case][0] * CASES[case][1] * 4 / MB, 1),
        "decoded_8k_mb": decoded,
        "baseline_mb": r["baseline_mb"],
        "peak_rss_mb": r["peak_mb"],
        "increase_mb": round(r["peak_mb"] - r["baseline_mb"], 1),
        "peak_over_decoded_8k": round(r["peak_mb"] / decoded, 2),
        "increase_over_decoded_8k": round((r["peak_mb"] - r["baseline_mb"]) / decoded, 2),
        "peak_over_baseline": round(r["peak_mb"] / r["baseline_mb"], 2),
        "decoder": r["audio"]["decoder"],
        "segments": r["segments"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration-s", type=float, default=1800.0)
    ap.add_argument("--cases", nargs="*", choices=sorted(CASES), default=list(CASES))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    report = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for case in args.cases:
            path = Path(tmp) / f"{case}{CASES[case][4]}"
            write_call(path, args.duration_s, case)
            report[case] = measure(path, case, args.duration_s)
            path.unlink()
            print(f"{case}: {report[case]['peak_rss_mb']} MB", file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
