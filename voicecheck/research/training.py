"""Train and evaluate detectors from the data manifest.

Every clip, real or cloned, passes through the same random mix of phone channels
(:func:`voicecheck.channel.random_chain`) before features are computed, so the
channel cannot give the label away. Validation is grouped (by the manifest's
``group_by`` field, the source repository by default): out-of-fold scores come
from models that never saw the clip's group.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from threadpoolctl import threadpool_limits

from .. import __version__
from .. import channel as phone
from ..analysis import feature_names, segment_features
from ..audio import load_audio
from ..constants import ANALYSIS_SR_HZ, cache_root
from ..errors import VoiceCheckError
from ..model import build_pipeline, feature_params, save_model
from ..research.manifest import Clip, load_manifest
from ..research.metrics import summary, threshold_at_false_alarm, threshold_at_miss

FALSE_ALARM_TARGET = 0.01
"""The ``likely_cloned`` threshold allows at most this rate of false alarms on real voices."""

MISS_TARGET = 0.05
"""The ``likely_human`` threshold lets at most this rate of cloned voices score below it."""

CLONED_MIN_SCORE = 0.7
"""``likely_cloned`` also needs a calibrated score of at least this, so that a model with
little out-of-group skill (flat calibrated scores) answers ``inconclusive``, not noise."""

HUMAN_MAX_SCORE = 0.3
"""``likely_human`` also needs a calibrated score below this, for the same reason."""


@dataclass
class TrainConfig:
    """Settings of one training run (written to the run folder)."""

    manifest: str = "data_manifest.yaml"
    datasets: list[str] | None = None
    output: str = "runs/latest"
    name: str = "voicecheck"
    seed: int = 0
    copies: int = 4
    """Channel copies of every clip (see :func:`training_chains`)."""
    folds: int = 10
    """Grouped leave-sites-out folds that give every scored clip its out-of-site score."""
    n_jobs: int = -1
    scheduler: str | None = None
    """Address of a Dask scheduler (``tcp://host:port``) to compute features on; None
    starts a local cluster of ``n_jobs`` processes (none when ``n_jobs`` is 1)."""
    hgb: dict[str, Any] = field(default_factory=dict)


@dataclass
class Table:
    """Segment feature rows of many clips."""

    X: np.ndarray
    y: np.ndarray
    clip_of_row: np.ndarray
    clips: list[dict[str, Any]]
    skipped: list[dict[str, str]]


def clip_rows(clip: Clip, *, chain: Sequence[Any], seed: int) -> np.ndarray:
    """Decode ``clip``, pass it through ``chain`` and return its speech segments' features.

    Returns
    -------
    np.ndarray, shape (n_segments, n_features), float32
        Only segments that hold speech.
    """
    audio = load_audio(clip.path)
    rng = np.random.default_rng(seed)
    y, sr = phone.apply_chain(audio.mono, sr=audio.sr, chain=list(chain), rng=rng)
    if sr != ANALYSIS_SR_HZ:
        y = soxr.resample(y, sr, ANALYSIS_SR_HZ, quality="HQ").astype(np.float32)
    seg = segment_features(y)
    return seg.X[seg.has_speech]


def cache_dir() -> Path | None:
    """Folder of the feature cache (``VOICECHECK_CACHE_DIR``; empty disables it)."""
    root = cache_root()
    return root / "features" if root is not None else None


@functools.cache
def _feature_code_digest() -> str:
    """Digest of the code that turns samples into segment features (and of the channels).

    A cached feature table is only reused by the code that made it: an edit to how a feature
    is computed invalidates the cache even when the names and the constants stay the same.
    """
    from .. import analysis, channel, features

    sources = sorted(Path(features.__file__).parent.glob("*.py"))
    sources += [Path(analysis.__file__), Path(channel.__file__)]
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _cache_key(clip: Clip, chain: Sequence[Any], seed: int) -> str:
    """Everything the features of one clip copy depend on, hashed."""
    st = clip.path.stat()
    parts = [
        str(clip.path.resolve()),
        st.st_size,
        st.st_mtime_ns,
        list(chain),
        seed,
        feature_names(),
        feature_params(),
        __version__,
        _feature_code_digest(),
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def _job(
    args: tuple[int, Clip, list[Any], int, Path | None],
) -> tuple[int, np.ndarray | None, str | None]:
    i, clip, chain, seed, cache = args
    path = None
    if cache is not None and clip.path.exists():
        path = cache / f"{_cache_key(clip, chain, seed)}.npz"
        if path.exists():
            with np.load(path) as f:
                return (
                    i,
                    (f["X"] if "X" in f else None),
                    (str(f["error"]) if "error" in f else None),
                )
    try:
        result: tuple[int, np.ndarray | None, str | None] = (
            i,
            clip_rows(clip, chain=chain, seed=seed),
            None,
        )
    except VoiceCheckError as exc:
        result = (i, None, str(exc))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        if result[1] is not None:
            np.savez(tmp, X=result[1])
        else:
            np.savez(tmp, error=np.array(result[2]))
        os.replace(tmp, path)
    return result


def build_table(
    clips: Sequence[Clip],
    *,
    chains: Callable[[int, np.random.Generator], list[Any]],
    copies: int,
    seed: int,
    n_jobs: int = -1,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Table:
    """Compute segment features of every clip, ``copies`` times each.

    Parameters
    ----------
    clips : sequence of Clip
        Clips to process.
    chains : callable
        ``chains(copy_index, rng)`` returns the channel chain for one copy.
    copies : int
        How many channel-augmented copies of each clip.
    seed : int
        Seed of the channel draws; the same seed gives the same table, wherever the
        features are computed (with one BLAS/OpenMP thread per process, Dask's default).
    n_jobs : int
        ``1`` computes in this process, one thread. Otherwise the clips go to a Dask cluster
        (:func:`voicecheck.batch.map_unordered`): the one of ``scheduler``, else the
        one of an enclosing :func:`voicecheck.batch.shared_engine`, else a local
        cluster of ``n_jobs`` processes started for this call (``-1``: one per core).
    scheduler : str or None
        Address of a Dask scheduler (``tcp://host:port``); its workers must see the
        clips (and the feature cache) at the same paths.
    progress : callable or None
        Called as ``progress(done, total)``.
    """
    rng = np.random.default_rng(seed)
    cache = cache_dir()
    jobs = []
    for c in clips:
        for k in range(copies):
            jobs.append((len(jobs), c, chains(k, rng), int(rng.integers(2**31)), cache))
    results: list[tuple[int, np.ndarray | None, str | None]] = []
    with contextlib.ExitStack() as stack:
        if n_jobs == 1 and scheduler is None:
            # One BLAS/OpenMP thread, as in Dask's workers: the same features to the last bit.
            stack.enter_context(threadpool_limits(limits=1))
            computed = map(_job, jobs)
        else:
            from ..batch import engine_client, map_unordered, n_workers

            client = stack.enter_context(
                engine_client(scheduler=scheduler, workers=n_workers(n_jobs))
            )
            computed = (res for _, res in map_unordered(_job, jobs, client=client))
        for done, res in enumerate(computed, start=1):
            results.append(res)
            if progress:
                progress(done, len(jobs))
    results.sort(key=lambda r: r[0])
    rows, y, clip_of_row, meta, skipped = [], [], [], [], []
    for (_, clip, chain, _, _), (_, X, err) in zip(jobs, results, strict=True):
        if X is None or X.shape[0] == 0:
            skipped.append({"path": str(clip.path), "error": err or "no speech segment"})
            continue
        idx = len(meta)
        meta.append(
            {
                "path": str(clip.path),
                "dataset": clip.dataset,
                "label": clip.label,
                "generator": clip.generator,
                "source": clip.source,
                "group": clip.group,
                "family": clip.family,
                "scored": clip.scored,
                "chain": json.dumps(chain),
            }
        )
        rows.append(X)
        y.append(np.full(X.shape[0], clip.y, np.int8))
        clip_of_row.append(np.full(X.shape[0], idx, np.int32))
    n_feat = len(feature_names())
    return Table(
        X=np.vstack(rows) if rows else np.zeros((0, n_feat), np.float32),
        y=np.concatenate(y) if y else np.zeros(0, np.int8),
        clip_of_row=np.concatenate(clip_of_row) if clip_of_row else np.zeros(0, np.int32),
        clips=meta,
        skipped=skipped,
    )


def balanced_rows(table: Table, *, seed: int) -> np.ndarray:
    """Rows to train on, so that no (group, label) cell outweighs the typical one.

    A cell with more segment rows than the median cell keeps a random median-sized
    subset of them; smaller cells keep every row. Without it the largest sources (a few
    prompt sets with hundreds of clips) decide what the model learns, and it generalises
    worse to the sources it has not seen (README, "What was tried").

    Returns
    -------
    np.ndarray, shape (n_rows,), bool
        True for the rows kept; the same for the same table and seed.

    Examples
    --------
    >>> import numpy as np
    >>> t = Table(X=np.zeros((7, 1)), y=np.array([0, 0, 0, 0, 1, 1, 0]),
    ...           clip_of_row=np.array([0, 0, 0, 0, 1, 1, 2]),
    ...           clips=[{"group": "a"}, {"group": "a"}, {"group": "b"}], skipped=[])
    >>> keep = balanced_rows(t, seed=0)  # cells: (a, 0) 4 rows, (a, 1) 2, (b, 0) 1; median 2
    >>> int(keep[:4].sum()), keep[4:].tolist()
    (2, [True, True, True])
    """
    groups = np.array([c["group"] for c in table.clips], dtype=object)[table.clip_of_row]
    keys = np.array([f"{g}\x00{y}" for g, y in zip(groups, table.y, strict=True)])
    cells, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    cap = int(np.median(counts)) if len(counts) else 0
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(keys), dtype=bool)
    for cell in range(len(cells)):
        rows = np.flatnonzero(inverse == cell)
        keep[rows if rows.size <= cap else rng.choice(rows, cap, replace=False)] = True
    return keep


def subset(table: Table, rows: np.ndarray) -> Table:
    """The table restricted to ``rows`` (a boolean mask), without the clips left rowless."""
    kept = np.unique(table.clip_of_row[rows])
    new_index = np.full(len(table.clips), -1, dtype=np.int32)
    new_index[kept] = np.arange(kept.size, dtype=np.int32)
    return Table(
        X=table.X[rows],
        y=table.y[rows],
        clip_of_row=new_index[table.clip_of_row[rows]],
        clips=[table.clips[i] for i in kept],
        skipped=table.skipped,
    )


def clip_scores(table: Table, row_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average segment scores per clip; return (scores, labels) per clip."""
    n = len(table.clips)
    sums = np.bincount(table.clip_of_row, weights=row_scores, minlength=n)
    counts = np.bincount(table.clip_of_row, minlength=n)
    labels = np.array([int(c["label"] == "spoof") for c in table.clips])
    return sums / np.maximum(counts, 1), labels


def breakdown(table: Table, scores: np.ndarray, labels: np.ndarray, key: str) -> dict[str, Any]:
    """Metrics per value of ``key`` (``source``, ``generator``, ``dataset``).

    Groups with only one class report their mean score and count instead of an EER.
    """
    out: dict[str, Any] = {}
    values = np.array([c[key] for c in table.clips])
    for v in sorted(set(values)):
        m = values == v
        if len(set(labels[m])) == 2:
            out[v] = summary(scores[m], labels[m])
        else:
            out[v] = {"mean_score": round(float(scores[m].mean()), 4), "n": int(m.sum())}
    return out


def booster_params(n_rows: int, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Booster settings for ``n_rows`` training rows.

    Small corpora need small leaves, or the booster cannot split at all.
    """
    return {"min_samples_leaf": int(np.clip(n_rows // 100, 5, 40)), **(overrides or {})}


def grouped_early_stopping(
    table: Table, split: tuple[np.ndarray, np.ndarray], *, hgb: dict[str, Any], seed: int
) -> int:
    """Number of boosting iterations, chosen by early stopping on held-out groups.

    The booster trains on one side of a grouped split and stops when the ROC AUC on
    the other side (sources it never saw) stops improving. AUC, not log-loss: on unseen
    sources the log-loss mostly measures calibration drift, which the Platt step fixes,
    and stops after a handful of trees.
    """
    train_rows, val_rows = split
    patience = 20
    probe = build_pipeline(
        random_state=seed,
        **{
            **hgb,
            "max_iter": 500,
            "early_stopping": True,
            "n_iter_no_change": patience,
            "scoring": "roc_auc",
        },
    )
    probe.fit(
        table.X[train_rows],
        table.y[train_rows],
        hgb__X_val=table.X[val_rows],
        hgb__y_val=table.y[val_rows],
    )
    return max(10, int(probe[-1].n_iter_) - patience)


def training_chains(copy_index: int, rng: np.random.Generator) -> list[Any]:
    """Phone channel of each training copy (the same draws for both classes).

    Every call crosses G.711 or AMR-NB somewhere, so the first copy of every clip goes
    through G.711 (mu-law or A-law) and the second through AMR-NB at a random mode; any
    further copy takes a random chain of :func:`voicecheck.channel.random_chain` (noise,
    any codec, packet loss). Measured on unseen sites, the two carrier codecs in every
    clip's copies lowered the G.711 EER by 1.5 and the AMR-NB EER by 1.9 points against
    random chains alone (README, "What was tried").

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> training_chains(0, rng)[0][0] in ("g711_ulaw", "g711_alaw")
    True
    >>> training_chains(1, rng)[0][0]
    'amr_nb'
    """
    if copy_index == 0:
        return [("g711_ulaw" if rng.random() < 0.5 else "g711_alaw", {})]
    if copy_index == 1:
        return [("amr_nb", {"bitrate": int(rng.choice(phone.AMR_NB_BITRATES_BPS))})]
    return phone.random_chain(rng)


def recorded_config(config: TrainConfig) -> dict[str, Any]:
    """The training settings as written to the card: what made the model, not where it ran."""
    return {k: v for k, v in asdict(config).items() if k not in ("n_jobs", "scheduler")}


def site_splits(table: Table, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-sites-out splits of ``table``'s rows: (training rows, held-out rows) per fold.

    The groups of the scored clips are dealt into ``folds`` folds (see
    :func:`voicecheck.research.evaluation.site_folds`); a fold holds out its sites' rows; clips of
    datasets that are never scored (``scored: false``) always train.
    """
    from .evaluation import site_folds

    group = np.array([c["group"] for c in table.clips], dtype=object)
    scored = np.array([bool(c.get("scored", True)) for c in table.clips])
    row_group, row_scored = group[table.clip_of_row], scored[table.clip_of_row]
    splits = []
    for fold in site_folds(group[scored].tolist(), folds):
        held = np.isin(row_group, fold) & row_scored
        splits.append((np.flatnonzero(~held), np.flatnonzero(held)))
    return splits


def out_of_site_logits(
    table: Table, splits: Sequence[tuple[np.ndarray, np.ndarray]], *, hgb: dict, seed: int
) -> np.ndarray:
    """Raw scores (log-odds) of every held-out row from the model of its fold.

    Returns
    -------
    np.ndarray, shape (n_rows,), float64
        NaN for rows no fold holds out (clips that are never scored).
    """
    logits = np.full(table.X.shape[0], np.nan)
    for train_rows, held in splits:
        if held.size == 0 or len(set(table.y[train_rows].tolist())) < 2:
            continue
        model = build_pipeline(random_state=seed, **hgb).fit(
            table.X[train_rows], table.y[train_rows]
        )
        logits[held] = model.decision_function(table.X[held])
    return logits


def verdict_thresholds(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Verdict thresholds from out-of-site clip scores (see the card's ``threshold_policy``)."""
    far_t = threshold_at_false_alarm(scores, labels, FALSE_ALARM_TARGET)
    miss_t = threshold_at_miss(scores, labels, MISS_TARGET)
    cloned_t = max(far_t, CLONED_MIN_SCORE)
    human_t = min(miss_t, HUMAN_MAX_SCORE, cloned_t)
    return {
        # Rounded up, so that the stored threshold never lets more false alarms through.
        "cloned": math.ceil(cloned_t * 1e4) / 1e4,
        "human": round(human_t, 4),
        "false_alarm_1pct": round(far_t, 4),
        "miss_5pct": round(miss_t, 4),
    }


def train(config: TrainConfig, *, progress: Callable[[int, int], None] | None = None) -> dict:
    """Train a detector from the manifest, validate it on unseen sites, and save the run.

    The sites of the scored datasets are dealt into ``config.folds`` grouped folds; every
    scored clip gets an out-of-site score from the model of its fold. Those scores fit the
    calibration (Platt scaling of the booster's log-odds), set the verdict thresholds and
    go into the card, so that the card's promises hold for sites the model never saw.

    Returns
    -------
    dict
        The metrics written to ``<output>/metrics.json``.
    """
    from sklearn.calibration import _SigmoidCalibration

    from ..model import calibrate
    from ..research.metrics import site_bootstrap, verdict_rates

    started = time.time()
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(config.manifest)
    clips = manifest.clips(config.datasets)
    table = build_table(
        clips,
        chains=training_chains,
        copies=config.copies,
        seed=config.seed,
        n_jobs=config.n_jobs,
        scheduler=config.scheduler,
        progress=progress,
    )
    table = subset(table, balanced_rows(table, seed=config.seed))
    scored_groups = {c["group"] for c in table.clips if c.get("scored", True)}
    if len(scored_groups) < 2 or len(set(table.y.tolist())) < 2:
        raise VoiceCheckError(
            f"training needs real and cloned clips from at least 2 scored groups; got "
            f"{len(scored_groups)} group(s) and labels {sorted(set(table.y.tolist()))}"
        )
    hgb = booster_params(table.X.shape[0], config.hgb)
    splits = site_splits(table, config.folds)
    hgb["max_iter"] = grouped_early_stopping(table, splits[0], hgb=hgb, seed=config.seed)

    # Out-of-site scores: each scored clip by a model that never saw its site.
    logits = out_of_site_logits(table, splits, hgb=hgb, seed=config.seed)
    held = np.isfinite(logits)
    sigmoid = _SigmoidCalibration().fit(logits[held], table.y[held])
    final = build_pipeline(random_state=config.seed, **hgb).fit(table.X, table.y)
    model = calibrate(final, table.X[:0], table.y[:0], sigmoid=sigmoid)
    held_table = subset(table, held)
    scores, labels = clip_scores(held_table, sigmoid.predict(logits[held]))
    sites = np.array([c["group"] for c in held_table.clips])
    thresholds = verdict_thresholds(scores, labels)
    pooled = summary(scores, labels)
    thresholds["eer"] = pooled["eer_threshold"]
    promise = site_bootstrap(
        scores,
        labels,
        sites,
        cloned=thresholds["cloned"],
        human=thresholds["human"],
        seed=config.seed,
    )
    metrics = {
        "protocol": (
            f"leave-one-site-out: the sites of {sorted({c.dataset for c in clips if c.scored})}"
            f" dealt into {len(splits)} grouped folds, every scored clip scored by a model"
            " that never saw its site; every clip through a random phone channel"
            f" ({config.copies} copies); clip score = mean of segment scores"
        ),
        "pooled": pooled,
        "verdict_rates": verdict_rates(
            scores, labels, cloned=thresholds["cloned"], human=thresholds["human"]
        ),
        "verdict_promise": promise,
        "per_source": breakdown(held_table, scores, labels, "source"),
        "per_family": breakdown(held_table, scores, labels, "family"),
        "n_segments": int(table.X.shape[0]),
        "n_clips": len(table.clips),
        "n_scored_clips": len(held_table.clips),
        "n_sites": len(set(sites.tolist())),
        "n_skipped": len(table.skipped),
        "boosting_iterations": hgb["max_iter"],
        "train_seconds": round(time.time() - started, 1),
    }
    card = {
        "name": config.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "thresholds": thresholds,
        "threshold_policy": {
            "cloned": (
                f"at most {FALSE_ALARM_TARGET:.0%} of real voices from sites the model never"
                f" saw scored at or above it (leave-one-site-out), and a calibrated score of"
                f" at least {CLONED_MIN_SCORE}"
            ),
            "human": (
                f"at most {MISS_TARGET:.0%} of cloned voices from sites the model never saw"
                f" scored below it (leave-one-site-out), and a calibrated score below"
                f" {HUMAN_MAX_SCORE}"
            ),
        },
        "aggregation": "channel score = mean of speech segments' scores; call = max over channels",
        "data_manifest": {
            "path": str(Path(config.manifest).name),
            "sha256": manifest.sha256(clips),
            "datasets": sorted({c.dataset for c in clips}),
        },
        "training": {"config": recorded_config(config), "n_segments": int(table.X.shape[0])},
        "metrics": metrics,
        "validation_scores": {
            "protocol": "leave-one-site-out",
            "real": np.round(np.sort(scores[labels == 0]), 4).tolist(),
            "cloned": np.round(np.sort(scores[labels == 1]), 4).tolist(),
        },
    }
    save_model(model, card, out / "model.skops")
    (out / "config.json").write_text(json.dumps(recorded_config(config), indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "skipped.json").write_text(json.dumps(table.skipped, indent=2) + "\n")
    return metrics
