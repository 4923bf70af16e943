"""The voicecheck HTTP service: a Flask application served by gunicorn.

``create_app`` builds the application: settings (defaults -> instance file ->
``VOICECHECK_*`` variables -> ``config``), the store, the model (loaded once), the
metrics, the job runner and the blueprints (``/v1`` API, jobs, operations, docs, and the
web console for officials at ``/``).
Everything it holds lives in ``app.extensions["voicecheck"]``; nothing is kept at
module level.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from . import problems
from .settings import Settings, load_settings
from .store import Store
from .telemetry import Metrics, configure_logging, request_id

if TYPE_CHECKING:
    # The model (scikit-learn, skops) is imported when an application is built, so that
    # the command line's keys, users and audit commands start without it.
    from voicecheck.model import Detector


@dataclass
class Service:
    """What one application instance holds."""

    settings: Settings
    store: Store
    detector: Detector
    metrics: Metrics
    logger: logging.Logger
    runner: Any = None
    started_at: float = 0.0
    streams: Any = None
    """The process's :class:`~voicecheck.service.streams.StreamHub` (live calls)."""


def service() -> Service:
    """The running application's :class:`Service` (inside a request or app context)."""
    from flask import current_app

    return current_app.extensions["voicecheck"]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the service application.

    Parameters
    ----------
    config : dict, optional
        Setting overrides (names as in :class:`~voicecheck.service.settings.Settings`),
        applied after the instance file and the environment. A ``detector`` entry
        supplies an already loaded model (tests).

    Returns
    -------
    flask.Flask
    """
    config = dict(config or {})
    detector = config.pop("detector", None)
    settings = load_settings(config)
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)

    app = Flask(__name__, instance_path=str(data_dir.resolve()))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]

    logger = configure_logging(settings.log_level, settings.log_format)
    if detector is None:
        from voicecheck.model import load_model

        detector = load_model(settings.model or None)
    svc = Service(
        settings=settings,
        store=Store(settings.database),
        detector=detector,
        metrics=Metrics(),
        logger=logger,
        started_at=time.time(),
    )
    app.extensions["voicecheck"] = svc

    problems.register(app)
    _register_request_hooks(app, svc)

    from .api import bp as api_bp
    from .docs import bp as docs_bp
    from .jobs import JobRunner
    from .jobs import bp as jobs_bp
    from .ops import bp as ops_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(jobs_bp)
    app.register_blueprint(ops_bp)
    app.register_blueprint(docs_bp)
    if settings.streams:
        from .streams import StreamHub
        from .streams import bp as streams_bp

        app.register_blueprint(streams_bp)
        svc.streams = StreamHub(svc)
    if settings.console:
        from . import console

        console.register(app)

    svc.runner = JobRunner(app, svc)
    if settings.job_runner:
        svc.runner.start()
    logger.info(
        "service ready",
        extra={
            "model_id": detector.model_id,
            "store": svc.store.safe_url,
            "data_dir": str(data_dir),
        },
    )
    return app


def _endpoint_label() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def _register_request_hooks(app: Flask, svc: Service) -> None:
    from .audit import audit_refusal

    @app.before_request
    def _start() -> None:
        g.request_id = request_id(request.headers.get("X-Request-ID"))
        g.started = time.perf_counter()
        g.audited = False
        g.audit_id = None
        g.key = None

    @app.after_request
    def _finish(response: Response) -> Response:
        if g.get("audit_id") is not None or (
            response.status_code >= 400 and request.path.startswith("/v1/")
        ):
            response = audit_refusal(svc, response)  # or complete the received row
        elapsed = time.perf_counter() - getattr(g, "started", time.perf_counter())
        endpoint = _endpoint_label()
        svc.metrics.requests.labels(endpoint, request.method, str(response.status_code)).inc()
        svc.metrics.latency.labels(endpoint).observe(elapsed)
        if response.status_code >= 400:
            svc.metrics.errors.labels(getattr(g, "error_code", None) or "http_error").inc()
        response.headers["X-Request-ID"] = g.get("request_id", "")
        rate = g.get("rate")
        if rate is not None and "RateLimit-Limit" not in response.headers:
            response.headers.update(rate.headers())
        svc.logger.info(
            "request",
            extra={
                "request_id": g.get("request_id"),
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 1),
                "key_id": g.key.id if g.get("key") else None,
                "client": request.remote_addr,
                "code": g.get("error_code"),
            },
        )
        return response
