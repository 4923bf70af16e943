"""Tests of voicecheck.channel: real codecs, aligned output, measurable degradations."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import soxr
from scipy.signal import butter, correlate, lfilter, sosfilt, stft

from voicecheck.channel import (
    AMR_NB_BITRATES_BPS,
    CHANNELS,
    PHONE_CONDITIONS,
    ChannelSpec,
    apply_chain,
    apply_channel,
    random_chain,
)
from voicecheck.errors import ChannelError, VoiceCheckError

SR = 16_000
RANDOM_CHANNELS = {name for name, spec in CHANNELS.items() if spec.needs_rng}
CODEC_CHANNELS = [
    "g711_ulaw",
    "g711_alaw",
    "amr_nb",
    "amr_nb_4k75",
    "amr_nb_7k95",
    "amr_nb_12k2",
    "opus_nb",
    "opus_wb",
    "g722",
    "mp3_low",
    "telephone_band",
]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240501)


def sine(freq_hz: float, *, sr: int = SR, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def vowel(*, sr: int = SR, seconds: float = 2.0) -> np.ndarray:
    """A source-filter vowel: glottal pulses with vibrato through four formants, in syllables."""
    t = np.arange(round(sr * seconds)) / sr
    f0_hz = 120 * (1 + 0.06 * np.sin(2 * np.pi * 5 * t)) * (1 + 0.2 * np.sin(2 * np.pi * 0.4 * t))
    pulses = np.diff(np.floor(np.cumsum(f0_hz) / sr), prepend=0.0)
    x = lfilter([1.0], [1.0, -0.95], pulses)
    for fc_hz, bw_hz in [(700, 110), (1220, 120), (2600, 160), (3300, 200)]:
        r = np.exp(-np.pi * bw_hz / sr)
        theta = 2 * np.pi * fc_hz / sr
        x = lfilter([1 - r], [1.0, -2 * r * np.cos(theta), r * r], x)
    x *= 0.5 * (1 - np.cos(2 * np.pi * 2.0 * t))
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, int]:
    """Real synthetic speech from espeak-ng at 8 kHz, or the vowel where it is missing."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return vowel(sr=8000, seconds=4.0), 8000
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    text = "Hello, this is your bank. Please confirm the security code we just sent you."
    subprocess.run([espeak, "-w", str(path), text], check=True, capture_output=True, timeout=30)
    y, sr = sf.read(path, dtype="float32")
    return (0.8 * soxr.resample(y, sr, 8000)).astype(np.float32), 8000


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    n = min(len(ref), len(out))
    err = out[:n].astype(np.float64) - ref[:n]
    return float(10 * np.log10(np.sum(ref[:n].astype(np.float64) ** 2) / np.sum(err**2)))


def log_spectral_distance_db(ref: np.ndarray, out: np.ndarray, *, sr: int) -> float:
    """Mean over active frames of the RMS difference of the log power spectra, in dB."""
    n = min(len(ref), len(out))
    _, _, r = stft(ref[:n], sr, nperseg=256)
    _, _, o = stft(out[:n], sr, nperseg=256)
    pr = 10 * np.log10(np.abs(r) ** 2 + 1e-10)
    po = 10 * np.log10(np.abs(o) ** 2 + 1e-10)
    active = pr.max(axis=0) > pr.max() - 40
    return float(np.mean(np.sqrt(np.mean((pr - po)[:, active] ** 2, axis=0))))


def tone_level_db(y: np.ndarray, freq_hz: float, *, sr: int) -> float:
    """Level of one frequency component, from the Hann-windowed spectrum."""
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / sr)
    band = np.abs(freqs - freq_hz) <= 5
    return float(20 * np.log10(spectrum[band].max() + 1e-12))


def lag_samples(ref: np.ndarray, out: np.ndarray, *, max_lag: int) -> int:
    n = min(len(ref), len(out))
    c = correlate(out[:n], ref[:n], mode="full", method="fft")
    lags = np.arange(-n + 1, n)
    keep = np.abs(lags) <= max_lag
    return int(lags[keep][np.argmax(c[keep])])


# --- every channel ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_every_channel_runs_with_expected_rate_and_duration(
    name: str, rng: np.random.Generator
) -> None:
    y = vowel(seconds=1.0)
    out, out_sr = apply_channel(y, sr=SR, channel=name, rng=rng)
    spec = CHANNELS[name]
    assert isinstance(spec, ChannelSpec)
    assert out_sr == (spec.sr_out or SR)
    assert len(out) == round(len(y) * out_sr / SR)
    assert out.dtype == np.float32 and out.ndim == 1
    assert np.all(np.isfinite(out)) and np.max(np.abs(out)) <= 1.0
    assert np.sqrt(np.mean(out**2)) > 0.3 * np.sqrt(np.mean(y**2))


@pytest.mark.parametrize("sr_in", [8000, 22050, 44100])
@pytest.mark.parametrize("name", ["g711_alaw", "amr_nb", "opus_wb", "mp3_low", "g722"])
def test_codecs_accept_any_input_rate(name: str, sr_in: int) -> None:
    y = sine(440.0, sr=sr_in, seconds=0.37)
    out, out_sr = apply_channel(y, sr=sr_in, channel=name)
    assert out_sr == CHANNELS[name].sr_out
    assert len(out) == round(len(y) * out_sr / sr_in)
    assert abs(len(out) / out_sr - len(y) / sr_in) < 1e-3


@pytest.mark.parametrize("name", CODEC_CHANNELS)
def test_a_clip_shorter_than_one_codec_frame_survives(name: str) -> None:
    y = sine(1000.0, seconds=0.005)
    out, out_sr = apply_channel(y, sr=SR, channel=name)
    assert len(out) == round(len(y) * out_sr / SR)


@pytest.mark.parametrize("name", CODEC_CHANNELS)
def test_output_is_time_aligned_with_input_within_1_ms(name: str) -> None:
    y = vowel(seconds=2.0)
    out, out_sr = apply_channel(y, sr=SR, channel=name)
    ref = soxr.resample(y, SR, out_sr).astype(np.float32) if out_sr != SR else y
    lag = lag_samples(ref, out, max_lag=out_sr // 50)  # search +-20 ms
    # 1 ms, tighter than the 2 ms asked for: an AMR-NB delay taken from FFmpeg's
    # 50-sample priming figure instead of the measured 40 would fail here.
    assert abs(lag) <= 0.001 * out_sr, f"{name} output lags by {1000 * lag / out_sr:.2f} ms"


def test_clean_is_identity_or_a_plain_resample() -> None:
    y = vowel(seconds=0.5)
    out, out_sr = apply_channel(y, sr=SR, channel="clean")
    assert out_sr == SR
    np.testing.assert_array_equal(out, y)
    out8, sr8 = apply_channel(y, sr=SR, channel="clean", sr_out=8000)
    assert sr8 == 8000 and len(out8) == len(y) // 2
    np.testing.assert_allclose(out8, soxr.resample(y, SR, 8000, quality="HQ"), atol=1e-6)


# --- what each channel does --------------------------------------------------------------


@pytest.mark.parametrize("name", ["g711_ulaw", "g711_alaw"])
def test_g711_keeps_a_sine_above_30_db_snr_but_is_lossy(name: str) -> None:
    y = sine(1000.0, sr=8000, seconds=1.0)
    out, out_sr = apply_channel(y, sr=8000, channel=name)
    assert out_sr == 8000
    assert snr_db(y, out) > 30
    assert not np.array_equal(out, y)


def test_ulaw_and_alaw_are_different_codecs() -> None:
    y = sine(1000.0, sr=8000, seconds=0.2, amp=0.05)
    ulaw, _ = apply_channel(y, sr=8000, channel="g711_ulaw")
    alaw, _ = apply_channel(y, sr=8000, channel="g711_alaw")
    assert not np.array_equal(ulaw, alaw)


def test_amr_nb_at_4k75_distorts_more_than_at_12k2(speech: tuple[np.ndarray, int]) -> None:
    y, sr = speech
    low, _ = apply_channel(y, sr=sr, channel="amr_nb", bitrate=4750)
    high, _ = apply_channel(y, sr=sr, channel="amr_nb", bitrate=12200)
    # CELP codecs do not keep the waveform of a synthetic vowel much better at 12.2 kbit/s,
    # but its spectrum they do; on real speech the waveform SNR also rises.
    assert log_spectral_distance_db(y, low, sr=sr) > log_spectral_distance_db(y, high, sr=sr) + 1
    if shutil.which("espeak-ng"):
        assert snr_db(y, low) < snr_db(y, high) - 0.5


def test_amr_nb_presets_are_the_bitrate_modes() -> None:
    y = vowel(sr=8000, seconds=0.5)
    for preset, bitrate in [("amr_nb_4k75", 4750), ("amr_nb_7k95", 7950), ("amr_nb_12k2", 12200)]:
        a, _ = apply_channel(y, sr=8000, channel=preset)
        b, _ = apply_channel(y, sr=8000, channel="amr_nb", bitrate=bitrate)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bitrate", AMR_NB_BITRATES_BPS)
def test_every_amr_mode_is_accepted(bitrate: int) -> None:
    out, out_sr = apply_channel(
        vowel(sr=8000, seconds=0.2), sr=8000, channel="amr_nb", bitrate=bitrate
    )
    assert out_sr == 8000 and len(out) == 1600


def test_telephone_band_keeps_1_khz_and_removes_100_hz() -> None:
    sr = 8000
    y = (sine(1000.0, sr=sr, amp=0.3) + sine(100.0, sr=sr, amp=0.3)).astype(np.float32)
    out, out_sr = apply_channel(y, sr=sr, channel="telephone_band")
    assert out_sr == sr
    assert abs(tone_level_db(out, 1000.0, sr=sr) - tone_level_db(y, 1000.0, sr=sr)) < 1
    assert tone_level_db(y, 100.0, sr=sr) - tone_level_db(out, 100.0, sr=sr) > 20


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("target_db", [10.0, 25.0])
def test_noise_is_added_at_the_requested_snr(
    color: str, target_db: float, rng: np.random.Generator
) -> None:
    y = sine(440.0, seconds=2.0, amp=0.3)
    out, out_sr = apply_channel(y, sr=SR, channel="noise", rng=rng, snr_db=target_db, color=color)
    assert out_sr == SR
    assert abs(snr_db(y, out) - target_db) < 0.5


def test_pink_noise_has_more_low_than_high_energy(rng: np.random.Generator) -> None:
    y = sine(440.0, seconds=2.0, amp=0.3)
    out, _ = apply_channel(y, sr=SR, channel="noise", rng=rng, snr_db=0.0, color="pink")
    noise = out - y
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(len(noise), 1 / SR)
    low = spectrum[(freqs > 100) & (freqs < 200)].mean()
    high = spectrum[(freqs > 4000) & (freqs < 8000)].mean()
    assert 10 * np.log10(low / high) > 10


def test_noise_is_deterministic_for_a_seed() -> None:
    y = sine(440.0, seconds=0.5)
    a, _ = apply_channel(y, sr=SR, channel="noise", rng=np.random.default_rng(3), snr_db=15.0)
    b, _ = apply_channel(y, sr=SR, channel="noise", rng=np.random.default_rng(3), snr_db=15.0)
    c, _ = apply_channel(y, sr=SR, channel="noise", rng=np.random.default_rng(4), snr_db=15.0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def _zeroed_packets(out: np.ndarray, packet: int) -> np.ndarray:
    n_packets = len(out) // packet
    return np.all(out[: n_packets * packet].reshape(n_packets, packet) == 0, axis=1)


def test_packet_loss_zeroes_about_the_loss_rate_of_20_ms_packets() -> None:
    sr = 8000
    y = np.full(sr * 20, 0.25, dtype=np.float32)  # 1000 packets, none silent to start with
    out, out_sr = apply_channel(
        y, sr=sr, channel="packet_loss", rng=np.random.default_rng(11), loss_rate=0.2
    )
    assert out_sr == sr and len(out) == len(y)
    packet = sr // 50
    lost = _zeroed_packets(out, packet)
    assert 0.16 < lost.mean() < 0.24
    # Whole packets are lost, never a part of one.
    kept = out.reshape(-1, packet)[~lost]
    np.testing.assert_array_equal(kept, 0.25)
    again, _ = apply_channel(
        y, sr=sr, channel="packet_loss", rng=np.random.default_rng(11), loss_rate=0.2
    )
    other, _ = apply_channel(
        y, sr=sr, channel="packet_loss", rng=np.random.default_rng(12), loss_rate=0.2
    )
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, other)


def test_packet_loss_repeat_conceals_with_the_last_packet() -> None:
    sr = 8000
    packet = sr // 50
    y = np.repeat(np.linspace(0.1, 0.9, 200), packet).astype(np.float32)  # each packet distinct
    out, _ = apply_channel(
        y,
        sr=sr,
        channel="packet_loss",
        rng=np.random.default_rng(5),
        loss_rate=0.3,
        concealment="repeat",
    )
    packets_in = y.reshape(-1, packet)
    packets_out = out.reshape(-1, packet)
    changed = np.any(packets_in != packets_out, axis=1)
    assert 0.15 < changed.mean() < 0.45
    for i in np.flatnonzero(changed):
        if i > 0:  # a lost first packet has nothing to repeat
            np.testing.assert_array_equal(packets_out[i], packets_out[i - 1])


def test_no_loss_and_total_loss() -> None:
    y = sine(300.0, sr=8000, seconds=0.5)
    out, _ = apply_channel(
        y, sr=8000, channel="packet_loss", rng=np.random.default_rng(0), loss_rate=0.0
    )
    np.testing.assert_array_equal(out, y)
    out, _ = apply_channel(
        y, sr=8000, channel="packet_loss", rng=np.random.default_rng(0), loss_rate=1.0
    )
    assert not out.any()


def test_opus_wb_keeps_energy_above_4_khz_that_narrowband_channels_remove(
    rng: np.random.Generator,
) -> None:
    # A vowel with a fricative hiss at 4.5-7 kHz.
    hiss = sosfilt(
        butter(6, [4500, 7000], btype="bandpass", fs=SR, output="sos"), rng.standard_normal(2 * SR)
    )
    y = (vowel(seconds=2.0) + 0.1 * hiss / np.std(hiss)).astype(np.float32)

    def high_band_share(x: np.ndarray, sr: int) -> float:
        x16 = soxr.resample(x, sr, SR) if sr != SR else x
        spectrum = np.abs(np.fft.rfft(x16)) ** 2
        return float(spectrum[np.fft.rfftfreq(len(x16), 1 / SR) > 4200].sum() / spectrum.sum())

    before = high_band_share(y, SR)
    assert before > 0.01
    wb, wb_sr = apply_channel(y, sr=SR, channel="opus_wb")
    assert high_band_share(wb, wb_sr) > 0.5 * before
    for name in ["opus_nb", "g711_ulaw"]:
        nb, nb_sr = apply_channel(y, sr=SR, channel=name)
        assert high_band_share(nb, nb_sr) < 1e-3 * before


# --- chains ------------------------------------------------------------------------------


def test_random_chain_is_deterministic_and_varied() -> None:
    assert random_chain(np.random.default_rng(9)) == random_chain(np.random.default_rng(9))
    draws = [random_chain(np.random.default_rng(seed)) for seed in range(50)]
    paths = {name for chain in draws for name, _ in chain if name not in RANDOM_CHANNELS}
    assert len(paths) >= 6
    assert any(chain[0][0] == "noise" for chain in draws)
    assert any(chain[-1][0] == "packet_loss" for chain in draws)
    assert any(len(chain) == 1 for chain in draws)
    for chain in draws:
        for name, params in chain:
            assert name in CHANNELS
            assert set(params) <= set(CHANNELS[name].defaults)
        noise = dict(chain).get("noise")
        if noise is not None:
            assert 15 <= noise["snr_db"] <= 40


def test_random_chains_all_apply(rng: np.random.Generator) -> None:
    y = vowel(seconds=0.3)
    for seed in range(12):
        chain = random_chain(np.random.default_rng(seed))
        out, out_sr = apply_chain(y, sr=SR, chain=chain, rng=rng)
        assert out_sr in (8000, 16000)
        assert len(out) == round(len(y) * out_sr / SR)


def test_apply_chain_equals_channels_in_order() -> None:
    y = vowel(seconds=0.5)
    chain = [("noise", {"snr_db": 20.0}), "amr_nb_7k95", ("packet_loss", {"loss_rate": 0.1})]
    out, out_sr = apply_chain(y, sr=SR, chain=chain, rng=np.random.default_rng(1))
    step_rng = np.random.default_rng(1)
    a, sr_a = apply_channel(y, sr=SR, channel="noise", rng=step_rng, snr_db=20.0)
    b, sr_b = apply_channel(a, sr=sr_a, channel="amr_nb_7k95")
    c, sr_c = apply_channel(b, sr=sr_b, channel="packet_loss", rng=step_rng, loss_rate=0.1)
    assert out_sr == sr_c == 8000
    np.testing.assert_array_equal(out, c)


def test_empty_chain_returns_the_input() -> None:
    y = vowel(seconds=0.2)
    out, out_sr = apply_chain(y, sr=SR, chain=[])
    assert out_sr == SR
    np.testing.assert_array_equal(out, y)


@pytest.mark.parametrize(
    ("condition", "expected_sr"),
    [("clean_16k", 16000), ("g711", 8000), ("amr_nb", 8000), ("opus", 8000), ("mp3", 16000)],
)
def test_phone_conditions(condition: str, expected_sr: int) -> None:
    y = sine(440.0, sr=44100, seconds=0.5)
    out, out_sr = apply_chain(y, sr=44100, chain=PHONE_CONDITIONS[condition])
    assert out_sr == expected_sr
    assert len(out) == expected_sr // 2
    assert np.sqrt(np.mean(out**2)) > 0.2


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"channel": "g729"}, ["unknown channel 'g729'", "expected one of", "amr_nb", "g711_ulaw"]),
        ({"channel": "amr_nb", "bitrate": 8000}, ["bitrate 8000", "4750", "12200"]),
        ({"channel": "amr_nb", "bitrate": "12200"}, ["bitrate '12200'", "expected one of"]),
        ({"channel": "amr_nb", "bitrat": 12200}, ["no parameter 'bitrat'", "bitrate"]),
        ({"channel": "amr_nb_4k75", "bitrate": 12200}, ["no parameter 'bitrate'", "no parameters"]),
        ({"channel": "opus_nb", "bitrate": 1000}, ["bitrate 1000", "6000"]),
        ({"channel": "mp3_low", "bitrate": 23000}, ["bitrate 23000", "24000"]),
        ({"channel": "clean", "sr_out": 100}, ["sr_out 100", "4000"]),
        ({"channel": "telephone_band", "low_hz": 3500.0, "high_hz": 300.0}, ["3500.0", "low_hz"]),
        ({"channel": "noise", "snr_db": float("nan")}, ["snr_db nan", "finite"]),
        ({"channel": "noise", "color": "brown"}, ["color 'brown'", "white", "pink"]),
        ({"channel": "packet_loss", "loss_rate": -0.1}, ["loss_rate -0.1", "from 0 to 1"]),
        ({"channel": "packet_loss", "loss_rate": 1.5}, ["loss_rate 1.5", "from 0 to 1"]),
        ({"channel": "packet_loss", "concealment": "interp"}, ["'interp'", "zero", "repeat"]),
    ],
)
def test_bad_channel_arguments_raise_a_useful_channel_error(
    kwargs: dict, fragments: list[str], rng: np.random.Generator
) -> None:
    with pytest.raises(ChannelError) as info:
        apply_channel(sine(440.0, seconds=0.1), sr=SR, rng=rng, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert info.value.code == "invalid_channel" and info.value.status == 400


@pytest.mark.parametrize("name", sorted(RANDOM_CHANNELS))
def test_random_channels_need_an_rng(name: str) -> None:
    with pytest.raises(ChannelError, match=f"channel '{name}' is random and needs rng"):
        apply_channel(sine(440.0, seconds=0.1), sr=SR, channel=name)


@pytest.mark.parametrize(
    ("y", "sr", "fragment"),
    [
        (np.array([], dtype=np.float32), SR, "empty"),
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), SR, "1 non-finite"),
        (np.array([0.1, np.inf, -np.inf], dtype=np.float32), SR, "2 non-finite"),
        (np.zeros((2, 100), dtype=np.float32), SR, "shape (2, 100)"),
        (np.zeros(100, dtype=np.int16), SR, "dtype int16"),
        (np.zeros(100, dtype=np.float32), 0, "sample rate 0"),
        (np.zeros(100, dtype=np.float32), "16000", "sample rate '16000'"),
    ],
)
def test_bad_audio_raises_a_useful_channel_error(y: np.ndarray, sr: object, fragment: str) -> None:
    with pytest.raises(ChannelError, match="expected") as info:
        apply_channel(y, sr=sr, channel="g711_ulaw")  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_noise_on_silence_is_refused(rng: np.random.Generator) -> None:
    with pytest.raises(ChannelError, match="all zeros"):
        apply_channel(np.zeros(800, dtype=np.float32), sr=8000, channel="noise", rng=rng)


@pytest.mark.parametrize(
    "chain", ["g711_ulaw", [("amr_nb",)], [42], [("noise", 20.0)], [("g729", {})]]
)
def test_bad_chains_raise_channel_error(chain: object, rng: np.random.Generator) -> None:
    with pytest.raises(ChannelError):
        apply_chain(sine(440.0, seconds=0.1), sr=SR, chain=chain, rng=rng)  # type: ignore[arg-type]


def test_random_chain_needs_a_generator() -> None:
    with pytest.raises(ChannelError, match="expected a numpy Generator"):
        random_chain(42)  # type: ignore[arg-type]


def test_channel_error_is_a_voicecheck_error() -> None:
    with pytest.raises(VoiceCheckError):
        apply_channel(sine(440.0), sr=SR, channel="nope")


def test_samples_beyond_full_scale_are_clipped_not_refused() -> None:
    y = 1.5 * sine(440.0, sr=8000, seconds=0.2, amp=1.0)
    out, _ = apply_channel(y, sr=8000, channel="clean")
    assert np.max(np.abs(out)) == 1.0
