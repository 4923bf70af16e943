"""Evaluation reports: clip scores in; metrics, plots and a readable report out.

A :class:`ScoreTable` holds one row per scored clip: its cloned-voice ``score`` (higher means
more likely cloned), its ``label`` (1 cloned, 0 real), the ``generator`` that cloned it, the
``source`` it came from, the phone ``condition`` it passed through, the evaluation
``protocol`` and the ``fold`` (held-out group) that scored it, and its ``path``.

:func:`evaluate_table` turns a table into a nested, JSON-ready dict of metrics (per protocol
and condition: pooled, per generator, per source, per fold), :func:`weak_spots` reads that
dict back into short sentences, the ``plot_*`` functions draw DET and ROC curves and score
histograms, and :func:`write_report` writes all of it into one folder as Markdown, a
self-contained HTML page, ``metrics.json``, ``scores.csv`` and PNG images.

The metrics are those of :mod:`voicecheck.research.metrics` (ASVspoof EER, minDCF with ASVspoof 5
costs, ROC AUC). A group with only one class gets ``None`` for every metric that needs both,
and its counts. matplotlib is needed only to plot; it is imported when a plot is drawn.

Examples
--------
>>> table = ScoreTable.from_records(
...     [
...         {"score": 0.1, "label": 0, "source": "a", "condition": "g711"},
...         {"score": 0.2, "label": 0, "source": "b", "condition": "g711"},
...         {"score": 0.8, "label": 1, "generator": "tts1", "source": "a", "condition": "g711"},
...         {"score": 0.9, "label": 1, "generator": "tts2", "source": "b", "condition": "g711"},
...     ]
... )
>>> m = evaluate_table(table, threshold=0.5)
>>> m["protocols"][""]["conditions"]["g711"]["pooled"]["eer"]
0.0
>>> m["protocols"][""]["conditions"]["g711"]["pooled"]["at_threshold"]["shipped"]
{'false_alarm_rate': 0.0, 'miss_rate': 0.0}
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..research.metrics import det_curve, eer, rates_at, roc_auc, summary

__all__ = [
    "COLUMNS",
    "ScoreTable",
    "evaluate_table",
    "plot_det",
    "plot_histograms",
    "plot_roc",
    "weak_spots",
    "write_report",
]

COLUMNS = (
    "score", "label", "generator", "source", "condition", "protocol", "fold", "path", "family"
)
"""The columns of a score table and of ``scores.csv``, in order."""

TEXT_COLUMNS = COLUMNS[2:]

PROTOCOL_TEXT = {
    "leave-one-source-out": (
        "Each fold held out one source (a corpus, speaker set or recording setup): a clip was "
        "scored by a model trained without any clip from its own source, real or cloned."
    ),
    "leave-one-generator-out": (
        "Each fold held out one cloning generator: a cloned clip was scored by a model that "
        "never saw that generator's output in training."
    ),
    "leave-one-site-out": (
        "The sites (demo pages, corpora, recording setups) were dealt into grouped folds, each "
        "site in exactly one: a clip was scored by a model trained without any clip from its "
        "own site, real or cloned. Data marked as training-only was never scored."
    ),
    "leave-one-family-out": (
        "The generator families were dealt into grouped folds: a cloned clip was scored by a "
        "model trained without any clip of its family from any site; real clips by the "
        "leave-one-site-out models."
    ),
    "shipped-model": (
        "The shipped model scored every clip as it is, without retraining. Whether these clips "
        "were kept out of its training data is for the training-data manifest (hash below) to say."
    ),
}
"""What each known protocol held out, in words."""

CHANNEL_TEXT = (
    "Within each condition, real and cloned clips passed through the same simulated phone "
    "channel, so the channel alone cannot tell them apart."
)

METRICS_TEXT = (
    "EER: equal error rate (ASVspoof definition), where misses and false alarms are equal. "
    "minDCF: normalised minimum detection cost with the ASVspoof 5 costs "
    "(C_miss = 1, C_fa = 10, pi_spoof = 0.05); 0 is perfect, 1 is no better than a fixed "
    "answer. ROC AUC: the chance that a cloned clip outscores a real one (0.5 is chance). "
    "At a threshold, a clip scoring at or above it is called cloned: a false alarm (FA) is a "
    "real voice called cloned, a miss a cloned voice called real."
)

WEAK_EER = 0.30
"""EER (0-1) above which a condition, generator or source is listed as a weak spot."""

WEAK_CONDITION_GAP = 0.10
"""EER gap (0-1, i.e. 10 points) by which a condition may trail the clean one."""

WEAK_FALSE_ALARM_GAP = 0.10
"""False-alarm gap (0-1) by which a real-only source may exceed its condition's pooled rate."""

FEW_CLIPS = 10
"""Groups with fewer clips of the class that matters are flagged as uncertain."""

CLEAN_PREFIX = "clean"
"""Conditions whose name starts with this are the reference for channel degradation."""

PLOT_DPI = 100
PALETTE = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442")
"""Okabe-Ito colours (safe for colour-blind readers), darkest first."""
LINESTYLES = ("-", "--", "-.", ":")
REAL_COLOUR, CLONED_COLOUR = "#0072B2", "#D55E00"
MARKERS = ("s", "^", "D", "v", "P", "X")
DET_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
"""DET axis ticks (rates 0-1) from 0.1% to 50%, as in ASVspoof and NIST plots."""
DET_WIDE_TICKS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95)
DET_WIDE_FROM_EER = 0.10
"""When any curve's EER is above this, every DET panel runs to 95% so weak curves stay in view."""

PLOT_FILES = {"det": "det.png", "roc": "roc.png", "histograms": "histograms.png"}


# --------------------------------------------------------------------------------------------
# The data model


@dataclass(frozen=True)
class ScoreTable:
    """Scored clips, one row per clip, as parallel arrays.

    Attributes
    ----------
    score : np.ndarray, shape (n,), float64
        Cloned-voice score; higher means more likely cloned. Finite.
    label : np.ndarray, shape (n,), int64
        1 for cloned (spoof), 0 for real (bona fide).
    generator, source, condition, protocol, fold, path, family : np.ndarray, shape (n,), object
        Strings: the cloning generator (empty for real clips), the clip's source, the phone
        condition (``clean_16k``, ``g711``, ``amr_nb``...), the evaluation protocol
        (``leave-one-source-out``...), the held-out group that scored it, the clip's path,
        the generator's family (empty where unknown).

    Examples
    --------
    >>> t = ScoreTable.from_records([{"score": 0.3, "label": 0}, {"score": 0.9, "label": 1}])
    >>> len(t), t.to_records()[1]["score"], t.to_records()[1]["label"]
    (2, 0.9, 1)
    """

    score: np.ndarray
    label: np.ndarray
    generator: np.ndarray
    source: np.ndarray
    condition: np.ndarray
    protocol: np.ndarray
    fold: np.ndarray
    path: np.ndarray
    family: np.ndarray | None = None

    def __post_init__(self) -> None:
        score = np.asarray(self.score, dtype=np.float64).reshape(-1)
        n = score.size
        if not np.all(np.isfinite(score)):
            bad = int(np.flatnonzero(~np.isfinite(score))[0])
            raise ValueError(f"score of row {bad} is {score[bad]}; every score must be finite")
        label = np.asarray(self.label).reshape(-1)
        if label.size != n:
            raise ValueError(f"{label.size} labels for {n} scores; expected one label per score")
        try:
            label_f = label.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"labels must be 0 (real) or 1 (cloned): {err}") from None
        if not np.all(np.isin(label_f, (0.0, 1.0))):
            bad = int(np.flatnonzero(~np.isin(label_f, (0.0, 1.0)))[0])
            raise ValueError(
                f"label of row {bad} is {label[bad]!r}; expected 0 (real) or 1 (cloned)"
            )
        object.__setattr__(self, "score", score)
        object.__setattr__(self, "label", label_f.astype(np.int64))
        for name in TEXT_COLUMNS:
            values = getattr(self, name)
            values = [""] * n if values is None else ["" if v is None else str(v) for v in values]
            if len(values) != n:
                raise ValueError(f"{len(values)} values of '{name}' for {n} scores")
            column = np.empty(n, dtype=object)
            column[:] = values
            object.__setattr__(self, name, column)

    def __len__(self) -> int:
        return int(self.score.size)

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> ScoreTable:
        """Build a table from dicts with the keys of :data:`COLUMNS`.

        ``score`` and ``label`` are required; a missing text field becomes ``""``; other keys
        are ignored.
        """
        rows = list(records)
        for i, row in enumerate(rows):
            for key in ("score", "label"):
                if key not in row:
                    raise ValueError(f"row {i} has no '{key}'; every row needs score and label")
        return cls(
            score=np.array([float(r["score"]) for r in rows], dtype=np.float64),
            label=np.array([_as_label(r["label"]) for r in rows], dtype=np.int64),
            **{c: [r.get(c, "") for r in rows] for c in TEXT_COLUMNS},
        )

    def to_records(self) -> list[dict[str, Any]]:
        """The rows as dicts with the keys of :data:`COLUMNS`, in order."""
        return [
            {
                "score": float(self.score[i]),
                "label": int(self.label[i]),
                **{c: str(getattr(self, c)[i]) for c in TEXT_COLUMNS},
            }
            for i in range(len(self))
        ]

    @classmethod
    def from_csv(cls, path: str | Path) -> ScoreTable:
        """Read a ``scores.csv`` written by :meth:`to_csv` (or any CSV with those columns)."""
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            missing = [c for c in ("score", "label") if c not in fields]
            if missing:
                raise ValueError(
                    f"{path} has no {', '.join(missing)} column; expected columns: "
                    + ", ".join(COLUMNS)
                )
            return cls.from_records(list(reader))

    def to_csv(self, path: str | Path) -> Path:
        """Write the table as CSV with the columns of :data:`COLUMNS`; returns the path."""
        path = Path(path)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(COLUMNS)
            for row in self.to_records():
                writer.writerow([repr(row["score"]), row["label"]] + [row[c] for c in TEXT_COLUMNS])
        return path

    def select(self, mask: np.ndarray) -> ScoreTable:
        """The rows where the boolean ``mask`` (shape (n,)) is true."""
        return ScoreTable(**{c: getattr(self, c)[mask] for c in COLUMNS})

    def unique(self, column: str) -> list[str]:
        """Distinct values of a text column, in order of first appearance."""
        return list(dict.fromkeys(getattr(self, column).tolist()))


def _as_label(value: Any) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"label {value!r} is not 0 (real) or 1 (cloned)") from None
    if number not in (0.0, 1.0):
        raise ValueError(f"label {value!r} is not 0 (real) or 1 (cloned)")
    return int(number)


# --------------------------------------------------------------------------------------------
# Metrics


def _named_thresholds(
    threshold: float | None, thresholds: Mapping[str, float] | None
) -> dict[str, float]:
    out: dict[str, float] = {}
    if threshold is not None:
        out["shipped"] = float(threshold)
    for name, value in (thresholds or {}).items():
        out[str(name)] = float(value)
    return out


def _round(x: float | None, digits: int = 4) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), digits)


def _group_metrics(scores: np.ndarray, labels: np.ndarray, thr: Mapping[str, float]) -> dict:
    """The metrics block used everywhere: counts, EER..., mean scores, rates at thresholds."""
    real, cloned = labels == 0, labels == 1
    out: dict[str, Any] = {
        "n_real": int(real.sum()),
        "n_cloned": int(cloned.sum()),
        "eer": None,
        "eer_threshold": None,
        "min_dcf": None,
        "roc_auc": None,
    }
    if real.any() and cloned.any():
        out.update(summary(scores, labels))
    out["mean_score_real"] = _round(scores[real].mean()) if real.any() else None
    out["mean_score_cloned"] = _round(scores[cloned].mean()) if cloned.any() else None
    out["at_threshold"] = {
        name: {k: _round(v) for k, v in rates_at(scores, labels, t).items()}
        for name, t in thr.items()
    }
    return out


def _by_group(
    scores: np.ndarray, labels: np.ndarray, keys: np.ndarray, thr: Mapping[str, float]
) -> dict[str, dict]:
    return {
        k: _group_metrics(scores[keys == k], labels[keys == k], thr)
        for k in sorted(set(keys.tolist()))
    }


def evaluate_table(
    table: ScoreTable,
    *,
    threshold: float | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Metrics per protocol and condition, as a nested JSON-ready dict.

    Parameters
    ----------
    table : ScoreTable
        The scored clips.
    threshold : float or None
        A shipped decision threshold, reported under the name ``"shipped"``.
    thresholds : dict of str to float, or None
        Named thresholds (e.g. a model card's ``{"cloned": 0.7, "eer": 0.54}``).

    Returns
    -------
    dict
        ``{"n_clips", "n_real", "n_cloned", "thresholds": {name: value}, "protocols":
        {protocol: {"description", "folds", "n_clips", "conditions": {condition: {"pooled",
        "per_generator", "per_family", "per_source", "per_fold"}}}}}`` (``per_family`` is
        empty when the table names no family). Every metrics block has ``n_real``,
        ``n_cloned``, ``eer``, ``eer_threshold``, ``min_dcf``, ``roc_auc`` (rates 0-1; ``None``
        without both classes), ``mean_score_real``, ``mean_score_cloned`` and ``at_threshold``:
        ``{name: {"false_alarm_rate", "miss_rate"}}`` (``None`` where the class is absent).
        A generator's block compares its cloned clips with *all* real clips of the condition.
        Protocols and conditions keep the table's order; groups are sorted by name.
    """
    thr = _named_thresholds(threshold, thresholds)
    out: dict[str, Any] = {
        "n_clips": len(table),
        "n_real": int((table.label == 0).sum()),
        "n_cloned": int((table.label == 1).sum()),
        "thresholds": thr,
        "protocols": {},
    }
    for protocol in table.unique("protocol"):
        p = table.select(table.protocol == protocol)
        entry: dict[str, Any] = {
            "description": PROTOCOL_TEXT.get(protocol, ""),
            "folds": sorted(set(p.fold.tolist())),
            "n_clips": len(p),
            "conditions": {},
        }
        for condition in p.unique("condition"):
            c = p.select(p.condition == condition)
            s, y = c.score, c.label
            real = y == 0
            per_generator, per_family = {}, {}
            for g in sorted(set(c.generator[y == 1].tolist())):
                m = real | ((c.generator == g) & (y == 1))
                per_generator[g] = _group_metrics(s[m], y[m], thr)
            for f in sorted(set(c.family[y == 1].tolist()) - {""}):
                m = real | ((c.family == f) & (y == 1))
                per_family[f] = _group_metrics(s[m], y[m], thr)
            entry["conditions"][condition] = {
                "pooled": _group_metrics(s, y, thr),
                "per_generator": per_generator,
                "per_family": per_family,
                "per_source": _by_group(s, y, c.source, thr),
                "per_fold": _by_group(s, y, c.fold, thr),
            }
        out["protocols"][protocol] = entry
    return out


def _first_rate(block: Mapping, kind: str) -> float | None:
    for rates in block.get("at_threshold", {}).values():
        return rates.get(kind)
    return None


def _clean_condition(conditions: Mapping[str, Any]) -> str | None:
    for name in conditions:
        if name.startswith(CLEAN_PREFIX) and conditions[name]["pooled"]["eer"] is not None:
            return name
    return None


def _few(n: int) -> str:
    return f" (only {n} clip{'s' if n != 1 else ''}: uncertain)" if n < FEW_CLIPS else ""


def weak_spots(metrics: Mapping[str, Any]) -> list[str]:
    """Short sentences naming where the detector does badly, from :func:`evaluate_table`'s dict.

    Listed: conditions that cannot be measured (one class only); conditions, generators and
    sources whose EER is above :data:`WEAK_EER`; conditions whose EER trails the clean
    condition's by more than :data:`WEAK_CONDITION_GAP`; real-only sources whose false-alarm
    rate at a threshold exceeds their condition's pooled rate by more than
    :data:`WEAK_FALSE_ALARM_GAP`. Groups with fewer than :data:`FEW_CLIPS` clips say so.
    """
    out: list[str] = []
    for protocol, p in metrics.get("protocols", {}).items():
        where = f"[{protocol}] " if protocol else ""
        conditions = p["conditions"]
        clean = _clean_condition(conditions)
        for condition, c in conditions.items():
            pooled = c["pooled"]
            if pooled["eer"] is None:
                out.append(
                    f"{where}{condition}: cannot be measured ({pooled['n_real']} real, "
                    f"{pooled['n_cloned']} cloned clips; both are needed)"
                )
                continue
            if pooled["eer"] > WEAK_EER:
                out.append(f"{where}{condition}: pooled EER {_pct(pooled['eer'])}")
            if clean is not None and condition != clean:
                ref = conditions[clean]["pooled"]["eer"]
                if pooled["eer"] - ref > WEAK_CONDITION_GAP:
                    out.append(
                        f"{where}{condition}: EER {_pct(pooled['eer'])} against "
                        f"{_pct(ref)} on {clean} (+{(pooled['eer'] - ref) * 100:.1f} points)"
                    )
            for g, b in _worst_first(c["per_generator"]):
                if b["eer"] is not None and b["eer"] > WEAK_EER:
                    out.append(
                        f"{where}{condition}: generator {g} has EER {_pct(b['eer'])}"
                        + _few(b["n_cloned"])
                    )
            for s, b in _worst_first(c["per_source"]):
                if b["eer"] is not None and b["eer"] > WEAK_EER:
                    n = min(b["n_real"], b["n_cloned"])
                    out.append(f"{where}{condition}: source {s} has EER {_pct(b['eer'])}" + _few(n))
                elif b["n_cloned"] == 0:
                    for name, rates in b["at_threshold"].items():
                        fa = rates["false_alarm_rate"]
                        ref = pooled["at_threshold"][name]["false_alarm_rate"]
                        if fa is not None and ref is not None and fa - ref > WEAK_FALSE_ALARM_GAP:
                            out.append(
                                f"{where}{condition}: real voices of source {s} are called cloned"
                                f" {_pct(fa)} of the time at {name} (pooled {_pct(ref)})"
                                + _few(b["n_real"])
                            )
    return out


def _badness(block: Mapping) -> float:
    """Sort key, higher is worse: EER, else the error rate at the first threshold."""
    if block["eer"] is not None:
        return float(block["eer"])
    kind = "false_alarm_rate" if block["n_cloned"] == 0 else "miss_rate"
    rate = _first_rate(block, kind)
    return -1.0 if rate is None else float(rate)


def _worst_first(groups: Mapping[str, Mapping]) -> list[tuple[str, Mapping]]:
    return sorted(groups.items(), key=lambda kv: (-_badness(kv[1]), kv[0]))


# --------------------------------------------------------------------------------------------
# Plots (matplotlib's object-oriented API: no pyplot, no display, no global state)


def _panels(n: int, *, ncols: int, width_in: float, height_in: float):
    from matplotlib.figure import Figure

    n = max(n, 1)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width_in * ncols, height_in * nrows), dpi=PLOT_DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=PLOT_DPI, format="png", metadata={"Software": None})
    return path


def _style(index: int) -> dict[str, Any]:
    return {
        "color": PALETTE[index % len(PALETTE)],
        "linestyle": LINESTYLES[(index // len(PALETTE) + index) % len(LINESTYLES)],
    }


def _no_data(ax, text: str = "no scored clips") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=12)
    ax.set_xticks([])
    ax.set_yticks([])


def _curves(table: ScoreTable):
    """Per protocol: (protocol, [(condition, colour index, scores, labels)])."""
    conditions = table.unique("condition")
    for protocol in table.unique("protocol"):
        p = table.select(table.protocol == protocol)
        yield (
            protocol,
            [
                (c, conditions.index(c), p.score[p.condition == c], p.label[p.condition == c])
                for c in p.unique("condition")
            ],
        )


def _operating_points(ax, scores, labels, thr, colour, transform) -> None:
    for k, t in enumerate(thr.values()):
        r = rates_at(scores, labels, t)
        x, y = transform(r["false_alarm_rate"], r["miss_rate"])
        ax.plot(x, y, marker=MARKERS[k % len(MARKERS)], color=colour, markersize=7, ls="none")


def _threshold_legend(ax, thr: Mapping[str, float]) -> list:
    from matplotlib.lines import Line2D

    return [
        Line2D(
            [],
            [],
            marker=MARKERS[k % len(MARKERS)],
            color="#555555",
            ls="none",
            label=f"at {name} = {t:.3g}",
        )
        for k, (name, t) in enumerate(thr.items())
    ]


def _protocol_title(kind: str, protocol: str) -> str:
    return f"{kind}, protocol: {protocol}" if protocol else kind


def plot_det(
    table: ScoreTable, path: str | Path, *, thresholds: Mapping[str, float] | None = None
) -> Path:
    """DET curves on normal-deviate axes, one panel per protocol, one curve per condition.

    Miss rate (cloned called real) against false-alarm rate (real called cloned), both on
    probit axes as in ASVspoof and NIST evaluations; each curve's EER is marked on the
    diagonal, and the operating point at each named threshold with a marker of its own.
    Conditions with only one class are named in the panel but not drawn. The axes run from
    0.1% to 50%, or to 95% in every panel when any EER is above :data:`DET_WIDE_FROM_EER`.
    Returns ``path``.
    """
    from matplotlib.lines import Line2D
    from scipy.stats import norm

    thr = dict(thresholds or {})
    groups = list(_curves(table))
    fig, axes = _panels(len(groups), ncols=2, width_in=5.6, height_in=5.2)
    if not groups:
        _no_data(axes[0])
        axes[0].set_title("DET curves")

    def probit(fa, miss):
        return norm.ppf(np.clip(fa, 1e-6, 1 - 1e-6)), norm.ppf(np.clip(miss, 1e-6, 1 - 1e-6))

    eers = {
        (protocol, condition): round(eer(s, y)[0], 4)  # rounded as in evaluate_table
        for protocol, curves in groups
        for condition, _, s, y in curves
        if (y == 0).any() and (y == 1).any()
    }
    ticks = DET_WIDE_TICKS if max(eers.values(), default=0.0) > DET_WIDE_FROM_EER else DET_TICKS
    lo, hi = ticks[0], ticks[-1]
    labels = [f"{t * 100:g}" for t in ticks]
    for ax, (protocol, curves) in zip(axes, groups, strict=False):
        handles, skipped = [], []
        for condition, idx, s, y in curves:
            if (protocol, condition) not in eers:
                skipped.append(condition)
                continue
            miss, fa, _ = det_curve(s, y)
            e = eers[protocol, condition]
            style = _style(idx)
            ax.plot(*probit(fa, miss), lw=1.8, **style)
            ax.plot(*probit(e, e), marker="o", color=style["color"], ms=6)
            _operating_points(ax, s, y, thr, style["color"], probit)
            handles.append(Line2D([], [], lw=1.8, label=f"{condition} (EER {_pct(e)})", **style))
        lim = (norm.ppf(lo), norm.ppf(hi))
        ax.plot(lim, lim, color="#999999", lw=0.8, ls=":")
        ax.set(xlim=lim, ylim=lim, aspect="equal")
        ax.set_xticks(norm.ppf(ticks), labels)
        ax.set_yticks(norm.ppf(ticks), labels)
        ax.grid(True, color="#dddddd", lw=0.6)
        ax.set_xlabel("False alarms: real voices called cloned (%)")
        ax.set_ylabel("Misses: cloned voices called real (%)")
        ax.set_title(_protocol_title("DET curves", protocol), fontsize=11)
        handles.append(Line2D([], [], marker="o", color="#555555", ls="none", label="EER point"))
        handles += _threshold_legend(ax, thr)
        if skipped:
            handles.append(Line2D([], [], ls="none", label="one class only: " + ", ".join(skipped)))
        ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.9)
    return _save(fig, path)


def plot_roc(
    table: ScoreTable, path: str | Path, *, thresholds: Mapping[str, float] | None = None
) -> Path:
    """ROC curves, one panel per protocol, one curve per condition, AUC in the legend.

    Cloned clips detected (1 - miss rate) against real clips called cloned (false-alarm rate),
    with the operating point at each named threshold marked. Returns ``path``.
    """
    from matplotlib.lines import Line2D

    thr = dict(thresholds or {})
    groups = list(_curves(table))
    fig, axes = _panels(len(groups), ncols=2, width_in=5.2, height_in=5.0)
    if not groups:
        _no_data(axes[0])
        axes[0].set_title("ROC curves")

    def roc(fa, miss):
        return fa, 1 - np.asarray(miss)

    for ax, (protocol, curves) in zip(axes, groups, strict=False):
        handles, skipped = [], []
        for condition, idx, s, y in curves:
            if (y == 0).sum() == 0 or (y == 1).sum() == 0:
                skipped.append(condition)
                continue
            miss, fa, _ = det_curve(s, y)
            style = _style(idx)
            ax.plot(*roc(fa, miss), lw=1.8, drawstyle="default", **style)
            _operating_points(ax, s, y, thr, style["color"], roc)
            handles.append(
                Line2D([], [], lw=1.8, label=f"{condition} (AUC {roc_auc(s, y):.3f})", **style)
            )
        ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls=":")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
        ax.grid(True, color="#dddddd", lw=0.6)
        ax.set_xlabel("False-alarm rate: real voices called cloned")
        ax.set_ylabel("Detection rate: cloned voices called cloned")
        ax.set_title(_protocol_title("ROC curves", protocol), fontsize=11)
        handles += _threshold_legend(ax, thr)
        if skipped:
            handles.append(Line2D([], [], ls="none", label="one class only: " + ", ".join(skipped)))
        ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)
    return _save(fig, path)


def _histogram_legend(thr: Mapping[str, float]) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=(REAL_COLOUR, 0.35), edgecolor=REAL_COLOUR, label="real"),
        Patch(facecolor=(CLONED_COLOUR, 0.35), edgecolor=CLONED_COLOUR, label="cloned"),
    ]
    return handles + [
        Line2D(
            [],
            [],
            color="black",
            lw=1.2,
            ls=LINESTYLES[k % len(LINESTYLES)],
            label=f"threshold {name} = {t:.3g}",
        )
        for k, (name, t) in enumerate(thr.items())
    ]


def plot_histograms(
    table: ScoreTable, path: str | Path, *, thresholds: Mapping[str, float] | None = None
) -> Path:
    """Score histograms of real against cloned clips, one panel per protocol and condition.

    Each class is normalised to unit area (density), so unequal class sizes compare; the
    named thresholds are drawn as vertical lines. Returns ``path``.
    """
    thr = dict(thresholds or {})
    panels = [(p, c) for p, curves in _curves(table) for c, *_ in curves]
    fig, axes = _panels(len(panels), ncols=min(4, max(len(panels), 1)), width_in=3.4, height_in=2.9)
    if not panels:
        _no_data(axes[0])
        axes[0].set_title("Score histograms")
    for ax, (protocol, condition) in zip(axes, panels, strict=False):
        m = (table.protocol == protocol) & (table.condition == condition)
        s, y = table.score[m], table.label[m]
        bins = np.histogram_bin_edges(np.concatenate([s, list(thr.values())]), bins=30)
        for cls, colour in ((0, REAL_COLOUR), (1, CLONED_COLOUR)):
            if (y == cls).any():
                ax.hist(
                    s[y == cls],
                    bins=bins,
                    density=True,
                    histtype="stepfilled",
                    lw=1.5,
                    facecolor=(colour, 0.35),
                    edgecolor=colour,
                )
        for k, t in enumerate(thr.values()):
            ax.axvline(t, color="black", lw=1.2, ls=LINESTYLES[k % len(LINESTYLES)])
        where = f"{protocol}\n{condition}" if protocol else condition
        n_real, n_cloned = int((y == 0).sum()), int((y == 1).sum())
        ax.set_title(f"{where}\n{n_real} real, {n_cloned} cloned", fontsize=9)
        ax.set_xlabel("score (higher: more likely cloned)", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.tick_params(labelsize=8)
    if panels:
        fig.legend(handles=_histogram_legend(thr), loc="outside upper center", ncols=6)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# The report


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _score(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _rate_columns(thr: Mapping[str, float], kinds: Sequence[str]) -> list[str]:
    names = {"false_alarm_rate": "FA", "miss_rate": "miss"}
    return [f"{names[k]} @ {t}" for t in thr for k in kinds]


def _rate_cells(block: Mapping, thr: Mapping[str, float], kinds: Sequence[str]) -> list[str]:
    return [_pct(block["at_threshold"][t][k]) for t in thr for k in kinds]


_BOTH = ("false_alarm_rate", "miss_rate")


def _blocks(
    metrics: Mapping[str, Any], *, title: str, model_card: Mapping | None, spots: list[str]
) -> list[tuple]:
    """The report as a list of neutral blocks, rendered to Markdown or HTML."""
    thr = metrics["thresholds"]
    b: list[tuple] = [("h", 1, title)]
    card = model_card or {}
    if card:
        manifest = card.get("data_manifest") or {}
        lines = [f"Model: `{card.get('model_id') or card.get('name') or 'unnamed'}`"]
        if manifest.get("sha256"):
            datasets = ", ".join(manifest.get("datasets") or [])
            lines.append(
                f"Training-data manifest sha256: `{manifest['sha256']}`"
                + (f" (datasets: {datasets})" if datasets else "")
            )
        b.append(("ul", lines))
    b.append(
        (
            "p",
            f"{metrics['n_clips']} scored clips: {metrics['n_real']} real, "
            f"{metrics['n_cloned']} cloned.",
        )
    )
    b.append(("h", 2, "How it was measured"))
    items = []
    for protocol, p in metrics["protocols"].items():
        folds = ", ".join(f for f in p["folds"] if f) or "none named"
        what = p["description"] or "Protocol as named; no description is on file."
        items.append(f"**{protocol or 'unnamed protocol'}**: {what} Held-out groups: {folds}.")
    items.append(CHANNEL_TEXT)
    b.append(("ul", items))
    policy = card.get("threshold_policy") or {}
    if thr:
        b.append(
            (
                "ul",
                [
                    f"Threshold `{name}` = {t:.3f}" + _policy(policy, name)
                    for name, t in thr.items()
                ],
            )
        )
    b.append(("p", METRICS_TEXT))
    b.append(("h", 2, "Weak spots"))
    b.append(("ul", spots) if spots else ("p", "None found by the rules below."))
    b.append(
        (
            "p",
            f"Rules: EER above {WEAK_EER:.0%}; a condition more than "
            f"{WEAK_CONDITION_GAP * 100:.0f} points worse than the clean one; real voices of a "
            f"source called cloned more than {WEAK_FALSE_ALARM_GAP * 100:.0f} points more often "
            f"than pooled. Fewer than {FEW_CLIPS} clips: uncertain.",
        )
    )
    b.append(("h", 2, "Curves"))
    b.append(("img", "DET curves", PLOT_FILES["det"]))
    b.append(("img", "ROC curves", PLOT_FILES["roc"]))
    b.append(("img", "Score histograms", PLOT_FILES["histograms"]))
    for protocol, p in metrics["protocols"].items():
        name = protocol or "unnamed protocol"
        b.append(("h", 2, f"Results: {name}"))
        b.append(("h", 3, "Pooled, per condition"))
        header = ["condition", "real", "cloned", "EER", "EER threshold", "minDCF", "ROC AUC"]
        rows = []
        for condition, c in p["conditions"].items():
            m = c["pooled"]
            rows.append(
                [condition, str(m["n_real"]), str(m["n_cloned"]), _pct(m["eer"])]
                + [_score(m["eer_threshold"]), _num(m["min_dcf"]), _num(m["roc_auc"])]
                + _rate_cells(m, thr, _BOTH)
            )
        b.append(("table", header + _rate_columns(thr, _BOTH), rows))
        for condition, c in p["conditions"].items():
            b.append(("h", 3, f"{name}, {condition}"))
            b.append(
                (
                    "p",
                    "Per generator, worst first: each generator's cloned clips against all "
                    f"{c['pooled']['n_real']} real clips of {condition}.",
                )
            )
            rows = [
                [g, str(m["n_cloned"]), _pct(m["eer"]), _num(m["min_dcf"]), _num(m["roc_auc"])]
                + [_score(m["mean_score_cloned"])]
                + _rate_cells(m, thr, ("miss_rate",))
                for g, m in _worst_first(c["per_generator"])
            ]
            header = ["generator", "cloned", "EER", "minDCF", "ROC AUC", "mean score"]
            if rows:
                b.append(("table", header + _rate_columns(thr, ("miss_rate",)), rows))
            else:
                b.append(("p", "No cloned clips."))
            if c.get("per_family"):
                b.append(
                    (
                        "p",
                        "Per generator family, worst first (versions and variants of one model"
                        f" together), against the same {c['pooled']['n_real']} real clips.",
                    )
                )
                rows = [
                    [f, str(m["n_cloned"]), _pct(m["eer"]), _num(m["min_dcf"])]
                    + [_num(m["roc_auc"]), _score(m["mean_score_cloned"])]
                    + _rate_cells(m, thr, ("miss_rate",))
                    for f, m in _worst_first(c["per_family"])
                ]
                header = ["family", "cloned", "EER", "minDCF", "ROC AUC", "mean score"]
                b.append(("table", header + _rate_columns(thr, ("miss_rate",)), rows))
            b.append(
                (
                    "p",
                    "Per source, worst first (by EER; a one-class source by its error rate at "
                    "the first threshold).",
                )
            )
            header = ["source", "real", "cloned", "EER", "mean score real", "mean score cloned"]
            rows = [
                [s, str(m["n_real"]), str(m["n_cloned"]), _pct(m["eer"])]
                + [_score(m["mean_score_real"]), _score(m["mean_score_cloned"])]
                + _rate_cells(m, thr, _BOTH)
                for s, m in _worst_first(c["per_source"])
            ]
            b.append(("table", header + _rate_columns(thr, _BOTH), rows))
    return b


def _policy(policy: Mapping[str, str], name: str) -> str:
    return f": {policy[name]}" if name in policy else ""


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _to_markdown(blocks: list[tuple]) -> str:
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append("#" * block[1] + " " + block[2])
        elif kind == "p":
            out.append(block[1])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "img":
            out.append(f"![{block[1]}]({block[2]})")
        elif kind == "table":
            header, rows = block[1], block[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
            lines.append("|---" + "|---:" * (len(header) - 1) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
  max-width: 72em; padding: 0 1em; color: #1a1a1a; line-height: 1.45; }
h1 { border-bottom: 2px solid #0072B2; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f4f8; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f2f2f2; padding: 0 .25em; border-radius: 3px; word-break: break-all; }
img { max-width: 100%; height: auto; display: block; margin: .8em 0; border: 1px solid #eee; }
"""


def _inline_html(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _to_html(blocks: list[tuple], *, title: str, images: Mapping[str, bytes]) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
    ]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"<h{block[1]}>{_inline_html(block[2])}</h{block[1]}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "img":
            data = base64.b64encode(images[block[2]]).decode("ascii")
            out.append(f'<img alt="{html.escape(block[1])}" src="data:image/png;base64,{data}">')
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in block[2]
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def write_report(
    table: ScoreTable,
    out_dir: str | Path,
    *,
    title: str = "voicecheck evaluation",
    model_card: Mapping[str, Any] | None = None,
    thresholds: float | Mapping[str, float] | None = None,
    formats: Sequence[str] = ("md", "html"),
) -> list[Path]:
    """Write metrics, scores, plots and a readable report into ``out_dir``.

    Parameters
    ----------
    table : ScoreTable
        The scored clips.
    out_dir : path
        Folder to write into (created if needed); files of the same names are replaced.
    title : str
        The report's title.
    model_card : dict or None
        A model card (:func:`voicecheck.model.save_model`'s): its ``model_id``,
        ``data_manifest.sha256`` and ``threshold_policy`` are quoted.
    thresholds : float, dict of str to float, or None
        Decision thresholds to report rates at: one value (named ``shipped``) or named values.
        ``None``: the model card's ``thresholds``, if any.
    formats : sequence of {"md", "html"}
        Which readable reports to write. The HTML embeds its images and stands alone.

    Returns
    -------
    list of Path
        Written, in order: ``metrics.json``, ``scores.csv``, ``det.png``, ``roc.png``,
        ``histograms.png``, then ``report.md`` and/or ``report.html``.
    """
    unknown = sorted(set(formats) - {"md", "html"})
    if unknown:
        raise ValueError(f"unknown report format(s) {', '.join(unknown)}; expected md or html")
    if thresholds is None and model_card is not None:
        thresholds = model_card.get("thresholds")
    if isinstance(thresholds, Mapping):
        metrics = evaluate_table(table, thresholds=thresholds)
    else:
        metrics = evaluate_table(table, threshold=thresholds)
    spots = weak_spots(metrics)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    card = model_card or {}
    document = {
        "title": title,
        "model_id": card.get("model_id"),
        "data_manifest_sha256": (card.get("data_manifest") or {}).get("sha256"),
        **metrics,
        "weak_spots": spots,
    }
    written = [out / "metrics.json"]
    written[0].write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    written.append(table.to_csv(out / "scores.csv"))
    thr = metrics["thresholds"]
    written.append(plot_det(table, out / PLOT_FILES["det"], thresholds=thr))
    written.append(plot_roc(table, out / PLOT_FILES["roc"], thresholds=thr))
    written.append(plot_histograms(table, out / PLOT_FILES["histograms"], thresholds=thr))
    blocks = _blocks(metrics, title=title, model_card=model_card, spots=spots)
    if "md" in formats:
        path = out / "report.md"
        path.write_text(_to_markdown(blocks), encoding="utf-8")
        written.append(path)
    if "html" in formats:
        images = {name: (out / name).read_bytes() for name in PLOT_FILES.values()}
        path = out / "report.html"
        path.write_text(_to_html(blocks, title=title, images=images), encoding="utf-8")
        written.append(path)
    return written
