"""Per-segment summary statistics of frame features: the model's input vector.

Every statistic uses the segment's active-speech frames only and none measures absolute
loudness, speech fraction or duration (they would let a model learn the recording set-up
instead of the voice). A segment without an active frame summarises to all NaN, which
scikit-learn's histogram gradient boosting handles as missing.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

F0_STATISTICS = ("f0_log2_median", "f0_st_std", "f0_st_range", "voiced_fraction", "f0_jitter_st")
"""Summary names that replace the ``f0_hz`` frame feature."""

ENERGY_STATISTICS = ("energy_db_rel_mean", "energy_db_rel_std")
"""Summary names that replace the ``energy_db`` frame feature."""

_SEMITONES_PER_OCTAVE = 12.0


def summary_names(frame_names: tuple[str, ...]) -> tuple[str, ...]:
    """Return the names of :func:`summarize`'s output, in order, without computing.

    Parameters
    ----------
    frame_names : tuple of str
        Names of the frame features, e.g. :func:`frame_feature_names`.

    Returns
    -------
    tuple of str
        For each frame feature in order: ``<name>_mean`` and ``<name>_std``, except that
        ``f0_hz`` becomes the five names of :data:`F0_STATISTICS` and ``energy_db`` the
        two of :data:`ENERGY_STATISTICS`.

    Examples
    --------
    >>> from voicecheck.features import summary_names
    >>> summary_names(("zcr", "energy_db", "f0_hz"))  # doctest: +NORMALIZE_WHITESPACE
    ('zcr_mean', 'zcr_std', 'energy_db_rel_mean', 'energy_db_rel_std', 'f0_log2_median',
     'f0_st_std', 'f0_st_range', 'voiced_fraction', 'f0_jitter_st')
    """
    return _layout(tuple(frame_names))[0]


@lru_cache(maxsize=8)
def _layout(
    frame_names: tuple[str, ...],
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, int, int, int, int]:
    """Return the summary names and where each statistic goes.

    The tuple holds: names, rows of the plain features, output positions of their means
    (stds follow each mean), then the row and output position of ``f0_hz`` and of
    ``energy_db`` (-1 where absent).
    """
    if len(set(frame_names)) != len(frame_names):
        raise ValueError("frame feature names must be unique")
    names: list[str] = []
    plain_rows, mean_positions = [], []
    f0_row = f0_position = energy_row = energy_position = -1
    for row, name in enumerate(frame_names):
        if name == "f0_hz":
            f0_row, f0_position = row, len(names)
            names += F0_STATISTICS
        elif name == "energy_db":
            energy_row, energy_position = row, len(names)
            names += ENERGY_STATISTICS
        else:
            plain_rows.append(row)
            mean_positions.append(len(names))
            names += (f"{name}_mean", f"{name}_std")
    return (
        tuple(names),
        np.array(plain_rows, dtype=np.intp),
        np.array(mean_positions, dtype=np.intp),
        f0_row,
        f0_position,
        energy_row,
        energy_position,
    )


def summarize(
    values: np.ndarray, *, names: tuple[str, ...], active: np.ndarray
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Summarise one segment's frame features over its active-speech frames.

    - Every feature but ``f0_hz`` and ``energy_db``: mean and standard deviation over the
      active frames.
    - ``energy_db``: mean and standard deviation of the level relative to the 95th
      percentile of the active frames' levels (dB; so the absolute level is not a feature).
    - ``f0_hz`` over the active voiced frames (f0 not NaN): median of ``log2(f0 / 1 Hz)``,
      standard deviation and 10-90 % range in semitones; the voiced fraction of the active
      frames; and the mean absolute change of f0 between consecutive active voiced frames
      in semitones (a jitter-like measure, NaN without such a pair).

    Parameters
    ----------
    values : np.ndarray, shape (n_features, n_frames)
        Frame features of the segment, e.g. ``FrameFeatures.values[:, start:stop]``.
    names : tuple of str, length n_features
        Names of the rows of ``values``.
    active : np.ndarray, shape (n_frames,), bool
        Active-speech mask, e.g. from :func:`activity`.

    Returns
    -------
    summary : np.ndarray, shape (n_summary,), float32
        Statistics, all NaN when no frame is active; f0 statistics are NaN when no active
        frame is voiced.
    summary_names : tuple of str, length n_summary
        Equal to ``summary_names(names)``.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import summarize
    >>> values = np.array([[1.0, 3.0, 100.0], [-20.0, -26.0, -90.0]], dtype=np.float32)
    >>> summary, names = summarize(
    ...     values, names=("zcr", "energy_db"), active=np.array([True, True, False])
    ... )
    >>> names
    ('zcr_mean', 'zcr_std', 'energy_db_rel_mean', 'energy_db_rel_std')
    >>> [round(float(v), 2) for v in summary]
    [2.0, 1.0, -2.7, 3.0]
    """
    out_names, plain_rows, mean_positions, f0_row, f0_pos, energy_row, energy_pos = _layout(
        tuple(names)
    )
    values = np.asarray(values, dtype=np.float32)
    active = np.asarray(active, dtype=bool)
    if values.ndim != 2 or values.shape[0] != len(names) or active.shape != values.shape[1:]:
        raise ValueError(
            f"values has shape {values.shape} and active {active.shape}; "
            f"({len(names)}, n_frames) and (n_frames,) are expected"
        )
    out = np.full(len(out_names), np.nan, dtype=np.float32)
    n_active = int(np.count_nonzero(active))
    if n_active == 0:
        return out, out_names

    selected = values if n_active == active.size else values[:, active]
    means = selected.sum(axis=1) / np.float32(n_active)
    deviations = selected - means[:, None]
    stds = np.sqrt(np.einsum("ij,ij->i", deviations, deviations) / np.float32(n_active))
    out[mean_positions] = means[plain_rows]
    out[mean_positions + 1] = stds[plain_rows]

    if energy_row >= 0:
        (reference,) = _percentiles(selected[energy_row], (95.0,))
        out[energy_pos] = means[energy_row] - reference
        out[energy_pos + 1] = stds[energy_row]

    if f0_row >= 0:
        log_f0 = np.log2(values[f0_row])
        voiced = active & np.isfinite(log_f0)
        n_voiced = int(np.count_nonzero(voiced))
        out[f0_pos + 3] = n_voiced / n_active
        if n_voiced > 0:
            voiced_log_f0 = log_f0[voiced]
            p10, p50, p90 = _percentiles(voiced_log_f0, (10.0, 50.0, 90.0))
            out[f0_pos] = p50
            out[f0_pos + 1] = _SEMITONES_PER_OCTAVE * voiced_log_f0.std(dtype=np.float64)
            out[f0_pos + 2] = _SEMITONES_PER_OCTAVE * (p90 - p10)
            pairs = voiced[1:] & voiced[:-1]
            if pairs.any():
                steps = np.abs(np.diff(log_f0)[pairs])
                out[f0_pos + 4] = _SEMITONES_PER_OCTAVE * steps.mean(dtype=np.float64)
    return out, out_names


def _percentiles(x: np.ndarray, q: tuple[float, ...]) -> list[float]:
    """Return percentiles of a non-empty 1-D array, as ``np.percentile`` (linear), faster."""
    ordered = np.sort(x)
    last = ordered.size - 1
    result = []
    for percent in q:
        position = percent / 100.0 * last
        low = int(position)
        high = min(low + 1, last)
        fraction = position - low
        result.append(float(ordered[low] + fraction * (ordered[high] - ordered[low])))
    return result
