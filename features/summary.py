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
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, int, int, int, int, tuple]:
    """Return the summary names and where each statistic goes.

    The tuple holds: names, rows of the plain features, output positions of their means
    (stds follow each mean), then the row and output position of ``f0_hz`` and of
    ``energy_db`` (-1 where absent), and the plain rows as runs of consecutive rows
    (``(source, target)`` slices, the fastest way to copy them).
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
        _runs(plain_rows),
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
    values = np.asarray(values, dtype=np.float32)
    active = np.asarray(active, dtype=bool)
    if values.ndim != 2 or values.shape[0] != len(names) or active.shape != values.shape[1:]:
        raise ValueError(
            f"values has shape {values.shape} and active {active.shape}; "
            f"({len(names)}, n_frames) and (n_frames,) are expected"
        )
    summary, out_names = summarize_segments(
        values, names=names, starts=np.zeros(1, dtype=np.intp), active=active[None]
    )
    return summary[0], out_names


def summarize_segments(
    values: np.ndarray, *, names: tuple[str, ...], starts: np.ndarray, active: np.ndarray
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Summarise many equally long, possibly overlapping segments, each as :func:`summarize`.

    The masked sums of every segment come from one matrix-vector product over its frames
    (no copy per segment); the pitch and level percentiles are taken for all segments at once.

    Parameters
    ----------
    values : np.ndarray, shape (n_features, n_frames)
        Frame features of a stretch of the recording.
    names : tuple of str, length n_features
        Names of the rows of ``values``.
    starts : np.ndarray, shape (n_segments,), int
        First frame of each segment in ``values``.
    active : np.ndarray, shape (n_segments, length), bool
        Active-speech mask of each segment; segment ``k`` covers the frames
        ``starts[k]`` to ``starts[k] + length - 1``.

    Returns
    -------
    summary : np.ndarray, shape (n_segments, n_summary), float32
        One row per segment, as :func:`summarize` gives it (up to rounding).
    summary_names : tuple of str, length n_summary
        Equal to ``summary_names(names)``.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import summarize_segments
    >>> values = np.array([[1.0, 3.0, 100.0, 4.0]], dtype=np.float32)
    >>> active = np.array([[True, True], [False, False], [True, True]])
    >>> summary, names = summarize_segments(
    ...     values, names=("zcr",), starts=np.array([0, 1, 2]), active=active
    ... )
    >>> names, summary.tolist()
    (('zcr_mean', 'zcr_std'), [[2.0, 1.0], [nan, nan], [52.0, 48.0]])
    """
    (out_names, plain_rows, mean_positions, f0_row, f0_pos, energy_row, energy_pos, runs) = _layout(
        tuple(names)
    )
    values = np.asarray(values, dtype=np.float32)
    active = np.asarray(active, dtype=bool)
    starts = np.asarray(starts, dtype=np.intp)
    if (
        values.ndim != 2
        or values.shape[0] != len(names)
        or active.ndim != 2
        or starts.shape != active.shape[:1]
    ):
        raise ValueError(
            f"values has shape {values.shape}, starts {starts.shape} and active "
            f"{active.shape}; ({len(names)}, n_frames), (n_segments,) and "
            "(n_segments, length) are expected"
        )
    n_segments, length = active.shape
    if n_segments and (starts.min() < 0 or starts.max() + length > values.shape[1]):
        raise ValueError(
            f"segments of {length} frames from {starts.tolist()} do not fit in "
            f"{values.shape[1]} frames"
        )
    out = np.full((n_segments, len(out_names)), np.nan, dtype=np.float32)
    n_active = np.count_nonzero(active, axis=1)
    if not n_active.any():
        return out, out_names

    # The masked sums of the values and of their squares: one matrix-vector product per
    # segment over its own frames. Each row is first shifted by its mean over the stretch,
    # which keeps the variance from the sum of squares accurate.
    some = n_active > 0
    count = np.maximum(n_active, 1).astype(np.float32)
    n_plain = plain_rows.size
    both = np.empty((2 * n_plain, values.shape[1]), dtype=np.float32)
    plain = both[:n_plain]
    for source, target in runs:
        plain[target] = values[source]
    shift = plain.mean(axis=1, keepdims=True)
    plain -= shift
    np.square(plain, out=both[n_plain:])
    mask = active.astype(np.float32)
    sums = np.empty((2 * n_plain, n_segments), dtype=np.float32)
    for k, first in enumerate(starts):
        sums[:, k] = both[:, first : first + length] @ mask[k]
    means = sums[:n_plain] / count
    variances = np.maximum(sums[n_plain:] / count - means * means, np.float32(0.0))
    means += shift
    out[:, mean_positions] = np.where(some, means, np.nan).T
    out[:, mean_positions + 1] = np.where(some, np.sqrt(variances), np.nan).T

    frames = starts[:, None] + np.arange(length)[None, :]
    if energy_row >= 0:
        energy = values[energy_row][frames]
        (reference,) = _masked_percentiles(energy, active, n_active, (95.0,))
        centred = np.where(active, energy - reference[:, None], np.float32(0.0))
        mean = centred.sum(axis=1) / count
        spread = np.where(active, centred - mean[:, None], np.float32(0.0))
        out[some, energy_pos] = mean[some]
        out[some, energy_pos + 1] = np.sqrt((spread * spread).sum(axis=1) / count)[some]
    if f0_row >= 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            log_f0 = np.log2(values[f0_row][frames])
        voiced = active & np.isfinite(log_f0)
        n_voiced = np.count_nonzero(voiced, axis=1)
        out[some, f0_pos + 3] = (n_voiced / count)[some]
        has = n_voiced > 0
        if has.any():
            safe = np.where(voiced, log_f0, np.float32(0.0)).astype(np.float64)
            n = np.maximum(n_voiced, 1)
            spread = np.where(voiced, safe - (safe.sum(axis=1) / n)[:, None], 0.0)
            p10, p50, p90 = _masked_percentiles(log_f0, voiced, n_voiced, (10.0, 50.0, 90.0))
            out[has, f0_pos] = p50[has]
            out[has, f0_pos + 1] = (
                _SEMITONES_PER_OCTAVE * np.sqrt((spread * spread).sum(axis=1) / n)[has]
            )
            out[has, f0_pos + 2] = _SEMITONES_PER_OCTAVE * (p90 - p10)[has]
            pairs = voiced[:, 1:] & voiced[:, :-1]
            n_pairs = np.count_nonzero(pairs, axis=1)
            steps = np.where(pairs, np.abs(np.diff(safe, axis=1)), 0.0).sum(axis=1)
            jitter = n_pairs > 0
            out[jitter, f0_pos + 4] = _SEMITONES_PER_OCTAVE * steps[jitter] / n_pairs[jitter]
    return out, out_names


def _runs(rows: list[int]) -> tuple[tuple[slice, slice], ...]:
    """Split increasing row numbers into runs of consecutive rows: (source, target) slices."""
    runs: list[tuple[slice, slice]] = []
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i] != rows[i - 1] + 1:
            runs.append((slice(rows[start], rows[i - 1] + 1), slice(start, i)))
            start = i
    return tuple(runs)


def _masked_percentiles(
    x: np.ndarray, mask: np.ndarray, counts: np.ndarray, q: tuple[float, ...]
) -> list[np.ndarray]:
    """Percentiles (linear, as ``np.percentile``) of each row's masked values.

    ``x`` and ``mask`` have shape ``(n_rows, n)`` and ``counts`` holds the number of True
    values of each row; a row without any gets a value that means nothing.
    """
    ordered = np.sort(np.where(mask, x, np.float32(np.inf)), axis=1)
    last = np.maximum(counts, 1) - 1
    rows = np.arange(x.shape[0])
    result = []
    for percent in q:
        position = percent / 100.0 * last
        low = position.astype(np.intp)
        high = np.minimum(low + 1, last)
        fraction = (position - low).astype(np.float32)
        below, above = ordered[rows, low], ordered[rows, high]
        with np.errstate(invalid="ignore"):  # rows without a value: inf - inf
            result.append(below + fraction * (above - below))
    return result
