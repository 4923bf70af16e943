import io
import math
import struct

import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import voiced
from media import FORMATS, decode_with_pyav, require_format, write_audio, written_rate

from voicecheck import audio as audio_module
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


@pytest.mark.parametrize(
    ("fmt", "sr", "channels"),
    [("wav_float", 48000, 2), ("wav_float", 44100, 1), ("mp3", 44100, 2), ("amr_wb", 16000, 1)],
)
def test_streamed_resampling_equals_resampling_the_whole_recording(tmp_path, fmt, sr, channels):
    require_format(fmt)
    # 10 s: several decode blocks, and for MP3/AMR (FFmpeg) many small codec frames. The
    # steady tone keeps the signal loud at every block boundary, where a resampler that
    # restarted per block would go wrong.
    tone = 0.2 * np.sin(2 * np.pi * 430 * np.arange(10 * sr) / sr)
    y = np.stack([voiced(10.0, sr=sr, f0=120 + 60 * c, seed=c) + tone for c in range(channels)], 1)
    path = write_audio(tmp_path / f"long{FORMATS[fmt].suffix}", y, sr=sr, fmt=fmt)
    decoded, rate = decode_with_pyav(path)
    whole = soxr.resample(decoded, rate, ANALYSIS_SR_HZ, quality="HQ").T
    audio = load_audio(path)
    assert audio.samples.shape == whole.shape and audio.samples.flags.c_contiguous
    np.testing.assert_allclose(audio.samples, whole, atol=1e-4)


def test_a_file_object_is_read_from_where_it_stands():
    data = wav_bytes(voiced(1.5, sr=8000))
    f = io.BytesIO(b"preamble" + data)
    f.seek(8)
    np.testing.assert_array_equal(load_audio(f).samples, load_audio(data).samples)


def flac_declaring(data: bytes, n_samples: int) -> bytes:
    """A FLAC file with the sample count of its STREAMINFO block set (0: unknown)."""
    info = int.from_bytes(data[8:26], "big") & ~((1 << 36) - 1) | n_samples
    return data[:8] + info.to_bytes(18, "big") + data[26:]


def test_flac_stream_of_undeclared_length_decodes(tmp_path):
    # Live encoders write 0 (unknown) as the sample count of STREAMINFO.
    path = write_audio(tmp_path / "live.flac", voiced(3.0, sr=8000), sr=8000, fmt="flac")
    audio = load_audio(flac_declaring(path.read_bytes(), 0))
    assert audio.duration_s == pytest.approx(3.0, abs=0.01)


def test_output_of_undeclared_length_grows_without_changing_the_audio(tmp_path, rng):
    # 8 channels of 150 s: more than the first 32 MiB part of an output of unknown length
    t = np.arange(150 * 8000) / 8000
    y = np.stack([0.2 * np.sin(2 * np.pi * (200 + 50 * c) * t) for c in range(8)], 1)
    y += 0.01 * rng.standard_normal(y.shape)
    path = tmp_path / "eight.flac"
    sf.write(path, y, 8000, subtype="PCM_16")
    known = load_audio(path, require_speech=False)
    unknown = load_audio(flac_declaring(path.read_bytes(), 0), require_speech=False)
    assert unknown.samples.shape == (8, 150 * 8000) and unknown.samples.flags.c_contiguous
    np.testing.assert_array_equal(known.samples, unknown.samples)


def test_amr_with_discontinuous_transmission_decodes(tmp_path):
    # Phones stop sending speech frames in pauses: a comfort-noise (SID) frame, then
    # NO_DATA frames. 4 s of that before 2 s of speech.
    require_format("amr_nb")
    speech = write_audio(tmp_path / "s.amr", voiced(2.0, sr=8000), sr=8000, fmt="amr_nb")
    sid, no_data = b"\x44" + bytes(5), b"\x7c"
    audio = load_audio(b"#!AMR\n" + (sid + no_data * 7) * 25 + speech.read_bytes()[6:])
    assert audio.info.codec == "amr_nb"
    assert audio.duration_s == pytest.approx(6.0, abs=0.05)
    second = slice(4 * ANALYSIS_SR_HZ, None)
    assert (
        np.abs(audio.samples[0, second]).max() > 10 * np.abs(audio.samples[0, : second.start]).max()
    )


def test_a_header_that_declares_more_than_is_there_is_refused(tmp_path):
    path = write_audio(tmp_path / "c.flac", voiced(2.0, sr=8000), sr=8000, fmt="flac")
    with pytest.raises(errors.CorruptAudioError, match="declares 60.00 s of audio but only 2.00 s"):
        load_audio(flac_declaring(path.read_bytes(), 60 * 8000))


def test_too_long_is_refused_at_the_block_that_crosses_the_limit(tmp_path):
    # No length in the header: the limit is found while decoding, not after.
    path = write_audio(tmp_path / "c.flac", voiced(30.0, sr=8000), sr=8000, fmt="flac")
    with pytest.raises(errors.AudioTooLongError, match="longer than 10 s") as exc:
        load_audio(flac_declaring(path.read_bytes(), 0), max_duration_s=10.0)
    block_s = audio_module._block_frames(8000) / 8000
    assert exc.value.details["audio"].duration_s <= 10.0 + block_s  # within one block
