"""Throughput and latency of ``voicecheck serve`` under load, against scoring in-process.

Run: ``.venv/bin/python benchmarks/bench_service.py [--duration 20] [--connections 4]
[--workers 2] [--calls 10,60]``, or for an open-loop hold ``... --hold 60 [--rate 20]``.
Needs ``wrk`` (``apt-get install wrk``) and espeak-ng.

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

``wrk`` is a closed loop: it sends the next request when an answer arrives, so a slow
server is sent less. ``--hold SECONDS`` is an open loop instead: 10 s calls arrive at
the fixed ``--rate`` (requests per second) whatever the server does, each on its own
connection, for that long. Latency counts from when a request was due, not from when
it could be sent, so a server falling behind shows as latency, not as a lower rate.
It reports the rate achieved, the 50/95/99 % latencies, the 2xx/4xx/5xx answers and
failed connections, and whether the rate held (2xx answers at least 95 % of the target)
in every 10-second window. Requests this client sent more than 100 ms after they were
due are counted per window: the client shares the machine, and where it fell behind,
that window measured less load than intended. Exits 1 on any 5xx answer or failed
connection.

Prints a table and writes ``benchmarks/results/service.json`` (``service_hold.json``
for a hold), or ``--output``.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
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
from dataclasses import dataclass  # noqa: E402
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
RESULTS_HOLD = RESULTS.with_name("service_hold.json")
HOLD_CALL_S = 10  # the hold sends 10 s calls
HOLD_WINDOW_S = 10.0  # the rate must hold in every window this long
HOLD_HELD_FRACTION = 0.95  # of the target rate, in 2xx answers per window
HOLD_LATE_S = 0.1  # a request sent later than this after it was due counts as late
HOLD_TIMEOUT_S = 60.0  # per request
HOLD_MAX_OPEN = 1000  # connections open at once, at most (file descriptors)
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


def cpu_s(data: bytes, detector: Any, repeats: int = 20) -> float:
    """Least CPU time of ``analyze`` on ``data`` in this process (one thread)."""
    from threadpoolctl import threadpool_limits

    from voicecheck.scoring import analyze

    best = float("inf")
    with threadpool_limits(limits=1):
        for _ in range(repeats):
            t0 = time.process_time()
            analyze(data, detector)
            best = min(best, time.process_time() - t0)
    return best


def workers_cpu_s(master_pid: int) -> float:
    """CPU seconds used so far by the gunicorn master's worker processes (from /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master_pid:  # fields[1] is the parent pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


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


# --- the open-loop hold ----------------------------------------------------------------


@dataclass
class Shot:
    """One request of a hold: when it was due, sent and answered (event-loop seconds)."""

    due: float
    sent: float | None = None
    done: float | None = None
    status: int = 0  # 0: no HTTP answer (the connection failed or timed out)
    error: str | None = None


def hold_request(data: bytes, key: str, port: int) -> bytes:
    """The bytes of one ``POST /v1/analyze`` with ``data`` as the raw body."""
    head = (
        f"POST /v1/analyze HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: audio/wav\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + data


async def _shoot(shot: Shot, port: int, request: bytes, gate: asyncio.Semaphore) -> None:
    loop = asyncio.get_running_loop()
    async with gate:
        shot.sent = loop.time()
        writer = None
        try:
            async with asyncio.timeout(HOLD_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(request)
                await writer.drain()
                answer = await reader.read()  # to the end: the answer closes the connection
            if answer.startswith(b"HTTP/1."):
                shot.status = int(answer.split(b" ", 2)[1])
            else:
                shot.error = "no HTTP answer"
        except (OSError, TimeoutError) as exc:
            shot.error = type(exc).__name__
        finally:
            shot.done = loop.time()
            if writer is not None:
                writer.close()
                try:
                    await writer.wait_closed()
                except OSError:
                    pass


async def _hold(
    port: int, request: bytes, rate: float, duration_s: float
) -> tuple[list[Shot], float]:
    """Send ``request`` at ``rate`` per second for ``duration_s``; the shots and the start."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(HOLD_MAX_OPEN)
    start = loop.time() + 0.5
    shots: list[Shot] = []
    tasks = []
    for i in range(int(round(rate * duration_s))):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        shot = Shot(due)
        shots.append(shot)
        tasks.append(asyncio.create_task(_shoot(shot, port, request, gate)))
    await asyncio.gather(*tasks)
    return shots, start


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def summarize_hold(
    shots: list[Shot], start: float, rate: float, duration_s: float
) -> dict[str, Any]:
    """Rate achieved, latencies, answers by class and the rate in each window of a hold."""
    end = start + duration_s
    ok = [s for s in shots if 200 <= s.status < 300]
    latency = [(s.done - s.due) * 1000 for s in ok]
    late = [s for s in shots if s.sent - s.due > HOLD_LATE_S]
    windows = []
    lo = start
    while lo < end - 1e-9:
        hi = min(lo + HOLD_WINDOW_S, end)
        due = [s for s in shots if lo <= s.due < hi]
        answered = [s for s in ok if lo <= s.done < hi]
        due_late = [s for s in due if s.sent - s.due > HOLD_LATE_S]
        windows.append(
            {
                "from_s": round(lo - start, 1),
                "to_s": round(hi - start, 1),
                "due": len(due),
                "answered_2xx": len(answered),
                "rps": round(len(answered) / (hi - lo), 2),
                "sent_late": len(due_late),
                "p99_ms": _pct([(s.done - s.due) * 1000 for s in due if s in ok], 99),
                "held": len(answered) >= HOLD_HELD_FRACTION * rate * (hi - lo),
            }
        )
        lo = hi
    return {
        "target_rps": rate,
        "hold_s": duration_s,
        "requests": len(shots),
        "achieved_rps": round(sum(1 for s in ok if s.done < end) / duration_s, 2),
        "p50_ms": _pct(latency, 50),
        "p95_ms": _pct(latency, 95),
        "p99_ms": _pct(latency, 99),
        "max_ms": round(max(latency), 1) if latency else None,
        "answers": {
            "2xx": len(ok),
            "4xx": sum(1 for s in shots if 400 <= s.status < 500),
            "5xx": sum(1 for s in shots if s.status >= 500),
            "failed": sum(1 for s in shots if s.status == 0),
        },
        "errors": sorted({s.error for s in shots if s.error}),
        "sent_late": len(late),
        "max_send_lag_ms": round(max((s.sent - s.due) * 1000 for s in shots), 1),
        "held_every_window": all(w["held"] for w in windows),
        "windows": windows,
    }


def run_hold(port: int, data: bytes, key: str, *, rate: float, duration_s: float) -> dict:
    """Hold ``rate`` requests per second of ``data`` for ``duration_s``; the summary."""
    shots, start = asyncio.run(_hold(port, hold_request(data, key, port), rate, duration_s))
    return summarize_hold(shots, start, rate, duration_s)


# --- the command ------------------------------------------------------------------------


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def start_server(env: dict[str, str], workers: int, tmp: Path) -> tuple[subprocess.Popen, int]:
    """``voicecheck serve`` on a free loopback port, once ready; the process and the port."""
    port = free_port()
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
                str(workers),
            ],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_ready(proc, f"http://{HOST}:{port}", log)
    except BaseException:
        stop(proc)
        raise
    return proc, port


def _machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "numeric_threads_per_process": int(os.environ["OMP_NUM_THREADS"]),
    }


def _write(path: Path, figures: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds of wrk per file")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument(
        "--calls",
        default=",".join(str(d) for d in FILE_DURATIONS_S),
        help="call lengths for wrk, in seconds, comma-separated",
    )
    parser.add_argument(
        "--hold", type=int, default=0, help="seconds of an open-loop hold instead of wrk"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second to hold")
    parser.add_argument("--output", type=Path, help="JSON results file")
    args = parser.parse_args()
    if not args.hold and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed; install it with `apt-get install wrk`")
    if args.duration < 1 or args.connections < 1 or args.workers < 1:
        raise SystemExit("--duration, --connections and --workers must be at least 1")
    if args.hold < 0 or args.rate <= 0:
        raise SystemExit("--hold must be at least 0 and --rate more than 0")
    try:
        durations = (HOLD_CALL_S,) if args.hold else tuple(int(d) for d in args.calls.split(","))
    except ValueError:
        raise SystemExit(f"--calls {args.calls!r} is not a list of whole seconds") from None

    from voicecheck.model import load_model
    from voicecheck.samples import espeak

    tmp = Path(tempfile.mkdtemp(prefix="voicecheck-bench-service-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        speech = espeak(TEXT)
        files = {d: write_call(tmp / f"call_{d}s.wav", d, speech) for d in durations}

        detector = load_model(None)
        baseline: dict[int, tuple[float, int]] = {}
        scoring_cpu: dict[int, float] = {}
        for d, path in files.items():
            baseline[d] = baseline_s(path.read_bytes(), detector)
            scoring_cpu[d] = cpu_s(path.read_bytes(), detector)
            print(
                f"in-process analyze, {d:>2} s call: median {baseline[d][0] * 1000:.0f} ms "
                f"over {baseline[d][1]} runs",
                flush=True,
            )

        env = server_env(tmp / "data")
        key = create_key(env)
        proc, port = start_server(env, args.workers, tmp)
        url = f"http://{HOST}:{port}/v1/analyze"
        for path in files.values():  # warm every worker up
            for _ in range(args.workers):
                status = post_once(url, path.read_bytes(), key)
                if status != 200:
                    log = tail(tmp / "server.log")
                    raise SystemExit(f"warm-up POST of {path.name} answered {status}:\n{log}")

        if args.hold:
            path = files[HOLD_CALL_S]
            print(
                f"hold: {HOLD_CALL_S} s calls at {args.rate:g}/s for {args.hold} s, open loop ...",
                flush=True,
            )
            hold = run_hold(port, path.read_bytes(), key, rate=args.rate, duration_s=args.hold)
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            rows: list[dict[str, Any]] = []
            for d, path in files.items():
                script = lua_script(tmp / f"post_{d}s.lua", path, key)
                print(
                    f"wrk: {d} s call, {args.connections} connections, {args.duration} s ...",
                    flush=True,
                )
                cpu_before = workers_cpu_s(proc.pid)
                figures = run_wrk(
                    url, script, duration_s=args.duration, connections=args.connections
                )
                served = figures["requests"] or 1
                figures["server_cpu_ms_per_request"] = round(
                    (workers_cpu_s(proc.pid) - cpu_before) * 1000 / served, 2
                )
                figures["scoring_cpu_ms"] = round(scoring_cpu[d] * 1000, 2)
                figures["server_cpu_over_scoring_cpu"] = round(
                    figures["server_cpu_ms_per_request"] / figures["scoring_cpu_ms"], 2
                )
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
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.hold:
        report_hold(args, hold, baseline[HOLD_CALL_S][0] * 1000, in_server.get(sha), now)
        return

    print()
    print(
        f"{'call':>5}  {'rps':>6}  {'p50 ms':>8}  {'p99 ms':>8}  {'non-2xx':>7}  "
        f"{'in-proc ms':>10}  {'in-server ms':>12}  {'p50/in-proc':>11}  {'rps/ideal':>9}"
    )
    for r in rows:
        r["server_scoring_median_ms"] = in_server.get(r["sha256"])
        print(
            f"{r['file_duration_s']:>4}s  {r['rps']:>6.2f}  {_fmt(r['p50_ms'], '8.0f')}  "
            f"{_fmt(r['p99_ms'], '8.0f')}  {r['non_2xx'] + r['socket_errors']:>7}  "
            f"{r['baseline_median_ms']:>10.0f}  {_fmt(r['server_scoring_median_ms'], '12.0f')}  "
            f"{_fmt(r['p50_over_baseline'], '11.2f')}  "
            f"{r['rps_over_ideal']:>9.2f}"
        )
        print(
            f"       server CPU {r['server_cpu_ms_per_request']:.1f} ms per request = "
            f"{r['server_cpu_over_scoring_cpu']:.2f}x the CPU of scoring in-process "
            f"({r['scoring_cpu_ms']:.1f} ms)"
        )
    print(
        f"\n{args.workers} workers, {args.connections} connections, {args.duration} s per file, "
        f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), load average "
        f"{os.getloadavg()[0]:.2f}; ideal rps = workers / in-process median; in-server ms: "
        "the audit log's median scoring time (decode + features + model) per request"
    )
    _write(
        args.output or RESULTS,
        {
            "benchmark": "service",
            "time": now,
            "duration_s": args.duration,
            "connections": args.connections,
            "workers": args.workers,
            **_machine(),
            "file_durations_s": list(durations),
            "results": rows,
        },
    )


def report_hold(
    args: argparse.Namespace,
    hold: dict[str, Any],
    in_process_ms: float,
    in_server_ms: float | None,
    now: str,
) -> None:
    """Print a hold's figures, write them, and exit 1 on a 5xx answer or failed connection."""
    answers = hold["answers"]
    print(
        f"\n{hold['requests']} requests due at {hold['target_rps']:g}/s over {hold['hold_s']} s: "
        f"{hold['achieved_rps']:.2f} 2xx/s; latency p50 {_fmt(hold['p50_ms'], '.0f')} ms, "
        f"p95 {_fmt(hold['p95_ms'], '.0f')} ms, p99 {_fmt(hold['p99_ms'], '.0f')} ms, "
        f"max {_fmt(hold['max_ms'], '.0f')} ms (from when each was due)"
    )
    why = f" ({', '.join(hold['errors'])})" if hold["errors"] else ""
    print(
        f"answers: {answers['2xx']} 2xx, {answers['4xx']} 4xx, {answers['5xx']} 5xx, "
        f"{answers['failed']} without an answer{why}; {hold['sent_late']} sent more than "
        f"{HOLD_LATE_S * 1000:.0f} ms late (most {hold['max_send_lag_ms']:.0f} ms)"
    )
    print(f"{'window':>10}  {'due':>5}  {'2xx':>5}  {'2xx/s':>6}  {'p99 ms':>7}  held  sent late")
    for w in hold["windows"]:
        print(
            f"{w['from_s']:>4.0f}-{w['to_s']:<4.0f}s  {w['due']:>5}  {w['answered_2xx']:>5}  "
            f"{w['rps']:>6.2f}  {_fmt(w['p99_ms'], '7.0f')}  {'yes' if w['held'] else 'NO ':>4}"
            f"  {w['sent_late']:>9}"
        )
    ratios = {
        "p50_over_in_process": round(hold["p50_ms"] / in_process_ms, 2) if hold["p50_ms"] else None,
        "p99_over_in_process": round(hold["p99_ms"] / in_process_ms, 2) if hold["p99_ms"] else None,
        "target_over_ideal_rps": round(args.rate / (args.workers * 1000 / in_process_ms), 2),
    }
    print(
        f"rate held in every {HOLD_WINDOW_S:g} s window: "
        f"{'yes' if hold['held_every_window'] else 'NO'}; in-process analyze "
        f"{in_process_ms:.0f} ms, in-server scoring {_fmt(in_server_ms, '.0f')} ms (audit "
        f"median); p50/in-process {_fmt(ratios['p50_over_in_process'], '.2f')}, p99/in-process "
        f"{_fmt(ratios['p99_over_in_process'], '.2f')}; target / ideal rps "
        f"{ratios['target_over_ideal_rps']:.2f}; {args.workers} workers, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    _write(
        args.output or RESULTS_HOLD,
        {
            "benchmark": "service_hold",
            "time": now,
            "workers": args.workers,
            **_machine(),
            "file_duration_s": HOLD_CALL_S,
            "window_s": HOLD_WINDOW_S,
            "held_fraction": HOLD_HELD_FRACTION,
            **hold,
            "baseline_median_ms": round(in_process_ms, 1),
            "server_scoring_median_ms": in_server_ms,
            **ratios,
        },
    )
    if answers["5xx"] or answers["failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
