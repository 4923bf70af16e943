"""Detection metrics as the anti-spoofing field defines them.

Scores are cloned-voice scores: higher means more likely cloned. ``labels`` are 1
for cloned (spoof) and 0 for real (bonafide). A *false alarm* is a real voice
called cloned; a *miss* is a cloned voice called real.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def det_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Miss and false-alarm rates at every threshold.

    Parameters
    ----------
    scores : np.ndarray, shape (n,)
        Cloned-voice scores.
    labels : np.ndarray, shape (n,)
        1 for cloned, 0 for real.

    Returns
    -------
    miss, false_alarm, thresholds : np.ndarray, shape (n + 1,)
        At threshold ``t`` a clip is called cloned when its score is ``>= t``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    n_spoof, n_bona = int(labels.sum()), int((labels == 0).sum())
    if n_spoof == 0 or n_bona == 0:
        raise ValueError("need both real and cloned scores to compute detection errors")
    order = np.argsort(scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    # Threshold just above s[i] calls everything up to i real.
    miss = np.concatenate([[0.0], np.cumsum(lab) / n_spoof])
    fa = np.concatenate([[1.0], 1 - np.cumsum(1 - lab) / n_bona])
    thresholds = np.concatenate([[s[0] - 1e-9], s + 1e-12])
    return miss, fa, thresholds


def eer(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Equal error rate (ASVspoof definition) and its threshold.

    Returns
    -------
    eer : float
        The rate (0-1) where miss and false-alarm rates cross.
    threshold : float
        The score threshold where they cross.

    Examples
    --------
    >>> eer(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]))[0]
    0.0
    """
    miss, fa, thr = det_curve(scores, labels)
    i = int(np.nanargmin(np.abs(miss - fa)))
    return float((miss[i] + fa[i]) / 2), float(thr[i])


def min_dcf(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    p_spoof: float = 0.05,
    c_miss: float = 1.0,
    c_fa: float = 10.0,
) -> float:
    """Normalised minimum detection cost (ASVspoof 5 costs by default).

    ``DCF = C_miss * P_miss * (1 - p_spoof') ...``: with ASVspoof 5's
    ``C_miss=1, C_fa=10, pi_spoof=0.05``, normalised by the cost of the best
    trivial system.
    """
    miss, fa, _ = det_curve(scores, labels)
    p_target = 1 - p_spoof  # the bona fide class is the "target" in ASVspoof terms
    # A miss of a spoof accepts a spoof (a false accept); a false alarm rejects a target.
    dcf = c_miss * p_target * fa + c_fa * p_spoof * miss
    default = min(c_miss * p_target, c_fa * p_spoof)
    return float(dcf.min() / default)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (probability a cloned clip outscores a real one)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def threshold_at_false_alarm(scores: np.ndarray, labels: np.ndarray, rate: float) -> float:
    """Lowest threshold whose false-alarm rate on real voices is at most ``rate``."""
    real = np.sort(np.asarray(scores)[np.asarray(labels) == 0])
    if real.size == 0:
        raise ValueError("need real scores")
    k = int(np.floor(rate * real.size))  # at most k real clips may score at or above
    return float(real[-k - 1] + 1e-9) if k < real.size else float(real[0])


def threshold_at_miss(scores: np.ndarray, labels: np.ndarray, rate: float) -> float:
    """Highest threshold whose miss rate on cloned voices is at most ``rate``."""
    fake = np.sort(np.asarray(scores)[np.asarray(labels) == 1])
    if fake.size == 0:
        raise ValueError("need cloned scores")
    k = int(np.floor(rate * fake.size))  # at most k cloned clips may score below
    return float(fake[k])


def rates_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """False-alarm and miss rates when clips scoring ``>= threshold`` are called cloned."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    called = scores >= threshold
    real, fake = labels == 0, labels == 1
    return {
        "false_alarm_rate": float(called[real].mean()) if real.any() else float("nan"),
        "miss_rate": float((~called[fake]).mean()) if fake.any() else float("nan"),
    }


def summary(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """EER, its threshold, minDCF, ROC AUC and the clip counts."""
    e, t = eer(scores, labels)
    return {
        "eer": round(e, 4),
        "eer_threshold": round(t, 4),
        "min_dcf": round(min_dcf(scores, labels), 4),
        "roc_auc": round(roc_auc(scores, labels), 4),
        "n_real": int((np.asarray(labels) == 0).sum()),
        "n_cloned": int((np.asarray(labels) == 1).sum()),
    }


def verdict_rates(
    scores: np.ndarray, labels: np.ndarray, *, cloned: float, human: float
) -> dict[str, float]:
    """How often real voices get ``likely_cloned`` and cloned ones ``likely_human``.

    Returns
    -------
    dict
        ``real_called_cloned`` (share of real clips scoring ``>= cloned``),
        ``cloned_called_human`` (share of cloned clips scoring ``< human``), and the shares
        of each class left ``inconclusive`` (NaN where a class is absent).

    Examples
    --------
    >>> r = verdict_rates(np.array([0.1, 0.5, 0.9, 0.2, 0.95]), np.array([0, 0, 0, 1, 1]),
    ...                   cloned=0.8, human=0.3)
    >>> round(r["real_called_cloned"], 3), r["cloned_called_human"]
    (0.333, 0.5)
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    real, fake = scores[labels == 0], scores[labels == 1]

    def share(mask: np.ndarray) -> float:
        return float(mask.mean()) if mask.size else float("nan")

    return {
        "real_called_cloned": share(real >= cloned),
        "cloned_called_human": share(fake < human),
        "real_inconclusive": share((real >= human) & (real < cloned)),
        "cloned_inconclusive": share((fake >= human) & (fake < cloned)),
    }


def site_bootstrap(
    scores: np.ndarray,
    labels: np.ndarray,
    sites: np.ndarray,
    *,
    cloned: float,
    human: float,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Verdict error rates with a bootstrap interval over sites.

    Sites (not clips) are drawn with replacement, since clips of one site share a recording
    chain and err together; the interval says how far the rates may move on other sites.

    Returns
    -------
    dict
        For ``real_called_cloned`` and ``cloned_called_human``: ``{"rate", "low", "high"}``
        (the measured rate and the ``level`` percentile interval), plus ``n_sites`` and
        ``n_boot``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = np.r_[rng.uniform(0, 0.6, 50), rng.uniform(0.4, 1, 50)]
    >>> y = np.r_[np.zeros(50, int), np.ones(50, int)]
    >>> b = site_bootstrap(s, y, np.arange(100) % 10, cloned=0.59, human=0.41, n_boot=200)
    >>> b["real_called_cloned"]["low"] <= b["real_called_cloned"]["rate"]
    True
    """
    scores, labels, sites = np.asarray(scores, np.float64), np.asarray(labels), np.asarray(sites)
    names, site_of = np.unique(sites, return_inverse=True)
    n_sites = names.size
    # Per-site counts, so that each draw is a weighted sum, not a copy of the clips.
    real = labels == 0
    counts = {
        "real_called_cloned": (
            np.bincount(site_of, weights=real & (scores >= cloned), minlength=n_sites),
            np.bincount(site_of, weights=real, minlength=n_sites),
        ),
        "cloned_called_human": (
            np.bincount(site_of, weights=~real & (scores < human), minlength=n_sites),
            np.bincount(site_of, weights=~real, minlength=n_sites),
        ),
    }
    rng = np.random.default_rng(seed)
    draws = np.stack(
        [np.bincount(rng.integers(0, n_sites, n_sites), minlength=n_sites) for _ in range(n_boot)]
    )
    tail = (1 - level) / 2 * 100
    out: dict[str, Any] = {"n_sites": int(n_sites), "n_boot": int(n_boot)}
    for key, (errors, totals) in counts.items():
        e, t = draws @ errors, draws @ totals
        rates = e[t > 0] / t[t > 0]
        rate = float(errors.sum() / totals.sum()) if totals.sum() else float("nan")
        low, high = np.percentile(rates, [tail, 100 - tail]) if rates.size else (np.nan,) * 2
        out[key] = {
            "rate": round(rate, 4),
            "low": round(float(low), 4),
            "high": round(float(high), 4),
        }
    return out
