"""The one way audio enters voicecheck: decode, check, resample, validate.

``load_audio`` takes a path, bytes or a binary file object in any format callers
really send (WAV in all its encodings, FLAC, OGG/Vorbis, Opus, MP3, M4A/AAC,
AMR-NB, AMR-WB, 3GP, WebM, GSM) and returns mono-per-channel float32 audio at
:data:`~voicecheck.constants.ANALYSIS_SR_HZ` together with facts about the input.
soundfile (libsndfile) decodes what it can; PyAV (FFmpeg) decodes the rest.
Everything downstream receives validated arrays.

Decoding is streamed: blocks of :data:`DECODE_BLOCK_S` seconds are checked (finite
samples, duration within the limit) and resampled to the analysis rate as they come,
so a bad file fails at its first bad block, and memory grows with the output at the
analysis rate rather than with the size or sample rate of the input.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import BinaryIO, NamedTuple

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

DECODE_BLOCK_S = 4.0
"""Seconds of audio decoded, checked and resampled at a time (at least
:data:`DECODE_BLOCK_FRAMES` frames)."""

DECODE_BLOCK_FRAMES = 2**17
"""Fewest frames decoded at a time (16.4 s at 8 kHz): a block of telephone audio costs less to
handle than to decode, so low rates are taken in longer blocks (0.5 MiB per channel)."""


def _block_frames(rate: float) -> int:
    """Frames decoded, checked and resampled at a time at ``rate`` Hz."""
    return max(DECODE_BLOCK_FRAMES, int(DECODE_BLOCK_S * rate))

_HEAD_BYTES = 64  # leading bytes kept to tell formats apart
# libsndfile reports SF_COUNT_MAX frames for a stream that does not declare its length
# (a FLAC stream whose STREAMINFO says 0 samples, for one).
_SF_UNKNOWN_FRAMES = 1 << 62
_MAX_RIFF_CHUNKS = 1000  # chunk headers walked looking for a WAV file's data chunk
# The output is preallocated from the declared length only up to this many bytes of
# output per byte of input (honest telephone codecs stay below 25); a header that
# claims more is not trusted, and the output grows as blocks arrive instead.
_TRUSTED_EXPANSION = 64
# Output added at a time when the length is unknown or not trusted: 32 MiB, the size
# above which glibc always maps memory of its own, so a part given back is unmapped.
_GROWTH_BYTES = 32 << 20
# FFmpeg's own AMR decoders stop at the comfort-noise (SID) and NO_DATA frames that
# discontinuous transmission writes; the 3GPP reference decoders read them. A file
# FFmpeg's decoder fails on is decoded again with these, where the build has them.
_AV_FALLBACK_DECODERS = {"amrnb": "libopencore_amrnb", "amrwb": "libopencore_amrwb"}
# Containers with no length field: FFmpeg estimates their duration from the bit rate of
# the first frames, which is far off when a call begins in discontinuous transmission.
_AV_ESTIMATED_LENGTH = {"amr", "amrnb", "amrwb"}

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

    The recording is decoded in blocks of :data:`DECODE_BLOCK_S` seconds. Each block is
    checked (finite samples; total duration at most ``max_duration_s``) and resampled
    to ``sr`` as it comes (soxr, quality ``"HQ"``), so that a bad file fails at its
    first bad block and peak memory is about the size of the output at ``sr``. A path
    is read from disk as it decodes; bytes and binary file objects are read in place.

    Parameters
    ----------
    source : path, bytes or binary file object
        The encoded recording. A file object is read from its current position; one
        that cannot seek, or that is not at its start, is read into memory first.
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
    src = _open_source(source)
    try:
        if src.size == 0:
            raise EmptyAudioError(f"{src.name} is empty (0 bytes); expected an audio recording")
        kind = _sniff(src.head)
        riff = _read_riff(src) if kind == "WAV" else None
        if riff is not None and riff.rate is not None:
            _check_layout(riff.rate, riff.channels, "wav header")  # before either decoder
        decoded = None
        if kind != "MP3":  # libmpg123 inside libsndfile is noisy and stops early
            decoded = _decode_soundfile(src, sr=sr, max_duration_s=max_duration_s, riff=riff)
        if decoded is None:
            decoded = _decode_pyav(src, sr=sr, max_duration_s=max_duration_s)
    finally:
        if src.owned:
            src.file.close()
    info = decoded.info
    if decoded.frames == 0:
        raise EmptyAudioError(f"{src.name} holds no audio samples ({info.container}, {info.codec})")
    if info.duration_s < min_duration_s:
        raise AudioTooShortError(
            f"audio is {info.duration_s:.2f} s long; at least {min_duration_s:.1f} s is needed",
            audio=info,
        )
    audio = Audio(samples=decoded.samples, sr=sr, info=info)
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
    # float32 sums of a frame's squares are exact to a few parts in 10**7, and 3x faster
    return np.einsum("ij,ij->i", frames, frames).astype(np.float64) / hop


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


class _Input(NamedTuple):
    """An encoded recording opened for decoding."""

    file: BinaryIO  # seekable, read from offset 0
    name: str  # for messages: a file's base name, else "input"
    size: int  # bytes
    head: bytes  # the first _HEAD_BYTES bytes
    owned: bool  # opened here, so closed here


class _Decoded(NamedTuple):
    """What a decoder hands back: the output, the facts, and the input frame count."""

    samples: np.ndarray  # (n_channels, n_samples) float32 at the output rate
    info: AudioInfo
    frames: int  # frames decoded at the input rate


def _open_source(source: Source) -> _Input:
    """Open ``source`` for reading without loading a path or a seekable file into memory."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = source if isinstance(source, bytes) else bytes(source)
        return _Input(io.BytesIO(data), "input", len(data), data[:_HEAD_BYTES], owned=True)
    if isinstance(source, str | os.PathLike):
        return _open_path(Path(source))
    if hasattr(source, "read"):
        return _open_file_object(source)
    raise TypeError(f"cannot read audio from {type(source).__name__}")


def _open_path(path: Path) -> _Input:
    try:
        if path.is_dir():
            raise UnsupportedFormatError(f"{path} is a directory; expected an audio file")
        file = open(path, "rb")  # closed by load_audio
    except FileNotFoundError:
        raise UnsupportedFormatError(f"{path} does not exist; expected an audio file") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UnsupportedFormatError(
            f"{path} cannot be opened ({reason}); expected a readable audio file"
        ) from None
    if not file.seekable():  # a pipe or a device: read what it holds
        with file:
            data = file.read()
        return _Input(io.BytesIO(data), path.name, len(data), data[:_HEAD_BYTES], owned=True)
    size = file.seek(0, io.SEEK_END)
    file.seek(0)
    head = file.read(_HEAD_BYTES)
    return _Input(file, path.name, size, head, owned=True)


def _open_file_object(source: BinaryIO) -> _Input:
    raw_name = getattr(source, "name", None)
    name = os.path.basename(raw_name) if isinstance(raw_name, str) and raw_name else "input"
    try:
        probe = source.read(0)
        at_start = source.seekable() and source.tell() == 0
    except (OSError, ValueError) as exc:
        raise UnsupportedFormatError(
            f"file object cannot be read ({exc}); expected an open binary file object"
        ) from None
    if not isinstance(probe, bytes | bytearray):
        raise UnsupportedFormatError("file object is not opened in binary mode")
    if not at_start:
        data = bytes(source.read())
        return _Input(io.BytesIO(data), name, len(data), data[:_HEAD_BYTES], owned=True)
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    head = bytes(source.read(_HEAD_BYTES))
    return _Input(source, name, size, head, owned=False)


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


def _check_declared(info: AudioInfo, *, max_duration_s: float) -> None:
    """Refuse, before decoding, a recording whose header declares too long a duration."""
    if info.duration_s > max_duration_s + 1:  # a second of slack for estimated lengths
        raise AudioTooLongError(
            f"audio is {info.duration_s:.1f} s long, as the file declares; "
            f"at most {max_duration_s:.0f} s is accepted",
            audio=info,
        )


class _Output:
    """A (n_channels, n_frames) float32 array filled block by block.

    Starts with ``capacity`` frames; beyond that it grows by parts of ``growth`` frames.
    Growing copies nothing; the parts are joined once at the end, each freed as soon as
    it is copied, so that joining needs about one part more than the output itself.
    """

    def __init__(self, channels: int, *, capacity: int, growth: int) -> None:
        self._parts: list[np.ndarray] = []
        self._buf = np.empty((channels, max(1, capacity)), np.float32)
        self._n = 0
        self._growth = max(1, growth)

    def append(self, block: np.ndarray) -> None:
        """Append ``block``, shape (n_frames, n_channels)."""
        done = 0
        while done < block.shape[0]:
            if self._n == self._buf.shape[1]:
                self._parts.append(self._buf)
                self._buf = np.empty((self._buf.shape[0], self._growth), np.float32)
                self._n = 0
            k = min(block.shape[0] - done, self._buf.shape[1] - self._n)
            self._buf[:, self._n : self._n + k] = block[done : done + k].T
            self._n += k
            done += k

    def result(self) -> np.ndarray:
        """The filled frames, C-contiguous."""
        if not self._parts:
            if self._n == self._buf.shape[1]:
                return self._buf
            return self._buf[:, : self._n].copy()
        parts, self._parts = [*self._parts, self._buf[:, : self._n]], []
        self._buf = self._buf[:, :0]
        out = np.empty((parts[0].shape[0], sum(p.shape[1] for p in parts)), np.float32)
        start = 0
        while parts:
            part = parts.pop(0)
            out[:, start : start + part.shape[1]] = part
            start += part.shape[1]
            del part  # the last reference: unmapped before the next part is copied
        return out


class _Collector:
    """Check decoded blocks as they come and resample them to the output rate.

    Parameters
    ----------
    info : AudioInfo
        Facts from the header; ``duration_s`` is the declared duration (0 when unknown).
    out_sr : int
        Output sample rate in Hz.
    max_duration_s : float
        Longest recording accepted, in seconds.
    declared_frames : int or None
        Frames the header declares at the input rate, or None when it does not say.
    """

    def __init__(
        self, info: AudioInfo, *, out_sr: int, max_duration_s: float, declared_frames: int | None
    ) -> None:
        self.info = info
        self.frames = 0  # frames pushed, at the input rate
        self._checked = 0  # frames checked and resampled
        self._in_sr = info.sample_rate
        self._channels = info.channels
        self._max_duration_s = max_duration_s
        self._declared = declared_frames
        self._block = _block_frames(self._in_sr)
        self._pending: list[np.ndarray] = []
        self._n_pending = 0
        self._stream = None
        if self._in_sr != out_sr:
            self._stream = soxr.ResampleStream(
                self._in_sr, out_sr, self._channels, dtype="float32", quality="HQ"
            )
        growth = _GROWTH_BYTES // (4 * self._channels)
        capacity = growth
        if declared_frames is not None:
            # soxr gives round(n * out_sr / in_sr) frames for n input frames
            expected = (2 * declared_frames * out_sr + self._in_sr) // (2 * self._in_sr)
            trusted = _TRUSTED_EXPANSION * max(info.size_bytes or 0, 1) // (4 * self._channels)
            capacity = min(expected, max(trusted, growth))
        self._out = _Output(self._channels, capacity=capacity, growth=growth)

    def push(self, block: np.ndarray, *, reused: bool = False) -> None:
        """Take ``block``, shape (n_frames, n_channels), float32 at the input rate.

        Small blocks (a codec frame) are gathered and checked and resampled together;
        ``reused`` says the decoder will overwrite ``block``, so a gathered one is copied.
        """
        n = block.shape[0]
        if n == 0:
            return
        if block.ndim != 2 or block.shape[1] != self._channels:
            raise CorruptAudioError(
                f"a block of audio has shape {block.shape}; expected {self._channels} channel(s)"
                " as the header declares; the file is damaged",
                audio=self.info,
            )
        self.frames += n
        if self.frames / self._in_sr > self._max_duration_s:
            max_s = self._max_duration_s
            if self._declared is not None and self._declared >= self.frames:
                message = (
                    f"audio is {self.info.duration_s:.1f} s long; at most {max_s:.0f} s is accepted"
                )
            else:
                message = f"audio is longer than {max_s:.0f} s, the most accepted"
            raise AudioTooLongError(message, audio=self._facts())
        if not self._pending and n >= self._block:
            self._take(np.ascontiguousarray(block))
            return
        self._pending.append(np.array(block) if reused else block)
        self._n_pending += n
        if self._n_pending >= self._block:
            self._flush_pending()

    def finish(self) -> _Decoded:
        """Resample what is left and return the output with the facts of the whole input."""
        self._flush_pending()
        if self._stream is not None:
            self._out.append(
                self._stream.resample_chunk(np.zeros((0, self._channels), np.float32), last=True)
            )
        info = replace(self.info, duration_s=self.frames / self._in_sr)
        return _Decoded(self._out.result(), info, self.frames)

    def check_complete(self, name: str) -> None:
        """Refuse a recording that decodes to clearly less than its header declares."""
        declared_s = self.info.duration_s
        if self.frames and self._declared is not None and declared_s > 0:
            read_s = self.frames / self._in_sr
            if declared_s - read_s > max(0.5, 0.1 * declared_s):
                raise CorruptAudioError(
                    f"{name} is truncated: its header declares {declared_s:.2f} s of audio but "
                    f"only {read_s:.2f} s could be decoded; expected a complete recording"
                )

    def _facts(self) -> AudioInfo:
        """The facts so far: the declared duration, or what has been decoded."""
        if self._declared is not None and self._declared >= self.frames:
            return self.info
        return replace(self.info, duration_s=self.frames / self._in_sr)

    def _flush_pending(self) -> None:
        if self._pending:
            block = np.concatenate(self._pending)  # also makes a lone block contiguous
            self._pending, self._n_pending = [], 0
            self._take(block)

    def _take(self, block: np.ndarray) -> None:
        """Check a contiguous block for NaN and infinity, then resample it into the output."""
        end = self._checked + block.shape[0]
        if not np.isfinite(block.sum(dtype=np.float64)):  # no temporary array
            bad = int(np.count_nonzero(~np.isfinite(block)))
            raise InvalidSamplesError(
                f"audio holds {bad} NaN or infinite sample(s) in its first "
                f"{end / self._in_sr:.2f} s; expected finite samples",
                audio=self._facts(),
            )
        self._checked = end
        out = block if self._stream is None else self._stream.resample_chunk(block)
        self._out.append(out)


def _decode_soundfile(
    src: _Input, *, sr: int, max_duration_s: float, riff: _RiffHeader | None
) -> _Decoded | None:
    """Decode with libsndfile, or return None for PyAV to try."""
    src.file.seek(0)
    try:
        f = sf.SoundFile(src.file)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    with f:
        if f.format not in _SF_CONTAINERS or f.subtype in _SF_BAD_SUBTYPES:
            return None
        container, rate, channels = f.format, f.samplerate, f.channels
        _check_layout(rate, channels, f"{container.lower()} header")
        declared = f.frames if 0 <= f.frames < _SF_UNKNOWN_FRAMES else None
        info = AudioInfo(
            container=container.lower(),
            codec="flac" if container == "FLAC" else _SF_CODECS.get(f.subtype, f.subtype.lower()),
            sample_rate=int(rate),
            channels=int(channels),
            duration_s=(declared or 0) / rate,
            size_bytes=src.size,
            decoder="soundfile",
        )
        _check_declared(info, max_duration_s=max_duration_s)
        if container in ("WAV", "WAVEX"):
            _check_riff_length(riff, name=src.name, read_s=info.duration_s)
        collector = _Collector(
            info, out_sr=sr, max_duration_s=max_duration_s, declared_frames=declared
        )
        buf = np.empty((_block_frames(rate), channels), np.float32)
        while True:
            try:
                block = f.read(len(buf), dtype="float32", always_2d=True, out=buf)
            except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
                return None
            if block.shape[0] == 0:
                break
            collector.push(block, reused=True)
    if collector.frames == 0:
        # libsndfile opened the header but found no data: let FFmpeg have a look
        # before calling the file empty (some encoders write lengths lazily).
        return None
    collector.check_complete(src.name)
    return collector.finish()


def _decode_pyav(
    src: _Input, *, sr: int, max_duration_s: float, decoder: str | None = None
) -> _Decoded:
    """Decode with FFmpeg through PyAV, with ``decoder`` or the stream's default one."""
    import av  # imported lazily: only inputs libsndfile cannot read need FFmpeg

    name = src.name
    src.file.seek(0)
    try:
        container = av.open(src.file, mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError) as exc:
        kind = _sniff(src.head)
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
        cname = container.format.name
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            raise UnsupportedFormatError(
                f"{name} ({cname}) has no audio stream; expected an audio recording"
            )
        stream = streams[0]
        cc = stream.codec_context
        if cc is None:
            raise UnsupportedFormatError(
                f"{name} ({cname}) holds audio in a codec that FFmpeg cannot decode; expected "
                "PCM, A-law, mu-law, FLAC, Vorbis, Opus, MP3, AAC, AMR-NB, AMR-WB or GSM audio"
            )
        rate = cc.sample_rate or 0
        channels = cc.channels or 0
        codec_name = cc.name
        codec = _AV_CODECS.get(codec_name, codec_name)
        if rate == 0 or channels == 0:
            raise CorruptAudioError(
                f"{name} ({cname}, {codec}) does not declare a sample rate or channel count;"
                " the file is damaged or truncated"
            )
        _check_layout(rate, channels, f"{cname} header")
        declared_s = 0.0
        if cname not in _AV_ESTIMATED_LENGTH:
            declared_s = max(0.0, (container.duration or 0) / 1_000_000)
        info = AudioInfo(
            container=cname,
            codec=codec,
            sample_rate=int(rate),
            channels=int(channels),
            duration_s=declared_s,
            size_bytes=src.size,
            decoder="pyav",
        )
        _check_declared(info, max_duration_s=max_duration_s)
        collector = _Collector(
            info,
            out_sr=sr,
            max_duration_s=max_duration_s,
            declared_frames=round(declared_s * rate) if declared_s > 0 else None,
        )
        blocks = _pyav_blocks(container, stream, rate, decoder=decoder)
        failure = None
        while True:
            try:
                block = next(blocks, None)
            except (av.error.FFmpegError, ValueError) as exc:
                failure = exc
                break
            if block is None:
                break
            collector.push(block)
    if failure is not None:
        fallback = _AV_FALLBACK_DECODERS.get(codec_name)
        if decoder is None and fallback is not None and _has_decoder(fallback):
            return _decode_pyav(src, sr=sr, max_duration_s=max_duration_s, decoder=fallback)
        if collector.frames == 0:
            raise CorruptAudioError(
                f"{name} ({cname}, {codec}) could not be decoded ({_av_reason(failure)}); "
                "the file is damaged or truncated"
            )
        raise CorruptAudioError(
            f"{name} ({cname}, {codec}) is damaged after {collector.frames / rate:.2f} s "
            f"({_av_reason(failure)}); expected a complete recording"
        )
    collector.check_complete(name)
    return collector.finish()


def _pyav_blocks(container, stream, rate: int, *, decoder: str | None) -> Iterator[np.ndarray]:
    """Decoded frames of ``stream`` as (n_frames, n_channels) float32 arrays at ``rate``."""
    import av

    cc = stream.codec_context
    decode = cc.decode
    if decoder is not None:
        ctx = av.CodecContext.create(decoder, "r")
        ctx.sample_rate, ctx.layout = cc.sample_rate, cc.layout
        decode = ctx.decode
    # Interleaved ("flt"), not planar: PyAV counts one plane too many for planar audio
    # of 8 channels and reads past the frame (a segmentation fault).
    resampler = av.AudioResampler(format="flt", layout=cc.layout, rate=rate)
    for packet in container.demux(stream):
        for frame in decode(packet):
            for out in resampler.resample(frame):
                yield _interleaved(out)
    for out in resampler.resample(None):
        yield _interleaved(out)


def _interleaved(frame) -> np.ndarray:
    """A packed float frame as a new (n_frames, n_channels) array."""
    return frame.to_ndarray().reshape(-1, len(frame.layout.channels))  # PyAV copies


def _has_decoder(name: str) -> bool:
    import av

    try:
        av.Codec(name, "r")
    except (av.error.FFmpegError, ValueError):
        return False
    return True


class _RiffHeader(NamedTuple):
    """What the chunks of a WAV file declare, read without decoding it."""

    rate: int | None  # Hz, from the fmt chunk; None when there is none
    channels: int | None
    byte_rate: int  # bytes per second; 0 when the fmt chunk does not say
    data_size: int | None  # bytes the data chunk declares; None when unknown (streamed, RF64)
    data_available: int  # bytes present after the data chunk's header


def _read_riff(src: _Input) -> _RiffHeader | None:
    """Walk the chunk headers of a RIFF or RF64 WAV file (at most ``_MAX_RIFF_CHUNKS``).

    Chunk sizes are unsigned and each step moves forward by at least the 8 bytes of a
    chunk header, so the walk ends even when sizes lie; only headers are read.
    """
    f = src.file
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return None
    rate = channels = None
    byte_rate = 0
    data_size, available, found_data = None, 0, False
    pos = 12
    for _ in range(_MAX_RIFF_CHUNKS):
        f.seek(pos)
        chunk = f.read(24)
        if len(chunk) < 8:
            break
        tag, size = chunk[:4], int.from_bytes(chunk[4:8], "little")
        if tag == b"fmt " and rate is None and len(chunk) >= 22:
            channels = int.from_bytes(chunk[10:12], "little")
            rate = int.from_bytes(chunk[12:16], "little")
            block_align = int.from_bytes(chunk[20:22], "little")
            byte_rate = int.from_bytes(chunk[16:20], "little") or rate * block_align
        elif tag == b"data" and not found_data:
            found_data = True
            available = max(0, src.size - pos - 8)
            if size not in (0, 0xFFFFFFFF) and head[:4] == b"RIFF":  # else: length unknown
                data_size = size
        if rate is not None and found_data:
            break
        pos += 8 + size + (size & 1)
    f.seek(0)
    return _RiffHeader(rate, channels, byte_rate, data_size, available)


def _check_riff_length(riff: _RiffHeader | None, *, name: str, read_s: float) -> None:
    """Refuse a WAV file whose data chunk is shorter than its header declares."""
    if riff is None or riff.data_size is None or not riff.byte_rate:
        return
    if riff.data_size - riff.data_available > riff.byte_rate // 100:
        raise CorruptAudioError(
            f"{name} is truncated: its header declares {riff.data_size / riff.byte_rate:.2f} s "
            f"of audio but only {read_s:.2f} s is present; expected a complete recording"
        )


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
