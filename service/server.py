"""Run the service under gunicorn (``voicecheck serve``).

The master process checks the settings, the store and the model before it forks, so a
bad setting fails at once with a message instead of in every worker. Each worker builds
its own application (its own store connections and job-runner thread). Prometheus
metrics of all workers are added up through files in ``<data_dir>/metrics``.

When a worker process ends, the master gives the audit rows it left ``received`` (requests
it was answering) the outcome ``timed_out`` (gunicorn stopped it for running past
``--timeout``) or ``interrupted`` (it was killed or crashed); at start it does the same for
rows left by workers of this machine that no longer run (a server that was killed whole).

A worker answers one request at a time (``sync``) or ``--threads`` at once (``gthread``).
A client that sends its upload very slowly (a byte a second) holds a ``sync`` worker until
the upload is complete or ``--timeout`` runs out; then gunicorn stops that worker (its
request's audit row becomes ``timed_out``) and starts another. The same limit ends any
upload slower than that, so a ``sync`` worker needs uploads to arrive within
``--timeout``. A ``gthread`` worker keeps signalling it is alive while its threads read,
so there ``--timeout`` does not end a slow upload: the thread stays held until the
client finishes or disconnects. Where clients are not trusted, serve behind a reverse
proxy that receives the whole request before passing it on (nginx does by default, with
``client_body_timeout`` for slow senders).
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication

from .settings import load_settings

if TYPE_CHECKING:
    from .store import Store


class VoiceCheckServer(BaseApplication):
    """A gunicorn application whose workers each call :func:`create_app`."""

    def __init__(self, options: dict[str, Any], overrides: dict[str, Any] | None = None) -> None:
        self.options = options
        self.overrides = overrides or {}
        super().__init__()

    def load_config(self) -> None:
        """Hand the options to gunicorn's configuration."""
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key.lower(), value)

    def load(self):  # noqa: ANN201 - gunicorn's signature
        """Build the WSGI application in the worker."""
        from . import create_app

        return create_app(self.overrides)


def _child_exit(server: Any, worker: Any, *, store: Store) -> None:
    from prometheus_client import multiprocess

    from .audit import INTERRUPTED, TIMED_OUT
    from .store import StoreError

    multiprocess.mark_process_dead(worker.pid)
    outcome = TIMED_OUT if getattr(worker, "aborted", False) else INTERRUPTED
    try:
        ended = store.end_in_flight(f"{socket.gethostname()}:{worker.pid}", outcome)
        store.end_streams(f"{socket.gethostname()}:{worker.pid}", "lost", time.time())
    except StoreError as exc:
        server.log.error("audit rows of worker %s not closed: %s", worker.pid, exc)
        return
    finally:
        store.dispose()  # no connection of the master's may pass into the next fork
    if ended:
        server.log.warning(
            "worker %s ended with %d request(s) unanswered; audit outcome %s",
            worker.pid,
            ended,
            outcome,
        )


def end_dead_workers(store: Store) -> int:
    """Close the audit rows left ``received`` by workers of this machine that no longer run.

    Returns how many rows were given the outcome ``interrupted``. Rows of other machines
    (several servers sharing one PostgreSQL) are left to their own servers.
    """
    from .audit import INTERRUPTED

    host = socket.gethostname()
    ended = 0
    for worker in store.in_flight_workers():
        name, _, pid = worker.rpartition(":")
        if name == host and pid.isdigit() and not _running(int(pid)):
            ended += store.end_in_flight(worker, INTERRUPTED)
    return ended


def _running(pid: int) -> bool:
    if pid == os.getpid():  # the master is no worker: the row is from an earlier start
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _post_fork(server: Any, worker: Any) -> None:
    # One worker process per core: numerical libraries (OpenMP in the booster, BLAS) keep
    # to one thread each, instead of every worker starting a thread per core.
    from threadpoolctl import threadpool_limits

    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")  # for libraries loaded after the fork
    worker.voicecheck_threadpools = threadpool_limits(limits=1)


def _worker_exit(server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    svc = getattr(app, "extensions", {}).get("voicecheck") if app is not None else None
    if svc is not None and svc.runner is not None:
        svc.runner.stop()
    if svc is not None and svc.streams is not None:
        svc.streams.stop()  # every open stream is closed (1001) and stored


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 2,
    threads: int = 1,
    timeout_s: int = 120,
    overrides: dict[str, Any] | None = None,
    access_log: bool = False,
) -> None:
    """Start gunicorn in the foreground until it is stopped (SIGTERM or Ctrl-C).

    Raises
    ------
    voicecheck.errors.VoiceCheckError
        When the settings, the store or the model cannot be used.
    """
    from voicecheck.model import load_model

    from .store import Store

    settings = load_settings(overrides)
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.database)  # creates the tables once, fails early if unreachable
    try:
        ended = end_dead_workers(store)
    finally:
        store.dispose()
    load_model(settings.model or None)  # fails early on a bad model file

    metrics_dir = data_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # prometheus_client picks its value store when first imported, which the command line
    # may already have done: pick again now that the variable is set, before any metric
    # exists, so that every worker writes its values where /metrics adds them up.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()

    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread" if threads > 1 else "sync",
        "timeout": timeout_s,
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": "-" if access_log else None,
        # The path without its query: a stream client may put its key there (?api_key=).
        "access_log_format": '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(f)s" '
        '"%(a)s"',
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "proc_name": "voicecheck",
        "child_exit": functools.partial(_child_exit, store=store),
        "post_fork": _post_fork,
        "worker_exit": _worker_exit,
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        # One control socket per user would collide between servers on one machine.
        "control_socket_disable": True,
        "forwarded_allow_ips": "*" if settings.trusted_proxies else "127.0.0.1",
    }
    if ended:
        print(
            f"{ended} request(s) left unanswered by a server that stopped are now in the "
            "audit log as interrupted",
            file=sys.stderr,
            flush=True,
        )
    shown = f"[{host}]" if ":" in host else host
    print(
        f"voicecheck on http://{shown}:{port}/ (console: /, API: /v1, docs: /docs, health: "
        f"/healthz), data in {data_dir}; add officials with `voicecheck users create NAME` "
        "and partner keys with `voicecheck keys create NAME`",
        file=sys.stderr,
        flush=True,
    )
    VoiceCheckServer(options, overrides).run()
