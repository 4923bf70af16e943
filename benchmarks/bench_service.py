"""Throughput and latency of ``voicecheck serve`` under load, against scoring in-process.

Run: ``.venv/bin/python benchmarks/bench_service.py [--duration 20] [--connections 4]
[--workers 2]``. Needs ``wrk`` (``apt-get install wrk``) and espeak-ng.

Writes a 10 s and a 60 s G.711 mu-law WAV of espeak-ng speech, times
``voicecheck.scoring.analyze`` on each in this process (the baseline: one request's
work on one core), then starts ``voicecheck serve`` on a free loopback port with a
fresh data folder and no rate limit, makes a key with the command line and runs
``wrk`` against ``POST /v1/analyze`` with each file as the raw body. Reports requests
per second, the 50 % and 99 % latencies and the non-2xx answers, with the ratios that
make them comparable across machines: p50 over the in-process median (1.0 would be a
free HTTP layer and no queueing; with more connections than workers, requests wait
for a worker) and requests per second over ``workers / median`` (1.0 would be every
worker scoring all the time). Numerical libraries run one thread per process, so that
each worker is one core, as ``--workers`` "about one per core" intends. The audit
log's median ``processing_ms`` (scoring inside the server) separates the scoring time
from the HTTP, store and queueing time. ``wrk`` itself runs on the same machine.

Prints a table and writes ``benchmarks/results/service.json``.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402

HOST = "127.0.0.1"
SR_HZ = 8000
FILE_DURATIONS_S = (10, 60)
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
WRK_TIMEOUT_S = 120  # per request; wrk's default of 2 s would count 60 s calls as errors
BASELINE_REPEATS = 20
BASELINE_BUDGET_S = 30.0  # per file: stop repeating sooner when a file is slow
RESULTS = Path(__file__).resolve().parent / "results" / "service.json"
VOICECHECK = [sys.executable, "-m", "voicecheck.cli"]
TEXT = (
    "Hello, this is a message about your polling place. The election is on Tuesday. "
    "Please call us back at your earliest convenience."
)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def write_call(path: Path, duration_s: float, speech: tuple[np.ndarray, int]) -> Path:
    """Write ``duration_s`` of espeak-ng speech, repeated, as an 8 kHz G.711 mu-law WAV."""
    y, sr = speech
    y8 = soxr.resample(np.concatenate([y, np.zeros(sr // 2, np.float32)]), sr, SR_HZ)
    n = int(duration_s * SR_HZ)
    y8 = np.tile(y8, int(np.ceil(n / y8.size)))[:n]
    sf.write(path, 0.5 * y8 / np.abs(y8).max(), SR_HZ, format="WAV", subtype="ULAW")
    return path


def baseline_s(data: bytes, detector: Any) -> tuple[float, int]:
    """Median wall time of ``analyze`` on ``data`` in this process, and the repeats run."""
    from voicecheck.scoring import analyze

    analyze(data, detector)  # warm-up: lazy imports, caches
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < BASELINE_REPEATS and (
        len(times) < 5 or time.perf_counter() - started < BASELINE_BUDGET_S
    ):
        t0 = time.perf_counter()
        analyze(data, detector)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def free_port() -> int:
    """A TCP port free on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_env(data_dir: Path) -> dict[str, str]:
    """This process's environment with the benchmark's service settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICECHECK_")}
    env.update(
        VOICECHECK_DATA_DIR=str(data_dir),
        VOICECHECK_RATE_LIMIT="0",
        VOICECHECK_LOG_LEVEL="WARNING",
    )
    if "VOICECHECK_CACHE_DIR" in os.environ:
        env["VOICECHECK_CACHE_DIR"] = os.environ["VOICECHECK_CACHE_DIR"]
    return env


def create_key(env: dict[str, str]) -> str:
    """A key made with ``voicecheck keys create`` (its last line of output)."""
    proc = subprocess.run(
        [*VOICECHECK, "keys", "create", "bench"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"voicecheck keys create failed:\n{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1]


def wait_ready(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    """Wait (bounded) until ``/readyz`` answers ready; exit with the server log if not."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"voicecheck serve exited with {proc.returncode}:\n{tail(log)}")
        try:
            with _NO_PROXY.open(f"{base}/readyz", timeout=2) as resp:
                if json.load(resp).get("status") == "ready":
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.25)
    raise SystemExit(f"voicecheck serve was not ready in {READY_TIMEOUT_S:g} s:\n{tail(log)}")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the server, then SIGKILL its process group after a timeout."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT_S)


def tail(path: Path, n: int = 3000) -> str:
    """The end of a text file."""
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def post_once(url: str, data: bytes, key: str) -> int:
    """POST ``data`` as ``audio/wav``; the HTTP status."""
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "audio/wav", "Authorization": f"Bearer {key}"},
    )
    try:
        with _NO_PROXY.open(request, timeout=WRK_TIMEOUT_S) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def lua_script(path: Path, audio: Path, key: str) -> Path:
    """A wrk script that POSTs ``audio`` as the raw body with the key."""
    path.write_text(
        f"""local f = assert(io.open([==[{audio}]==], "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "audio/wav"
wrk.headers["Authorization"] = "Bearer {key}"
"""
    )
    return path


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if m is None:
        raise ValueError(f"wrk latency {text!r} is not understood")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    """Requests/sec, 50 % and 99 % latency, request count and errors from ``wrk --latency``."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    total = re.search(r"^\s+(\d+) requests in ([\d.]+)(\w+)", out, re.MULTILINE)
    if rps is None or total is None:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": _ms(p50.group(1)) if p50 else None,
        "p99_ms": _ms(p99.group(1)) if p99 else None,
        "requests": int(total.group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
    }


def run_wrk(url: str, script: Path, *, duration_s: int, connections: int) -> dict[str, Any]:
    """Run wrk against ``url``; its parsed figures."""
    threads = max(1, min(2, connections))
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s}s",
        f"--timeout={WRK_TIMEOUT_S}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration_s + 2 * WRK_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return parse_wrk(proc.stdout)


def scoring_ms(env: dict[str, str]) -> dict[str, float]:
    """Median in-server scoring time (the audit log's ``processing_ms``) by file sha256."""
    proc = subprocess.run(
        [*VOICECHECK, "audit", "export", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"voicecheck audit export failed:\n{proc.stderr}")
    by_file: dict[str, list[float]] = {}
    for row in json.loads(proc.stdout):
        if row["outcome"] == "ok" and row["processing_ms"] is not None:
            by_file.setdefault(row["sha256"], []).append(row["processing_ms"])
    return {sha: statistics.median(ms) for sha, ms in by_file.items()}


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds of wrk per file")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed; install it with `apt-get install wrk`")
    if args.duration < 1 or args.connections < 1 or args.workers < 1:
        raise SystemExit("--duration, --connections and --workers must be at least 1")

    from voicecheck.model import load_model
    from voicecheck.samples import espeak

    tmp = Path(tempfile.mkdtemp(prefix="voicecheck-bench-service-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        speech = espeak(TEXT)
        files = {d: write_call(tmp / f"call_{d}s.wav", d, speech) for d in FILE_DURATIONS_S}

        detector = load_model(None)
        baseline: dict[int, tuple[float, int]] = {}
        for d, path in files.items():
            baseline[d] = baseline_s(path.read_bytes(), detector)
            print(
                f"in-process analyze, {d:>2} s call: median {baseline[d][0] * 1000:.0f} ms "
                f"over {baseline[d][1]} runs",
                flush=True,
            )

        env = server_env(tmp / "data")
        key = create_key(env)
        port = free_port()
        base = f"http://{HOST}:{port}"
        log = tmp / "server.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                [
                    *VOICECHECK,
                    "serve",
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "--workers",
                    str(args.workers),
                ],
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_ready(proc, base, log)
        url = f"{base}/v1/analyze"
        for path in files.values():  # warm every worker up
            for _ in range(args.workers):
                status = post_once(url, path.read_bytes(), key)
                if status != 200:
                    raise SystemExit(f"warm-up POST of {path.name} answered {status}:\n{tail(log)}")

        rows: list[dict[str, Any]] = []
        for d, path in files.items():
            script = lua_script(tmp / f"post_{d}s.lua", path, key)
            print(
                f"wrk: {d} s call, {args.connections} connections, {args.duration} s ...",
                flush=True,
            )
            figures = run_wrk(url, script, duration_s=args.duration, connections=args.connections)
            median_s, repeats = baseline[d]
            ideal_rps = args.workers / median_s
            rows.append(
                {
                    "file_duration_s": d,
                    "file_bytes": path.stat().st_size,
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    **figures,
                    "baseline_median_ms": round(median_s * 1000, 1),
                    "baseline_repeats": repeats,
                    "p50_over_baseline": (
                        round(figures["p50_ms"] / (median_s * 1000), 2)
                        if figures["p50_ms"]
                        else None
                    ),
                    "ideal_rps": round(ideal_rps, 3),
                    "rps_over_ideal": round(figures["rps"] / ideal_rps, 2),
                }
            )
        in_server = scoring_ms(env)
        for r in rows:
            r["server_scoring_median_ms"] = in_server.get(r["sha256"])
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"{'call':>5}  {'rps':>6}  {'p50 ms':>8}  {'p99 ms':>8}  {'non-2xx':>7}  "
        f"{'in-proc ms':>10}  {'in-server ms':>12}  {'p50/in-proc':>11}  {'rps/ideal':>9}"
    )
    for r in rows:
        print(
            f"{r['file_duration_s']:>4}s  {r['rps']:>6.2f}  {_fmt(r['p50_ms'], '8.0f')}  "
            f"{_fmt(r['p99_ms'], '8.0f')}  {r['non_2xx'] + r['socket_errors']:>7}  "
            f"{r['baseline_median_ms']:>10.0f}  {_fmt(r['server_scoring_median_ms'], '12.0f')}  "
            f"{_fmt(r['p50_over_baseline'], '11.2f')}  "
            f"{r['rps_over_ideal']:>9.2f}"
        )
    print(
        f"\n{args.workers} workers, {args.connections} connections, {args.duration} s per file, "
        f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), load average "
        f"{os.getloadavg()[0]:.2f}; ideal rps = workers / in-process median; in-server ms: "
        "the audit log's median scoring time (decode + features + model) per request"
    )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "service",
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "duration_s": args.duration,
                "connections": args.connections,
                "workers": args.workers,
                "cpu_count": os.cpu_count(),
                "cpus_usable": len(os.sched_getaffinity(0)),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "numeric_threads_per_process": int(os.environ["OMP_NUM_THREADS"]),
                "file_durations_s": list(FILE_DURATIONS_S),
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
