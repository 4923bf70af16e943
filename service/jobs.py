"""Jobs: long recordings and big batches scored in the background.

``POST /v1/jobs`` stores the uploaded files under ``<data_dir>/jobs/<id>/`` and a
``queued`` row in the store, and answers 202 with the job's URL. Every server process
runs a :class:`JobRunner` thread that claims queued jobs with a lease, scores their
files one by one (each result committed with its audit row, so progress is never lost),
then calls the job's callback URL. A job whose process stopped (restart, crash) is taken
over when its lease runs out; a process that shuts down cleanly hands its job back at
once. Files already scored are not scored again.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, g, jsonify, request, url_for

from voicecheck.errors import VoiceCheckError

from . import service
from .api import (
    Part,
    Upload,
    analysis_body,
    idempotency_key,
    incoming,
    requires,
    score_upload,
    too_large,
    visible,
)
from .audit import open_request, record, request_row, worker_name, written
from .callbacks import check_callback_url, deliver
from .problems import ConflictError, RequestError
from .store import StoreError, iso, new_id

if TYPE_CHECKING:
    from . import Service

bp = Blueprint("jobs", __name__, url_prefix="/v1")

COPY_CHUNK_BYTES = 1 << 20
"""Uploads are copied to a job's folder in pieces of this many bytes."""

PURGE_EVERY_S = 3600.0
"""How often a runner deletes retained audio past its retention time, in seconds."""


@bp.post("/jobs")
@requires("analyze")
def submit() -> tuple[Response, int, dict[str, str]]:
    """Queue recordings (multipart parts named ``file``) for scoring in the background."""
    svc = service()
    request.max_content_length = svc.settings.max_job_request_bytes
    idempotency = idempotency_key()
    open_request(svc, size_bytes=request.content_length)
    if idempotency is not None:
        earlier = svc.store.find_job(g.key.id, idempotency)
        if earlier is not None:  # a retry of a submission that already succeeded
            return _duplicate(svc, earlier)
    callback = None
    if request.mimetype == "multipart/form-data":
        callback = (request.form.get("callback_url") or "").strip() or None
    else:
        callback = (request.args.get("callback_url") or "").strip() or None
    if callback:
        callback = check_callback_url(callback, svc.settings)
    parts = incoming(
        many=request.mimetype == "multipart/form-data", limit_mb=svc.settings.max_job_upload_mb
    )
    if len(parts) > svc.settings.max_job_files:
        raise RequestError(
            f"the job holds {len(parts)} files; at most {svc.settings.max_job_files} are accepted",
            max_files=svc.settings.max_job_files,
        )
    job_id = new_id("job")
    folder = Path(svc.settings.data_dir) / "jobs" / job_id
    folder.mkdir(parents=True)
    listing = []
    try:
        for index, part in enumerate(parts):
            path = folder / f"{index:05d}.bin"
            size, digest = _save(part, path, svc.settings.max_job_upload_mb)
            listing.append(
                {
                    "index": index,
                    "filename": part.filename,
                    "size_bytes": size,
                    "sha256": digest,
                    "path": path.name,
                }
            )
        now = time.time()
        row = {
            "id": job_id,
            "key_id": g.key.id,
            "request_id": g.request_id,
            "client_addr": request.remote_addr,
            "status": "queued",
            "created_at": now,
            "files": json.dumps(listing),
            "total": len(listing),
            "done": 0,
            "failed": 0,
            "results": "[]",
            "callback_url": callback,
            "folder": str(folder),
            "idempotency_key": idempotency,
        }
        audit_row = request_row(
            status=202,
            outcome="queued",
            size_bytes=sum(item["size_bytes"] for item in listing),
            filename=listing[0]["filename"] if len(listing) == 1 else f"{len(listing)} files",
            sha256=listing[0]["sha256"] if len(listing) == 1 else None,
            model_id=svc.detector.model_id,
            job_id=job_id,
        )
        svc.store.add_job(row, audit_row)
        written(audit_row)
    except StoreError:
        shutil.rmtree(folder, ignore_errors=True)
        earlier = svc.store.find_job(g.key.id, idempotency) if idempotency else None
        if earlier is None:
            raise
        # The same submission arrived twice at once and the other one was stored first.
        return _duplicate(svc, earlier)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    g.audited = True
    url = url_for("jobs.status", job_id=job_id)
    body = job_body(svc.store.get_job(job_id) or row)
    if svc.runner is not None:
        svc.runner.wake()
    return jsonify(body), 202, {"Location": url}


@bp.get("/jobs/<job_id>")
@requires("read", counted=False)
def status(job_id: str) -> Response:
    """A job's status, progress and (as files finish) results."""
    svc = service()
    row = visible(svc.store.get_job(job_id), "job", job_id)
    return jsonify(job_body(row, analyses=svc.store.job_analyses(job_id)))


def _save(part: Part, path: Path, limit_mb: float) -> tuple[int, str]:
    """Stream one upload to ``path`` (fsynced); returns its size and sha256."""
    limit = int(limit_mb * 1024 * 1024)
    digest = hashlib.sha256()
    size = 0
    with open(path, "wb") as fh:
        while chunk := part.stream.read(COPY_CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                raise too_large(part.filename, size, limit_mb)
            digest.update(chunk)
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    return size, digest.hexdigest()


def _duplicate(svc: Service, earlier: dict[str, Any]) -> tuple[Response, int, dict]:
    """The answer to a retry whose ``Idempotency-Key`` already made the job ``earlier``."""
    g.audited = True
    row = request_row(
        status=200, outcome="duplicate", job_id=earlier["id"], model_id=svc.detector.model_id
    )
    record(svc, row)
    return _job_answer(svc, earlier, 200)


def _job_answer(svc: Service, row: dict[str, Any], status: int) -> tuple[Response, int, dict]:
    body = job_body(row, analyses=svc.store.job_analyses(row["id"]))
    return jsonify(body), status, {"Location": body["url"]}


@bp.delete("/jobs/<job_id>")
@requires("analyze", counted=False)
def cancel(job_id: str) -> Response:
    """Cancel a queued or running job; files already scored keep their results."""
    svc = service()
    row = visible(svc.store.get_job(job_id), "job", job_id)
    if not svc.store.cancel_job(job_id, time.time()):
        raise ConflictError(
            f"job {job_id} has already finished ({row['status']}); nothing to cancel",
            job_status=row["status"],
        )
    shutil.rmtree(row["folder"], ignore_errors=True)
    svc.metrics.jobs.labels("cancelled").inc()
    svc.store.write_audit(
        [
            request_row(
                status=200, outcome="cancelled", job_id=job_id, model_id=svc.detector.model_id
            )
        ]
    )
    g.audited = True
    return jsonify(
        job_body(svc.store.get_job(job_id) or row, analyses=svc.store.job_analyses(job_id))
    )


def job_body(
    row: dict[str, Any], *, analyses: dict[int, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The public JSON of a job row."""
    results = json.loads(row["results"])
    if analyses:
        for r in results:
            stored = analyses.get(r["index"])
            if stored is not None and "error" not in r:
                r.pop("analysis_id", None)
                r.update(analysis_body(stored))
    body: dict[str, Any] = {
        "id": row["id"],
        "url": url_for("jobs.status", job_id=row["id"]),
        "status": row["status"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "progress": {
            "total": row["total"],
            "done": row["done"],
            "failed": row["failed"],
            "fraction": round(row["done"] / row["total"], 4) if row["total"] else 1.0,
        },
        "callback_url": row["callback_url"],
        "callback_status": row["callback_status"],
        "results": results,
    }
    return body


class JobRunner:
    """Claims and runs jobs in a background thread of one server process."""

    def __init__(self, app: Flask, svc: Service) -> None:
        self.app = app
        self.svc = svc
        self.name = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._current: str | None = None

    def start(self) -> None:
        """Start the background thread (once)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="voicecheck-jobs", daemon=True)
            self._thread.start()

    @property
    def alive(self) -> bool:
        """True while the background thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and hand the current job back to the queue."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        current = self._current
        if current is not None:  # still busy with a file: give the job to another process
            self._hand_back(current)

    def request_stop(self) -> None:
        """Ask the runner to stop after the file it is scoring (safe in a signal handler)."""
        self._stop.set()
        self._wake.set()

    def _hand_back(self, job_id: str) -> None:
        try:
            if self.svc.store.update_job(
                job_id, held_by=self.name, status="queued", lease_until=None, runner=None
            ):
                self.svc.logger.info("job handed back", extra={"job_id": job_id})
        except StoreError:
            pass  # the lease runs out and another process takes the job over

    def purge_audio(self, now: float | None = None) -> int:
        """Delete retained audio older than ``retention_days``; returns the files deleted."""
        settings = self.svc.settings
        days = settings.retention_days
        if not (settings.retain_audio or settings.console_keep_audio) or days <= 0:
            return 0
        now = time.time() if now is None else now
        deleted = 0
        for path in self.svc.store.delete_old_audio(now - days * 86400):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                deleted += 1
            kept = Path(path)
            for derived in kept.parent.glob(glob.escape(kept.name) + ".*"):  # console renders
                with contextlib.suppress(FileNotFoundError):
                    derived.unlink()
        return deleted

    def end_stale_sessions(self, now: float | None = None) -> int:
        """Delete console sessions past their end or idle too long; returns how many."""
        now = time.time() if now is None else now
        idle_s = self.svc.settings.session_idle_minutes * 60
        return self.svc.store.end_expired_sessions(now, now - idle_s)

    def run_forever(self) -> None:
        """Run jobs in the calling thread until :meth:`stop` is called (``voicecheck worker``)."""
        self._stop.clear()
        self._loop()

    def _loop(self) -> None:
        next_purge = 0.0
        while not self._stop.is_set():
            if time.time() >= next_purge:
                next_purge = time.time() + PURGE_EVERY_S
                try:
                    self.purge_audio()
                    self.end_stale_sessions()
                except StoreError:
                    self.svc.logger.exception("purging retained audio or old sessions failed")
            try:
                worked = self.run_pending(limit=1)
            except Exception:  # noqa: BLE001 - the thread must survive a bad job or a store outage
                self.svc.logger.exception(
                    "job runner failed; retrying", extra={"runner": self.name}
                )
                worked = 0
            if not worked:
                self._wake.wait(self.svc.settings.job_poll_s)
                self._wake.clear()

    def run_pending(self, limit: int | None = None) -> int:
        """Run queued jobs (and pending callbacks) until none is left or ``limit`` ran."""
        ran = 0
        for job in self.svc.store.pending_callbacks(time.time()):
            try:
                self._callback(job)
            except StoreError:  # one bad callback must not stop the jobs behind it
                self.svc.logger.exception(
                    "recording a callback failed", extra={"job_id": job["id"]}
                )
        while limit is None or ran < limit:
            if self._stop.is_set():
                break
            job = self.svc.store.claim_job(self.name, time.time(), self.svc.settings.job_lease_s)
            if job is None:
                break
            self._current = job["id"]
            try:
                self._run(job)
            finally:
                self._current = None
            ran += 1
        return ran

    def _run(self, job: dict[str, Any]) -> None:
        svc = self.svc
        log = {"job_id": job["id"], "runner": self.name}
        svc.logger.info("job started", extra=log)
        folder = Path(job["folder"])
        done = {r["index"] for r in json.loads(job["results"])}
        for item in json.loads(job["files"]):
            if self._stop.is_set():
                self._hand_back(job["id"])
                return
            if item["index"] in done:
                continue
            result, analysis, audit_row = self._score(job, folder, item)
            if not svc.store.job_file_done(
                job["id"],
                self.name,
                index=item["index"],
                result=result,
                analysis=analysis,
                audit_row=audit_row,
                lease_until=time.time() + svc.settings.job_lease_s,
            ):
                svc.logger.warning("job no longer held here (cancelled or taken over)", extra=log)
                return
        final = svc.store.get_job(job["id"]) or job
        status = "failed" if final["failed"] == final["total"] and final["total"] else "done"
        svc.store.update_job(
            job["id"], held_by=self.name, status=status, finished_at=time.time(), lease_until=None
        )
        svc.metrics.jobs.labels(status).inc()
        shutil.rmtree(folder, ignore_errors=True)
        svc.logger.info("job finished", extra={**log, "status": status})
        if final.get("callback_url"):
            self._callback(svc.store.get_job(job["id"]) or final)

    def _score(
        self, job: dict[str, Any], folder: Path, item: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
        svc = self.svc
        base_audit = {
            "time": time.time(),
            "request_id": job["request_id"],
            "key_id": job["key_id"],
            "key_name": _key_name(svc, job["key_id"]),
            "client_addr": job["client_addr"],
            "method": "JOB",
            "path": f"/v1/jobs/{job['id']}",
            "worker": worker_name(),
        }
        try:
            data = (folder / item["path"]).read_bytes()
        except OSError as exc:
            error = VoiceCheckError(
                f"the job's copy of file {item['index']} is gone: {exc.strerror}"
            )
            problem = error.to_problem()
            audit_row = {
                **base_audit,
                "status": 500,
                "outcome": error.code,
                "filename": item["filename"],
                "sha256": item["sha256"],
                "size_bytes": item["size_bytes"],
                "job_id": job["id"],
                "model_id": svc.detector.model_id,
            }
            return (
                {"index": item["index"], "filename": item["filename"], "error": problem},
                None,
                audit_row,
            )
        upload = Upload(data, item["filename"], None)
        if upload.sha256 != item["sha256"]:  # damaged on disk: scored as empty, an error
            upload = Upload(b"", item["filename"], None)
        with _job_context(self.app, job):
            row, error, fields = score_upload(
                svc, upload, max_duration_s=svc.settings.max_job_duration_s, job_id=job["id"]
            )
        audit_row = {**base_audit, **fields, "time": time.time()}
        if error is not None:
            problem = error.to_problem()
            problem.update(index=item["index"], filename=item["filename"], sha256=item["sha256"])
            return (
                {"index": item["index"], "filename": item["filename"], "error": problem},
                None,
                audit_row,
            )
        assert row is not None
        row.update(key_id=job["key_id"], request_id=job["request_id"], job_index=item["index"])
        summary = {
            "index": item["index"],
            "filename": item["filename"],
            "analysis_id": row["id"],
            "score": row["score"],
            "verdict": row["verdict"],
        }
        return summary, row, audit_row

    def _callback(self, job: dict[str, Any]) -> None:
        svc = self.svc
        if not job.get("callback_url"):
            return
        settings = svc.settings
        # Long enough for every attempt and the pauses between them.
        hold_s = settings.callback_attempts * (settings.callback_timeout_s + 30.0) + 60.0
        if not svc.store.claim_callback(job["id"], time.time(), hold_s):
            return  # delivered already, or another process is delivering it
        with _job_context(self.app, job):
            analyses = svc.store.job_analyses(job["id"])
            payload = {"event": "job.finished", **job_body(job, analyses=analyses)}
        outcome = deliver(job["callback_url"], payload, svc.settings)
        svc.store.update_job(job["id"], callback_status=outcome, callback_until=None)
        svc.logger.info("job callback", extra={"job_id": job["id"], "callback_status": outcome})


@contextmanager
def _job_context(app: Flask, job: dict[str, Any]) -> Iterator[None]:
    """A request context outside any request, so that ``url_for`` and ``g`` work."""
    with app.test_request_context(f"/v1/jobs/{job['id']}"):
        g.key = None
        g.request_id = job.get("request_id")
        yield


def _key_name(svc: Service, key_id: str | None) -> str | None:
    if key_id is None:
        return None
    row = svc.store.get_key(key_id)
    return row["name"] if row else None
