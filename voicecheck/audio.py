"""The one way audio enters voicecheck: decode, check, resample, validate.

``load_audio`` takes a path, bytes or a binary file object in any format callers
really send (WAV in all its encodings, FLAC, OGG/Vorbis, Opus, MP3, M4A/AAC,
AMR-NB, AMR-WB, 3GP, WebM, GSM) and returns mono-per-channel float32 audio at
:data:`~voicecheck.constants.ANALYSIS_SR_HZ` together with facts about the input.
soundfile (libsndfile) decodes what it can; PyAV (FFmpeg) decodes the rest.
Everything downstream receives validated arrays.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from .constants import (
    ACTIVITY_FLOOR_DBFS,
    ACTIVITY_RANGE_DB,
    ANALYSIS_SR_HZ,
    HOP_LENGTH,
    MAX_CHANNELS,
    MAX_DURATION_S,
    MAX_SAMPLE_RATE_HZ,
    MIN_DURATION_S,
    MIN_SAMPLE_RATE_HZ,
    MIN_SPEECH_S,
    SILENCE_DBFS,
)
from .errors import (
    AudioTooLongError,
    AudioTooShortError,
    CorruptAudioError,
    EmptyAudioError,
    InvalidSamplesError,
    NoSpeechError,
    UnsupportedFormatError,
    UnsupportedLayoutError,
)

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO

# libsndfile subtypes under the codec names FFmpeg uses, so that both decoders
# report the same vocabulary.
_SF_CODECS = {
    "PCM_S8": "pcm_s8",
    "PCM_U8": "pcm_u8",
    "PCM_16": "pcm_s16le",
    "PCM_24": "pcm_s24le",
    "PCM_32": "pcm_s32le",
    "FLOAT": "pcm_f32le",
    "DOUBLE": "pcm_f64le",
    "ULAW": "pcm_mulaw",
    "ALAW": "pcm_alaw",
    "GSM610": "gsm_ms",
    "IMA_ADPCM": "adpcm_ima_wav",
    "MS_ADPCM": "adpcm_ms",
    "G721_32": "g721",
    "VORBIS": "vorbis",
    "OPUS": "opus",
    "MPEG_LAYER_III": "mp3",
    "MPEG_LAYER_II": "mp2",
    "MPEG_LAYER_I": "mp1",
}
# FFmpeg decoder names under the codec's own name.
_AV_CODECS = {
    "mp3float": "mp3",
    "amrnb": "amr_nb",
    "amrwb": "amr_wb",
    "libopencore_amrnb": "amr_nb",
    "libopencore_amrwb": "amr_wb",
    "libopus": "opus",
    "libvorbis": "vorbis",
}
# Containers libsndfile handles well; anything else goes straight to PyAV.
_SF_CONTAINERS = {"WAV", "WAVEX", "FLAC", "OGG", "AIFF", "AU", "W64", "RF64", "CAF"}
# libsndfile reports Opus lengths loosely and stops early in damaged MP3; FFmpeg is exact.
_SF_BAD_SUBTYPES = {"OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III"}
# Leading bytes of the formats voicecheck reads, to tell damaged audio from non-audio.
_MAGIC = {
    b"RIFF": "WAV",
    b"RF64": "WAV",
    b"fLaC": "FLAC",
    b"OggS": "OGG",
    b"ID3": "MP3",
    b"#!AMR": "AMR",
    b"\x1a\x45\xdf\xa3": "WebM/Matroska",
    b"FORM": "AIFF",
    b".snd": "AU",
}


@dataclass(frozen=True)
class AudioInfo:
    """Facts about a decoded input, as the caller sent it.

    Attributes
    ----------
    container : str
        Container format, e.g. ``"wav"``, ``"flac"``, ``"amr"``, ``"mov,mp4,m4a,3gp"``.
    codec : str
        Codec name in FFmpeg's vocabulary, e.g. ``"pcm_mulaw"``, ``"amr_nb"``.
    sample_rate : int
        Original sample rate in Hz.
    channels : int
        Number of channels in the input.
    duration_s : float
        Decoded duration in seconds.
    size_bytes : int or None
        Size of the encoded input in bytes, when known.
    decoder : str
        ``"soundfile"`` or ``"pyav"``.
    """

    container: str
    codec: str
    sample_rate: int
    channels: int
    duration_s: float
    size_bytes: int | None
    decoder: str

    def to_dict(self) -> dict[str, object]:
        """Return the facts as a JSON-ready dict."""
        d = asdict(self)
        d["duration_s"] = round(self.duration_s, 3)
        return d


@dataclass(frozen=True)
class Audio:
    """Validated audio at the analysis rate.

    Attributes
    ----------
    samples : np.ndarray, shape (n_channels, n_samples), float32
        One row per input channel, at ``sr``; amplitude in full-scale units.
    sr : int
        Sample rate of ``samples`` in Hz (the analysis rate).
    info : AudioInfo
        Facts about the input as sent.
    """

    samples: np.ndarray
    sr: int
    info: AudioInfo

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        """Duration in seconds."""
        return self.samples.shape[1] / self.sr

    @property
    def mono(self) -> np.ndarray:
        """Downmix of all channels, shape (n_samples,), float32."""
        if self.n_channels == 1:
            return self.samples[0]
        return self.samples.mean(axis=0, dtype=np.float32)


def load_audio(
    source: Source,
    *,
    sr: int = ANALYSIS_SR_HZ,
    min_duration_s: float = MIN_DURATION_S,
    max_duration_s: float = MAX_DURATION_S,
    require_speech: bool = True,
) -> Audio:
    """Decode, validate and resample one recording.

    Parameters
    ----------
    source : path, bytes or binary file object
        The encoded recording.
    sr : int
        Output sample rate in Hz.
    min_duration_s, max_duration_s : float
        Accepted duration range in seconds.
    require_speech : bool
        Refuse silent recordings and recordings with less than
        :data:`~voicecheck.constants.MIN_SPEECH_S` of active speech.

    Returns
    -------
    Audio
        ``samples`` of shape (n_channels, n_samples), float32, at ``sr``.

    Raises
    ------
    voicecheck.errors.AudioError
        A subclass naming what is wrong: not audio, corrupt, empty, too short,
        too long, NaN/inf samples, unsupported rate or channel count, silent.

    Examples
    --------
    >>> import io, numpy as np, soundfile as sf
    >>> t = np.arange(8000 * 2) / 8000
    >>> y = 0.3 * np.sin(2 * np.pi * 200 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    >>> buf = io.BytesIO()
    >>> sf.write(buf, y, 8000, format="WAV", subtype="ULAW")
    >>> audio = load_audio(buf.getvalue())
    >>> audio.sr, audio.info.codec, audio.info.sample_rate, round(audio.duration_s, 2)
    (8000, 'pcm_mulaw', 8000, 2.0)
    """
    data, name = _read_source(source)
    if len(data) == 0:
        raise EmptyAudioError(f"{name} is empty (0 bytes); expected an audio recording")
    decoded = None
    if _sniff(data) != "MP3":  # libmpg123 inside libsndfile is noisy and stops early
        decoded = _decode_soundfile(data, max_duration_s=max_duration_s)
    if decoded is None:
        decoded = _decode_pyav(data, name=name, max_duration_s=max_duration_s)
    samples, in_sr, container, codec, decoder = decoded

    n_frames, n_channels = samples.shape
    if n_frames == 0:
        raise EmptyAudioError(f"{name} holds no audio samples ({container}, {codec})")
    duration_s = n_frames / in_sr
    info = AudioInfo(
        container=container,
        codec=codec,
        sample_rate=int(in_sr),
        channels=int(n_channels),
        duration_s=duration_s,
        size_bytes=len(data),
        decoder=decoder,
    )
    if not np.isfinite(samples.sum(dtype=np.float64)):  # no temporary array
        bad = int((~np.isfinite(samples)).sum())
        raise InvalidSamplesError(
            f"audio holds {bad} NaN or infinite sample(s); expected finite samples", audio=info
        )
    if duration_s < min_duration_s:
        raise AudioTooShortError(
            f"audio is {duration_s:.2f} s long; at least {min_duration_s:.1f} s is needed",
            audio=info,
        )
    if duration_s > max_duration_s:
        raise AudioTooLongError(
            f"audio is {duration_s:.1f} s long; at most {max_duration_s:.0f} s is accepted",
            audio=info,
        )
    out = _resample(samples, in_sr, sr)
    audio = Audio(samples=out, sr=sr, info=info)
    if require_speech:
        check_speech(audio.mono, sr=sr, info=info)
    return audio


def frame_power(y: np.ndarray, *, hop: int) -> np.ndarray:
    """Mean square of consecutive, non-overlapping frames of ``hop`` samples.

    Returns
    -------
    np.ndarray, shape (len(y) // hop,), float64
        Power per frame in full-scale units (no temporary copy of ``y``).
    """
    n = y.size // hop
    frames = y[: n * hop].reshape(n, hop)
    return np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / hop


def speech_seconds(y: np.ndarray, *, sr: int) -> tuple[float, float]:
    """Measure peak level and amount of active speech.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio in full-scale units.
    sr : int
        Sample rate in Hz.

    Returns
    -------
    peak_dbfs : float
        Peak level in dB re full scale (``-inf`` for digital silence).
    active_s : float
        Seconds of 10 ms frames within ``ACTIVITY_RANGE_DB`` of the loudest
        frame and above ``ACTIVITY_FLOOR_DBFS``.
    """
    peak = max(float(y.max()), -float(y.min())) if y.size else 0.0
    peak_dbfs = 20 * math.log10(peak) if peak > 0 else -math.inf
    hop = max(1, int(round(sr * HOP_LENGTH / ANALYSIS_SR_HZ)))
    if y.size < hop:
        return peak_dbfs, 0.0
    energy_db = 10 * np.log10(frame_power(y, hop=hop) + 1e-12)
    active = (energy_db > energy_db.max() - ACTIVITY_RANGE_DB) & (energy_db > ACTIVITY_FLOOR_DBFS)
    return peak_dbfs, float(active.sum() * hop / sr)


def check_speech(y: np.ndarray, *, sr: int, info: AudioInfo | None = None) -> None:
    """Raise :class:`NoSpeechError` when ``y`` is silent or holds too little speech."""
    peak_dbfs, active_s = speech_seconds(y, sr=sr)
    if peak_dbfs < SILENCE_DBFS:
        raise NoSpeechError(
            f"audio is silent: peak level {peak_dbfs:.1f} dBFS; "
            f"expected a recording with speech louder than {SILENCE_DBFS:.0f} dBFS",
            audio=info,
        )
    if active_s < MIN_SPEECH_S:
        raise NoSpeechError(
            f"audio holds {active_s:.2f} s of speech; at least {MIN_SPEECH_S:.1f} s is needed",
            audio=info,
        )


def _read_source(source: Source) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), "input"
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise UnsupportedFormatError(f"{path} does not exist")
        if path.is_dir():
            raise UnsupportedFormatError(f"{path} is a directory; expected an audio file")
        return path.read_bytes(), path.name
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, bytes | bytearray):
            raise UnsupportedFormatError("file object is not opened in binary mode")
        return bytes(data), getattr(source, "name", "input") or "input"
    raise TypeError(f"cannot read audio from {type(source).__name__}")


def _check_layout(rate: float, channels: int, where: str) -> None:
    if not (MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ):
        raise UnsupportedLayoutError(
            f"sample rate is {rate:g} Hz; expected {MIN_SAMPLE_RATE_HZ}-{MAX_SAMPLE_RATE_HZ} Hz"
            f" ({where})"
        )
    if not (1 <= channels <= MAX_CHANNELS):
        raise UnsupportedLayoutError(
            f"audio has {channels} channels; expected 1 to {MAX_CHANNELS} ({where})"
        )


def _decode_soundfile(data: bytes, *, max_duration_s: float):
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.format not in _SF_CONTAINERS or f.subtype in _SF_BAD_SUBTYPES:
                return None
            container, subtype = f.format, f.subtype
            _check_layout(f.samplerate, f.channels, f"{container.lower()} header")
            declared_s = f.frames / f.samplerate if f.frames >= 0 else 0.0
            if declared_s > max_duration_s + 1:
                raise AudioTooLongError(
                    f"audio is {declared_s:.1f} s long; at most {max_duration_s:.0f} s is accepted"
                )
            samples = f.read(dtype="float32", always_2d=True)
            sr = f.samplerate
            if container in ("WAV", "WAVEX"):
                _check_riff_length(data, read_s=samples.shape[0] / sr)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    if samples.shape[0] == 0:
        # libsndfile opened the header but found no data: let FFmpeg have a look
        # before calling the file empty (some encoders write lengths lazily).
        return None
    codec = _SF_CODECS.get(subtype, subtype.lower())
    if container == "FLAC":
        codec = "flac"
    return samples, sr, container.lower(), codec, "soundfile"


def _decode_pyav(data: bytes, *, name: str, max_duration_s: float):
    import av  # imported lazily: only inputs libsndfile cannot read need FFmpeg

    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        kind = _sniff(data)
        if kind is not None:
            raise CorruptAudioError(
                f"{name} looks like {kind} but could not be opened ({_av_reason(exc)}); "
                "the file is damaged or truncated"
            ) from None
        raise UnsupportedFormatError(
            f"{name} is not a recognised audio file ({_av_reason(exc)}); expected WAV, FLAC, "
            "OGG/Vorbis, Opus, MP3, M4A/AAC, AMR-NB, AMR-WB, 3GP, WebM or GSM"
        ) from None
    with container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            raise UnsupportedFormatError(
                f"{name} ({container.format.name}) has no audio stream; expected an audio recording"
            )
        stream = streams[0]
        cc = stream.codec_context
        rate = cc.sample_rate or 0
        channels = cc.channels or 0
        codec = _AV_CODECS.get(cc.name, cc.name)
        cname = container.format.name
        if rate == 0 or channels == 0:
            raise CorruptAudioError(
                f"{name} ({cname}, {codec}) does not declare a sample rate or channel count;"
                " the file is damaged or truncated"
            )
        _check_layout(rate, channels, f"{cname} header")
        declared_s = (container.duration or 0) / 1_000_000
        if declared_s > 0:
            if declared_s > max_duration_s + 1:
                raise AudioTooLongError(
                    f"audio is {declared_s:.1f} s long; at most {max_duration_s:.0f} s is accepted"
                )
        max_frames = int((max_duration_s + 1) * rate)
        resampler = av.AudioResampler(format="fltp", layout=cc.layout, rate=rate)
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        arr = out.to_ndarray()
                        chunks.append(arr)
                        total += arr.shape[1]
                if total > max_frames:
                    raise AudioTooLongError(
                        f"audio is longer than {max_duration_s:.0f} s, the most accepted"
                    )
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except av.error.FFmpegError as exc:
            if total == 0:
                raise CorruptAudioError(
                    f"{name} ({cname}, {codec}) could not be decoded ({_av_reason(exc)}); "
                    "the file is damaged or truncated"
                ) from None
            raise CorruptAudioError(
                f"{name} ({cname}, {codec}) is damaged after {total / rate:.2f} s "
                f"({_av_reason(exc)}); expected a complete recording"
            ) from None
    if not chunks:
        return np.zeros((0, channels), np.float32), rate, cname, codec, "pyav"
    samples = np.concatenate(chunks, axis=1).T
    if declared_s > 0:
        read_s = samples.shape[0] / rate
        if declared_s - read_s > max(0.5, 0.1 * declared_s):
            raise CorruptAudioError(
                f"{name} is truncated: its header declares {declared_s:.2f} s of audio but only "
                f"{read_s:.2f} s could be decoded; expected a complete recording"
            )
    return samples, rate, cname, codec, "pyav"


def _check_riff_length(data: bytes, *, read_s: float) -> None:
    """Refuse a WAV file whose data chunk is shorter than its header declares."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        return
    pos, byte_rate = 12, 0
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if tag == b"fmt " and pos + 16 <= len(data):
            byte_rate = int.from_bytes(data[pos + 16 : pos + 20], "little")
        if tag == b"data":
            available = len(data) - pos - 8
            unknown = size in (0, 0xFFFFFFFF) or data[:4] == b"RF64"
            if not unknown and byte_rate and size - available > byte_rate // 100:
                raise CorruptAudioError(
                    f"file is truncated: its header declares {size / byte_rate:.2f} s of audio "
                    f"but only {read_s:.2f} s is present; expected a complete recording"
                )
            return
        pos += 8 + size + (size & 1)


def _sniff(data: bytes) -> str | None:
    """Name the audio format ``data`` starts like, or None."""
    for magic, kind in _MAGIC.items():
        if data.startswith(magic):
            return kind
    if data[4:8] == b"ftyp":
        return "MP4/M4A/3GP"
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        return "MP3"
    return None


def _av_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[0].strip().lower() or type(exc).__name__


def _resample(samples: np.ndarray, in_sr: int, out_sr: int) -> np.ndarray:
    """Resample (n_frames, n_channels) to (n_channels, n_frames) float32 at ``out_sr``."""
    if in_sr != out_sr:
        samples = soxr.resample(samples, in_sr, out_sr, quality="HQ")
    return np.ascontiguousarray(samples.T, dtype=np.float32)
