"""The power spectrogram and the spectral-shape descriptors derived from it.

Every function here works on the one power spectrogram ``S`` of shape ``(n_bins, n_frames)``
made by :func:`power_spectrogram` (``n_bins = 1 + n_fft // 2``); frame ``i`` of every output
depends on column ``i`` of ``S`` only, except :func:`spectral_flux`, which also looks at
column ``i - 1``.

Conventions, chosen to match librosa where librosa is local in time: centroid, bandwidth
and roll-off weight frequencies by the *magnitude* ``sqrt(S)``; flatness is computed on the
power; contrast compares the loudest and quietest *power* bins of each band in dB (librosa
applies a global ``top_db`` clip, which would make a frame depend on the whole signal).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft
import scipy.signal

from voicecheck.constants import (
    ANALYSIS_SR_HZ,
    CONTRAST_BANDS,
    ENVELOPE_LIFTER,
    FINE_BANDS,
    FRAME_LENGTH,
    HOP_LENGTH,
    LPC_ORDER,
    N_SUBBANDS,
    PHASE_BANDS,
    ROLLOFF_PERCENT,
    WIN_LENGTH,
)

from ._framing import as_mono_float32, frame_view

RELATIVE_FLOOR = 1e-10
"""Powers are floored at this fraction of the frame's largest power (-100 dB) before a
logarithm or a ratio, so that no descriptor depends on the signal level."""

TINY_POWER = 1e-30
"""Absolute floor (power units of ``S``) that keeps digitally silent frames finite."""

_DB_PER_NEPER_POWER = np.float32(10.0 / np.log(10.0))

_FINE_FLOOR = np.float32(1e-12)
"""Power floor of the log spectrum whose fine structure :func:`fine_structure` measures."""


@lru_cache(maxsize=16)
def _padded_window(n_fft: int, win_length: int) -> np.ndarray:
    """Return a periodic Hann window of ``win_length`` centred in ``n_fft`` zeros."""
    if not 1 <= win_length <= n_fft:
        raise ValueError(f"win_length={win_length}; it must be between 1 and n_fft={n_fft}")
    window = np.zeros(n_fft, dtype=np.float32)
    start = (n_fft - win_length) // 2
    window[start : start + win_length] = scipy.signal.get_window("hann", win_length, fftbins=True)
    window.flags.writeable = False
    return window


def _fft_frequencies(n_bins: int, sr: float) -> np.ndarray:
    """Return the centre frequency in Hz of each of ``n_bins`` rfft bins (float64)."""
    return np.arange(n_bins, dtype=np.float64) * (sr / (2.0 * (n_bins - 1)))


def _as_power_spectrogram(S: np.ndarray) -> np.ndarray:
    """Return ``S`` as a float32 ``(n_bins, n_frames)`` array, refusing anything else."""
    S = np.asarray(S, dtype=np.float32)
    if S.ndim != 2 or S.shape[0] < 2:
        raise ValueError(
            f"S has shape {S.shape}; a power spectrogram of shape (n_bins >= 2, n_frames) "
            "is expected"
        )
    return S


def power_spectrogram(
    y: np.ndarray,
    *,
    sr: float = ANALYSIS_SR_HZ,
    n_fft: int = FRAME_LENGTH,
    win_length: int = WIN_LENGTH,
    hop_length: int = HOP_LENGTH,
) -> np.ndarray:
    """Compute the power spectrogram with non-centred frames.

    Frame ``i`` covers samples ``[i * hop_length, i * hop_length + n_fft)``; a periodic Hann
    window of ``win_length`` samples sits in the middle of it. The signal is not padded, so
    ``n_frames = 1 + (len(y) - n_fft) // hop_length`` (0 when ``y`` is shorter than
    ``n_fft``). This equals ``abs(librosa.stft(y, center=False, ...)) ** 2``.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal, full scale = 1.0.
    sr : float
        Sample rate in Hz. Accepted for a uniform signature; the spectrogram itself does
        not depend on it.
    n_fft : int
        FFT size (and frame length) in samples.
    win_length : int
        Hann window length in samples, at most ``n_fft``.
    hop_length : int
        Hop between frames in samples.

    Returns
    -------
    np.ndarray, shape (1 + n_fft // 2, n_frames), float32
        Power ``|STFT|**2`` in squared full-scale units. The array is a transposed view
        (Fortran-ordered), so each frame is contiguous.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import power_spectrogram
    >>> sr = 8_000
    >>> y = np.sin(2 * np.pi * 1000 * np.arange(sr) / sr).astype(np.float32)
    >>> S = power_spectrogram(y, sr=sr, n_fft=256, win_length=200, hop_length=80)
    >>> S.shape, S.dtype
    ((129, 97), dtype('float32'))
    >>> int(S[:, 10].argmax()) * sr / 256  # Hz
    1000.0
    """
    if sr <= 0:
        raise ValueError(f"sr={sr}; a positive sample rate in Hz is expected")
    y = as_mono_float32(y)
    window = _padded_window(n_fft, win_length)
    framed = frame_view(y, frame_length=n_fft, hop_length=hop_length)
    n_bins = 1 + n_fft // 2
    if framed.shape[0] == 0:
        return np.zeros((n_bins, 0), dtype=np.float32)
    spectrum = scipy.fft.rfft(framed * window, axis=1, overwrite_x=True)
    return power_of(spectrum)


def spectrum_frames(
    y: np.ndarray,
    *,
    n_fft: int = FRAME_LENGTH,
    win_length: int = WIN_LENGTH,
    hop_length: int = HOP_LENGTH,
    frames: np.ndarray | None = None,
) -> np.ndarray:
    """Return the complex spectrum of each frame, the frames of :func:`power_spectrogram`.

    ``frames`` (increasing frame numbers) limits the work to those frames, one row each in
    that order; by default every frame is transformed.

    Returns
    -------
    np.ndarray, shape (n_frames, 1 + n_fft // 2), complex64
        One frame per row; ``power_of`` of it is :func:`power_spectrogram` of ``y``.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.random.default_rng(0).standard_normal(800).astype(np.float32)
    >>> X = spectrum_frames(y)
    >>> X.shape, bool(np.array_equal(power_of(X), power_spectrogram(y)))
    ((7, 129), True)
    """
    y = as_mono_float32(y)
    window = _padded_window(n_fft, win_length)
    framed = frame_view(y, frame_length=n_fft, hop_length=hop_length)
    if frames is not None:
        framed = framed[frames]
    if framed.shape[0] == 0:
        return np.zeros((0, 1 + n_fft // 2), dtype=np.complex64)
    return scipy.fft.rfft(framed * window, axis=1)


def power_of(spectrum: np.ndarray) -> np.ndarray:
    """Return ``|spectrum|**2`` of frames as rows, as a ``(n_bins, n_frames)`` power spectrogram.

    ``spectrum`` is the complex64 output of :func:`spectrum_frames`; it is left unchanged.
    """
    parts = spectrum.view(np.float32).reshape(spectrum.shape[0], spectrum.shape[1], 2)
    power = np.square(parts[..., 0])
    power += np.square(parts[..., 1])
    return power.T


def _magnitude_moments(Mt: np.ndarray, freqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the magnitude-weighted mean and standard deviation of frequency per frame.

    ``Mt`` is the magnitude with frames first, shape ``(n_frames, n_bins)``. Silent frames
    get 0 Hz for both.
    """
    basis = np.stack([np.ones_like(freqs), freqs, freqs * freqs], axis=1)
    moments = Mt.astype(np.float64) @ basis
    total = moments[:, 0]
    safe = np.where(total > 0, total, 1.0)
    mean = moments[:, 1] / safe
    variance = np.maximum(moments[:, 2] / safe - mean * mean, 0.0)
    return mean.astype(np.float32), np.sqrt(variance).astype(np.float32)


def spectral_centroid(*, S: np.ndarray, sr: float) -> np.ndarray:
    """Compute the magnitude-weighted mean frequency of each frame.

    Parameters
    ----------
    S : np.ndarray, shape (n_bins, n_frames)
        Power spectrogram from :func:`power_spectrogram`.
    sr : float
        Sample rate in Hz.

    Returns
    -------
    np.ndarray, shape (n_frames,), float32
        Spectral centroid in Hz; 0 for a silent frame.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.constants import ANALYSIS_SR_HZ as sr
    >>> from voicecheck.features import power_spectrogram, spectral_centroid
    >>> y = np.sin(2 * np.pi * 1000 * np.arange(sr) / sr).astype(np.float32)
    >>> centroid = spectral_centroid(S=power_spectrogram(y), sr=sr)
    >>> bool(abs(np.median(centroid) - 1000) < 20)
    True
    """
    S = _as_power_spectrogram(S)
    Mt = np.sqrt(S.T)
    return _magnitude_moments(Mt, _fft_frequencies(S.shape[0], sr))[0]


def spectral_bandwidth(*, S: np.ndarray, sr: float) -> np.ndarray:
    """Compute the magnitude-weighted standard deviation of frequency around the centroid.

    This is librosa's ``spectral_bandwidth`` with ``p=2`` (and normalised weights).

    Parameters
    ----------
    S : np.ndarray, shape (n_bins, n_frames)
        Power spectrogram from :func:`power_spectrogram`.
    sr : float
        Sample rate in Hz.

    Returns
    -------
    np.ndarray, shape (n_frames,), float32
        Spectral bandwidth in Hz; 0 for a silent frame.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.constants import ANALYSIS_SR_HZ as sr
    >>> from voicecheck.features import power_spectrogram, spectral_bandwidth
    >>> noise = np.random.default_rng(0).standard_normal(sr).astype(np.float32)
    >>> tone = np.sin(2 * np.pi * 1000 * np.arange(sr) / sr).astype(np.float32)
    >>> wide = spectral_bandwidth(S=power_spectrogram(noise), sr=sr)
    >>> narrow = spectral_bandwidth(S=power_spectrogram(tone), sr=sr)
    >>> bool(wide.mean() > sr / 8 > 100 > narrow.mean())
    True
    """
    S = _as_power_spectrogram(S)
    Mt = np.sqrt(S.T)
    return _magnitude_moments(Mt, _fft_frequencies(S.shape[0], sr))[1]


def _frame_floor(Pt: np.ndarray, relative_floor: float) -> np.ndarray:
    """Return each frame's power floor, shape ``(n_frames, 1)``."""
    peak = Pt.max(axis=1, keepdims=True, initial=0.0)
    return peak * np.float32(relative_floor) + np.float32(TINY_POWER)


def _flatness(Pt: np.ndarray, floor: np.ndarray, log_power: np.ndarray | None = None) -> np.ndarray:
    floored = np.maximum(Pt, floor)
    mean = _mean_of_rows(Pt.shape[1])
    if log_power is None:
        log_floored = np.log(floored)
    else:  # log(max(P, floor)) = max(log P, log floor): the logarithm is monotonic
        log_floored = np.maximum(log_power, np.log(floor))
    return (np.exp(log_floored @ mean) / (floored @ mean)).astype(np.float32)


@lru_cache(maxsize=8)
def _mean_of_rows(n: int) -> np.ndarray:
    """Column of ``1 / n``: a row mean as a matrix product (a short-axis reduction is slow)."""
    column = np.full(n, 1.0 / n, dtype=np.float32)
    column.flags.writeable = False
    return column


def log_power_of(S: np.ndarray) -> np.ndarray:
    """Return the natural logarithm of a power spectrogram with frames as rows.

    Powers are floored at ``TINY_POWER`` first. :func:`frame_features` takes this once and
    gives it to :func:`spectral_shape` and :func:`fine_structure`, which floor it further
    as their own definitions ask.

    Parameters
    ----------
    S : np.ndarray, shape (n_bins, n_frames)
        Power spectrogram from :func:`power_spectrogram`.

    Returns
    -------
    np.ndarray, shape (n_frames, n_bins), float32

    Examples
    --------
    >>> import numpy as np
    >>> S = np.array([[1.0, 0.0], [np.e, 0.0]], np.float32)  # 2 bins, 2 frames
    >>> [[round(float(v), 1) for v in frame] for frame in log_power_of(S)]
    [[0.0, 1.0], [-69.1, -69.1]]
    """
    S = _as_power_spectrogram(S)
    return np.log(np.maximum(S.T, np.float32(TINY_POWER)))


def spectral_flatness(*, S: np.ndarray, relative_floor: float = RELATIVE_FLOOR) -> np.ndarray:
    """Compute the Wiener entropy (geometric over arithmetic mean) of each frame's power.

    Parameters
    ----------
    S : np.ndarray, shape (n_bins, n_frames)
        Power spectrogram from :func:`power_spectrogram`.
    relative_floor : float
        Every power value is raised to at least this fraction of the frame's largest one
        before the means.

    Returns
    -------
    np.ndarray, shape (n_frames,), float32
        Flatness between 0 (a pure tone) and 1 (a perfectly flat spectrum; also a silent
        frame). A periodogram of white noise reads about ``exp(-0.5772) = 0.56`` because
        each bin's power is exponentially distributed.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import power_spectrogram, spectral_flatness
    >>> noise = np.random.default_rng(0).standard_normal(8_000).astype(np.float32)
    >>> round(float(spectral_flatness(S=power_spectrogram(noise)).mean()), 1)
    0.6
    """
    S = _as_power_spectrogram(S)
    return _flatness(S.T, _frame_floor(S.T, relative_floor))


def _rolloff(Mt: np.ndarray, freqs: np.ndarray, roll_percent: float) -> np.ndarray:
    # The running sum goes bin by bin over all frames at once (frames contiguous): the
    # same additions in the same order as a cumulative sum along each frame, but vectorised.
    cumulative = np.ascontiguousarray(Mt.T)
    for k in range(1, cumulative.shape[0]):
        np.add(cumulative[k - 1], cumulative[k], out=cumulative[k])
    threshold = np.float32(roll_percent) * cumulative[-1]
    index = np.count_nonzero(cumulative < threshold, axis=0)
    return freqs[np.minimum(index, freqs.size - 1)].astype(np.float32)


def spectral_rolloff(
    *, S: np.ndarray, sr: float, roll_percent: float = ROLLOFF_PERCENT
) -> np.ndarray:
    """Compute the frequency below which ``roll_percent`` of each frame's magnitude lies.

    Parameters
    ----------
    S : np.ndarray, shape (n_bins, n_frames)
        Power spectrogram from :func:`power_spectrogram`.
    sr : float
        Sample rate in Hz.
    roll_percent : float
        Fraction of the summed magnitude, between 0 and 1.

    Returns
    -------
    np.ndarray, shape (n_frames,), float32
        Roll-off frequency in Hz (the centre of the first bin where the cumulative
        magnitude reaches the fraction); 0 for a silent frame.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.constants import ANALYSIS_SR_HZ as sr
    >>> from voicecheck.features import power_spectrogram, spectral_rolloff
    >>> t = np.arange(sr) / sr
    >>> low = np.sin(2 * np.pi * 300 * t).astype(np.float32)
    >>> high = np.sin(2 * np.pi * 3000 * t).astype(np.float32)
    >>> low_hz = spectral_rolloff(S=power_spectrogram(low), sr=sr)
    >>> high_hz = spectral_rolloff(S=power_spectrogram(high), sr=sr)
    >>> bool(np.all(low_hz < 1000) and np.all(high_hz > 2500))
    True
    """
    if not 0.0 < roll_percent < 1.0:
        raise ValueError(f"roll_percent={roll_percent}; it must be between 0 and 1")
    S = _as_power_spectrogram(S)
    return _rolloff(np.sqrt(S.T), _fft_frequencies(S.shape[0], sr), roll_percent)


def _contrast_band_edges(
    n_bins: int, sr: float, n_bands: int, fmin: float | None
) -> tuple[tuple[int, int], ...]:
    """Return ``(first_bin, stop_bin)`` of each of the ``n_bands + 1`` contrast bands."""
    nyquist = sr / 2.0
    if fmin is None:
        fmin = nyquist / 2.0**n_bands
    edges_hz = fmin * 2.0 ** np.arange(n_bands)
    if n_bands < 1 or fmin <= 0 or edges_hz[-1] >= nyquist:
        raise ValueError(
            f"n_bands={n_bands}, fmin={fmin} Hz: the top band edge {edges_hz[-1]:.0f} Hz must "
            f"lie below the Nyquist frequency {nyquist:.0f} Hz"
        )
    bin_hz = nyquist / (n_bins - 1)
    cuts = [0, *np.ceil(edges_hz / bin_hz - 1e-9).astype(int).tolist(), n_bins]
    bands = tuple(zip(cuts[:-1], cuts[1:], strict=True))
    if any(stop <= start for start, stop in bands):
        raise ValueError(
            f"n_bands={n_bands}, fmin={fmin} Hz: a contrast band holds no FFT bin of "
            f"{bin_hz:.2f} Hz; raise fmin or use fewer bands"
        )
    return bands


def _contrast(
    Pt: np.ndarray, floor: np.ndarray, sr: float, n_bands: int, fmin: float | None, quantile: float
) -> np.ndarray:
    bands = _contrast_band_edges(Pt.shape[1], sr, n_bands, fmin)
    counts = [max(1, int(round(quantile * (stop - start)))) for start, stop in bands]
    floor = floor[:, 0]
    if Pt.shape[0] == 0:
        return np.zeros((len(bands), 0), dtype=np.float32)
    if max(counts) == 1:
        # One bin each for the peak and the valley: every band at once (the bands are
        # contiguous and cover the spectrum).
        starts = [start for start, _ in bands]
        peak = np.maximum.reduceat(Pt, starts, axis=1).T
        valley = np.minimum.reduceat(Pt, starts, axis=1).T
        return np.log((peak + floor) / (valley + floor)) * _DB_PER_NEPER_POWER
    out = np.empty((len(bands), Pt.shape[0]), dtype=np.float32)
    for row, ((start, stop), k) in enumerate(zip(bands, counts, strict=True)):
        band = Pt[:, start:stop]
        width = stop - start
        if k == 1:
            peak, valley = band.max(axis=1), band.min(axis=1)
        else:
            ordered = np.partition(band, (k - 1, width - k), axis=1)
            peak = ordered[:, width - k :].mean(axis=1)
            valley = ordered[:, :k].mean(axis=1)
        out[row] = np.log((peak + floor) / (valley + floor)) * _DB_PER_NEPER_POWER
    return out


def spectral_contrast(
    *,
    S: np.ndarray,
    sr: float,
    n_bands: int = CONTRAST_BANDS,
    fmin: float | None = None,
    quantile: float = 0.02,
) -> np.ndarray:
    """Compute the peak-to-valley power ratio in octave bands.

    The bands are ``[0, fmin)``, ``[fmin, 2 fmin)``, ..., ``[fmin 2**(n_bands-1), sr/2]``.
    In each band the mean of the ``max(1, round(quantile * width))`` largest power bins is
    compared with the mean of as many smallest ones.

    Parameters
    ----------
    S : np.ndarray, shape (n_bins, n_frames)
        Power spectrogram from :func:`power_spectrogram`.
    sr : float
        Sample rate in Hz.
    n_bands : int
        Number of octave bands above ``fmin``; the output has ``n_bands + 1`` rows.
    fmin : float or None
        Lower edge of the first octave band in Hz; by default ``sr / 2**(n_bands + 1)``, so
        the top band is the upper half of the spectrum (250 Hz at 8 kHz with 4 bands).
    quantile : float
        Fraction of each band's bins averaged for the peak and for the valley.

    Returns
    -------
    np.ndarray, shape (n_bands + 1, n_frames), float32
        Contrast in dB (``10 log10`` of a power ratio; ``RELATIVE_FLOOR`` times the frame's
        largest power is added to both); 0 for a silent frame.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import power_spectrogram, spectral_contrast
    >>> sr = 8_000
    >>> y = np.sin(2 * np.pi * 1500 * np.arange(sr) / sr).astype(np.float32)
    >>> S = power_spectrogram(y, n_fft=256, win_length=200, hop_length=80)
    >>> contrast = spectral_contrast(S=S, sr=sr, n_bands=4)  # bands split at 250, 500, 1k, 2k Hz
    >>> contrast.shape
    (5, 97)
    >>> int(contrast.mean(axis=1).argmax())  # the 1-2 kHz band holds the tone
    3
    """
    if not 0.0 < quantile < 0.5:
        raise ValueError(f"quantile={quantile}; it must be between 0 and 0.5")
    S = _as_power_spectrogram(S)
    Pt = S.T
    return _contrast(Pt, _frame_floor(Pt, RELATIVE_FLOOR), sr, n_bands, fmin, quantile)


def _flux(Mt: np.ndarray, Pt: np.ndarray) -> np.ndarray:
    out = np.zeros(Mt.shape[0], dtype=np.float32)
    if Mt.shape[0] < 2:
        return out
    norm = np.sqrt(Pt.sum(axis=1, keepdims=True))
    unit = Mt / np.where(norm > 0, norm, np.float32(1.0))
    step = unit[1:] - unit[:-1]
    out[1:] = np.sqrt(np.einsum("ij,ij->i", step, step))
    return out


def spectral_flux(*, S: np.ndarray) -> np.ndarray:
    """Compute the change of the normalised magnitude spectrum from the previous frame.

    Each frame's magnitude spectrum is scaled to unit Euclidean norm (a silent frame stays
    all zeros); the flux is the Euclidean distance to the previous frame's, so it does not
    depend on the signal level.

    Parameters
    ----------
    S : np.ndarray, shape (n_bins, n_frames)
        Power spectrogram from :func:`power_spectrogram`.

    Returns
    -------
    np.ndarray, shape (n_frames,), float32
        Flux between 0 (no change) and ``sqrt(2)`` (disjoint spectra), dimensionless; the
        first frame is 0.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.constants import ANALYSIS_SR_HZ as sr
    >>> from voicecheck.features import power_spectrogram, spectral_flux
    >>> t = np.arange(sr) / sr
    >>> y = np.where(t < 0.5, np.sin(2 * np.pi * 500 * t), np.sin(2 * np.pi * 2500 * t))
    >>> flux = spectral_flux(S=power_spectrogram(y.astype(np.float32)))
    >>> bool(flux.max() > 1.0 and np.median(flux) < 0.01)
    True
    """
    S = _as_power_spectrogram(S)
    return _flux(np.sqrt(S.T), S.T)


def spectral_shape_names(*, n_bands: int = CONTRAST_BANDS) -> tuple[str, ...]:
    """Return the row names of :func:`spectral_shape`, in order.

    Parameters
    ----------
    n_bands : int
        Number of contrast octave bands (the contrast has ``n_bands + 1`` rows).

    Returns
    -------
    tuple of str
        ``centroid_hz, bandwidth_hz, flatness, rolloff_hz, contrast_db_1 ..
        contrast_db_{n_bands+1}, flux``.

    Examples
    --------
    >>> from voicecheck.features import spectral_shape_names
    >>> spectral_shape_names(n_bands=2)  # doctest: +NORMALIZE_WHITESPACE
    ('centroid_hz', 'bandwidth_hz', 'flatness', 'rolloff_hz', 'contrast_db_1',
     'contrast_db_2', 'contrast_db_3', 'flux')
    """
    contrast = tuple(f"contrast_db_{k}" for k in range(1, n_bands + 2))
    return ("centroid_hz", "bandwidth_hz", "flatness", "rolloff_hz", *contrast, "flux")


def spectral_shape(
    *,
    S: np.ndarray,
    sr: float,
    roll_percent: float = ROLLOFF_PERCENT,
    n_bands: int = CONTRAST_BANDS,
    fmin: float | None = None,
    quantile: float = 0.02,
    log_power: np.ndarray | None = None,
) -> np.ndarray:
    """Compute every spectral-shape descriptor at once, sharing the intermediate arrays.

    Parameters
    ----------
    S : np.ndarray, shape (n_bins, n_frames)
        Power spectrogram from :func:`power_spectrogram`.
    sr : float
        Sample rate in Hz.
    roll_percent : float
        See :func:`spectral_rolloff`.
    n_bands, fmin, quantile
        See :func:`spectral_contrast`.
    log_power : np.ndarray or None
        :func:`log_power_of` of ``S`` when the caller has it already (same values).

    Returns
    -------
    np.ndarray, shape (n_bands + 6, n_frames), float32
        Rows named by :func:`spectral_shape_names`: centroid (Hz), bandwidth (Hz),
        flatness (0-1), roll-off (Hz), contrast (``n_bands + 1`` rows, dB), flux (0-sqrt 2).

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import power_spectrogram, spectral_shape
    >>> sr = 8_000
    >>> y = np.sin(2 * np.pi * 1000 * np.arange(sr) / sr).astype(np.float32)
    >>> S = power_spectrogram(y, n_fft=256, win_length=200, hop_length=80)
    >>> spectral_shape(S=S, sr=sr, n_bands=4).shape
    (10, 97)
    """
    if not 0.0 < roll_percent < 1.0:
        raise ValueError(f"roll_percent={roll_percent}; it must be between 0 and 1")
    S = _as_power_spectrogram(S)
    Pt = S.T
    Mt = np.sqrt(Pt)
    freqs = _fft_frequencies(S.shape[0], sr)
    out = np.empty((n_bands + 6, S.shape[1]), dtype=np.float32)
    out[0], out[1] = _magnitude_moments(Mt, freqs)
    floor = _frame_floor(Pt, RELATIVE_FLOOR)
    out[2] = _flatness(Pt, floor, log_power)
    out[3] = _rolloff(Mt, freqs, roll_percent)
    out[4 : n_bands + 5] = _contrast(Pt, floor, sr, n_bands, fmin, quantile)
    out[n_bands + 5] = _flux(Mt, Pt)
    return out


def subband_energies(*, S: np.ndarray, n_bands: int = N_SUBBANDS) -> np.ndarray:
    """Log energy of equal-width sub-bands of each frame.

    Parameters
    ----------
    S : np.ndarray, shape (n_fft // 2 + 1, n_frames)
        Power spectrogram from :func:`power_spectrogram`.
    n_bands : int
        Number of bands; the bins above DC are split into this many equal groups.

    Returns
    -------
    np.ndarray, shape (n_bands, n_frames), float32
        10 log10 of each band's mean power (dB re full scale, floored at -120 dB). The
        analysis normalises the speech level before any feature, so in the model a band's
        level is relative to the speech level; its spread over time and its movement from
        frame to frame are summarised per segment too (a fixed channel response shifts a
        band's level but not its spread).

    Examples
    --------
    >>> import numpy as np
    >>> S = np.ones((129, 3), np.float32); S[1:5] = 100.0
    >>> subband_energies(S=S, n_bands=32)[:2, 0].tolist()
    [20.0, 0.0]
    """
    S = _as_power_spectrogram(S)
    n_bins = S.shape[0] - 1
    width = n_bins // n_bands
    rows = S.T  # frames as rows (contiguous when S comes from power_spectrogram)
    stop = 1 + width * n_bands
    # the bands' sums as ``width`` strided slices added: a reduction over a short axis is slow
    total = rows[:, 1:stop:width].copy()
    for offset in range(2, 1 + width):
        total += rows[:, offset:stop:width]
    total *= np.float32(1.0 / width)
    np.maximum(total, np.float32(1e-12), out=total)
    # the natural logarithm has a vectorised float32 kernel; log10 does not (4x slower)
    np.log(total, out=total)
    total *= _DB_PER_NEPER_POWER
    return np.ascontiguousarray(total.T)


def fine_structure(
    *,
    S: np.ndarray,
    n_bands: int = FINE_BANDS,
    lifter: int = ENVELOPE_LIFTER,
    log_power: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Depth of the spectral fine structure (harmonics against noise) per band.

    The log spectrum minus its cepstrally smoothed envelope (the first ``lifter``
    coefficients) leaves the harmonic peaks and the noise between them. Per band, the
    standard deviation of that residual and the height of its highest peak over its
    median measure how clean the harmonics are: vocoders and codecs that re-synthesise
    the excitation leave them too clean or too noisy, most visibly at 2-4 kHz.

    Parameters
    ----------
    S : np.ndarray, shape (n_fft // 2 + 1, n_frames)
        Power spectrogram from :func:`power_spectrogram`.
    n_bands : int
        Equal-width bands of the bins above DC.
    lifter : int
        Cepstral coefficients kept for the envelope.
    log_power : np.ndarray or None
        :func:`log_power_of` of ``S`` when the caller has it already (same values).

    Returns
    -------
    spread, peak : np.ndarray, shape (n_bands, n_frames), float32
        Residual standard deviation and peak-over-median per band, in natural-log units.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import power_spectrogram
    >>> sr = 8000
    >>> t = np.arange(sr) / sr
    >>> harmonic = sum(np.sin(2 * np.pi * 200 * k * t) for k in range(1, 19)) / 18
    >>> noise = np.random.default_rng(0).standard_normal(sr) * 0.1
    >>> _, peak_h = fine_structure(S=power_spectrogram(harmonic.astype(np.float32)))
    >>> _, peak_n = fine_structure(S=power_spectrogram(noise.astype(np.float32)))
    >>> bool(np.median(peak_h[0]) > np.median(peak_n[0]))
    True
    """
    S = _as_power_spectrogram(S)
    analysis, synthesis = _envelope_basis(S.shape[0], lifter)
    # frames as rows (S is a transposed view, so S.T is contiguous)
    if log_power is None:
        log_s = np.log(np.maximum(S.T, _FINE_FLOOR))
    else:
        log_s = np.maximum(log_power, np.log(np.full(1, _FINE_FLOOR)))
    residual = log_s - (log_s @ analysis) @ synthesis
    n_bins = S.shape[0] - 1
    width = n_bins // n_bands
    average = _band_average(S.shape[0], n_bands)
    # band means as matrix products (a reduction over a short axis is slow); the spread
    # around each band's own mean, which a band far from the envelope needs in float32
    centred = residual - (residual @ average) @ _band_indicator(S.shape[0], n_bands)
    spread = np.sqrt(np.square(centred, out=centred) @ average)
    ordered = np.sort(residual[:, 1 : 1 + width * n_bands].reshape(-1, n_bands, width), axis=2)
    peak = ordered[..., -1] - _median_of_sorted(ordered)
    return np.ascontiguousarray(spread.T), np.ascontiguousarray(peak.T)


def _median_of_sorted(ordered: np.ndarray) -> np.ndarray:
    """``np.median`` of rows that are already sorted along the last axis."""
    n = ordered.shape[-1]
    if n % 2:
        return ordered[..., n // 2]
    return (ordered[..., n // 2 - 1] + ordered[..., n // 2]) * np.float32(0.5)


@lru_cache(maxsize=16)
def _band_indicator(n_bins: int, n_bands: int) -> np.ndarray:
    """0/1 matrix, shape ``(n_bands, n_bins)``: a band value times it fills the band's bins."""
    matrix = (_band_average(n_bins, n_bands).T > 0).astype(np.float32)
    matrix.flags.writeable = False
    return matrix


@lru_cache(maxsize=16)
def _band_average(n_bins: int, n_bands: int) -> np.ndarray:
    """Matrix, shape ``(n_bins, n_bands)``, whose product with spectra as rows gives band means.

    The bands are the ``n_bands`` equal groups of ``(n_bins - 1) // n_bands`` bins above DC
    (bins past the last whole group are left out); column ``b`` averages band ``b``.
    """
    width = (n_bins - 1) // n_bands
    if width < 1:
        raise ValueError(f"n_bands={n_bands}; at most {n_bins - 1} bands fit in {n_bins} bins")
    matrix = np.zeros((n_bins, n_bands), dtype=np.float32)
    for band in range(n_bands):
        matrix[1 + band * width : 1 + (band + 1) * width, band] = 1.0 / width
    matrix.flags.writeable = False
    return matrix


@lru_cache(maxsize=8)
def _envelope_basis(n_bins: int, lifter: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the matrices that give the cepstral envelope of log spectra as rows.

    ``(log_s @ analysis) @ synthesis`` equals ``rfft(liftered(irfft(log_s)))``: the first
    ``lifter`` cepstral coefficients of the real, even log spectrum (``analysis``, shape
    ``(n_bins, lifter)``), and the even cosine series they make (``synthesis``, shape
    ``(lifter, n_bins)``). Two thin matrix products cost a fifth of the two FFTs. Both are
    float32, like the spectra.
    """
    n_fft = 2 * (n_bins - 1)
    if not 1 <= lifter <= n_bins - 1:
        raise ValueError(f"lifter={lifter}; it must be between 1 and {n_bins - 1}")
    bins = np.arange(n_bins)
    quefrency = np.arange(lifter)
    phase = 2 * np.pi * np.outer(bins, quefrency) / n_fft
    bin_weight = np.full(n_bins, 2.0)
    bin_weight[[0, -1]] = 1.0
    analysis = bin_weight[:, None] * np.cos(phase) / n_fft
    coefficient_weight = np.full(lifter, 2.0)
    coefficient_weight[0] = 1.0
    synthesis = coefficient_weight[:, None] * np.cos(phase.T)
    analysis, synthesis = analysis.astype(np.float32), synthesis.astype(np.float32)
    for matrix in (analysis, synthesis):
        matrix.flags.writeable = False
    return analysis, synthesis


def phase_coherence(
    *, X: np.ndarray, hop_length: int = HOP_LENGTH, n_bands: int = PHASE_BANDS
) -> np.ndarray:
    """How far each bin's phase advance strays from its centre frequency's, per band.

    A sinusoid at the centre of bin ``k`` advances its phase by ``2 pi k hop / n_fft``
    from one frame to the next. A bin's deviation from this mixes how far its energy sits
    from the bin centre (harmonics and their leakage) and how steady the phase is (the
    excitation): vocoders that draw phase themselves, or rebuild it from magnitudes, leave
    it differently from a recorded voice. Per band: ``1 - mean cos(deviation)`` over the
    band's bins, every bin counted alike (0 when every bin advances as its centre, about 1
    when the deviations are spread evenly).

    Parameters
    ----------
    X : np.ndarray, shape (n_frames, n_bins), complex
        Frame spectra from :func:`spectrum_frames`.
    hop_length : int
        Hop between the frames in samples.
    n_bands : int
        Equal-width bands of the bins above DC.

    Returns
    -------
    np.ndarray, shape (n_bands, n_frames), float32
        In [0, 2]. Frame 0 has no previous frame and repeats frame 1 (1.0 for a single
        frame).

    Examples
    --------
    >>> import numpy as np
    >>> noise = np.random.default_rng(0).standard_normal(8000)
    >>> p = phase_coherence(X=spectrum_frames(noise.astype(np.float32)))
    >>> p.shape, bool(0.6 < p.mean() < 0.9)
    ((8, 97), True)
    """
    n_frames, n_bins = X.shape
    n_fft = 2 * (n_bins - 1)
    out = np.ones((n_bands, n_frames), dtype=np.float32)
    if n_frames < 2:
        return out
    advance = np.exp(-2j * np.pi * np.arange(n_bins) * hop_length / n_fft).astype(np.complex64)
    turn = X[1:] * np.conj(X[:-1]) * advance
    size = np.abs(turn)
    cosine = np.divide(turn.real, size, out=np.zeros_like(size), where=size > TINY_POWER)
    out[:, 1:] = 1.0 - (cosine @ _band_average(n_bins, n_bands)).T
    out[:, 0] = out[:, 1]
    return out


def lpc_residual(
    *,
    S: np.ndarray,
    order: int = LPC_ORDER,
    n_bands: int = FINE_BANDS,
) -> np.ndarray:
    """Describe the excitation left when the linear predictor's envelope is taken away.

    The autocorrelation of each frame (from its power spectrum) gives a predictor of
    ``order`` taps (Levinson-Durbin); the residual's power spectrum is the frame's times
    ``|A(f)|**2``. Rows: the prediction gain in dB and the residual's spectral flatness in
    ``n_bands`` equal bands (1 for white noise, near 0 for lines). Natural glottal
    excitation is neither as clean nor as flat as the one that neural vocoders and
    source-filter synthesis put back.

    Parameters
    ----------
    S : np.ndarray, shape (n_fft // 2 + 1, n_frames)
        Power spectrogram from :func:`power_spectrogram`.
    order : int
        Predictor order.
    n_bands : int
        Bands for the flatness.

    Returns
    -------
    np.ndarray, shape (n_bands + 1, n_frames), float32
        Gain (dB, >= 0) and flatness per band (0-1); a silent frame gets gain 0 and
        flatness 1.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import power_spectrogram
    >>> t = np.arange(8000) / 8000
    >>> voiced = sum(np.sin(2 * np.pi * 125 * k * t) / k for k in range(1, 30))
    >>> noise = np.random.default_rng(0).standard_normal(8000)
    >>> v = lpc_residual(S=power_spectrogram(voiced.astype(np.float32)))
    >>> n = lpc_residual(S=power_spectrogram(noise.astype(np.float32)))
    >>> bool(v[0].mean() > 6 > 1 > n[0].mean()), bool(n[1:4].mean() > v[1:4].mean())
    (True, True)
    """
    S = _as_power_spectrogram(S)
    n_bins, n_frames = S.shape
    lags, cos_lags, sin_lags = _lpc_basis(n_bins, order)
    # lags as rows: every step of the recursion works on contiguous rows of all frames
    R = np.ascontiguousarray((S.T.astype(np.float64) @ lags).T)  # (order + 1, n_frames)
    silent = R[0] <= TINY_POWER
    R[0] *= 1.0 + 1e-6  # white-noise correction: keeps the recursion stable
    R[0, silent] = 1.0
    a = np.zeros((order + 1, n_frames))
    a[0] = 1.0
    error = R[0].copy()
    for i in range(1, order + 1):
        k = -np.einsum("jt,jt->t", a[:i], R[i:0:-1]) / error
        a[1 : i + 1] += k * a[i - 1 :: -1][:i]
        error *= 1.0 - k * k
    taps = a.T.astype(np.float32)
    Q = S.T * (np.square(taps @ cos_lags) + np.square(taps @ sin_lags))
    Q += np.float32(TINY_POWER)
    out = np.empty((n_bands + 1, n_frames), dtype=np.float32)
    out[0] = 10.0 * np.log10(R[0] / np.maximum(error, TINY_POWER))
    average = _band_average(n_bins, n_bands)
    arithmetic = Q @ average
    np.log(Q, out=Q)
    out[1:] = (np.exp(Q @ average) / arithmetic).T
    out[0, silent] = 0.0
    out[1:, silent] = 1.0
    return out


@lru_cache(maxsize=8)
def _lpc_basis(n_bins: int, order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cosine sums from a power spectrum to autocorrelation lags, and from taps to ``A(f)``."""
    n_fft = 2 * (n_bins - 1)
    phase = 2 * np.pi * np.outer(np.arange(n_bins), np.arange(order + 1)) / n_fft
    weight = np.full(n_bins, 2.0)
    weight[[0, -1]] = 1.0
    lags = weight[:, None] * np.cos(phase) / n_fft  # (n_bins, order + 1)
    # the last two: (order + 1, n_bins), float32 like the power spectra they multiply
    out = (lags, np.cos(phase.T).astype(np.float32), np.sin(phase.T).astype(np.float32))
    for matrix in out:
        matrix.flags.writeable = False
    return out
