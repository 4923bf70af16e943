"""Planning and writing a corpus: the default sources, quotas and the build."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from .base import (
    ENGLISH_WEIGHT,
    KINDS,
    MANIFEST_COLUMNS,
    MAX_CLIP_S,
    MIN_ACTIVE_S,
    MIN_CLIP_S,
    NEURAL_VOCODER_WEIGHT,
    PEAK_LIMIT,
    PLANS,
    PROBE_CLIPS,
    SIZES,
    VOCODED_SHARE,
    CorpusError,
    Item,
    Source,
    _dpkg_versions,
    _int_seed,
    _pypi_version,
    clip_id,
)
from .engines import (
    EspeakSource,
    FestivalSource,
    FliteSource,
    KokoroSource,
    MbrolaSource,
    PicoSource,
    PiperSource,
    RHVoiceSource,
)
from .recordings import (
    AsteriskSource,
    FilletsSource,
    HedgewarsSource,
    KLettresSource,
    KTuberlingSource,
    TuxPaintSource,
)
from .vocoded import VOCODER_METHODS, VocodedSource


def default_sources() -> list[Source]:
    """Every source voicecheck knows, in build order (real, tts, vocoded)."""
    asterisk = [
        ("asterisk-en", "asterisk-core-sounds-en-wav", "allison", "en", "CC-BY-SA-3.0", "en-x"),
        ("asterisk-es", "asterisk-core-sounds-es-wav", "allison", "es", "CC-BY-SA-3.0", "es-x"),
        ("asterisk-fr", "asterisk-core-sounds-fr-wav", "june", "fr", "CC-BY-SA-3.0", "fr-x"),
        ("asterisk-it", "asterisk-core-sounds-it-wav", "carlo", "it", "CC-BY-3.0", "it-x"),
        ("asterisk-ru", "asterisk-core-sounds-ru-wav", "ivrvoice-ru", "ru", "CC-BY-3.0", "ru-x"),
        ("asterisk-it-menardi", "asterisk-prompt-it-menardi-wav", "menardi", "it", "CC-BY-SA-3.0",
         "x"),
        ("asterisk-es-co", "asterisk-prompt-es-co", "es-co-avatar", "es", "GPL-2", "x"),
        ("asterisk-fr-armelle", "asterisk-prompt-fr-armelle", "armelle", "fr", "BSD-like", "x"),
    ]  # fmt: skip
    sources: list[Source] = [
        AsteriskSource(
            name,
            package=package,
            speaker=speaker,
            language=language,
            licence_hint=licence,
            licence_match=match,
            weight=ENGLISH_WEIGHT if language == "en" else 1.0,
        )
        for name, package, speaker, language, licence, match in asterisk
    ]
    sources += [
        TuxPaintSource(),
        FilletsSource(
            "fillets-cs", package="fillets-ng-data-cs", language="cs", licence_hint="GPL-2"
        ),
        FilletsSource(
            "fillets-nl", package="fillets-ng-data-nl", language="nl", licence_hint="GPL-2"
        ),
        KLettresSource(),
        KTuberlingSource(),
        HedgewarsSource(),
        EspeakSource(),
        MbrolaSource(),
        FliteSource(),
        FestivalSource(),
        PicoSource(),
        RHVoiceSource(),
        PiperSource(),
    ]
    sources += [VocodedSource(m) for m in VOCODER_METHODS if m != "hifigan"]
    # Opt-in: in the leave-one-source-out measurements (README) HiFi-GAN copies of the
    # corpus's few voices made the detector worse on every other source.
    hifigan = VocodedSource("hifigan", weight=NEURAL_VOCODER_WEIGHT, default=False)
    hifigan.note += "; about 1x real time per core"
    sources.append(hifigan)
    # Opt-in as well: Kokoro's clips did not lower the error on unseen sites (README).
    sources.append(KokoroSource())
    return sources


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called after every clip of a stage; ``total``
grows when a stage plans more clips."""

_TMP_NAME = re.compile(r"^\.[0-9a-f]{16}\.\d+\.tmp$")


def _check_clip(y: np.ndarray, sr: int) -> tuple[str, str] | None:
    from ...audio import speech_seconds

    if y.ndim != 1:
        return "bad shape", f"expected mono samples, got shape {y.shape}"
    if not np.isfinite(y).all():
        return "not finite", "NaN or infinite samples"
    duration = y.size / sr if sr else 0.0
    if duration < MIN_CLIP_S:
        return "too short", f"{duration:.2f} s < {MIN_CLIP_S} s"
    if duration > MAX_CLIP_S:
        return "too long", f"{duration:.1f} s > {MAX_CLIP_S} s"
    _, active = speech_seconds(y, sr=sr)
    if active < MIN_ACTIVE_S:
        return "no speech", f"{active:.2f} s active < {MIN_ACTIVE_S} s"
    return None


def _single_threaded():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _make_clip(source: Source, item: Item, output: str, seed: int) -> dict[str, Any]:
    """Make (or find) one clip; runs in a worker process."""
    cid = clip_id(source.name, item.key, seed)
    rel = f"{source.name}/{cid}.flac"
    path = Path(output, rel)
    if path.is_file():
        try:
            info = sf.info(str(path))
            return {
                "status": "reused",
                "id": cid,
                "path": rel,
                "duration_s": info.frames / info.samplerate,
                "sample_rate": int(info.samplerate),
            }
        except (sf.LibsndfileError, RuntimeError):
            path.unlink(missing_ok=True)  # unreadable: make it again
    rng = np.random.default_rng(_int_seed(cid, "render"))
    try:
        # One BLAS/OpenMP thread: results must not depend on how many a process has
        # (joblib's workers get fewer than the main process; summation order changes).
        with _single_threaded():
            y, sr = source.render(item, rng)
    except Exception as exc:  # an engine or a file failed: skip this item, keep building
        return {"status": "rejected", "reason": "failed", "detail": f"{type(exc).__name__}: {exc}"}
    y = np.asarray(y, dtype=np.float32)
    bad = _check_clip(y, sr)
    if bad is not None:
        return {"status": "rejected", "reason": bad[0], "detail": bad[1]}
    peak = float(np.abs(y).max())
    if peak > PEAK_LIMIT:
        y = y * np.float32(PEAK_LIMIT / peak)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{cid}.{os.getpid()}.tmp")
    try:
        sf.write(str(tmp), y, sr, format="FLAC", subtype="PCM_16")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "status": "written",
        "id": cid,
        "path": rel,
        "duration_s": y.size / sr,
        "sample_rate": int(sr),
    }


@dataclass
class _Quota:
    source: Source
    items: list[Item]
    seconds: float
    max_clips: int
    pos: int = 0
    done: list[tuple[Item, dict[str, Any]]] = field(default_factory=list)
    secs: float = 0.0
    rejected: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def open(self) -> bool:
        """Whether to make more: stop within half a clip of the quota (no overshoot bias)."""
        if len(self.done) >= self.max_clips or self.pos >= len(self.items):
            return False
        if not self.done:  # every source gets at least one clip
            return True
        return self.secs + 0.5 * self.secs / len(self.done) < self.seconds

    def next_items(self, prior_s: float) -> list[Item]:
        """The next items to make: enough to reach the quota if all are kept."""
        remaining = self.seconds - self.secs
        room = min(self.max_clips - len(self.done), len(self.items) - self.pos)
        if self.items[self.pos].duration_s is not None:  # durations known: plan exactly
            n, total = 0, 0.0
            while n < room:
                duration = self.items[self.pos + n].duration_s or 0.0
                if n and total + duration / 2 > remaining:
                    break
                total += duration
                n += 1
        elif not self.done:  # a first, small round measures how long this source's clips are
            n = min(room, PROBE_CLIPS, max(1, round(remaining / prior_s)))
        else:  # then 80 % of what the quota still needs (at most 3x the clips made so
            # far, while the mean is uncertain), so rounds converge from below
            mean = self.secs / len(self.done)
            n = math.floor(0.8 * remaining / max(mean, 0.1))
            n = min(room, 3 * len(self.done), max(1, n))
        batch = self.items[self.pos : self.pos + n]
        self.pos += n
        return batch


class _Runner:
    def __init__(self, output: Path, seed: int, jobs: int, progress: Progress | None):
        self.output = output
        self.seed = seed
        self.jobs = jobs
        self.progress = progress
        self.written: list[str] = []
        self.reused = 0

    def _results(self, batch: list[tuple[Source, Item]]) -> Iterable[dict[str, Any]]:
        if self.jobs == 1 or len(batch) == 1:
            return (_make_clip(s, i, str(self.output), self.seed) for s, i in batch)
        from joblib import Parallel, delayed

        return Parallel(n_jobs=self.jobs, return_as="generator")(
            delayed(_make_clip)(s, i, str(self.output), self.seed) for s, i in batch
        )

    def fill(self, stage: str, quotas: list[_Quota], prior_s: float) -> None:
        """Make clips in rounds until every source has its minutes (or runs out)."""
        planned = done = 0
        while True:
            batch = [(q, item) for q in quotas if q.open() for item in q.next_items(prior_s)]
            if not batch:
                return
            planned += len(batch)
            results = self._results([(q.source, item) for q, item in batch])
            for (q, item), result in zip(batch, results, strict=True):
                done += 1
                if result["status"] == "rejected":
                    q.rejected[result["reason"]] += 1
                    q.examples.setdefault(result["reason"], result["detail"])
                else:
                    if result["status"] == "written":
                        self.written.append(result["path"])
                    else:
                        self.reused += 1
                    q.done.append((item, result))
                    q.secs += result["duration_s"]
                if self.progress is not None:
                    self.progress(stage, done, planned)


@dataclass
class BuildReport:
    """What a build made: the manifest rows and counts per source and label."""

    output: Path
    seed: int
    size: str
    rows: list[dict[str, str]]
    sources: dict[str, dict[str, Any]]
    skipped: dict[str, str]
    written: list[str]
    reused: int
    warnings: list[str]
    time_s: float

    @property
    def manifest_path(self) -> Path:
        """``<output>/manifest.csv``."""
        return self.output / "manifest.csv"

    def minutes(self, label: str | None = None) -> float:
        """Minutes of audio (of one label, or all)."""
        return (
            sum(float(r["duration_s"]) for r in self.rows if label is None or r["label"] == label)
            / 60
        )

    def labels(self) -> dict[str, dict[str, float]]:
        """Clips and minutes per label."""
        out = {}
        for label in ("bonafide", "spoof"):
            rows = [r for r in self.rows if r["label"] == label]
            out[label] = {
                "clips": len(rows),
                "minutes": round(sum(float(r["duration_s"]) for r in rows) / 60, 2),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``build.json`` adds package versions)."""
        return {
            "output": str(self.output),
            "seed": self.seed,
            "size": self.size,
            "clips": len(self.rows),
            "minutes": round(self.minutes(), 2),
            "labels": self.labels(),
            "sources": self.sources,
            "skipped": self.skipped,
            "written": len(self.written),
            "reused": self.reused,
            "warnings": self.warnings,
            "time_s": round(self.time_s, 1),
        }


def _select(registry: list[Source], names: Sequence[str] | None) -> list[Source]:
    if not names:
        return [s for s in registry if s.default]
    by_name = {s.name: s for s in registry}
    chosen: dict[str, Source] = {}
    for name in names:
        if name in KINDS:
            chosen.update((s.name, s) for s in registry if s.kind == name and s.default)
        elif name in by_name:
            chosen[name] = by_name[name]
        else:
            raise CorpusError(
                f"unknown source '{name}'; expected one of {', '.join(by_name)} "
                f"or a kind ({', '.join(KINDS)}); see `voicecheck corpus list`"
            )
    return [s for s in registry if s.name in chosen]


def _row(source: Source, item: Item, result: dict[str, Any]) -> dict[str, str]:
    package = item.package or (source.debian or source.pypi or ("",))[0]
    return {
        "path": result["path"],
        "label": source.label,
        "system": item.system,
        "engine": source.engine,
        "voice": item.voice,
        "speaker": item.speaker,
        "source": item.family or source.family,
        "package": package,
        "language": item.language,
        "licence": item.licence or source.licence(package),
        "text": " ".join(item.text.split()),
        "duration_s": f"{result['duration_s']:.3f}",
        "sample_rate": str(result["sample_rate"]),
        "vocoder": getattr(source, "method", ""),
    }


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(_int_seed(seed, name, "items"))


def build(
    output: str | Path,
    *,
    seed: int = 0,
    size: str = "full",
    jobs: int = -1,
    sources: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> BuildReport:
    """Build (or complete) the corpus in ``output``.

    Parameters
    ----------
    output : path
        Folder for the clips, ``manifest.csv`` and ``build.json`` (made if needed).
    seed : int
        Decides which recordings, texts, voices and settings are used.
    size : {"full", "small"}
        ``full``: a few thousand clips; ``small``: at most 60 clips, for tests and CI.
    jobs : int
        Worker processes (joblib; -1 uses every core, 1 builds in this process).
    sources : list of str, optional
        Source names or kinds (``real``, ``tts``, ``vocoded``) to use; default: every
        default source. Unavailable ones are skipped and reported.
    progress : callable, optional
        ``progress(stage, done, total)``, called after every clip.

    Returns
    -------
    BuildReport

    Raises
    ------
    CorpusError
        An unknown source or size, no usable source, or an output folder that
        cannot be written.
    """
    start = time.monotonic()
    if size not in PLANS:
        raise CorpusError(f"size is '{size}'; expected one of {', '.join(SIZES)}")
    if jobs == 0:
        raise CorpusError("jobs is 0; expected a positive count or -1 for every core")
    plan = PLANS[size]
    output = Path(output)
    chosen = _select(default_sources(), sources)
    skipped: dict[str, str] = {}
    usable: list[Source] = []
    for s in chosen:
        reason = s.missing()
        if reason is None:
            usable.append(s)
        else:
            skipped[s.name] = reason
    real = [s for s in usable if s.kind == "real"]
    tts = [s for s in usable if s.kind == "tts"]
    vocoded = [s for s in usable if s.kind == "vocoded"]
    if vocoded and not real:
        for s in vocoded:
            skipped[s.name] = "no real source to take clips from"
        vocoded = []
    if not (real or tts or vocoded):
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise CorpusError(f"none of the chosen sources can be used here ({reasons})")
    try:
        output.mkdir(parents=True, exist_ok=True)
        for tmp in output.glob("*/.*.tmp"):
            if _TMP_NAME.match(tmp.name):
                tmp.unlink()  # left by an interrupted build
    except OSError as exc:
        raise CorpusError(f"cannot write to {output}: {exc.strerror}") from None

    runner = _Runner(output, seed, jobs, progress)
    warnings: list[str] = []

    # 1. Real clips, capped per source in clips and minutes.
    per_real = plan.real_clips
    if plan.real_total is not None and real:
        per_real = max(1, min(per_real, plan.real_total // len(real)))
    real_quotas = []
    for s in real:
        n = max(1, round(per_real * s.weight))
        real_quotas.append(
            _Quota(s, s.items(_rng(seed, s.name), 4 * n), plan.real_minutes * 60 * s.weight, n)
        )
    runner.fill("real", real_quotas, prior_s=1.5)
    real_s = sum(q.secs for q in real_quotas)

    # 2. Synthetic clips: as many minutes as the real ones, a third of them vocoded.
    synth_s = real_s if real else plan.fallback_synthetic_minutes * 60
    if not real:
        warnings.append("no real source is available: the corpus has synthetic speech only")
    voc_s = synth_s * VOCODED_SHARE if (vocoded and tts) else (synth_s if vocoded else 0.0)
    tts_s = synth_s - voc_s
    real_items = [
        Item(
            key=result["id"],
            speaker=item.speaker,
            language=item.language,
            system="bonafide",
            text=item.text,
            path=str(output / result["path"]),
            package=q.source.debian[0],
            licence=q.source.licence(),
            family=q.source.family,
            duration_s=result["duration_s"],
        )
        for q in real_quotas
        for item, result in q.done
    ]
    synth_quotas = [
        _Quota(
            s,
            s.items(_rng(seed, s.name), plan.tts_clips, real=real_items),
            tts_s / len(tts),
            plan.tts_clips,
        )
        for s in tts
    ] + [
        _Quota(
            s,
            s.items(_rng(seed, s.name), plan.vocoded_clips, real=real_items),
            voc_s * s.weight / sum(v.weight for v in vocoded),
            plan.vocoded_clips,
        )
        for s in vocoded
    ]
    runner.fill("synthetic", synth_quotas, prior_s=2.5)

    # 3. Manifest, report, build.json.
    rows = []
    stats: dict[str, dict[str, Any]] = {}
    for q in real_quotas + synth_quotas:
        source_rows = [_row(q.source, item, result) for item, result in q.done]
        rows += source_rows
        stats[q.source.name] = {
            "kind": q.source.kind,
            "label": q.source.label,
            "clips": len(source_rows),
            "minutes": round(q.secs / 60, 2),
            "speakers": len({r["speaker"] for r in source_rows}),
            "deterministic": q.source.deterministic,
            "rejected": dict(sorted(q.rejected.items())),
            "rejected_example": dict(sorted(q.examples.items())),
            "packages": list(q.source.packages),
        }
        if q.rejected.get("failed", 0) > len(q.done):
            warnings.append(
                f"{q.source.name}: {q.rejected['failed']} clip(s) failed, e.g. "
                f"{q.examples['failed']}"
            )
    real_min, synth_min = real_s / 60, sum(q.secs for q in synth_quotas) / 60
    if size == "full" and real and not 0.8 <= synth_min / max(real_min, 1e-9) <= 1.25:
        warnings.append(
            f"unbalanced: {real_min:.1f} real minutes, {synth_min:.1f} synthetic minutes "
            "(install more TTS engines or vocoders, or choose fewer real sources)"
        )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    report = BuildReport(
        output=output,
        seed=seed,
        size=size,
        rows=rows,
        sources=stats,
        skipped=skipped,
        written=runner.written,
        reused=runner.reused,
        warnings=warnings,
        time_s=time.monotonic() - start,
    )
    info = report.to_dict()
    info["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    info["jobs"] = jobs
    info["debian_packages"] = _dpkg_versions(p for s in usable for p in s.debian)
    info["python_packages"] = {
        name: version
        for name in (
            "numpy",
            "soundfile",
            "librosa",
            "pyworld",
            "pysptk",
            *(p for s in usable for p in s.pypi),
        )
        if (version := _pypi_version(name)) is not None
    }
    try:
        _atomic_write(output / "manifest.csv", buf.getvalue())
        _atomic_write(output / "build.json", json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise CorpusError(f"cannot write to {output}: {exc.strerror}") from None
    return report
