"""Run the service under gunicorn (``voicecheck serve``).

The master process checks the settings, the store and the model before it forks, so a
bad setting fails at once with a message instead of in every worker. Each worker builds
its own application (its own store connections and job-runner thread). Prometheus
metrics of all workers are added up through files in ``<data_dir>/metrics``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from .settings import load_settings


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


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


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
    Store(settings.database).dispose()  # creates the tables once, fails early if unreachable
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
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "proc_name": "voicecheck",
        "child_exit": _child_exit,
        "post_fork": _post_fork,
        "worker_exit": _worker_exit,
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        # One control socket per user would collide between servers on one machine.
        "control_socket_disable": True,
        "forwarded_allow_ips": "*" if settings.trusted_proxies else "127.0.0.1",
    }
    shown = f"[{host}]" if ":" in host else host
    print(
        f"voicecheck on http://{shown}:{port}/ (console: /, API: /v1, docs: /docs, health: "
        f"/healthz), data in {data_dir}; add officials with `voicecheck users create NAME` "
        "and partner keys with `voicecheck keys create NAME`",
        file=sys.stderr,
        flush=True,
    )
    VoiceCheckServer(options, overrides).run()
