"""Operations endpoints: liveness, readiness and Prometheus metrics (no key needed)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from flask import Blueprint, Response, jsonify

from voicecheck import __version__

from . import service
from .problems import problem
from .store import StoreError

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up and answering."""
    return jsonify({"status": "ok", "version": __version__})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready for traffic: the model is loaded, the store answers and the data folder is writable."""
    svc = service()
    checks: dict[str, str] = {"model": svc.detector.model_id}
    ready = True
    try:
        svc.store.ping()
        checks["store"] = "ok"
    except StoreError as exc:
        checks["store"] = exc.message
        ready = False
    folder = Path(svc.settings.data_dir)
    if os.access(folder, os.W_OK):
        checks["data_dir"] = "ok"
    else:
        checks["data_dir"] = f"{folder} is not writable"
        ready = False
    runner = svc.runner
    checks["job_runner"] = "running" if runner is not None and runner.alive else "off"
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": checks,
        "uptime_s": round(time.time() - svc.started_at, 1),
    }
    if not ready:
        detail = "; ".join(f"{k}: {v}" for k, v in checks.items())
        return problem(
            503, "not_ready", "Not ready", detail, checks=checks, uptime_s=body["uptime_s"]
        ), 503
    return jsonify(body), 200


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(
        service().metrics.exposition(), content_type="text/plain; version=0.0.4; charset=utf-8"
    )
