"""Honest evaluation: grouped protocols, phone-channel conditions, reports.

Two cross-validated protocols train one model per held-out group from the data
manifest and score only what that model never saw:

``leave-one-source-out``
    Every source (repository, package, corpus: the manifest's ``group_by``
    field) is held out in turn; its real and cloned clips are scored by a model
    trained on all other sources.
``leave-one-generator-out``
    Every generator family is held out in turn; its cloned clips are scored by
    a model trained without any clip of that family. Real clips are scored by
    the leave-one-source-out models (a real voice's source is its only group).

The headline protocols hold out whole groups in ``K`` grouped folds, so that one run
fits in about half an hour on two cores however many sites the manifest declares:

``leave-one-site-out`` (``loro``)
    The sites (the manifest's ``group_by`` field) are dealt into ``K`` folds, every site
    in exactly one; each fold's real and cloned clips are scored by a model trained on the
    other folds' sites. Datasets marked ``scored: false`` (the package corpus) train every
    fold's model but are never scored.
``leave-one-family-out`` (``lofo``)
    The generator families of the scored cloned clips are dealt into ``K`` folds; a cloned
    clip is scored by a model trained without any clip of its family, from any site. Real
    clips are scored by the leave-one-site-out models.

A third protocol, ``shipped-model``, scores the manifest with a given model.
Training always uses the random phone-channel mix of :mod:`voicecheck.research.training`;
scoring passes real and cloned clips through the same named condition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import channel as phone
from ..errors import ChannelError, VoiceCheckError
from ..model import build_pipeline, load_model
from ..research.manifest import Clip, generator_family, load_manifest
from ..research.training import (
    Table,
    balanced_rows,
    booster_params,
    build_table,
    subset,
    training_chains,
)

CONDITIONS = ("clean_8k", "g711", "amr_nb", "opus", "mp3")
PROTOCOLS = (
    "leave-one-source-out",
    "leave-one-generator-out",
    "shipped-model",
    "leave-one-site-out",
    "leave-one-family-out",
)
PROTOCOL_ALIASES = {
    "loso": "leave-one-source-out",
    "logo": "leave-one-generator-out",
    "shipped": "shipped-model",
    "loro": "leave-one-site-out",
    "lofo": "leave-one-family-out",
}
DEFAULT_FOLDS = 10
"""Grouped folds of the leave-one-site-out and leave-one-family-out protocols."""

Progress = Callable[[int, int], None] | None


def check_conditions(conditions: Sequence[str]) -> list[str]:
    """Validate condition names against :data:`voicecheck.channel.PHONE_CONDITIONS`."""
    for c in conditions:
        if c not in phone.PHONE_CONDITIONS:
            raise ChannelError(
                f"unknown condition '{c}'; expected one of: "
                + ", ".join(sorted(phone.PHONE_CONDITIONS))
            )
    return list(conditions)


def condition_tables(
    clips: Sequence[Clip],
    conditions: Sequence[str],
    *,
    seed: int,
    n_jobs: int,
    progress: Progress = None,
) -> dict[str, Table]:
    """Features of every clip through each named condition (one copy each)."""
    tables = {}
    for c in conditions:
        chain = list(phone.PHONE_CONDITIONS[c])
        tables[c] = build_table(
            clips,
            chains=lambda k, rng, ch=chain: ch,
            copies=1,
            seed=seed,
            n_jobs=n_jobs,
            progress=progress,
        )
    return tables


def _clip_means(table: Table, row_scores: np.ndarray, rows: np.ndarray) -> dict[int, float]:
    """Mean score per clip over the given rows."""
    clips = table.clip_of_row[rows]
    sums = np.bincount(clips, weights=row_scores, minlength=len(table.clips))
    counts = np.bincount(clips, minlength=len(table.clips))
    return {int(i): float(sums[i] / counts[i]) for i in np.flatnonzero(counts)}


def _score_rows(
    table: Table,
    row_scores: np.ndarray,
    rows: np.ndarray,
    *,
    condition: str,
    protocol: str,
    fold: str,
) -> list[dict[str, Any]]:
    """One result row per clip: its mean segment score and what the report groups by."""
    out = []
    for i, score in _clip_means(table, row_scores, rows).items():
        c = table.clips[i]
        out.append(
            {
                "score": score,
                "label": int(c["label"] == "spoof"),
                "generator": c["generator"],
                "family": c.get("family", ""),
                "source": c["source"],
                "condition": condition,
                "protocol": protocol,
                "fold": fold,
                "path": c["path"],
            }
        )
    return out


def _fold_rows(
    train: Table,
    evals: dict[str, Table],
    *,
    protocol: str,
    train_exclude: Callable[[dict[str, Any]], bool],
    score_clip: Callable[[dict[str, Any]], bool],
    fold: str,
    hgb: dict[str, Any],
    seed: int,
) -> list[dict[str, Any]]:
    """Train without the excluded clips, score the selected clips of every condition."""
    keep = np.array([not train_exclude(c) for c in train.clips])[train.clip_of_row]
    if len(set(train.y[keep].tolist())) < 2:
        return []
    model = build_pipeline(random_state=seed, **hgb).fit(train.X[keep], train.y[keep])
    rows: list[dict[str, Any]] = []
    for condition, table in evals.items():
        chosen = np.array([score_clip(c) for c in table.clips], dtype=bool)
        if not chosen.any():
            continue
        sel = np.flatnonzero(chosen[table.clip_of_row])
        probs = model.predict_proba(table.X[sel])[:, 1]
        rows += _score_rows(table, probs, sel, condition=condition, protocol=protocol, fold=fold)
    return rows


def site_folds(groups: Sequence[str], k: int) -> list[list[str]]:
    """Deal ``groups`` into at most ``k`` folds, every group in exactly one.

    Groups are taken in sorted order and dealt round-robin, so the folds are the same
    for the same groups on every machine and no fold is more than one group larger
    than another.

    Examples
    --------
    >>> site_folds(["d", "a", "c", "b", "e"], 2)
    [['a', 'c', 'e'], ['b', 'd']]
    """
    names = sorted(set(groups))
    k = max(1, min(k, len(names)))
    return [names[i::k] for i in range(k)]


def cross_validated_scores(
    clips: Sequence[Clip],
    *,
    protocols: Sequence[str],
    conditions: Sequence[str],
    seed: int = 0,
    copies: int = 4,
    n_jobs: int = -1,
    folds: int = DEFAULT_FOLDS,
    hgb: dict[str, Any] | None = None,
    progress: Progress = None,
) -> list[dict[str, Any]]:
    """Score every clip with models that never saw its group.

    Returns
    -------
    list of dict
        One row per (protocol, condition, clip): ``score, label, generator, family,
        source, condition, protocol, fold, path``.
    """
    train = build_table(
        clips, chains=training_chains, copies=copies, seed=seed, n_jobs=n_jobs, progress=progress
    )
    train = subset(train, balanced_rows(train, seed=seed))
    scored = [c for c in clips if c.scored]
    evals = condition_tables(scored, conditions, seed=seed + 1, n_jobs=n_jobs, progress=progress)
    hgb = booster_params(train.X.shape[0], hgb)
    rows: list[dict[str, Any]] = []
    loso, logo, _, loro, lofo = PROTOCOLS
    if loso in protocols or logo in protocols:
        rows += _loso_logo(train, evals, protocols=protocols, hgb=hgb, seed=seed)
    if loro in protocols or lofo in protocols:
        site_rows: list[dict[str, Any]] = []
        for k, fold in enumerate(site_folds([c.group for c in scored], folds)):
            held = set(fold)
            site_rows += _fold_rows(
                train,
                evals,
                protocol=loro,
                train_exclude=lambda c, held=held: c["group"] in held,
                score_clip=lambda c, held=held: c["group"] in held,
                fold=f"sites-{k + 1}",
                hgb=hgb,
                seed=seed,
            )
        if loro in protocols:
            rows += site_rows
        if lofo in protocols:
            rows += [{**r, "protocol": lofo} for r in site_rows if r["label"] == 0]
            families = [c.family for c in scored if c.label == "spoof"]
            for k, fold in enumerate(site_folds(families, folds)):
                held = set(fold)

                def in_fold(c: dict[str, Any], held: set[str] = held) -> bool:
                    return c["label"] == "spoof" and c["family"] in held

                rows += _fold_rows(
                    train,
                    evals,
                    protocol=lofo,
                    train_exclude=in_fold,
                    score_clip=in_fold,
                    fold=f"families-{k + 1}",
                    hgb=hgb,
                    seed=seed,
                )
    return rows


def _loso_logo(
    train: Table,
    evals: dict[str, Table],
    *,
    protocols: Sequence[str],
    hgb: dict[str, Any],
    seed: int,
) -> list[dict[str, Any]]:
    """One model per held-out source (and per held-out generator family)."""
    loso, logo = PROTOCOLS[0], PROTOCOLS[1]
    groups = sorted({c["group"] for c in train.clips})
    rows: list[dict[str, Any]] = []
    real_rows: list[dict[str, Any]] = []
    for g in groups:
        fold_rows = _fold_rows(
            train,
            evals,
            protocol=loso,
            train_exclude=lambda c, g=g: c["group"] == g,
            score_clip=lambda c, g=g: c["group"] == g,
            fold=g,
            hgb=hgb,
            seed=seed,
        )
        real_rows += [r for r in fold_rows if r["label"] == 0]
        if loso in protocols:
            rows += fold_rows
    if logo in protocols:
        rows += [{**r, "protocol": logo} for r in real_rows]
        families = sorted(
            {generator_family(c["generator"]) for c in train.clips if c["label"] == "spoof"}
        )
        for fam in families:

            def is_fam(c: dict[str, Any], fam: str = fam) -> bool:
                return c["label"] == "spoof" and generator_family(c["generator"]) == fam

            rows += _fold_rows(
                train,
                evals,
                protocol=logo,
                train_exclude=is_fam,
                score_clip=is_fam,
                fold=fam,
                hgb=hgb,
                seed=seed,
            )
    return rows


def shipped_scores(
    model_path: str | Path | None,
    clips: Sequence[Clip],
    *,
    conditions: Sequence[str],
    seed: int = 0,
    n_jobs: int = -1,
    progress: Progress = None,
) -> list[dict[str, Any]]:
    """Score every clip through each condition with a trained model."""
    detector = load_model(model_path)
    rows: list[dict[str, Any]] = []
    for condition, table in condition_tables(
        clips, conditions, seed=seed + 1, n_jobs=n_jobs, progress=progress
    ).items():
        if table.X.shape[0] == 0:
            continue
        probs = detector.predict_proba(table.X)
        rows += _score_rows(
            table,
            probs,
            np.arange(table.X.shape[0]),
            condition=condition,
            protocol=PROTOCOLS[2],
            fold="",
        )
    return rows


def resolve_protocols(names: Sequence[str]) -> list[str]:
    """Map short names (loso, logo, shipped) to protocol names; refuse unknown ones."""
    out = []
    for n in names:
        full = PROTOCOL_ALIASES.get(n, n)
        if full not in PROTOCOLS:
            raise VoiceCheckError(
                f"unknown protocol '{n}'; expected one of: loro, lofo, loso, logo, shipped"
            )
        out.append(full)
    return out


def run(
    *,
    manifest: str,
    datasets: list[str] | None,
    protocols: Sequence[str],
    conditions: Sequence[str],
    model_path: str | Path | None = None,
    seed: int = 0,
    copies: int = 4,
    n_jobs: int = -1,
    folds: int = DEFAULT_FOLDS,
    progress: Progress = None,
) -> list[dict[str, Any]]:
    """Score the manifest's clips under the named protocols and conditions."""
    protocols = resolve_protocols(protocols)
    conditions = check_conditions(conditions)
    clips = load_manifest(manifest).clips(datasets)
    rows: list[dict[str, Any]] = []
    cv = [p for p in protocols if p != PROTOCOLS[2]]
    if cv:
        rows += cross_validated_scores(
            clips,
            protocols=cv,
            conditions=conditions,
            seed=seed,
            copies=copies,
            n_jobs=n_jobs,
            folds=folds,
            progress=progress,
        )
    if PROTOCOLS[2] in protocols:
        rows += shipped_scores(
            model_path, clips, conditions=conditions, seed=seed, n_jobs=n_jobs, progress=progress
        )
    return rows
