"""Throughput and client memory of ``voicecheck batch`` against the sequential ``score`` loop.

Run: ``.venv/bin/python benchmarks/bench_batch.py [--files 200] [--workers 2]``.

Writes ``--files`` 10 s G.711 mu-law calls (espeak-ng speech when installed, else a
harmonic signal; each file a different rotation of it) into a temporary folder, then
in this one run:

1. the baseline: ``voicecheck score --format csv`` on every file, in this process,
   one after the other (the model loaded once, after a one-file warm-up);
2. the batch engine (:func:`voicecheck.batch.run_batch`) on a local Dask cluster of
   ``--workers`` processes, started and warmed up before the clock starts, once per
   ``--files-per-task`` value (a fresh output each time), to show the scheduler's
   per-task cost;
3. ``voicecheck batch`` end to end as a subprocess (cluster start included), with the
   client's resident memory sampled every 20 ms (the workers are other processes).

Reports files per second, times real time overall and per worker, and the ratio of
each batch run's throughput to the baseline's (``--workers`` would be perfect
scaling). On a machine shared with other work the wall-clock ratio says more about
the other work than about the engine, so the CPU seconds per file are reported too:
the workers', the client's (with the local scheduler, which runs in the client), and
their sum over the baseline's (1.0 would be a free engine). Numerical libraries run
one thread per process. Prints JSON and writes ``benchmarks/results/batch.json``.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from voicecheck import batch  # noqa: E402

FILE_S = 10.0
SR_HZ = 8000
RESULTS = Path(__file__).resolve().parent / "results" / "batch.json"


def speech(duration_s: float) -> np.ndarray:
    """8 kHz speech: espeak-ng sentences repeated, else a harmonic signal."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_score import speech as bench_speech

    return bench_speech(duration_s)


def write_calls(folder: Path, n: int) -> list[str]:
    y = speech(FILE_S)
    paths = []
    for i in range(n):
        path = folder / f"call-{i:05d}.wav"
        sf.write(path, np.roll(y, (i * 997) % y.size), SR_HZ, format="WAV", subtype="ULAW")
        paths.append(str(path))
    return paths


def baseline(paths: list[str], out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``voicecheck score`` over ``paths`` in this process."""
    from click.testing import CliRunner

    from voicecheck.cli import main

    runner = CliRunner()
    runner.invoke(main, ["score", "--format", "csv", "-o", str(out), paths[0]])  # warm up
    started, cpu = time.perf_counter(), time.process_time()
    result = runner.invoke(main, ["score", "--format", "csv", "-o", str(out), *paths])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if result.exit_code != 0:
        raise SystemExit(f"baseline failed: {result.output[-2000:]}")
    return elapsed, cpu


def _cpu_s() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def engine_runs(paths: list[str], folder: Path, *, workers: int, sizes: list[int]) -> list[dict]:
    from voicecheck.model import load_model

    model_id = load_model().model_id
    rows = []
    with batch.DaskEngine(workers=workers) as engine:
        started = time.perf_counter()
        client = engine.client
        threads = engine.threads()
        # one untimed pass, so that every worker has decoded and scored before the clock
        with batch.open_output(folder / "warm.csv", fmt="csv", model_id=model_id) as out:
            batch.run_batch(paths[: 4 * threads], out, client=client, model=None, model_id=model_id)
        startup_s = time.perf_counter() - started
        for size in sizes:
            target = folder / f"fpt{size}.csv"
            workers_cpu, client_cpu = sum(client.run(_cpu_s).values()), _cpu_s()
            with batch.open_output(target, fmt="csv", model_id=model_id) as out:
                stats = batch.run_batch(
                    paths, out, client=client, model=None, model_id=model_id, files_per_task=size
                )
            workers_cpu = sum(client.run(_cpu_s).values()) - workers_cpu
            client_cpu = _cpu_s() - client_cpu  # the client and the local scheduler
            if stats.done != len(paths) or stats.failed:
                raise SystemExit(f"batch with {size} file(s) per task: {stats.line()}")
            rows.append(
                {
                    "files_per_task": size,
                    "wall_s": round(stats.elapsed_s, 3),
                    "files_per_s": round(stats.files_per_s, 1),
                    "x_real_time": round(stats.x_real_time, 1),
                    "x_real_time_per_worker": round(stats.x_real_time / threads, 1),
                    "worker_cpu_ms_per_file": round(1000 * workers_cpu / len(paths), 2),
                    "client_cpu_ms_per_file": round(1000 * client_cpu / len(paths), 2),
                }
            )
    return [{"cluster_start_and_warm_up_s": round(startup_s, 2)}, *rows]


def end_to_end(folder: Path, out: Path, *, workers: int) -> dict:
    """``voicecheck batch`` as a subprocess; peak RSS of the client process alone."""
    import psutil

    command = [sys.executable, "-m", "voicecheck.cli", "batch", str(folder), "-o", str(out)]
    command += ["--pattern", "call-*.wav", "--workers", str(workers)]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    peak = 0
    me = psutil.Process(proc.pid)

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            try:
                peak = max(peak, me.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, stderr = proc.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"voicecheck batch failed ({proc.returncode}): {stderr[-2000:]}")
    summary = stderr.strip().splitlines()[-1]
    rate = re.search(r"([\d.]+) files/s", summary)
    return {
        "wall_s_with_start": round(wall, 2),
        "files_per_s_after_start": float(rate.group(1)) if rate else None,
        "client_peak_rss_mb": round(peak / 1e6, 1),
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--files-per-task", type=int, nargs="+", default=[1, 4, 8, 16])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        root = Path(tmp)
        calls = root / "calls"
        calls.mkdir()
        paths = write_calls(calls, args.files)
        audio_s = FILE_S * len(paths)
        seq_s, seq_cpu = baseline(paths, root / "score.csv")
        seq_rate, seq_cpu_ms = len(paths) / seq_s, 1000 * seq_cpu / len(paths)
        runs = engine_runs(paths, root, workers=args.workers, sizes=args.files_per_task)
        for run in runs[1:]:
            run["over_sequential_score"] = round(run["files_per_s"] / seq_rate, 2)
            cpu_ms = run["worker_cpu_ms_per_file"] + run["client_cpu_ms_per_file"]
            run["cpu_over_sequential_score"] = round(cpu_ms / seq_cpu_ms, 2)
        cli = end_to_end(calls, root / "cli.csv", workers=args.workers)
    report = {
        "benchmark": "batch",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": len(paths),
        "file_s": FILE_S,
        "workers": args.workers,
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "sequential_score": {
            "wall_s": round(seq_s, 3),
            "files_per_s": round(seq_rate, 1),
            "x_real_time": round(audio_s / seq_s, 1),
            "cpu_ms_per_file": round(seq_cpu_ms, 2),
        },
        "batch_engine": runs,
        "batch_cli": cli,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
