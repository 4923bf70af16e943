"""Plain-language explanations of a score: which cues drove it and what it means.

Four pieces, for readers who are not audio experts (an election official reading a
call report):

- :data:`CUE_GROUPS`, the feature vector divided into a few named groups of cues
  ("voice timbre", "pitch and intonation", ...);
- :func:`explain_segments`, how much each group moved one channel's score;
- :func:`score_rates` and :func:`meaning_text`, how often cloned and real voices in
  the model's held-out validation scored at least as high;
- :func:`verdict_text`, a headline and a piece of advice for each verdict.

Examples
--------
>>> [g.key for g in CUE_GROUPS][:3]
['timbre', 'timbre_motion', 'high_frequency']
>>> group_of("f0_jitter_st").title
'Pitch and intonation'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .model import Detector

__all__ = [
    "CUE_GROUPS",
    "CueGroup",
    "explain_segments",
    "group_columns",
    "group_of",
    "meaning_text",
    "percent",
    "score_rates",
    "verdict_text",
]


@dataclass(frozen=True)
class CueGroup:
    """A named group of features that a listener would recognise as one cue.

    Attributes
    ----------
    key : str
        Stable machine-readable identifier.
    title : str
        Short plain-language name, written for readers without audio training.
    description : str
        One plain sentence saying what the cue is.
    pattern : str
        Regular expression; a feature name belongs to the group when the whole name
        matches it (:func:`re.fullmatch`).
    """

    key: str
    title: str
    description: str
    pattern: str

    def matches(self, name: str) -> bool:
        """Return whether the feature ``name`` belongs to this group."""
        return re.fullmatch(self.pattern, name) is not None


_STATS = r"_(?:mean|std)"

CUE_GROUPS: tuple[CueGroup, ...] = (
    CueGroup(
        key="timbre",
        title="Voice timbre",
        description=(
            "The overall colour of the voice, shaped by the throat, mouth and nose of the"
            " speaker (or by the voice model that imitates them)."
        ),
        pattern=rf"mfcc_\d+{_STATS}",
    ),
    CueGroup(
        key="timbre_motion",
        title="Moment-to-moment changes in the voice",
        description=(
            "How quickly and smoothly the sound of the voice changes between syllables;"
            " generated voices are often too smooth or jump unnaturally."
        ),
        pattern=rf"(?:mfcc|lfcc)_d[12]_\d+{_STATS}",
    ),
    CueGroup(
        key="high_frequency",
        title="High-frequency detail",
        description=(
            "The fine detail in the upper part of the sound, where breath, hiss and the"
            " traces of voice generators tend to show."
        ),
        pattern=rf"lfcc_\d+{_STATS}",
    ),
    CueGroup(
        key="harmonics",
        title="Harmonic fine structure",
        description=(
            "The pattern of overtones that a vocal cord's vibration produces, which voice"
            " generators reproduce imperfectly."
        ),
        pattern=rf"(?:cqcc|fine_spread|fine_peak)_\d+{_STATS}",
    ),
    CueGroup(
        key="excitation",
        title="Voice source and phase",
        description=(
            "The buzz of the vocal cords left once the shape of the mouth is taken away, and"
            " how steadily each frequency's phase moves; voice generators rebuild both."
        ),
        pattern=rf"(?:lpc_gain_db|residual_flatness_\d+|phase_dev_\d+){_STATS}",
    ),
    CueGroup(
        key="spectral_shape",
        title="Brightness and noisiness of the sound",
        description=(
            "Whether the sound is bright or dull, tonal or noisy, and how abruptly it"
            " changes from one instant to the next."
        ),
        pattern=(
            r"(?:contrast_db_\d+|subband_db_\d+|subband_d1_\d+|flatness|centroid_hz"
            rf"|bandwidth_hz|rolloff_hz|flux){_STATS}"
        ),
    ),
    CueGroup(
        key="pitch",
        title="Pitch and intonation",
        description=(
            "How high the voice is, how the melody of speech rises and falls, and how"
            " steady the voice is held."
        ),
        pattern=r"f0_\w+|voiced_fraction|voicing_(?:mean|std)",
    ),
    CueGroup(
        key="loudness",
        title="Loudness and background noise",
        description=(
            "How the loudness of speech rises and falls, and how much hiss or noise lies"
            " between and under the words."
        ),
        pattern=rf"(?:energy_db_rel|zcr){_STATS}",
    ),
)
"""The cue groups, in report order. Every feature name belongs to exactly one."""


def group_of(name: str) -> CueGroup:
    """Return the cue group of the feature ``name``.

    Raises
    ------
    ValueError
        When ``name`` belongs to no group, or to more than one.
    """
    found = [g for g in CUE_GROUPS if g.matches(name)]
    if len(found) != 1:
        raise ValueError(
            f"feature {name!r} belongs to {len(found)} cue groups"
            f" ({', '.join(g.key for g in found) or 'none'}); expected exactly one"
        )
    return found[0]


def group_columns(names: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    """Return the column indices of each cue group in a feature vector.

    Parameters
    ----------
    names : sequence of str
        Feature names in column order (a model card's ``feature_names``).

    Returns
    -------
    dict of str to np.ndarray
        Group key to integer column indices, in :data:`CUE_GROUPS` order; groups with
        no column are left out.

    Examples
    --------
    >>> cols = group_columns(["mfcc_1_mean", "f0_st_std", "mfcc_2_std"])
    >>> {k: v.tolist() for k, v in cols.items()}
    {'timbre': [0, 2], 'pitch': [1]}
    """
    keys = [group_of(n).key for n in names]
    out: dict[str, np.ndarray] = {}
    for g in CUE_GROUPS:
        cols = np.flatnonzero(np.array([k == g.key for k in keys], dtype=bool))
        if cols.size:
            out[g.key] = cols
    return out


LITTLE_EFFECT = 0.01
"""Effects smaller than this (in score units) are described as making little difference."""


def _cue_sentence(title: str, effect: float, full: float, without: float) -> str:
    if abs(effect) < LITTLE_EFFECT or f"{full:.2f}" == f"{without:.2f}":
        return f"{title} made little difference: the score would be about {full:.2f} without it."
    leaning = "more machine-made" if effect > 0 else "more like a real person"
    return (
        f"{title} made the voice look {leaning}: without this cue the score would be"
        f" {without:.2f} instead of {full:.2f}."
    )


def explain_segments(
    X: np.ndarray,
    mask: np.ndarray,
    detector: Detector,
    *,
    probs: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Measure how much each cue group moved one channel's score.

    Leave-one-group-out: for each group of :data:`CUE_GROUPS`, that group's columns
    are set to NaN on the speech segments and the channel score (the mean
    probability over ``mask``) is computed again. ``effect = full score - score
    without the group``; a positive effect means the cue made the voice look more
    machine-made, a negative one more like a real person.

    This describes the model's reliance on a cue for this one call, not proof that
    the cue is abnormal: a missing value is handled as the gradient-boosting trees
    learnt to handle missing values, which is not the same as a "neutral" voice, and
    effects of groups that overlap in what they measure are not additive.

    Cost: the model scores one more copy of the speech segments per group (seven),
    batched into a single ``predict_proba`` call of ``7 * n_speech`` rows (memory: that
    many float32 feature rows); feature extraction is not repeated.

    Parameters
    ----------
    X : np.ndarray, shape (n_segments, n_features)
        Segment feature vectors in the order of ``detector.card["feature_names"]``.
    mask : np.ndarray, shape (n_segments,), bool
        Segments holding speech; the channel score is their mean probability. At
        least one must be set.
    detector : Detector
        The loaded model.
    probs : np.ndarray, shape (n_segments,), optional
        ``detector.predict_proba(X)`` when already computed; computed otherwise.

    Returns
    -------
    list of dict
        One per cue group, sorted by ``abs(effect)``, largest first, each
        ``{"cue": key, "title": str, "effect": float, "score_without": float,
        "direction": "cloned" | "human" | "none", "text": str}``; ``effect`` and
        ``score_without`` are rounded to 4 decimals; ``direction`` is ``"none"`` when
        the rounded effect is 0. ``text`` says the cue made little difference when
        ``abs(effect) < LITTLE_EFFECT``.

    Raises
    ------
    ValueError
        When ``mask`` does not match ``X`` or selects no segment.
    """
    X = np.asarray(X, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (X.shape[0],) or not mask.any():
        raise ValueError(
            f"mask has shape {mask.shape} with {int(mask.sum())} speech segments;"
            f" expected shape ({X.shape[0]},) with at least one"
        )
    speech = X[mask]
    if probs is None:
        full = float(np.mean(detector.predict_proba(speech)))
    else:
        full = float(np.mean(np.asarray(probs)[mask]))
    titles = {g.key: g.title for g in CUE_GROUPS}
    columns = group_columns(detector.card["feature_names"])
    # One batched call: predict_proba has a fixed cost per call that dwarfs a few rows.
    masked = np.tile(speech, (len(columns), 1))
    n = speech.shape[0]
    for i, cols in enumerate(columns.values()):
        masked[i * n : (i + 1) * n, cols] = np.nan
    scores_without = detector.predict_proba(masked).reshape(len(columns), n).mean(axis=1)
    cues: list[dict[str, Any]] = []
    for key, without in zip(columns, scores_without.tolist(), strict=True):
        effect = round(full - without, 4)
        direction = "cloned" if effect > 0 else "human" if effect < 0 else "none"
        cues.append(
            {
                "cue": key,
                "title": titles[key],
                "effect": effect,
                "score_without": round(without, 4),
                "direction": direction,
                "text": _cue_sentence(titles[key], effect, full, without),
            }
        )
    cues.sort(key=lambda c: abs(c["effect"]), reverse=True)
    return cues


def score_rates(score: float, card: dict[str, Any]) -> dict[str, Any] | None:
    """Return how often validation clips scored at least ``score``.

    Parameters
    ----------
    score : float
        A calibrated cloned-voice score in [0, 1].
    card : dict
        A model card; its ``validation_scores`` holds the held-out clip scores
        ``{"real": [...], "cloned": [...]}``.

    Returns
    -------
    dict or None
        ``{"cloned_at_or_above": float, "real_at_or_above": float, "n_cloned": int,
        "n_real": int}``, the fractions of cloned and of real validation clips whose
        score is ``>= score``; None when the card has no validation scores, or none
        of one kind.

    Examples
    --------
    >>> card = {"validation_scores": {"real": [0.1, 0.2, 0.3, 0.9], "cloned": [0.5, 0.9]}}
    >>> score_rates(0.9, card)
    {'cloned_at_or_above': 0.5, 'real_at_or_above': 0.25, 'n_cloned': 2, 'n_real': 4}
    >>> score_rates(0.5, {"thresholds": {}}) is None
    True
    """
    validation = card.get("validation_scores")
    if not validation:
        return None
    cloned = np.sort(np.asarray(validation.get("cloned") or [], dtype=np.float64))
    real = np.sort(np.asarray(validation.get("real") or [], dtype=np.float64))
    if cloned.size == 0 or real.size == 0:
        return None

    def at_or_above(values: np.ndarray) -> float:
        return float(values.size - np.searchsorted(values, score, side="left")) / values.size

    out = {
        "cloned_at_or_above": at_or_above(cloned),
        "real_at_or_above": at_or_above(real),
        "n_cloned": int(cloned.size),
        "n_real": int(real.size),
    }
    if validation.get("protocol") == "leave-one-site-out":
        out["unseen_sites"] = True
    return out


def percent(p: float) -> str:
    """A fraction as a rounded percentage: ``0%``, ``<1%``, ``NN%``, ``>99%``, ``100%``.

    >>> percent(0.2685), percent(0.001), percent(0.0)
    ('27%', '<1%', '0%')
    """
    if p <= 0:
        return "0%"
    if p >= 1:
        return "100%"
    if p < 0.005:
        return "<1%"
    if p >= 0.995:
        return ">99%"
    return f"{round(p * 100):d}%"


def meaning_text(score: float, rates: dict[str, Any] | None) -> str:
    """Say in one sentence what ``score`` means against the validation results.

    Parameters
    ----------
    score : float
        The call's calibrated score.
    rates : dict or None
        :func:`score_rates` of ``score``.

    Returns
    -------
    str
        Percentages are whole numbers; a fraction that is not zero but under 0.5 %
        reads ``<1%`` (over 99.5 % and under 100 %: ``>99%``). A score above every
        validation score is said to be so, rather than "0 % of cloned voices".

    Examples
    --------
    >>> rates = {"cloned_at_or_above": 0.62, "real_at_or_above": 0.004,
    ...          "n_cloned": 500, "n_real": 1000}
    >>> print(meaning_text(0.71, rates))  # doctest: +NORMALIZE_WHITESPACE
    In our tests, 62% of 500 cloned voices and <1% of 1,000 real voices
    scored at least as high as this call (0.71).
    >>> print(meaning_text(0.71, {**rates, "unseen_sites": True}))
    ... # doctest: +NORMALIZE_WHITESPACE
    In our tests on recordings from sites the model never saw, 62% of 500 cloned voices
    and <1% of 1,000 real voices scored at least as high as this call (0.71).
    >>> print(meaning_text(0.71, None))  # doctest: +NORMALIZE_WHITESPACE
    This model has no stored test results to compare the score 0.71 with;
    read it against the verdict thresholds only.
    """
    if rates is None:
        return (
            f"This model has no stored test results to compare the score {score:.2f} with;"
            " read it against the verdict thresholds only."
        )
    where = (
        "in our tests on recordings from sites the model never saw"
        if rates.get("unseen_sites")
        else "in our tests"
    )
    if rates["cloned_at_or_above"] == 0 and rates["real_at_or_above"] == 0:
        return (
            f"This call's score ({score:.2f}) is higher than that of all {rates['n_cloned']:,}"
            f" cloned and {rates['n_real']:,} real voices {where}."
        )
    return (
        f"{where[0].upper()}{where[1:]}, {percent(rates['cloned_at_or_above'])} of"
        f" {rates['n_cloned']:,} cloned voices and {percent(rates['real_at_or_above'])} of"
        f" {rates['n_real']:,} real voices scored at least as high as this call ({score:.2f})."
    )


def promise_text(card: dict[str, Any]) -> str | None:
    """Say how often the verdicts erred on sites the model never saw, from the card.

    Parameters
    ----------
    card : dict
        A model card; ``metrics.verdict_promise`` holds the out-of-site rates with their
        bootstrap interval over sites (:func:`voicecheck.research.metrics.site_bootstrap`).

    Returns
    -------
    str or None
        None when the card has no such measurement (models made before it was kept).

    Examples
    --------
    >>> card = {"metrics": {"verdict_promise": {"n_sites": 92,
    ...     "real_called_cloned": {"rate": 0.0098, "low": 0.004, "high": 0.018},
    ...     "cloned_called_human": {"rate": 0.049, "low": 0.03, "high": 0.07}}}}
    >>> print(promise_text(card))  # doctest: +NORMALIZE_WHITESPACE
    On recordings from 92 sites the model never saw, 1% of real voices were called
    likely cloned (95% interval over sites <1%-2%) and 5% of cloned voices likely human
    (3%-7%).
    """
    promise = (card.get("metrics") or {}).get("verdict_promise")
    if not promise:
        return None
    fa, miss = promise["real_called_cloned"], promise["cloned_called_human"]
    return (
        f"On recordings from {promise['n_sites']} sites the model never saw,"
        f" {percent(fa['rate'])} of real voices were called likely cloned (95% interval over"
        f" sites {percent(fa['low'])}-{percent(fa['high'])}) and {percent(miss['rate'])} of"
        f" cloned voices likely human ({percent(miss['low'])}-{percent(miss['high'])})."
    )


_VERDICT_TEXTS: dict[str, dict[str, str]] = {
    "likely_cloned": {
        "headline": "The voice is likely cloned (machine-generated)",
        "advice": (
            "Treat the call as suspicious: do not act on what it asks, keep the recording"
            " and this result, and forward the evidence report to the people who handle"
            " election disinformation."
        ),
    },
    "likely_human": {
        "headline": "The voice is likely a real person",
        "advice": (
            "The detector found no strong sign of a cloned voice, but no detector is certain:"
            " if the message itself is suspicious, check it through official channels."
        ),
    },
    "inconclusive": {
        "headline": "The result is inconclusive",
        "advice": (
            "The score fell between the thresholds for a real and a cloned voice, so the"
            " detector cannot tell; keep the recording and judge the call by what it says"
            " and who it claims to be from, or ask for a longer or clearer recording."
        ),
    },
}


def verdict_text(verdict: str) -> dict[str, str]:
    """Return a plain headline and advice for a verdict.

    Parameters
    ----------
    verdict : {"likely_cloned", "likely_human", "inconclusive"}
        A verdict from :meth:`voicecheck.model.Thresholds.verdict`.

    Returns
    -------
    dict
        ``{"headline": str, "advice": str}``.

    Raises
    ------
    ValueError
        When ``verdict`` is not one of the three.

    Examples
    --------
    >>> verdict_text("likely_cloned")["headline"]
    'The voice is likely cloned (machine-generated)'
    """
    try:
        return dict(_VERDICT_TEXTS[verdict])
    except KeyError:
        raise ValueError(
            f"verdict is {verdict!r}; expected one of {', '.join(sorted(_VERDICT_TEXTS))}"
        ) from None
