"""Score millions of recordings on a Dask cluster, resumably.

``voicecheck batch INPUT --output OUT`` walks a folder (or reads a list of paths),
scores every recording on the workers of a Dask cluster and appends one row per
file to ``OUT`` as results come in:

- ``OUT.csv``: one CSV file, flushed after every finished task and ``fsync``-ed
  every ``flush_s`` seconds;
- ``OUT.parquet``: a folder of part files (``part-00000.parquet``, ...), each
  written to a hidden temporary file and renamed into place, so that
  ``pyarrow.dataset.dataset(OUT)`` reads a consistent table at any moment.

Both hold the columns of :data:`COLUMNS`, in that order. A run that stops (a crash,
``kill -9``, Ctrl-C) is resumed by running the same command again: the paths
``OUT`` already holds are skipped, and a row torn by the crash is cut away before
anything is appended, so that every file has exactly one row.

The same engine, :func:`map_unordered`, computes the training features of
:func:`voicecheck.research.training.build_table`.
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .constants import MAX_DURATION_S
from .errors import (
    BatchInputError,
    BatchOutputError,
    ClusterError,
    ModelError,
    VoiceCheckError,
)

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

    from .model import Detector

COLUMNS = (
    "path",
    "score",
    "verdict",
    "error",
    "error_code",
    "duration_s",
    "channels",
    "container",
    "codec",
    "sample_rate",
    "size_bytes",
    "model_id",
    "scored_at",
    "elapsed_ms",
)
"""Columns of a batch output, in their order.

``path`` the file as listed or found (the resume key); ``score`` the calibrated
cloned-voice probability in [0, 1] and ``verdict`` ``likely_cloned``, ``likely_human``
or ``inconclusive`` (both empty for an error row); ``error`` and ``error_code`` why
the file could not be scored (empty when it was); ``duration_s``, ``channels``,
``container``, ``codec``, ``sample_rate`` (Hz) and ``size_bytes`` describe the
input as it was sent; ``model_id`` the model that scored it; ``scored_at`` when the
row was made (UTC, ISO 8601 with milliseconds, ``Z``); ``elapsed_ms`` the worker's
wall time for the file (read, decode, features, model).
"""

FORMATS = ("csv", "parquet")

FILES_PER_TASK = 8
"""Files one Dask task scores: spreads the per-task cost of client, scheduler and worker
(several ms of CPU) over several files (``benchmarks/bench_batch.py`` measures it)."""

TASKS_PER_THREAD = 4
"""Tasks in flight per worker thread: enough to keep workers busy, few enough to keep
the client's memory flat however many files there are."""

FLUSH_S = 30.0
"""Seconds between durable writes: an ``fsync`` of the CSV, a new Parquet part file."""

PART_ROWS = 50_000
"""Most rows in one Parquet part file."""

RETRIES = 2
"""Times Dask runs a task again after it raised (a worker without the model, say)."""

POLL_S = 0.01
"""Seconds between looks at the finished tasks (and at a stop request)."""

THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}
"""Set in every local worker before it starts: one worker process is one core."""

_NOT_IN_WORKERS = {"MALLOC_TRIM_THRESHOLD_"}
"""Dask's default for local workers, left out: setting it turns off glibc's adaptive mmap
threshold, so that every array over 128 KiB is mapped and unmapped again; 10 s G.711
calls scored 1.5 to 1.9 times slower with it."""

_PART = re.compile(r"^part-(\d+)\.parquet$")
_PART_TMP = re.compile(r"^\.part-\d+\.parquet\.[0-9]+\.tmp$")
_SUFFIX_FORMAT = {".csv": "csv", ".parquet": "parquet"}


# --------------------------------------------------------------------------- inputs


def path_text(path: str) -> str:
    r"""The text of ``path`` as the output stores it (undecodable bytes as ``\xNN``).

    Examples
    --------
    >>> path_text("calls/a.wav")
    'calls/a.wav'
    >>> path_text(os.fsdecode(b"calls/\xff.wav"))
    'calls/\\xff.wav'
    """
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def walk_files(
    root: str,
    *,
    patterns: Sequence[str] = (),
    exclude: str | None = None,
    on_error: Callable[[str, OSError], None] | None = None,
) -> Iterator[str]:
    """Yield the files under ``root``, one at a time, in no particular order.

    Parameters
    ----------
    root : str
        The folder to walk; the paths yielded start with it.
    patterns : sequence of str
        Shell globs (``*.wav``); a file is yielded when its name matches one (case
        matters). Empty: every file.
    exclude : str or None
        An absolute path never yielded (the batch output, when it lies under ``root``).
    on_error : callable or None
        Called as ``on_error(folder, exc)`` for a folder that cannot be read; it is
        skipped.

    Notes
    -----
    Hidden files and folders (name starting with ``.``) are skipped; symbolic links
    to files are followed, to folders not (no cycles). Only the folders still to visit
    are kept in memory, never a list of files, so a folder of millions of files streams.
    """
    skip_dir, skip_name = os.path.split(exclude) if exclude else (None, None)
    stack = [root]
    while stack:
        folder = stack.pop()
        here_skip = skip_name if skip_dir and os.path.abspath(folder) == skip_dir else None
        subfolders: list[str] = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(".") or name == here_skip:
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subfolders.append(entry.path)
                            continue
                        if not entry.is_file():
                            continue
                    except OSError:
                        continue
                    if patterns and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                        continue
                    yield entry.path
        except OSError as exc:
            if on_error is None:
                raise
            on_error(folder, exc)
        stack.extend(reversed(subfolders))


def read_list(source: str) -> Iterator[str]:
    """Yield the paths of a list file, one a line (``-``: standard input).

    Blank lines and lines starting with ``#`` are skipped; surrounding spaces are
    removed. The file is read as it is consumed.
    """
    stream = sys.stdin if source == "-" else open(source, encoding="utf-8")  # noqa: SIM115
    try:
        for line in stream:
            text = line.strip()
            if text and not text.startswith("#"):
                yield text
    finally:
        if stream is not sys.stdin:
            stream.close()


def input_paths(
    source: str,
    *,
    patterns: Sequence[str] = (),
    exclude: str | None = None,
    on_error: Callable[[str, OSError], None] | None = None,
) -> Iterator[str]:
    """The recordings of a batch: the files under a folder, or the lines of a list file.

    Raises
    ------
    BatchInputError
        ``source`` does not exist, cannot be read, or ``patterns`` are given with a list.
    """
    if source != "-" and os.path.isdir(source):
        return walk_files(source, patterns=patterns, exclude=exclude, on_error=on_error)
    if patterns:
        raise BatchInputError(
            f"--pattern selects files of a folder, but INPUT {source} is a list of paths; "
            "leave out --pattern or give a folder"
        )
    if source != "-":
        try:
            with open(source, "rb"):
                pass
        except OSError as exc:
            raise BatchInputError(
                f"cannot read INPUT {source}: {exc.strerror}; expected a folder of recordings "
                "or a file with one path a line"
            ) from None
    return read_list(source)


# --------------------------------------------------------------------------- workers

_DETECTORS: dict[tuple[str | None, str], Detector] = {}
_DETECTORS_LOCK = threading.Lock()


def worker_detector(model: str | None, *, model_id: str) -> Detector:
    """The detector of this process, loaded on first use and kept.

    A worker loads the model once, whatever the number of tasks it runs.

    Raises
    ------
    voicecheck.errors.ModelError
        The model cannot be loaded here, or it is not the model ``model_id``.
    """
    key = (model, model_id)
    with _DETECTORS_LOCK:
        detector = _DETECTORS.get(key)
        if detector is None:
            from .model import load_model

            detector = load_model(model)
            if detector.model_id != model_id:
                raise ModelError(
                    f"the model {model or '(shipped)'} is {detector.model_id} on this worker "
                    f"({os.uname().nodename}); the batch scores with {model_id}: every worker "
                    "must see the same model file"
                )
            _DETECTORS.clear()
            _DETECTORS[key] = detector
    return detector


def loaded_models() -> list[str]:
    """Model ids this process holds (in a worker: the batch's model, once)."""
    return [model_id for _, model_id in _DETECTORS]


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _empty_row(path: str) -> dict[str, Any]:
    return dict.fromkeys(COLUMNS) | {"path": path_text(path)}


def _with_audio(row: dict[str, Any], audio: dict[str, Any] | None) -> dict[str, Any]:
    if audio:
        for key in ("duration_s", "channels", "container", "codec", "sample_rate", "size_bytes"):
            row[key] = audio.get(key)
    return row


def error_row(
    path: str, message: str, code: str, *, model_id: str, audio: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The output row of a file that could not be scored."""
    row = _with_audio(_empty_row(path), audio)
    if row["size_bytes"] is None:
        with contextlib.suppress(OSError):
            row["size_bytes"] = os.stat(path).st_size
    row.update(
        error=" ".join(message.split()), error_code=code, model_id=model_id, scored_at=_utc_now()
    )
    return row


def _score_one(
    path: str, detector: Detector, *, max_duration_s: float, analyze: Callable[..., Any]
) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = analyze(path, detector, max_duration_s=max_duration_s)
    except ModelError:
        raise
    except VoiceCheckError as exc:
        info = exc.details.get("audio")
        audio = info.to_dict() if hasattr(info, "to_dict") else None
        row = error_row(path, str(exc), exc.code, model_id=detector.model_id, audio=audio)
    except OSError as exc:
        message = f"cannot read {path_text(path)}: {exc.strerror or exc}"
        row = error_row(path, message, "unreadable_file", model_id=detector.model_id)
    except Exception as exc:  # one odd file must not stop a batch of millions
        message = f"{type(exc).__name__}: {exc}"
        row = error_row(path, message, "internal_error", model_id=detector.model_id)
    else:
        row = _with_audio(_empty_row(path), result.audio)
        row.update(
            score=result.score,
            verdict=result.verdict,
            model_id=detector.model_id,
            scored_at=_utc_now(),
        )
    row["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return row


def score_files(
    paths: Sequence[str], *, model: str | None, model_id: str, max_duration_s: float
) -> list[dict[str, Any]]:
    """Score ``paths`` in this process (a Dask task): one output row per path.

    Parameters
    ----------
    paths : sequence of str
        Recordings, as the worker sees them.
    model : str or None
        The ``.skops`` file (None: the shipped model), loaded once per process.
    model_id : str
        The model the batch scores with; a worker that loads another refuses.
    max_duration_s : float
        Longest recording accepted, in seconds.

    Returns
    -------
    list of dict
        Rows with the keys of :data:`COLUMNS`; a file that cannot be scored gets an
        error row, never an exception.

    Raises
    ------
    voicecheck.errors.ModelError
        The model cannot be used on this worker (fails the whole batch).
    """
    from .scoring import analyze

    detector = worker_detector(model, model_id=model_id)
    return [_score_one(p, detector, max_duration_s=max_duration_s, analyze=analyze) for p in paths]


def _warm_worker(model: str | None, model_id: str) -> str:
    return worker_detector(model, model_id=model_id).model_id


# --------------------------------------------------------------------------- cluster


def n_workers(n_jobs: int) -> int:
    """Worker processes for ``n_jobs`` (joblib's convention: -1 every core, -2 all but one).

    Examples
    --------
    >>> n_workers(3)
    3
    >>> n_workers(-1) == len(os.sched_getaffinity(0))
    True
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if n_jobs == 0:
        raise ValueError("n_jobs is 0; expected a positive count or -1 for every core")
    return n_jobs if n_jobs > 0 else max(1, (cores or 1) + 1 + n_jobs)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Start children with Ctrl-C ignored: the client stops them cleanly instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class DaskEngine:
    """A Dask client, connected on first use.

    Parameters
    ----------
    scheduler : str or None
        Address of a running Dask scheduler (``tcp://host:port``). Its workers must
        have voicecheck installed and see the files and the model at the same paths.
    workers : int or None
        Without ``scheduler``: processes of the local cluster started here, one thread
        each, numeric libraries limited to one thread (default: one per core).
    """

    def __init__(self, *, scheduler: str | None = None, workers: int | None = None) -> None:
        self.scheduler = scheduler
        self.workers = workers
        self._client: Client | None = None
        self._cluster: Any = None

    @property
    def client(self) -> Client:
        """The connected client (the cluster starts on the first call)."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Client:
        import dask
        from distributed import Client, LocalCluster

        if self.scheduler is not None:
            try:
                return Client(self.scheduler, timeout="10s", set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ClusterError(
                    f"cannot connect to the Dask scheduler at {self.scheduler}: {exc}; start "
                    "one (`dask scheduler`, then `dask worker ADDRESS`) or leave out "
                    "--scheduler to use a local cluster"
                ) from None
        workers = self.workers or n_workers(-1)
        environ = dask.config.get("distributed.nanny.pre-spawn-environ", {})
        environ = {k: v for k, v in environ.items() if k not in _NOT_IN_WORKERS} | THREAD_ENV
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), _sigint_ignored():
            self._cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
        return Client(self._cluster, set_as_default=False)

    def threads(self) -> int:
        """Worker threads of the cluster, after waiting up to a minute for a first worker."""
        client = self.client
        try:
            client.wait_for_workers(1, timeout=60)
        except TimeoutError:
            raise ClusterError(
                f"the Dask cluster at {client.scheduler.address} has no worker after 60 s; "
                "start workers with `dask worker ADDRESS`"
            ) from None
        return max(1, sum(client.nthreads().values()))

    def close(self) -> None:
        """Disconnect, and stop the local cluster if this engine started it."""
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        with contextlib.suppress(Exception):
            if client is not None:
                client.close()
        with contextlib.suppress(Exception):
            if cluster is not None:
                cluster.close()

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SHARED: ContextVar[DaskEngine | None] = ContextVar("voicecheck_dask_engine", default=None)


@contextlib.contextmanager
def shared_engine(*, scheduler: str | None = None, workers: int | None = None):
    """Let every :func:`engine_client` in this block use one engine (started on first use).

    ``voicecheck evaluate`` computes many feature tables; they share one cluster.
    """
    engine = DaskEngine(scheduler=scheduler, workers=workers)
    token = _SHARED.set(engine)
    try:
        yield engine
    finally:
        _SHARED.reset(token)
        engine.close()


@contextlib.contextmanager
def engine_client(*, scheduler: str | None = None, workers: int | None = None):
    """A client: the shared engine's when one is active (and ``scheduler`` agrees), else new."""
    shared = _SHARED.get()
    if shared is not None and (scheduler is None or scheduler == shared.scheduler):
        yield shared.client
        return
    with DaskEngine(scheduler=scheduler, workers=workers) as engine:
        yield engine.client


def map_unordered(
    fn: Callable[..., Any],
    items: Iterable[Any],
    *,
    client: Client,
    window: int | None = None,
    retries: int = RETRIES,
    errors: str = "raise",
    stop: Callable[[], bool] | None = None,
    **kwargs: Any,
) -> Iterator[tuple[Any, Any]]:
    """Run ``fn(item, **kwargs)`` on the cluster for every item; yield results as they come.

    At most ``window`` tasks are in flight: items are drawn from ``items`` only as
    tasks finish, so an iterator of millions of items keeps memory flat.

    Parameters
    ----------
    fn : callable
        A function the workers can import (defined in a module, not in ``__main__``).
    items : iterable
        Arguments of ``fn``, consumed lazily.
    client : distributed.Client
        The cluster to run on.
    window : int or None
        Most tasks in flight (default: :data:`TASKS_PER_THREAD` per worker thread).
    retries : int
        Times Dask reruns a task that raised.
    errors : {"raise", "return"}
        On a failed task: raise its exception here (and cancel the rest), or yield the
        exception in place of a result. A task whose workers kept dying fails with
        ``distributed.KilledWorker``.
    stop : callable or None
        Polled while waiting; when it returns True, the results already finished are
        yielded, the tasks in flight are cancelled and the iteration ends.
    **kwargs
        Passed to every call of ``fn``.

    Yields
    ------
    tuple
        ``(item, result)`` in order of completion.
    """
    from distributed import as_completed

    if errors not in ("raise", "return"):
        raise ValueError(f"errors is {errors!r}; expected 'raise' or 'return'")
    if window is None:
        window = TASKS_PER_THREAD * max(1, sum(client.nthreads().values()))
    window = max(1, window)
    source = iter(items)
    pending: dict[str, tuple[Any, Any]] = {}
    finished = as_completed(loop=client.loop, with_results=True, raise_errors=False)
    exhausted = False

    def fill() -> None:
        nonlocal exhausted
        while not exhausted and len(pending) < window:
            try:
                item = next(source)
            except StopIteration:
                exhausted = True
                return
            future = client.submit(fn, item, pure=False, retries=retries, **kwargs)
            pending[future.key] = (item, future)
            finished.add(future)

    try:
        fill()
        while pending:
            stopping = stop is not None and stop()
            batch = finished.next_batch(block=False)
            if not batch and not stopping:
                time.sleep(POLL_S)
                continue
            for future, result in batch:
                item, _ = pending.pop(future.key)
                if future.status == "finished":
                    yield item, result
                    continue
                exc = result[1] if isinstance(result, tuple) else result
                if not isinstance(exc, BaseException):
                    exc = RuntimeError(f"task {future.key} ended as {future.status}")
                if errors == "raise":
                    raise exc
                yield item, exc
            if stopping:
                return
            fill()
    finally:
        if pending:
            with contextlib.suppress(Exception):
                client.cancel([f for _, f in pending.values()])
        finished.clear()


# --------------------------------------------------------------------------- outputs


def format_for(path: str, fmt: str | None = None) -> str:
    """The output format: ``fmt`` when given, else from the suffix of ``path``.

    Raises
    ------
    BatchInputError
        Neither ``fmt`` nor a ``.csv`` / ``.parquet`` suffix says which.
    """
    if fmt is not None:
        if fmt not in FORMATS:
            raise BatchInputError(f"format is {fmt!r}; expected one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_FORMAT:
        raise BatchInputError(
            f"cannot tell the format of OUT {path} from its name; end it with .csv or "
            ".parquet, or give --format"
        )
    return _SUFFIX_FORMAT[suffix]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _mismatch(out: Path, what: str) -> BatchOutputError:
    return BatchOutputError(
        f"{out} {what}; write to another --output, or pass --restart to delete it and "
        "score everything again"
    )


class BatchOutput:
    """Rows of a batch, appended as they come; see :func:`open_output`.

    Attributes
    ----------
    path : Path
        The output file (CSV) or folder (Parquet).
    done : set of str
        Paths the output already holds (the resume keys), as :func:`path_text` writes them.
    notes : list of str
        What opening it repaired or removed, for the user.
    """

    def __init__(self, path: Path, *, flush_s: float) -> None:
        self.path = path
        self.flush_s = flush_s
        self.done: set[str] = set()
        self.notes: list[str] = []

    def write(self, rows: Sequence[dict[str, Any]]) -> None:  # pragma: no cover - abstract
        """Append ``rows`` (dicts with the keys of :data:`COLUMNS`)."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        """Write what is buffered and make it durable."""
        raise NotImplementedError

    def __enter__(self) -> BatchOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CsvOutput(BatchOutput):
    """A CSV file with a header, appended row by row; a torn last row is cut on open."""

    def __init__(
        self, path: Path, *, model_id: str, retry_errors: bool = False, flush_s: float = FLUSH_S
    ) -> None:
        super().__init__(path, flush_s=flush_s)
        header = ",".join(COLUMNS).encode() + b"\n"
        if path.exists():
            self._resume(model_id=model_id, retry_errors=retry_errors, header=header)
        self._file = open(path, "a", encoding="utf-8", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._file, lineterminator="\n")
        if self._file.tell() == 0:
            self._file.write(header.decode())
            self._file.flush()
            os.fsync(self._file.fileno())
            _fsync_dir(path.parent)
        self._synced = time.monotonic()

    def _records(self) -> Iterator[tuple[int, int, bytes | None]]:
        """(start, end, bytes) of every whole record; a last ``None`` record is torn."""
        offset = 0
        with open(self.path, "rb") as f:
            record = b""
            for line in f:
                record += line
                if not line.endswith(b"\n"):
                    break
                if record.count(b'"') % 2:  # a quoted field goes on in the next line
                    continue
                if b"\x00" in record:  # blocks a power cut left unwritten
                    break
                yield offset, offset + len(record), record
                offset += len(record)
                record = b""
            if record:
                yield offset, offset + len(record), None

    def _resume(self, *, model_id: str, retry_errors: bool, header: bytes) -> None:
        size = self.path.stat().st_size
        end = 0
        error_rows = 0
        i_error, i_model = COLUMNS.index("error"), COLUMNS.index("model_id")
        for start, stop, record in self._records():
            if record is None:
                if start == 0:
                    with open(self.path, "rb") as f:
                        head = f.read(len(header))
                    if size >= len(header) or not header.startswith(head):
                        raise _mismatch(self.path, "is not a voicecheck batch CSV")
                break
            fields = next(csv.reader([record.decode("utf-8", "replace")]))
            if start == 0:
                if tuple(fields) != COLUMNS:
                    raise _mismatch(
                        self.path,
                        f"has the columns {', '.join(fields)[:200]}; this version writes "
                        f"{', '.join(COLUMNS)}",
                    )
            elif len(fields) != len(COLUMNS):
                raise _mismatch(
                    self.path,
                    f"has a row of {len(fields)} fields at byte {start}; expected {len(COLUMNS)}",
                )
            elif fields[i_model] != model_id:
                raise _mismatch(
                    self.path,
                    f"holds results of the model {fields[i_model]}; this run scores with "
                    f"{model_id}. Give the same --model to resume",
                )
            elif fields[i_error] and retry_errors:
                error_rows += 1
            else:
                self.done.add(fields[0])
            end = stop
        if end < size:
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
            what = "an unfinished header" if end == 0 else "an incomplete last row"
            self.notes.append(
                f"removed {what} ({size - end} bytes) that an interrupted run left in {self.path}"
            )
        if error_rows:
            self._drop_error_rows(i_error)
            self.notes.append(
                f"removed {error_rows} error row(s) from {self.path}; those files are scored again"
            )

    def _drop_error_rows(self, i_error: int) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as out:
            for start, _, record in self._records():
                if record is None:
                    break
                if start and next(csv.reader([record.decode("utf-8", "replace")]))[i_error]:
                    continue
                out.write(record)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append ``rows`` and flush them to the operating system (``fsync`` now and then)."""
        self._writer.writerows(["" if r[c] is None else r[c] for c in COLUMNS] for r in rows)
        self._file.flush()
        if time.monotonic() - self._synced >= self.flush_s:
            os.fsync(self._file.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        """Flush, ``fsync`` and close the file."""
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def arrow_schema():
    """The Arrow schema of a Parquet batch output (the columns of :data:`COLUMNS`)."""
    import pyarrow as pa

    types = {
        "score": pa.float64(),
        "duration_s": pa.float64(),
        "channels": pa.int32(),
        "sample_rate": pa.int32(),
        "size_bytes": pa.int64(),
        "elapsed_ms": pa.float64(),
    }
    return pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])


class ParquetOutput(BatchOutput):
    """A folder of Parquet part files, each written whole and renamed into place."""

    def __init__(
        self,
        path: Path,
        *,
        model_id: str,
        retry_errors: bool = False,
        flush_s: float = FLUSH_S,
        part_rows: int = PART_ROWS,
    ) -> None:
        super().__init__(path, flush_s=flush_s)
        self.part_rows = part_rows
        self.schema = arrow_schema()
        self._rows: list[dict[str, Any]] = []
        self._next = 0
        if path.exists() and not path.is_dir():
            raise _mismatch(path, "is a file; a Parquet output is a folder of part files")
        path.mkdir(parents=True, exist_ok=True)
        self._resume(model_id=model_id, retry_errors=retry_errors)
        self._written = time.monotonic()

    def _parts(self) -> list[tuple[int, Path]]:
        parts = []
        for entry in os.scandir(self.path):
            m = _PART.match(entry.name)
            if m:
                parts.append((int(m.group(1)), Path(entry.path)))
            elif _PART_TMP.match(entry.name):
                os.unlink(entry.path)  # a part a crash left half written
            else:
                raise _mismatch(
                    self.path, f"holds {entry.name}, which voicecheck batch does not write"
                )
        return sorted(parts)

    def _resume(self, *, model_id: str, retry_errors: bool) -> None:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        dropped = 0
        for number, part in self._parts():
            self._next = number + 1
            try:
                schema = pq.read_schema(part).remove_metadata()
                table = pq.read_table(part, columns=["path", "error", "model_id"])
            except Exception as exc:  # pyarrow raises several types on a damaged file
                raise BatchOutputError(
                    f"{part} cannot be read ({exc}); delete it to score its files again"
                ) from None
            if not schema.equals(self.schema):
                raise _mismatch(
                    self.path,
                    f"has the columns {', '.join(schema.names)[:200]} in {part.name}; this "
                    f"version writes {', '.join(COLUMNS)}",
                )
            models = [m for m in pc.unique(table["model_id"]).to_pylist() if m != model_id]
            if models:
                raise _mismatch(
                    self.path,
                    f"holds results of the model {models[0]}; this run scores with "
                    f"{model_id}. Give the same --model to resume",
                )
            failed = pc.fill_null(pc.not_equal(table["error"], ""), False)
            n_failed = pc.sum(failed).as_py() or 0
            if retry_errors and n_failed:
                dropped += n_failed
                self._rewrite_without_errors(part, number)
                table = table.filter(pc.invert(failed))
            self.done.update(table["path"].to_pylist())
        if dropped:
            self.notes.append(
                f"removed {dropped} error row(s) from {self.path}; those files are scored again"
            )

    def _rewrite_without_errors(self, part: Path, number: int) -> None:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = pq.read_table(part)
        keep = table.filter(pc.invert(pc.fill_null(pc.not_equal(table["error"], ""), False)))
        if keep.num_rows:
            self._write_part(keep, number)
        else:
            os.unlink(part)
            _fsync_dir(self.path)

    def _write_part(self, table: Any, number: int) -> None:
        import pyarrow.parquet as pq

        final = self.path / f"part-{number:05d}.parquet"
        tmp = self.path / f".part-{number:05d}.parquet.{os.getpid()}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.path)

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Buffer ``rows``; write a part when enough rows or seconds have gathered."""
        self._rows.extend(rows)
        if len(self._rows) >= self.part_rows or time.monotonic() - self._written >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as the next part file."""
        import pyarrow as pa

        while self._rows:
            rows, self._rows = self._rows[: self.part_rows], self._rows[self.part_rows :]
            self._write_part(pa.Table.from_pylist(rows, schema=self.schema), self._next)
            self._next += 1
        self._written = time.monotonic()

    def close(self) -> None:
        """Write the rows still buffered."""
        self.flush()


def _remove_output(path: Path) -> None:
    if path.is_dir():
        for entry in os.scandir(path):
            if not (_PART.match(entry.name) or _PART_TMP.match(entry.name)):
                raise BatchOutputError(
                    f"{path} holds {entry.name}, which voicecheck batch does not write; "
                    "refusing to delete it with --restart: choose another --output"
                )
        for entry in os.scandir(path):
            os.unlink(entry.path)
    elif path.exists():
        path.unlink()


def open_output(
    path: str | os.PathLike[str],
    *,
    fmt: str,
    model_id: str,
    restart: bool = False,
    retry_errors: bool = False,
    flush_s: float = FLUSH_S,
    part_rows: int = PART_ROWS,
) -> BatchOutput:
    """Open a batch output to append to, resuming what it holds.

    Parameters
    ----------
    path : path
        A ``.csv`` file or a folder of Parquet parts.
    fmt : {"csv", "parquet"}
        The format (see :func:`format_for`).
    model_id : str
        The model of this run; an output made by another model is refused.
    restart : bool
        Delete what the output holds first.
    retry_errors : bool
        Remove the output's error rows, so that those files are scored again.
    flush_s : float
        Seconds between durable writes.
    part_rows : int
        Most rows in one Parquet part.

    Returns
    -------
    BatchOutput
        With ``done``, the paths already scored.

    Raises
    ------
    BatchOutputError
        The output has other columns, holds another model's results, or is not a
        batch output at all; the message says what to do.
    """
    out = Path(path)
    if restart:
        _remove_output(out)
    if fmt == "csv":
        if out.is_dir():
            raise _mismatch(out, "is a folder; a CSV output is a file")
        out.parent.mkdir(parents=True, exist_ok=True)
        return CsvOutput(out, model_id=model_id, retry_errors=retry_errors, flush_s=flush_s)
    if fmt == "parquet":
        return ParquetOutput(
            out, model_id=model_id, retry_errors=retry_errors, flush_s=flush_s, part_rows=part_rows
        )
    raise BatchInputError(f"format is {fmt!r}; expected one of {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- the batch


@dataclass
class BatchStats:
    """Counts of one run of a batch.

    Attributes
    ----------
    scored, failed : int
        Rows written by this run: with a score, with an error.
    skipped : int
        Input files the output already held (or listed twice).
    rerun : int
        Files whose task's worker died, scored again one task each.
    audio_s : float
        Seconds of audio scored.
    interrupted : bool
        The run stopped before the end (it can be resumed).
    """

    scored: int = 0
    failed: int = 0
    skipped: int = 0
    rerun: int = 0
    audio_s: float = 0.0
    interrupted: bool = False
    started: float = field(default_factory=time.perf_counter)

    @property
    def done(self) -> int:
        """Rows written by this run."""
        return self.scored + self.failed

    @property
    def elapsed_s(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started

    @property
    def files_per_s(self) -> float:
        """Rows written per second of wall time."""
        return self.done / max(self.elapsed_s, 1e-9)

    @property
    def x_real_time(self) -> float:
        """Seconds of audio scored per second of wall time."""
        return self.audio_s / max(self.elapsed_s, 1e-9)

    def line(self) -> str:
        """One line for the terminal."""
        return (
            f"{self.done} done ({self.failed} failed, {self.skipped} skipped), "
            f"{self.files_per_s:.1f} files/s, {self.x_real_time:.0f}x real time"
        )


def _killed_row(path: str, exc: Any, *, model_id: str) -> dict[str, Any]:
    deaths = exc.allowed_failures + 1
    message = (
        f"the worker scoring this file died {deaths} time(s) (a decoder crash or too little "
        "memory); it was not scored"
    )
    return error_row(path, message, "worker_died", model_id=model_id)


def run_batch(
    paths: Iterable[str],
    output: BatchOutput,
    *,
    client: Client,
    model: str | None,
    model_id: str,
    max_duration_s: float = MAX_DURATION_S,
    files_per_task: int = FILES_PER_TASK,
    window: int | None = None,
    stop: Callable[[], bool] | None = None,
    progress: Callable[[BatchStats], None] | None = None,
) -> BatchStats:
    """Score every path not yet in ``output`` on the cluster; append a row per file.

    Parameters
    ----------
    paths : iterable of str
        The recordings (:func:`input_paths`), consumed lazily.
    output : BatchOutput
        Where rows go (:func:`open_output`); its ``done`` paths are skipped.
    client : distributed.Client
        The cluster.
    model : str or None
        The ``.skops`` file as the workers see it (None: the shipped model).
    model_id : str
        Id of that model; workers check that they load it.
    max_duration_s : float
        Longest recording accepted, in seconds.
    files_per_task : int
        Files one task scores.
    window : int or None
        Most tasks in flight (default: :data:`TASKS_PER_THREAD` per worker thread).
    stop : callable or None
        Polled; when it returns True the run writes what has finished and returns
        with ``interrupted`` set.
    progress : callable or None
        Called as ``progress(stats)`` after every batch of rows written.

    Returns
    -------
    BatchStats

    Raises
    ------
    voicecheck.errors.ModelError
        A worker cannot use the model.
    ClusterError
        The cluster has no worker, or a task failed for a reason that is not the file's
        (the workers cannot import voicecheck, the scheduler went away).

    Notes
    -----
    A task whose workers keep dying (``distributed.KilledWorker``) is split: each of
    its files runs again as a task of its own once the rest is done, and a file that
    still kills its worker gets a ``worker_died`` error row.
    """
    from distributed import KilledWorker

    if window is None:
        window = TASKS_PER_THREAD * max(1, sum(client.nthreads().values()))
    try:
        client.run(_warm_worker, model, model_id)
    except ModelError:
        raise
    except Exception as exc:
        raise ClusterError(
            f"the Dask workers cannot load voicecheck's model: {type(exc).__name__}: {exc}; "
            "install the same voicecheck on every worker"
        ) from None
    stats = BatchStats()
    done = output.done

    def chunks(source: Iterable[str], size: int) -> Iterator[list[str]]:
        chunk: list[str] = []
        for path in source:
            key = path_text(path)
            if key in done:
                stats.skipped += 1
                continue
            done.add(key)
            chunk.append(path)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def record(rows: list[dict[str, Any]]) -> None:
        output.write(rows)
        for r in rows:
            if r["error"]:
                stats.failed += 1
            else:
                stats.scored += 1
                stats.audio_s += r["duration_s"] or 0.0
        if progress is not None:
            progress(stats)

    def run(chunked: Iterable[list[str]], suspects: list[str] | None) -> None:
        for chunk, outcome in map_unordered(
            score_files,
            chunked,
            client=client,
            window=window,
            errors="return",
            stop=stop,
            model=model,
            model_id=model_id,
            max_duration_s=max_duration_s,
        ):
            if not isinstance(outcome, BaseException):
                record(outcome)
            elif isinstance(outcome, VoiceCheckError):
                raise outcome
            elif not isinstance(outcome, KilledWorker):
                raise ClusterError(
                    f"a task failed on the cluster: {type(outcome).__name__}: {outcome}"
                )
            elif stop is not None and stop():
                continue  # workers die when the run is stopped; their files stay unscored
            elif suspects is not None and len(chunk) > 1:
                suspects.extend(chunk)
                stats.rerun += len(chunk)
            else:
                record([_killed_row(p, outcome, model_id=model_id) for p in chunk])

    suspects: list[str] = []
    run(chunks(paths, files_per_task), suspects)
    if suspects and not (stop is not None and stop()):
        run(([p] for p in suspects), None)
    stats.interrupted = stop is not None and stop()
    return stats


def summary_line(stats: BatchStats, output: str) -> str:
    """The closing line of ``voicecheck batch``."""
    audio_h = stats.audio_s / 3600
    line = (
        f"scored {stats.scored} file(s), {stats.failed} failed, {stats.skipped} skipped "
        f"(already in {output}) in {stats.elapsed_s:.1f} s: {stats.files_per_s:.1f} files/s, "
        f"{audio_h:.2f} h of audio, {stats.x_real_time:.0f}x real time"
    )
    if stats.rerun:
        line += f"; {stats.rerun} file(s) scored again, one a task, after their worker died"
    return line
