"""Cepstral coefficients (MFCC, LFCC, CQCC) and their regression deltas.

All three cepstra are computed from the one power spectrogram ``S`` of shape
``(n_bins, n_frames)``: a filterbank, ``10 log10``, then an orthonormal DCT-II. Coefficient 0
carries the overall level, so it is dropped: ``n`` coefficients numbered ``1..n`` are
returned. Band powers are floored at ``RELATIVE_FLOOR`` (-100 dB) of the frame's strongest
band, so the coefficients do not depend on the signal level even where a band is empty.
The filterbanks are built once per parameter set and cached (read-only arrays).
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal
import scipy.sparse

from voicecheck.constants import (
    CQ_BINS_PER_OCTAVE,
    CQ_FMIN_HZ,
    DELTA_WIDTH_FRAMES,
    N_CQCC,
    N_LFCC,
    N_LINEAR_FILTERS,
    N_MELS,
    N_MFCC,
)

from .spectral import RELATIVE_FLOOR, TINY_POWER, _as_power_spectrogram

_DB_PER_NEPER_POWER = np.float32(10.0 / np.log(10.0))


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=np.float32)
    array.flags.writeable = False
    return array


def _n_fft_of(S: np.ndarray) -> int:
    return 2 * (S.shape[0] - 1)


def _triangles(
    freqs: np.ndarray, lower: np.ndarray, centre: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    """Return unit-sum triangular filters, shape ``(len(centre), len(freqs))``."""
    f = freqs[None, :]
    rising = (f - lower[:, None]) / (centre - lower)[:, None]
    falling = (upper[:, None] - f) / (upper - centre)[:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    sums = weights.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise ValueError("a filter covers no FFT bin; use fewer filters or a longer FFT")
    return weights / sums


@lru_cache(maxsize=16)
def mel_filterbank(
    *, sr: float, n_fft: int, n_mels: int = N_MELS, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Return librosa's Slaney-normalised mel filterbank (cached, read-only).

    Parameters
    ----------
    sr : float
        Sample rate in Hz.
    n_fft : int
        FFT size in samples.
    n_mels : int
        Number of mel bands.
    fmin, fmax : float
        Frequency range in Hz; ``fmax=None`` means ``sr / 2``.

    Returns
    -------
    np.ndarray, shape (n_mels, 1 + n_fft // 2), float32
        Filter weights (per Hz of bandwidth, Slaney area normalisation).

    Examples
    --------
    >>> from voicecheck.features import mel_filterbank
    >>> mel_filterbank(sr=8_000, n_fft=256, n_mels=32).shape
    (32, 129)
    """
    weights = librosa.filters.mel(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float32
    )
    return _read_only(weights)


@lru_cache(maxsize=16)
def linear_filterbank(
    *,
    sr: float,
    n_fft: int,
    n_filters: int = N_LINEAR_FILTERS,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Return linearly spaced, half-overlapping triangular filters (cached, read-only).

    Parameters
    ----------
    sr : float
        Sample rate in Hz.
    n_fft : int
        FFT size in samples.
    n_filters : int
        Number of filters; their edges are ``n_filters + 2`` equally spaced frequencies.
    fmin, fmax : float
        Frequency range in Hz; ``fmax=None`` means ``sr / 2``.

    Returns
    -------
    np.ndarray, shape (n_filters, 1 + n_fft // 2), float32
        Filter weights, each filter summing to 1.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import linear_filterbank
    >>> fb = linear_filterbank(sr=8_000, n_fft=256, n_filters=32)
    >>> fb.shape, bool(np.allclose(fb.sum(axis=1), 1.0))
    ((32, 129), True)
    """
    fmax = sr / 2.0 if fmax is None else fmax
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    edges = np.linspace(fmin, fmax, n_filters + 2)
    return _read_only(_triangles(freqs, edges[:-2], edges[1:-1], edges[2:]))


@lru_cache(maxsize=16)
def constant_q_filterbank(
    *,
    sr: float,
    n_fft: int,
    fmin: float = CQ_FMIN_HZ,
    bins_per_octave: int = CQ_BINS_PER_OCTAVE,
    fmax: float | None = None,
) -> np.ndarray:
    """Return geometrically spaced (constant-Q) triangular filters (cached, read-only).

    Filter ``k`` is centred on ``fmin * 2**(k / bins_per_octave)`` and reaches its
    neighbours' centres, so its bandwidth is a fixed fraction of its centre frequency;
    where that is narrower than the FFT bin spacing ``sr / n_fft`` each side is widened to
    one bin, so every filter averages at least one bin. Filters are added while their upper
    edge stays at or below ``fmax``.

    Parameters
    ----------
    sr : float
        Sample rate in Hz.
    n_fft : int
        FFT size in samples.
    fmin : float
        Centre of the lowest filter in Hz.
    bins_per_octave : int
        Filters per octave.
    fmax : float or None
        Highest upper filter edge in Hz; ``None`` means ``sr / 2``.

    Returns
    -------
    np.ndarray, shape (n_filters, 1 + n_fft // 2), float32
        Filter weights, each filter summing to 1 (``bins_per_octave`` per octave from
        ``fmin``: 60 filters at 8 kHz from 125 Hz with 12 per octave).

    Examples
    --------
    >>> from voicecheck.features import constant_q_filterbank
    >>> constant_q_filterbank(sr=8_000, n_fft=256, fmin=125.0, bins_per_octave=12).shape
    (60, 129)
    """
    fmax = sr / 2.0 if fmax is None else fmax
    step = 2.0 ** (1.0 / bins_per_octave)
    n_filters = int(np.floor(bins_per_octave * np.log2(fmax / fmin) + 1e-9))
    if fmin <= 0 or n_filters < 1:
        raise ValueError(
            f"fmin={fmin} Hz, fmax={fmax} Hz: at least one constant-Q filter must fit between them"
        )
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    bin_hz = sr / n_fft
    centre = fmin * step ** np.arange(n_filters)
    lower = np.minimum(centre / step, centre - bin_hz)
    upper = np.maximum(centre * step, centre + bin_hz)
    return _read_only(_triangles(freqs, lower, centre, upper))


@lru_cache(maxsize=16)
def _dct_rows(n_inputs: int, n_coefficients: int) -> np.ndarray:
    """Rows ``1..n_coefficients`` of the orthonormal DCT-II matrix of size ``n_inputs``."""
    if not 1 <= n_coefficients < n_inputs:
        raise ValueError(
            f"{n_coefficients} coefficients requested from {n_inputs} filters; at most "
            f"{n_inputs - 1} are available once coefficient 0 is dropped"
        )
    full = scipy.fft.dct(np.eye(n_inputs), type=2, norm="ortho", axis=0)
    return _read_only(full[1 : n_coefficients + 1])


def _to_db(energies: np.ndarray) -> np.ndarray:
    """Band powers (bands as rows) to dB in place, floored relative to each frame's strongest."""
    floor = energies.max(axis=0, initial=0.0) * np.float32(RELATIVE_FLOOR) + np.float32(TINY_POWER)
    np.maximum(energies, floor, out=energies)
    np.log(energies, out=energies)
    energies *= _DB_PER_NEPER_POWER
    return energies


def _cepstrum(S: np.ndarray, filterbank: np.ndarray, n_coefficients: int) -> np.ndarray:
    return _dct_rows(filterbank.shape[0], n_coefficients) @ _to_db(filterbank @ S)


def cepstra(*, S: np.ndarray, sr: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compute :func:`mfcc`, :func:`lfcc` and :func:`cqcc` with their default settings at once.

    The three filterbanks are stacked into one sparse matrix (a triangle covers a few bins,
    so most of a dense product would multiply zeros) and applied in one product. The values
    are those of the three functions up to rounding.

    Parameters
    ----------
    S : np.ndarray, shape (n_bins, n_frames)
        Power spectrogram from :func:`power_spectrogram`.
    sr : float
        Sample rate in Hz.

    Returns
    -------
    mfcc, lfcc, cqcc : np.ndarray, shapes (N_MFCC, n_frames), (N_LFCC, n_frames),
        (N_CQCC, n_frames), float32

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import cepstra, cqcc, power_spectrogram
    >>> from voicecheck.constants import ANALYSIS_SR_HZ as sr
    >>> S = power_spectrogram(np.random.default_rng(0).standard_normal(sr).astype(np.float32))
    >>> together = cepstra(S=S, sr=sr)
    >>> [c.shape[0] for c in together]
    [20, 20, 20]
    >>> bool(np.allclose(together[2], cqcc(S=S, sr=sr), atol=1e-3))
    True
    """
    S = _as_power_spectrogram(S)
    stacked, families = _stacked_filterbanks(float(sr), _n_fft_of(S))
    energies = stacked @ np.ascontiguousarray(S)
    mfcc_, lfcc_, cqcc_ = (dct @ _to_db(energies[rows]) for rows, dct in families)
    return mfcc_, lfcc_, cqcc_


@lru_cache(maxsize=4)
def _stacked_filterbanks(sr: float, n_fft: int) -> tuple[scipy.sparse.csr_array, tuple]:
    """The mel, linear and constant-Q filterbanks of the defaults as one sparse matrix.

    Returns the matrix and, per family, its rows and its DCT rows.
    """
    banks = (
        mel_filterbank(sr=sr, n_fft=n_fft, n_mels=N_MELS, fmin=0.0, fmax=None),
        linear_filterbank(sr=sr, n_fft=n_fft, n_filters=N_LINEAR_FILTERS),
        constant_q_filterbank(
            sr=sr, n_fft=n_fft, fmin=CQ_FMIN_HZ, bins_per_octave=CQ_BINS_PER_OCTAVE
        ),
    )
    families = []
    start = 0
    for bank, n_coefficients in zip(banks, (N_MFCC, N_LFCC, N_CQCC), strict=True):
        rows = slice(start, start + bank.shape[0])
        families.append((rows, _dct_rows(bank.shape[0], n_coefficients)))
        start = rows.stop
    return scipy.sparse.csr_array(np.vstack(banks)), tuple(families)


def mfcc(
    *,
    S: np.ndarray,
    sr: float,
    n_mels: int = N_MELS,
    n_mfcc: int = N_MFCC,
    fmin: float = 0.0,
    fmax: float | None = None,
) -> np.ndarray:
    """Compute mel-frequency cepstral coefficients 1..n_mfcc from a power spectrogram.

    Equals ``librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None),
    n_mfcc=n_mfcc + 1)[1:]`` with ``mel`` the Slaney mel power spectrogram, except that band
    powers are floored relative to each frame's strongest band instead of at an absolute
    ``amin``.

    Parameters
    ----------
    S : np.ndarray, shape (n_bins, n_frames)
        Power spectrogram from :func:`power_spectrogram`.
    sr : float
        Sample rate in Hz.
    n_mels : int
        Number of mel bands.
    n_mfcc : int
        Number of coefficients returned (at most ``n_mels - 1``).
    fmin, fmax : float
        Mel filterbank range in Hz; ``fmax=None`` means ``sr / 2``.

    Returns
    -------
    np.ndarray, shape (n_mfcc, n_frames), float32
        Coefficients 1..n_mfcc of the DCT of the log mel power in dB (coefficient 0,
        the level, is dropped).

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import mfcc, power_spectrogram
    >>> from voicecheck.constants import ANALYSIS_SR_HZ as sr
    >>> y = np.random.default_rng(0).standard_normal(sr).astype(np.float32)
    >>> mfcc(S=power_spectrogram(y), sr=sr, n_mfcc=13).shape[0]
    13
    """
    S = _as_power_spectrogram(S)
    filterbank = mel_filterbank(sr=sr, n_fft=_n_fft_of(S), n_mels=n_mels, fmin=fmin, fmax=fmax)
    return _cepstrum(S, filterbank, n_mfcc)


def lfcc(
    *,
    S: np.ndarray,
    sr: float,
    n_filters: int = N_LINEAR_FILTERS,
    n_lfcc: int = N_LFCC,
) -> np.ndarray:
    """Compute linear-frequency cepstral coefficients 1..n_lfcc from a power spectrogram.

    Parameters
    ----------
    S : np.ndarray, shape (n_bins, n_frames)
        Power spectrogram from :func:`power_spectrogram`.
    sr : float
        Sample rate in Hz.
    n_filters : int
        Number of linearly spaced triangular filters from 0 Hz to ``sr / 2``.
    n_lfcc : int
        Number of coefficients returned (at most ``n_filters - 1``).

    Returns
    -------
    np.ndarray, shape (n_lfcc, n_frames), float32
        Coefficients 1..n_lfcc of the DCT of the log filterbank power in dB.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import lfcc, power_spectrogram
    >>> from voicecheck.constants import ANALYSIS_SR_HZ as sr
    >>> y = np.random.default_rng(0).standard_normal(sr).astype(np.float32)
    >>> lfcc(S=power_spectrogram(y), sr=sr, n_lfcc=13).shape[0]
    13
    """
    S = _as_power_spectrogram(S)
    filterbank = linear_filterbank(sr=sr, n_fft=_n_fft_of(S), n_filters=n_filters)
    return _cepstrum(S, filterbank, n_lfcc)


def cqcc(
    *,
    S: np.ndarray,
    sr: float,
    fmin: float = CQ_FMIN_HZ,
    bins_per_octave: int = CQ_BINS_PER_OCTAVE,
    n_cqcc: int = N_CQCC,
) -> np.ndarray:
    """Compute constant-Q cepstral coefficients 1..n_cqcc from a power spectrogram.

    The constant-Q spectrum is approximated by :func:`constant_q_filterbank` applied to the
    STFT power (no separate CQT), then ``10 log10`` and an orthonormal DCT-II over the
    geometrically spaced bins (no uniform resampling step).

    Parameters
    ----------
    S : np.ndarray, shape (n_bins, n_frames)
        Power spectrogram from :func:`power_spectrogram`.
    sr : float
        Sample rate in Hz.
    fmin : float
        Centre of the lowest constant-Q filter in Hz.
    bins_per_octave : int
        Filters per octave.
    n_cqcc : int
        Number of coefficients returned (at most the number of filters minus 1).

    Returns
    -------
    np.ndarray, shape (n_cqcc, n_frames), float32
        Coefficients 1..n_cqcc of the DCT of the log constant-Q power in dB.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import cqcc, power_spectrogram
    >>> from voicecheck.constants import ANALYSIS_SR_HZ as sr
    >>> y = np.random.default_rng(0).standard_normal(sr).astype(np.float32)
    >>> cqcc(S=power_spectrogram(y), sr=sr, n_cqcc=13).shape[0]
    13
    """
    S = _as_power_spectrogram(S)
    filterbank = constant_q_filterbank(
        sr=sr, n_fft=_n_fft_of(S), fmin=fmin, bins_per_octave=bins_per_octave
    )
    return _cepstrum(S, filterbank, n_cqcc)


def deltas(F: np.ndarray, *, width: int = DELTA_WIDTH_FRAMES, order: int = 1) -> np.ndarray:
    """Compute local regression derivatives of frame features along time.

    A Savitzky-Golay fit of polynomial degree ``order`` over ``width`` frames, as in
    ``librosa.feature.delta(F, width=width, order=order, mode="nearest")``: the edges repeat
    the first and last frame. Frame ``i`` depends on frames ``i - width // 2`` to
    ``i + width // 2`` only, for ``order=2`` as well (it is not a delta of a delta).

    Parameters
    ----------
    F : np.ndarray, shape (..., n_frames)
        Frame features, time on the last axis.
    width : int
        Odd number of frames in the regression window, at least 3.
    order : int
        Derivative order, 1 (delta) or 2 (delta-delta).

    Returns
    -------
    np.ndarray, shape (..., n_frames), float32
        Derivative in units of ``F`` per frame (per frame squared for ``order=2``).

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import deltas
    >>> ramp = np.arange(20, dtype=np.float32)[None, :] * 0.5
    >>> bool(np.allclose(deltas(ramp)[0, 4:-4], 0.5))
    True
    """
    if width < 3 or width % 2 == 0:
        raise ValueError(f"width={width}; an odd number of frames >= 3 is expected")
    if order not in (1, 2) or order >= width:
        raise ValueError(f"order={order}; 1 or 2 is expected")
    F = np.asarray(F, dtype=np.float32)
    if F.shape[-1] == 0:
        return F.copy()
    return scipy.ndimage.correlate1d(F, _delta_weights(width, order), axis=-1, mode="nearest")


@lru_cache(maxsize=8)
def _delta_weights(width: int, order: int) -> np.ndarray:
    """Savitzky-Golay derivative weights, applied by correlation (oldest frame first)."""
    weights = scipy.signal.savgol_coeffs(width, order, deriv=order, use="dot")
    weights.flags.writeable = False
    return weights
