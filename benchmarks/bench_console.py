"""What the web console adds to scoring a call: cues, the timeline picture, the PDF report.

Run: ``make bench`` (or ``python benchmarks/bench_console.py``). Single-threaded, on the
shipped model and espeak-ng speech through G.711. Every figure is CPU time, reported also
as a ratio to plain scoring of the same file in the same process (``analyze`` without
cues, the API's path), so the figures travel between machines. Also: peak traced memory
of drawing the timeline of a long call, as a ratio of its decoded audio.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

from bench_score import cpu, g711_wav  # noqa: E402

from voicecheck.audio import load_audio  # noqa: E402
from voicecheck.explain import meaning_text, score_rates, verdict_text  # noqa: E402
from voicecheck.model import load_model  # noqa: E402
from voicecheck.scoring import analyze  # noqa: E402
from voicecheck.service.evidence import evidence_pdf, timeline_png  # noqa: E402


def _case(result: dict, data: bytes, detector) -> dict:
    texts = verdict_text(result["verdict"])
    rates = score_rates(result["score"], detector.card)
    return {
        "id": "an_benchmark",
        "created_at": "2026-01-01T00:00:00Z",
        "analysed_by": "benchmark",
        "filename": "call.wav",
        "sha256": "0" * 64,
        "size_bytes": len(data),
        "verdict": result["verdict"],
        "score": result["score"],
        "headline": texts["headline"],
        "advice": texts["advice"],
        "meaning": meaning_text(result["score"], rates),
        "thresholds": result["thresholds"],
        "channels": result["channels"],
        "cues": result.get("cues", []),
        "audio": result["audio"],
        "model": result["model"],
        "notes": [{"time": "2026-01-01T00:00:00Z", "author": "benchmark", "text": "note " * 50}],
        "generated_at": "2026-01-01T00:00:00Z",
    }


def bench(detector, duration_s: float, repeats: int) -> dict:
    data = g711_wav(duration_s)
    base = cpu(lambda: analyze(data, detector), repeats)
    explained = cpu(lambda: analyze(data, detector, explain=True), repeats)
    result = analyze(data, detector, explain=True).to_dict()
    audio = load_audio(data)
    png = timeline_png(audio.samples, audio.sr, result["channels"], result["thresholds"])
    draw = cpu(
        lambda: timeline_png(audio.samples, audio.sr, result["channels"], result["thresholds"]),
        repeats,
    )
    case = _case(result, data, detector)
    pdf = cpu(lambda: evidence_pdf(case, timeline=png), repeats)
    return {
        "duration_s": duration_s,
        "score_cpu_s": round(base, 3),
        "score_with_cues_cpu_s": round(explained, 3),
        "cues_ratio": round(explained / base, 2),
        "timeline_cpu_s": round(draw, 3),
        "timeline_ratio": round(draw / base, 2),
        "pdf_cpu_s": round(pdf, 3),
        "pdf_ratio": round(pdf / base, 2),
        "timeline_png_kib": round(len(png) / 1024, 1),
        "pdf_kib": round(len(evidence_pdf(case, timeline=png)) / 1024, 1),
    }


def bench_memory(detector, duration_s: float) -> dict:
    data = g711_wav(duration_s)
    result = analyze(data, detector).to_dict()
    audio = load_audio(data)
    tracemalloc.start()
    timeline_png(audio.samples, audio.sr, result["channels"], result["thresholds"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "duration_s": duration_s,
        "timeline_peak_mib": round(peak / 2**20, 1),
        "timeline_peak_vs_audio": round(peak / audio.samples.nbytes, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--long-s", type=float, default=900.0)
    args = ap.parse_args()
    detector = load_model()
    started = time.time()
    report = {
        "calls": [bench(detector, d, args.repeats) for d in (10.0, 60.0)],
        "memory": bench_memory(detector, args.long_s),
        "wall_s": None,
    }
    report["wall_s"] = round(time.time() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
