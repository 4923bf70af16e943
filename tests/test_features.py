"""Known-answer tests of voicecheck.features on synthetic signals."""

from __future__ import annotations

import doctest
import importlib

import librosa
import numpy as np
import pytest
import scipy.linalg

from voicecheck import features
from voicecheck.constants import (
    ACTIVITY_FLOOR_DBFS,
    ANALYSIS_SR_HZ,
    CONTRAST_BANDS,
    FINE_BANDS,
    FRAME_LENGTH,
    HOP_LENGTH,
    N_CQCC,
    N_LFCC,
    N_MELS,
    N_MFCC,
    N_SUBBANDS,
    PHASE_BANDS,
    WIN_LENGTH,
)

SR = ANALYSIS_SR_HZ
CONTEXT_FRAMES = features.FEATURE_CONTEXT_FRAMES
BIN_HZ = SR / FRAME_LENGTH


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)


def tone(freq_hz: float, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq_hz * t + 0.3)).astype(np.float32)


def speech_like(rng: np.random.Generator, seconds: float = 4.0) -> np.ndarray:
    """Harmonic complex with vibrato, a syllable-rate envelope, pauses and a little noise."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 130.0 * (1 + 0.06 * np.sin(2 * np.pi * 5 * t)) * (1 + 0.2 * t / seconds)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    harmonics = [k for k in range(1, 40) if k * 130.0 * 1.3 < SR / 2 - 200]
    y = sum(np.sin(k * phase) / k for k in harmonics)
    envelope = np.sin(np.pi * 3 * t) ** 2  # three syllables a second
    envelope[(t % 1.0) > 0.7] = 0.0  # a 0.3 s pause every second
    y = 0.2 * y / np.max(np.abs(y)) * envelope
    y += 3e-4 * rng.standard_normal(t.size)  # -70 dB re the voice: a noise floor
    return y.astype(np.float32)


def expected_frames(n_samples: int) -> int:
    return max(0, 1 + (n_samples - FRAME_LENGTH) // HOP_LENGTH)


# --- framing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_samples",
    [
        0,
        FRAME_LENGTH - 1,
        FRAME_LENGTH,
        FRAME_LENGTH + HOP_LENGTH - 1,
        FRAME_LENGTH + HOP_LENGTH,
        5003,
    ],
)
def test_every_output_has_the_frame_count_of_non_centred_framing(n_samples, rng):
    y = (0.1 * rng.standard_normal(n_samples)).astype(np.float32)
    n = expected_frames(n_samples)
    assert features.frame_count(n_samples) == n
    assert features.power_spectrogram(y).shape == (1 + FRAME_LENGTH // 2, n)
    assert features.zero_crossing_rate(y).shape == (n,)
    assert features.log_energy(y).shape == (n,)
    f0, voicing = features.pitch(y)
    assert f0.shape == voicing.shape == (n,)
    assert features.frame_features(y).values.shape == (len(features.frame_feature_names()), n)


def test_power_spectrogram_equals_librosa_without_centring(rng):
    y = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    ours = features.power_spectrogram(y)
    theirs = (
        np.abs(
            librosa.stft(
                y, n_fft=FRAME_LENGTH, win_length=WIN_LENGTH, hop_length=HOP_LENGTH, center=False
            )
        )
        ** 2
    )
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-6 * theirs.max())


# --- pitch -----------------------------------------------------------------------------


@pytest.mark.parametrize("freq_hz", [150.0, 220.0])
def test_pitch_of_a_sine_is_within_two_percent(freq_hz):
    f0, voicing = features.pitch(tone(freq_hz), sr=SR)
    assert np.all(np.isfinite(f0)), "a steady sine is voiced in every frame"
    assert np.all(np.abs(f0 / freq_hz - 1) < 0.02)
    assert np.all(voicing > 0.9)


@pytest.mark.parametrize("freq_hz", [150.0, 220.0])
def test_pitch_at_16_khz_decimates_without_losing_accuracy(freq_hz):
    t = np.arange(16_000) / 16_000
    y = (0.5 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
    f0, _ = features.pitch(y, sr=16_000, frame_length=512, hop_length=160)
    assert f0.shape == (1 + (16_000 - 512) // 160,)
    assert np.all(np.abs(f0 / freq_hz - 1) < 0.02)


def test_pitch_of_a_missing_fundamental_is_the_fundamental():
    t = np.arange(SR) / SR
    y = sum(np.sin(2 * np.pi * 200 * k * t + k) for k in range(2, 9) if 200 * k < SR / 2)
    f0, _ = features.pitch((0.1 * y).astype(np.float32), sr=SR)
    assert np.mean(np.abs(f0 / 200 - 1) < 0.02) > 0.95


def test_white_noise_is_mostly_unvoiced(rng):
    f0, voicing = features.pitch((0.1 * rng.standard_normal(3 * SR)).astype(np.float32), sr=SR)
    assert np.mean(np.isfinite(f0)) < 0.05
    assert np.median(voicing) < 0.4


def test_silence_is_unvoiced_inactive_and_summarises_to_nan():
    table = features.frame_features(np.zeros(2 * SR, dtype=np.float32))
    assert np.all(np.isnan(table.row("f0_hz")))
    assert np.all(table.row("voicing") == 0)
    active = features.activity(table.row("energy_db"))
    assert not active.any()
    summary, names = features.summarize(table.values, names=table.names, active=active)
    assert len(names) == summary.size
    assert np.all(np.isnan(summary))


# --- spectral shape and temporal features ----------------------------------------------


def test_flatness_is_high_for_white_noise_and_near_zero_for_a_sine(rng):
    noise = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    noise_flatness = features.spectral_flatness(S=features.power_spectrogram(noise))
    sine_flatness = features.spectral_flatness(S=features.power_spectrogram(tone(1000.0)))
    # a white-noise periodogram has exponentially distributed bins: flatness exp(-0.577)
    assert abs(np.mean(noise_flatness) - np.exp(-np.euler_gamma)) < 0.05
    assert np.all(sine_flatness < 0.01)


def test_centroid_of_a_1khz_sine_is_1khz():
    centroid = features.spectral_centroid(S=features.power_spectrogram(tone(1000.0)), sr=SR)
    assert np.all(np.abs(centroid - 1000.0) <= 2 * BIN_HZ)


def test_rolloff_of_a_high_tone_is_above_that_of_a_low_tone():
    low = features.spectral_rolloff(S=features.power_spectrogram(tone(300.0)), sr=SR)
    high = features.spectral_rolloff(S=features.power_spectrogram(tone(2500.0)), sr=SR)
    assert np.all(low < 600) and np.all(high > 2000)


def test_spectral_descriptors_match_librosa(rng):
    y = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    S = features.power_spectrogram(y)
    magnitude = np.sqrt(S)
    kwargs = {"S": magnitude, "sr": SR, "n_fft": FRAME_LENGTH}
    pairs = [
        (features.spectral_centroid(S=S, sr=SR), librosa.feature.spectral_centroid(**kwargs)),
        (features.spectral_bandwidth(S=S, sr=SR), librosa.feature.spectral_bandwidth(**kwargs)),
        (features.spectral_rolloff(S=S, sr=SR), librosa.feature.spectral_rolloff(**kwargs)),
        (features.spectral_flatness(S=S), librosa.feature.spectral_flatness(S=magnitude)),
    ]
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours, theirs[0], rtol=1e-4)


def test_contrast_peaks_in_the_band_of_a_tone():
    contrast = features.spectral_contrast(S=features.power_spectrogram(tone(1500.0)), sr=SR)
    assert contrast.shape[0] == CONTRAST_BANDS + 1
    edges = SR / 2 / 2.0 ** np.arange(CONTRAST_BANDS, -1, -1)  # upper band edges
    assert contrast.mean(axis=1).argmax() == np.searchsorted(edges, 1500.0, side="right")


def test_flux_is_zero_for_a_steady_tone_and_large_at_a_change():
    y = np.concatenate([tone(500.0), tone(2500.0)])
    flux = features.spectral_flux(S=features.power_spectrogram(y))
    assert flux[0] == 0
    assert np.median(flux) < 0.01
    assert flux.max() > 1.0


def test_zero_crossing_rate_of_a_sine_is_twice_its_frequency():
    freq_hz = 437.0
    zcr = features.zero_crossing_rate(tone(freq_hz))
    assert np.all(np.abs(zcr - 2 * freq_hz / SR) <= 1.5 / (FRAME_LENGTH - 1))


def test_energy_of_a_full_scale_sine_is_minus_3_dbfs():
    energy = features.log_energy(tone(250.0, amplitude=1.0))
    np.testing.assert_allclose(energy, -3.01, atol=0.05)


# --- cepstra ---------------------------------------------------------------------------


def test_mfcc_and_deltas_match_librosa(rng):
    S = features.power_spectrogram((0.1 * rng.standard_normal(SR)).astype(np.float32))
    mel = librosa.feature.melspectrogram(S=S, sr=SR, n_mels=N_MELS)
    expected = librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=N_MFCC + 1)
    ours = features.mfcc(S=S, sr=SR)
    np.testing.assert_allclose(ours, expected[1:], atol=1e-3)
    for order in (1, 2):
        np.testing.assert_allclose(
            features.deltas(ours, order=order),
            librosa.feature.delta(ours, order=order, mode="nearest"),
            atol=1e-5,
        )


def test_cepstra_drop_the_level_coefficient(rng):
    y = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    S = features.power_spectrogram(y)
    for extract in (features.mfcc, features.lfcc, features.cqcc):
        quiet, loud = extract(S=S, sr=SR), extract(S=S * 100.0, sr=SR)
        np.testing.assert_allclose(quiet, loud, atol=1e-3)


def test_filterbanks_are_cached_read_only_and_cover_a_bin_each():
    fb = features.constant_q_filterbank(sr=SR, n_fft=FRAME_LENGTH)
    assert fb is features.constant_q_filterbank(sr=SR, n_fft=FRAME_LENGTH)
    assert not fb.flags.writeable
    np.testing.assert_allclose(fb.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all((fb > 0).sum(axis=1) >= 1)
    assert fb.shape[0] > N_CQCC
    with pytest.raises(ValueError, match="read-only"):
        fb[0, 0] = 1.0


# --- the frame-feature table -----------------------------------------------------------


def test_feature_names_are_unique_stable_and_match_the_values(rng):
    names = features.frame_feature_names()
    table = features.frame_features(speech_like(rng, 1.0))
    assert table.names == names == features.frame_feature_names()
    assert table.values.shape[0] == len(names) == len(set(names))
    assert len(names) == (
        3 * N_MFCC
        + 3 * N_LFCC
        + N_CQCC
        + CONTRAST_BANDS
        + 10
        + 2 * N_SUBBANDS
        + 3 * FINE_BANDS
        + 1
        + PHASE_BANDS
    )
    assert names[:2] == ("mfcc_1", "mfcc_2")
    assert {"mfcc_d1_3", "mfcc_d2_3", "lfcc_d1_1", f"lfcc_{N_LFCC}", f"cqcc_{N_CQCC}"} <= set(names)
    assert names[150:154] == ("zcr", "energy_db", "f0_hz", "voicing")
    assert names[-1] == f"phase_dev_{PHASE_BANDS}" and f"subband_d1_{N_SUBBANDS}" in names
    assert {"lpc_gain_db", f"residual_flatness_{FINE_BANDS}"} <= set(names)
    summary_names = features.summary_names(names)
    assert len(summary_names) == len(set(summary_names)) == 2 * (len(names) - 2) + 2 + 5
    assert summary_names == features.summary_names(names)


def test_feature_rows_equal_the_individual_extractors(rng):
    y = speech_like(rng, 12.0)
    table = features.frame_features(y)
    S = features.power_spectrogram(y)
    mfcc = features.mfcc(S=S, sr=SR)
    shape = features.spectral_shape(S=S, sr=SR)
    # Pitch is searched only above the activity floor: quieter frames are pauses.
    audible = features.log_energy(y) > ACTIVITY_FLOOR_DBFS
    f0, voicing = features.pitch(y, sr=SR, frames=audible)
    expected = {
        "mfcc_1": mfcc[0],
        f"mfcc_d1_{N_MFCC}": features.deltas(mfcc, order=1)[-1],
        "mfcc_d2_2": features.deltas(mfcc, order=2)[1],
        f"lfcc_{N_LFCC}": features.lfcc(S=S, sr=SR)[-1],
        "cqcc_3": features.cqcc(S=S, sr=SR)[2],
        "zcr": features.zero_crossing_rate(y),
        "energy_db": features.log_energy(y),
        "f0_hz": f0,
        "voicing": voicing,
    }
    expected.update(zip(features.spectral_shape_names(), shape, strict=True))
    excitation = features.lpc_residual(S=S)
    expected["lpc_gain_db"] = excitation[0]
    expected[f"residual_flatness_{FINE_BANDS}"] = excitation[FINE_BANDS]
    phase = features.phase_coherence(X=features.spectrum_frames(y))
    expected["phase_dev_1"], expected[f"phase_dev_{PHASE_BANDS}"] = phase[0], phase[-1]
    # Every frame within a delta's reach of an audible one is analysed in full; the
    # quieter rest of a pause is not (no summary reads it).
    reach = features.ANALYSIS_REACH_FRAMES
    near = np.convolve(audible, np.ones(2 * reach + 1), mode="same") > 0
    for name, row in expected.items():
        # the deltas, the flux and the phase read neighbours: compare them where all are near
        where = audible if name.startswith(("mfcc_d", "flux", "phase")) else near
        np.testing.assert_allclose(
            table.row(name)[where], row[where], rtol=1e-4, atol=1e-5, err_msg=name
        )
    assert 0 < audible.mean() < near.mean() < 1  # the signal has pauses, which get no pitch
    assert np.isnan(table.row("f0_hz")[~audible]).all()
    assert not table.row("voicing")[~audible].any()
    quiet = table.values[:, ~near]
    for name in ("mfcc_1", "cqcc_3", "centroid_hz", "flatness", "lpc_gain_db", "phase_dev_1"):
        assert not quiet[table.names.index(name)].any(), name
    np.testing.assert_allclose(table.row("energy_db"), features.log_energy(y), rtol=1e-6)


def test_band_statistics_equal_their_plain_definitions(rng):
    # The extractors reduce over bands with matrix products and shared sorts; the values
    # must be those of the textbook formulas, band by band.
    y = speech_like(rng, 3.0)
    X = features.spectrum_frames(y)
    S = features.power_of(X)
    audible = features.log_energy(y) > ACTIVITY_FLOOR_DBFS
    n_bins = S.shape[0]

    def bands(rows, n_bands):  # (n_frames, n_bands, width) of the bins above DC
        width = (n_bins - 1) // n_bands
        return rows[:, 1 : 1 + width * n_bands].reshape(rows.shape[0], n_bands, width)

    # sub-band levels: 10 log10 of each band's mean power
    subband = 10 * np.log10(np.maximum(bands(S.T.astype(np.float64), N_SUBBANDS).mean(2), 1e-12))
    np.testing.assert_allclose(features.subband_energies(S=S), subband.T, rtol=1e-5, atol=1e-4)

    # fine structure: standard deviation and peak over median of the log-spectrum residual
    log_s = np.log(np.maximum(S.T.astype(np.float64), 1e-12))
    cepstrum = np.fft.irfft(log_s, axis=1)
    cepstrum[:, 24:-23] = 0.0  # keep quefrencies 0..23 and their mirror images
    residual = bands(log_s - np.fft.rfft(cepstrum, axis=1).real, FINE_BANDS)
    spread, peak = features.fine_structure(S=S)
    np.testing.assert_allclose(spread, residual.std(2).T, rtol=1e-3, atol=1e-3)
    expected_peak = (residual.max(2) - np.median(residual, axis=2)).T
    np.testing.assert_allclose(peak, expected_peak, rtol=1e-3, atol=1e-3)

    # residual flatness: geometric over arithmetic mean of each band's residual power
    excitation = features.lpc_residual(S=S)
    R = np.fft.irfft(S.T.astype(np.float64), axis=1)[:, :13]  # autocorrelation lags 0..12
    R[:, 0] *= 1.0 + 1e-6  # the extractor's white-noise correction
    expected = []
    for frame in np.flatnonzero(audible):
        taps = np.r_[1.0, scipy.linalg.solve_toeplitz(R[frame, :12], -R[frame, 1:13])]
        power = S[:, frame] * np.abs(np.fft.rfft(taps, FRAME_LENGTH)) ** 2 + 1e-30
        b = bands(power[None, :], FINE_BANDS)[0]
        expected.append(np.exp(np.log(b).mean(1)) / b.mean(1))
    np.testing.assert_allclose(excitation[1:, audible], np.array(expected).T, rtol=1e-3)

    # phase deviation: 1 - mean cos of each bin's phase advance off its centre frequency
    k = np.arange(n_bins)
    advance = np.exp(-2j * np.pi * k * HOP_LENGTH / FRAME_LENGTH)
    turn = X[1:].astype(np.complex128) * np.conj(X[:-1]) * advance
    cosine = np.where(np.abs(turn) > 1e-30, turn.real / np.maximum(np.abs(turn), 1e-300), 0.0)
    phase = features.phase_coherence(X=X)
    np.testing.assert_allclose(phase[:, 1:], 1 - bands(cosine, PHASE_BANDS).mean(2).T, atol=1e-5)


def test_speech_like_input_gives_float32_finite_features(rng):
    table = features.frame_features(speech_like(rng))
    assert table.values.dtype == np.float32
    active = features.activity(table.row("energy_db"))
    assert 0.3 < active.mean() < 0.8
    others = [i for i, name in enumerate(table.names) if name != "f0_hz"]
    assert np.all(np.isfinite(table.values[others]))
    assert np.mean(np.isfinite(table.row("f0_hz")[active])) > 0.9
    summary, _ = features.summarize(table.values, names=table.names, active=active)
    assert summary.dtype == np.float32
    assert np.all(np.isfinite(summary))


@pytest.mark.parametrize("block", [333, 101, 37])  # block edges in speech and in pauses
def test_blocks_with_context_stitch_into_the_whole_signal(rng, block):
    y = speech_like(rng, 12.0)  # more frames than frame_features computes at once
    whole = features.frame_features(y).values
    total = whole.shape[1]
    pieces = []
    for first in range(0, total, block):
        last = min(total, first + block)
        start, stop = max(0, first - CONTEXT_FRAMES), min(total, last + CONTEXT_FRAMES)
        chunk = y[start * HOP_LENGTH : (stop - 1) * HOP_LENGTH + FRAME_LENGTH]
        values = features.frame_features(chunk).values
        pieces.append(values[:, first - start : first - start + last - first])
    stitched = np.concatenate(pieces, axis=1)
    assert stitched.shape == whole.shape
    # the audible frames, the only ones a summary reads, come out as from the whole signal
    audible = features.log_energy(y) > ACTIVITY_FLOOR_DBFS
    assert 0.3 < audible.mean() < 0.9
    stitched, whole = stitched[:, audible], whole[:, audible]
    assert np.array_equal(np.isnan(stitched), np.isnan(whole))
    scale = np.maximum(np.nanmax(np.abs(whole), axis=1, keepdims=True), 1e-3)
    assert np.all(np.nan_to_num(np.abs(stitched - whole)) <= 1e-4 * scale)


# --- activity and summaries ------------------------------------------------------------


def test_activity_is_relative_to_the_loudest_frame_and_above_the_floor():
    energy = np.array([-10.0, -40.0, -46.0, -56.0, -30.0])
    assert features.activity(energy).tolist() == [True, True, False, False, True]
    assert features.activity(energy - 30).tolist() == [True, False, False, False, False]
    assert features.activity(energy, reference_db=-30.0).tolist() == [True] * 3 + [False, True]
    assert features.activity(np.zeros(0)).shape == (0,)


def test_summary_does_not_change_with_a_12_db_gain(rng):
    y = speech_like(rng)
    gain = np.float32(10 ** (12 / 20))
    summaries = []
    for signal in (y, y * gain):
        table = features.frame_features(signal)
        active = features.activity(table.row("energy_db"))
        summaries.append(features.summarize(table.values, names=table.names, active=active)[0])
    quiet, loud = summaries
    names = features.summary_names(features.frame_feature_names())
    for name, a, b in zip(names, quiet, loud, strict=True):
        if name.startswith("subband_db_") and name.endswith("_mean"):
            # Band levels in dB: the analysis normalises the speech level before features
            # (next test), so in the model they are levels relative to the speech level.
            assert abs((b - a) - 12.0) <= 1e-2, name
            continue
        assert abs(a - b) <= 1e-3 * max(1.0, abs(a)), name


def test_segment_features_do_not_change_with_a_12_db_gain(rng):
    from voicecheck.analysis import feature_names, segment_features

    y = speech_like(rng, 4.0)
    quiet = segment_features(y)
    loud = segment_features(y * np.float32(10 ** (12 / 20)))
    assert quiet.X.shape == loud.X.shape and quiet.X.shape[0] >= 1
    for k, name in enumerate(feature_names()):
        a, b = quiet.X[:, k], loud.X[:, k]
        assert np.allclose(a, b, rtol=1e-3, atol=1e-3, equal_nan=True), name


def test_summary_statistics_by_hand():
    names = ("zcr", "energy_db", "f0_hz", "voicing")
    f0 = np.array([100.0, 200.0, np.nan, 200.0, 400.0, 50.0])
    values = np.array(
        [
            [0.1, 0.3, 0.2, 0.2, 0.2, 9.0],
            [-20.0, -30.0, -25.0, -20.0, -20.0, -90.0],
            f0,
            [0.9, 0.9, 0.1, 0.9, 0.9, 0.9],
        ],
        dtype=np.float32,
    )
    active = np.array([True, True, True, True, True, False])
    summary, out_names = features.summarize(values, names=names, active=active)
    got = dict(zip(out_names, summary.tolist(), strict=True))
    assert got["zcr_mean"] == pytest.approx(0.2)
    assert got["zcr_std"] == pytest.approx(np.std([0.1, 0.3, 0.2, 0.2, 0.2]), rel=1e-5)
    assert got["energy_db_rel_mean"] == pytest.approx(-23.0 - (-20.0))
    assert got["energy_db_rel_std"] == pytest.approx(np.std([-20, -30, -25, -20, -20]), rel=1e-5)
    log_f0 = np.log2([100.0, 200.0, 200.0, 400.0])
    assert got["f0_log2_median"] == pytest.approx(np.log2(200.0))
    assert got["f0_st_std"] == pytest.approx(12 * np.std(log_f0), rel=1e-5)
    assert got["f0_st_range"] == pytest.approx(12 * np.ptp(np.percentile(log_f0, [10, 90])))
    assert got["voiced_fraction"] == pytest.approx(4 / 5)
    # consecutive voiced pairs: 100->200 (12 st) and 200->400 (12 st); 400->50 is inactive
    assert got["f0_jitter_st"] == pytest.approx(12.0)
    assert "speech" not in " ".join(out_names) and "duration" not in " ".join(out_names)


def test_frame_features_refuse_another_sample_rate():
    with pytest.raises(ValueError, match=str(ANALYSIS_SR_HZ)):
        features.frame_features(np.zeros(SR, dtype=np.float32), sr=SR * 2)


@pytest.mark.parametrize(
    "module", ["_framing", "spectral", "cepstral", "temporal", "prosody", "frames", "summary"]
)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(f"voicecheck.features.{module}"))
    assert result.attempted > 0
    assert result.failed == 0
