import io
import math
import struct

import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import voiced
from media import FORMATS, require_format, write_audio, written_rate

from voicecheck import errors
from voicecheck.audio import load_audio
from voicecheck.constants import ANALYSIS_SR_HZ

CODEC_NAMES = {"mp3float": "mp3", "amrnb": "amr_nb", "amrwb": "amr_wb"}


def correlation(a, b):
    n = min(a.size, b.size)
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    return float(a @ b / math.sqrt((a @ a) * (b @ b)))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_decodes(tmp_path, fmt):
    require_format(fmt)
    info = FORMATS[fmt]
    sr = written_rate(fmt, 16000)
    y = voiced(2.0, sr=sr)
    path = write_audio(tmp_path / f"call{info.suffix}", y, sr=sr, fmt=fmt)
    audio = load_audio(path)
    assert audio.sr == ANALYSIS_SR_HZ
    assert audio.samples.dtype == np.float32 and audio.samples.shape[0] == 1
    assert audio.info.codec == CODEC_NAMES.get(info.codec, info.codec)
    assert audio.info.sample_rate == (info.av_rate or sr)
    assert audio.info.channels == 1
    assert audio.duration_s == pytest.approx(2.0, abs=0.07)
    reference = soxr.resample(y, sr, ANALYSIS_SR_HZ)
    # Lossy codecs shift phase and delay; compare envelopes, which any codec keeps.
    env = lambda x: np.abs(x)[: x.size // 400 * 400].reshape(-1, 400).mean(1)  # noqa: E731
    assert correlation(env(audio.samples[0]), env(reference)) > 0.9


@pytest.mark.parametrize("fmt", [f for f, i in sorted(FORMATS.items()) if i.max_channels >= 2])
def test_stereo_keeps_each_channel(tmp_path, fmt):
    require_format(fmt)
    sr = written_rate(fmt, 16000)
    left, right = voiced(2.0, sr=sr, f0=120), voiced(2.0, sr=sr, f0=220, seed=1)
    right = right * (np.arange(right.size) > right.size // 2)  # second half only
    path = write_audio(
        tmp_path / f"s{FORMATS[fmt].suffix}", np.stack([left, right], 1), sr=sr, fmt=fmt
    )
    audio = load_audio(path)
    assert audio.n_channels == 2 and audio.info.channels == 2
    first, second = np.split(audio.samples[:, : audio.samples.shape[1] // 2 * 2], 2, axis=1)
    assert np.abs(first[1]).max() < 0.1 * np.abs(first[0]).max()  # right silent at first
    assert np.abs(second[1]).max() > 0.3 * np.abs(second[0]).max()
    assert audio.mono.shape == (audio.samples.shape[1],)


def wav_bytes(y, sr=8000, subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def test_bytes_path_and_file_object_give_the_same_audio(tmp_path):
    data = wav_bytes(voiced(1.5, sr=8000))
    path = tmp_path / "appel téléphonique.wav"
    path.write_bytes(data)
    a = load_audio(data)
    b = load_audio(path)
    with open(path, "rb") as f:
        c = load_audio(f)
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.samples, c.samples)
    assert a.info.size_bytes == len(data)


def test_decode_is_resampled_once_to_the_analysis_rate():
    a = load_audio(wav_bytes(voiced(1.5, sr=44100), sr=44100))
    assert a.info.sample_rate == 44100 and a.sr == 8000
    assert a.samples.shape[1] == 12000


def riff(sr=8000, channels=1, bits=16, data=b"", declared=None):
    block = channels * bits // 8
    size = len(data) if declared is None else declared
    fmt = struct.pack("<HHIIHH", 1, channels, sr, sr * block, block, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + size)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", size)
        + data
    )


BAD = {
    "not audio": (
        b"Dear voter, please stay home on Tuesday.\n" * 20,
        errors.UnsupportedFormatError,
        "not a recognised audio file",
    ),
    "empty": (b"", errors.EmptyAudioError, "0 bytes"),
    "truncated header": (
        wav_bytes(voiced(1.0, sr=8000))[:30],
        errors.CorruptAudioError,
        "looks like WAV but could not be opened",
    ),
    "truncated data": (
        wav_bytes(voiced(3.0, sr=8000))[:24000],
        errors.CorruptAudioError,
        "truncated: its header declares 3.00 s",
    ),
    "tiny file claiming hours": (
        riff(data=b"\x00\x01" * 800, declared=2_000_000_000),
        errors.CorruptAudioError,
        "declares 125000.00 s .* only 0.10 s",
    ),
    "no samples": (riff(data=b""), errors.EmptyAudioError, "no audio samples"),
    "one sample": (riff(data=b"\x10\x00"), errors.AudioTooShortError, "0.00 s long"),
    "silent": (wav_bytes(np.zeros(16000, np.float32)), errors.NoSpeechError, "silent"),
    "near silent": (wav_bytes(voiced(2.0, sr=8000) * 1e-4), errors.NoSpeechError, "silent"),
    "too short": (
        wav_bytes(voiced(0.3, sr=8000)),
        errors.AudioTooShortError,
        "0.30 s long; at least 0.5 s",
    ),
    "absurd rate": (
        riff(sr=1_000_000, data=b"\x00\x10" * 1000),
        errors.UnsupportedLayoutError,
        "1e\\+06 Hz|1000000 Hz",
    ),
    "tiny rate": (riff(sr=100, data=b"\x00\x10" * 1000), errors.UnsupportedLayoutError, "100 Hz"),
    "too many channels": (
        riff(channels=32, data=b"\x00\x10" * 32 * 100),
        errors.UnsupportedLayoutError,
        "32 channels; expected 1 to 8",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_a_clear_error(case):
    data, exc_type, message = BAD[case]
    with pytest.raises(exc_type, match=message) as info:
        load_audio(data)
    assert info.value.code and 400 <= info.value.status < 500
    assert "Traceback" not in str(info.value) and len(str(info.value)) > 15


def test_nan_and_inf_samples_are_refused():
    y = voiced(1.5, sr=8000)
    for bad in (np.nan, np.inf):
        y2 = y.copy()
        y2[100] = bad
        with pytest.raises(errors.InvalidSamplesError, match="NaN or infinite"):
            load_audio(wav_bytes(y2, subtype="FLOAT"))


def test_longer_than_maximum_is_refused_before_decoding_everything():
    data = wav_bytes(voiced(3.0, sr=8000))
    with pytest.raises(errors.AudioTooLongError, match="at most 2 s"):
        load_audio(data, max_duration_s=2.0)


def test_compressed_too_long_is_refused(tmp_path):
    path = write_audio(tmp_path / "long.flac", voiced(4.0, sr=8000), sr=8000, fmt="flac")
    with pytest.raises(errors.AudioTooLongError):
        load_audio(path, max_duration_s=2.0)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(errors.AudioError, match="does not exist"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(errors.AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_truncated_compressed_file_is_an_error(tmp_path):
    path = write_audio(tmp_path / "c.flac", voiced(3.0, sr=8000), sr=8000, fmt="flac")
    data = path.read_bytes()
    with pytest.raises(errors.CorruptAudioError):
        load_audio(data[: len(data) // 2])


def test_errors_have_problem_details():
    with pytest.raises(errors.AudioError) as info:
        load_audio(wav_bytes(voiced(0.3, sr=8000)))
    problem = info.value.to_problem()
    assert problem["status"] == 422 and problem["code"] == "audio_too_short"
    assert problem["audio"]["sample_rate"] == 8000
