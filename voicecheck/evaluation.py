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

A third protocol, ``shipped-model``, scores the manifest with a given model.
Training always uses the random phone-channel mix of :mod:`voicecheck.training`;
scoring passes real and cloned clips through the same named condition.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import channel as phone
from .errors import ChannelError, VoiceCheckError
from .manifest import Clip, load_manifest
from .model import build_pipeline, load_model
from .training import (
    Table,
    balanced_rows,
    booster_params,
    build_table,
    subset,
    training_chains,
)

CONDITIONS = ("clean_16k", "g711", "amr_nb", "opus", "mp3")
PROTOCOLS = ("leave-one-source-out", "leave-one-generator-out", "shipped-model")
PROTOCOL_ALIASES = {
    "loso": "leave-one-source-out",
    "logo": "leave-one-generator-out",
    "shipped": "shipped-model",
}

Progress = Callable[[int, int], None] | None


def generator_family(name: str) -> str:
    """Group a generator's variants and spellings.

    A parenthesised variant is dropped and the rest compared without case, spaces or
    punctuation: ``"StyleTTS 2 (ablation noSD)"`` -> ``"styletts2"``, and the corpus's
    ``hifigan`` copies fall in one family with a data set's ``HiFi-GAN``.
    """
    base = re.sub(r"\s*\(.*\)\s*$", "", name).strip() or name
    return re.sub(r"[^a-z0-9+]", "", base.lower()) or base


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


def cross_validated_scores(
    clips: Sequence[Clip],
    *,
    protocols: Sequence[str],
    conditions: Sequence[str],
    seed: int = 0,
    copies: int = 2,
    n_jobs: int = -1,
    hgb: dict[str, Any] | None = None,
    progress: Progress = None,
) -> list[dict[str, Any]]:
    """Score every clip with models that never saw its group.

    Returns
    -------
    list of dict
        One row per (protocol, condition, clip): ``score, label, generator,
        source, condition, protocol, fold, path``.
    """
    train = build_table(
        clips, chains=training_chains, copies=copies, seed=seed, n_jobs=n_jobs, progress=progress
    )
    train = subset(train, balanced_rows(train, seed=seed))
    evals = condition_tables(clips, conditions, seed=seed + 1, n_jobs=n_jobs, progress=progress)
    hgb = booster_params(train.X.shape[0], hgb)
    groups = sorted({c["group"] for c in train.clips})
    rows: list[dict[str, Any]] = []
    loso, logo = PROTOCOLS[0], PROTOCOLS[1]
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
            raise VoiceCheckError(f"unknown protocol '{n}'; expected one of: loso, logo, shipped")
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
    n_jobs: int = -1,
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
            n_jobs=n_jobs,
            progress=progress,
        )
    if PROTOCOLS[2] in protocols:
        rows += shipped_scores(
            model_path, clips, conditions=conditions, seed=seed, n_jobs=n_jobs, progress=progress
        )
    return rows
