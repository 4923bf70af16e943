"""Write small test audio files in every format callers send to voicecheck.

``write_audio(path, y, sr=..., fmt=...)`` writes ``y`` as one of the formats in
:data:`FORMATS`: WAV in its eight encodings, FLAC, Ogg Vorbis and Opus, MP3, M4A/AAC,
AMR-NB, AMR-WB, 3GP, WebM/Opus and raw GSM. Real encoders write every file:
libsndfile (soundfile), FFmpeg (PyAV) and, for AMR-WB (FFmpeg has no encoder for it),
VisualOn's ``libvo-amrwbenc`` through ctypes. A format that needs another sample rate
(AMR-NB and GSM 8 kHz, AMR-WB 16 kHz, Opus 8/12/16/24/48 kHz, ...) gets ``y`` resampled
with soxr; :func:`written_rate` says which rate a file will have.

Where an encoder is missing on this machine, :func:`write_audio` raises
:class:`EncoderUnavailableError`; tests turn it into a skip with :func:`require_format`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "FORMATS",
    "EncoderUnavailableError",
    "FormatInfo",
    "decode_with_pyav",
    "require_format",
    "write_audio",
    "written_rate",
]


class EncoderUnavailableError(RuntimeError):
    """The encoder a format needs is not installed on this machine."""


@dataclass(frozen=True)
class FormatInfo:
    """How one test format is written and what a decoder should report for it.

    Parameters
    ----------
    suffix : str
        File name suffix, with the dot.
    container : str
        Container name as PyAV reports it (``av.open(path).format.name``).
    codec : str
        Codec name as FFmpeg reports it (``stream.codec_context.codec.name``, the decoder).
    sf_subtype : str or None
        The subtype soundfile reports, or None when libsndfile cannot read the file.
    max_channels : int
        Most channels the format holds (1: mono only).
    rates : tuple of int or None
        Sample rates (Hz) the format can hold, or None for any rate.
    writer : str
        ``"soundfile"``, ``"pyav"`` or ``"vo-amrwbenc"``.
    av_rate : int or None
        The rate FFmpeg decodes the file at whatever rate was written (48 kHz for
        every Opus file), or None when it decodes at the written rate.
    """

    suffix: str
    container: str
    codec: str
    sf_subtype: str | None
    max_channels: int
    rates: tuple[int, ...] | None
    writer: str
    av_rate: int | None = None


_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)

FORMATS: dict[str, FormatInfo] = {
    "wav_pcm_u8": FormatInfo(".wav", "wav", "pcm_u8", "PCM_U8", 8, None, "soundfile"),
    "wav_pcm16": FormatInfo(".wav", "wav", "pcm_s16le", "PCM_16", 8, None, "soundfile"),
    "wav_pcm24": FormatInfo(".wav", "wav", "pcm_s24le", "PCM_24", 8, None, "soundfile"),
    "wav_pcm32": FormatInfo(".wav", "wav", "pcm_s32le", "PCM_32", 8, None, "soundfile"),
    "wav_float": FormatInfo(".wav", "wav", "pcm_f32le", "FLOAT", 8, None, "soundfile"),
    "wav_ulaw": FormatInfo(".wav", "wav", "pcm_mulaw", "ULAW", 8, None, "soundfile"),
    "wav_alaw": FormatInfo(".wav", "wav", "pcm_alaw", "ALAW", 8, None, "soundfile"),
    "wav_gsm": FormatInfo(".wav", "wav", "gsm_ms", "GSM610", 1, (8000,), "soundfile"),
    "flac": FormatInfo(".flac", "flac", "flac", "PCM_16", 8, None, "soundfile"),
    "ogg_vorbis": FormatInfo(".ogg", "ogg", "vorbis", "VORBIS", 8, None, "soundfile"),
    "ogg_opus": FormatInfo(".opus", "ogg", "opus", "OPUS", 2, _OPUS_RATES, "soundfile", 48000),
    "mp3": FormatInfo(".mp3", "mp3", "mp3float", "MPEG_LAYER_III", 2, _MP3_RATES, "soundfile"),
    "m4a_aac": FormatInfo(".m4a", "mov,mp4,m4a,3gp,3g2,mj2", "aac", None, 2, _AAC_RATES, "pyav"),
    "amr_nb": FormatInfo(".amr", "amr", "amrnb", None, 1, (8000,), "pyav"),
    "amr_wb": FormatInfo(".amr", "amr", "amrwb", None, 1, (16000,), "vo-amrwbenc"),
    "3gp_amr": FormatInfo(".3gp", "mov,mp4,m4a,3gp,3g2,mj2", "amrnb", None, 1, (8000,), "pyav"),
    "webm_opus": FormatInfo(".webm", "matroska,webm", "opus", None, 2, _OPUS_RATES, "pyav", 48000),
    # libsndfile reads headerless GSM by guessing from the .gsm suffix.
    "gsm_raw": FormatInfo(".gsm", "gsm", "gsm", "GSM610", 1, (8000,), "soundfile"),
}
"""Every test format by name."""

# soundfile (major format, subtype) per format it writes.
_SF_FORMATS = {
    "wav_pcm_u8": ("WAV", "PCM_U8"),
    "wav_pcm16": ("WAV", "PCM_16"),
    "wav_pcm24": ("WAV", "PCM_24"),
    "wav_pcm32": ("WAV", "PCM_32"),
    "wav_float": ("WAV", "FLOAT"),
    "wav_ulaw": ("WAV", "ULAW"),
    "wav_alaw": ("WAV", "ALAW"),
    "wav_gsm": ("WAV", "GSM610"),
    "flac": ("FLAC", "PCM_16"),
    "ogg_vorbis": ("OGG", "VORBIS"),
    "ogg_opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "gsm_raw": ("RAW", "GSM610"),  # headerless 33-byte GSM 06.10 frames, FFmpeg's "gsm"
}

# PyAV (container format, encoder, sample format, bit rate in bit/s) per format it writes.
_AV_FORMATS = {
    "m4a_aac": ("ipod", "aac", "fltp", 64_000),
    "amr_nb": ("amr", "libopencore_amrnb", "s16", 12_200),
    "3gp_amr": ("3gp", "libopencore_amrnb", "s16", 12_200),
    "webm_opus": ("webm", "libopus", "flt", 32_000),
}

AMR_WB_MODE = 2
"""AMR-WB mode written by ``amr_wb``: 2 is 12.65 kbit/s, the usual VoLTE rate."""

_AMR_WB_FRAME = 320  # samples per 20 ms frame at 16 kHz
_AMR_WB_MAGIC = b"#!AMR-WB\n"


def written_rate(fmt: str, sr: int) -> int:
    """Sample rate (Hz) that ``write_audio`` gives a file of format ``fmt`` for input rate ``sr``.

    The input rate where the format holds it, else the lowest allowed rate above it,
    else the highest allowed rate.
    """
    rates = _info(fmt).rates
    if rates is None or sr in rates:
        return sr
    higher = [r for r in rates if r >= sr]
    return min(higher) if higher else max(rates)


def require_format(fmt: str) -> None:
    """Skip the calling pytest test when the encoder of ``fmt`` is missing here."""
    import pytest

    try:
        _check_encoder(fmt)
    except EncoderUnavailableError as exc:
        pytest.skip(str(exc))


def write_audio(path: str | Path, y: np.ndarray, *, sr: int, fmt: str) -> Path:
    """Write ``y`` to ``path`` as a ``fmt`` file.

    Parameters
    ----------
    path : str or Path
        Where to write. The suffix is kept as given (tests may want a wrong one);
        ``FORMATS[fmt].suffix`` is the usual one.
    y : np.ndarray, shape (n,) or (n, channels)
        Float audio in [-1, 1] (clipped beyond).
    sr : int
        Sample rate of ``y`` in Hz. Resampled with soxr to :func:`written_rate`
        where the format needs another rate.
    fmt : str
        A name in :data:`FORMATS`.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``fmt`` is unknown or ``y`` has more channels than the format holds.
    EncoderUnavailableError
        If the encoder the format needs is not installed.
    """
    info = _info(fmt)
    path = Path(path)
    data = np.asarray(y, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, np.newaxis]
    if data.ndim != 2 or data.shape[1] < 1:
        raise ValueError(f"audio has shape {np.shape(y)}; expected (n,) or (n, channels)")
    if data.shape[1] > info.max_channels:
        raise ValueError(f"{fmt} holds at most {info.max_channels} channel(s); got {data.shape[1]}")
    _check_encoder(fmt)
    rate = written_rate(fmt, sr)
    if rate != sr:
        data = soxr.resample(data, sr, rate, quality="HQ").astype(np.float32)
    data = np.clip(data, -1.0, 1.0)
    if fmt in _SF_FORMATS:
        major, subtype = _SF_FORMATS[fmt]
        sf.write(path, data, rate, format=major, subtype=subtype)
    elif fmt in _AV_FORMATS:
        _write_pyav(path, data, rate, *_AV_FORMATS[fmt])
    else:
        _write_amr_wb(path, data[:, 0])
    return path


def decode_with_pyav(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of a file with PyAV, independently of voicecheck.

    Returns
    -------
    y : np.ndarray, shape (n, channels)
        float32 samples in [-1, 1].
    sr : int
        Sample rate in Hz.
    """
    chunks: list[np.ndarray] = []
    rate = 0
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            rate = frame.sample_rate
            channels = len(frame.layout.channels)
            a = frame.to_ndarray()
            a = a.T if frame.format.is_planar else a.reshape(-1, channels)
            if a.dtype.kind == "i":
                a = a.astype(np.float32) / -float(np.iinfo(a.dtype).min)
            elif a.dtype.kind == "u":
                a = (a.astype(np.float32) - 128.0) / 128.0
            chunks.append(a.astype(np.float32, copy=False))
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32), rate
    return np.concatenate(chunks), rate


def _info(fmt: str) -> FormatInfo:
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ValueError(
            f"unknown test format {fmt!r}; expected one of: {', '.join(FORMATS)}"
        ) from None


def _check_encoder(fmt: str) -> None:
    _info(fmt)
    if fmt in _SF_FORMATS:
        major, subtype = _SF_FORMATS[fmt]
        if not sf.check_format(major, subtype):
            raise EncoderUnavailableError(
                f"libsndfile {sf.__libsndfile_version__} cannot write {major}/{subtype} ({fmt})"
            )
    elif fmt in _AV_FORMATS:
        container, encoder, _, _ = _AV_FORMATS[fmt]
        if encoder not in av.codecs_available or container not in av.formats_available:
            raise EncoderUnavailableError(
                f"this PyAV build has no {encoder} encoder or {container} muxer ({fmt})"
            )
    else:
        _amr_wb_library()


def _write_pyav(
    path: Path, data: np.ndarray, rate: int, container: str, encoder: str, fmt: str, bit_rate: int
) -> None:
    layout = "mono" if data.shape[1] == 1 else "stereo"
    if fmt == "s16":
        samples: np.ndarray = np.round(data * 32767).astype(np.int16)
    else:
        samples = data
    # Packed formats take (1, n * channels) interleaved; planar ones (channels, n).
    if fmt.endswith("p"):
        array = np.ascontiguousarray(samples.T)
    else:
        array = np.ascontiguousarray(samples.reshape(1, -1))
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(encoder, rate=rate)
        stream.codec_context.layout = layout
        stream.codec_context.format = fmt
        stream.codec_context.bit_rate = bit_rate
        out.start_encoding()  # writes the header, even for a file with no packet
        if array.size:
            frame = av.AudioFrame.from_ndarray(array, format=fmt, layout=layout)
            frame.sample_rate = rate
            frame.pts = 0
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@functools.cache
def _amr_wb_library() -> ctypes.CDLL:
    name = ctypes.util.find_library("vo-amrwbenc") or "libvo-amrwbenc.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise EncoderUnavailableError(
            f"AMR-WB needs the libvo-amrwbenc library ({exc}); install it with "
            "`apt-get install libvo-amrwbenc0`"
        ) from None
    lib.E_IF_init.restype = ctypes.c_void_p
    lib.E_IF_init.argtypes = []
    lib.E_IF_encode.restype = ctypes.c_int
    lib.E_IF_encode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_short),
        ctypes.POINTER(ctypes.c_ubyte),
        ctypes.c_int,
    ]
    lib.E_IF_exit.restype = None
    lib.E_IF_exit.argtypes = [ctypes.c_void_p]
    return lib


def _write_amr_wb(path: Path, y: np.ndarray) -> None:
    """Write 16 kHz mono audio as an AMR-WB storage file (RFC 4867, section 5)."""
    lib = _amr_wb_library()
    pcm = np.round(y * 32767).astype(np.int16)
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % _AMR_WB_FRAME, dtype=np.int16)])
    out_buf = (ctypes.c_ubyte * 64)()  # the largest frame (23.85 kbit/s) is 61 bytes
    frames = [_AMR_WB_MAGIC]
    state = lib.E_IF_init()
    if not state:
        raise EncoderUnavailableError("libvo-amrwbenc could not start an encoder")
    try:
        for i in range(0, len(pcm), _AMR_WB_FRAME):
            speech = np.ascontiguousarray(pcm[i : i + _AMR_WB_FRAME])
            n = lib.E_IF_encode(
                state,
                AMR_WB_MODE,
                speech.ctypes.data_as(ctypes.POINTER(ctypes.c_short)),
                out_buf,
                0,  # no DTX: every frame carries speech
            )
            # Each frame already starts with its storage-format TOC byte.
            frames.append(bytes(out_buf[:n]))
    finally:
        lib.E_IF_exit(state)
    path.write_bytes(b"".join(frames))


def _self_check() -> int:
    """Write every format at three rates, mono and stereo, and decode it back.

    Run ``python tests/media.py``: one line per file, and exit status 1 when a file
    does not decode with the expected container, codec, rate and channel count, to
    within 60 ms of its duration, correlating above 0.9 with the input.
    """
    import tempfile

    from scipy.signal import correlate

    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for sr in (8000, 16000, 44100):
            t = np.arange(sr) / sr
            mono = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1000 * t)).astype(
                np.float32
            )
            for fmt, info in FORMATS.items():
                try:
                    _check_encoder(fmt)
                except EncoderUnavailableError as exc:
                    print(f"SKIP {fmt}: {exc}")
                    continue
                shapes = [mono, np.stack([mono, 0.5 * mono], axis=1)]
                for y in shapes[: 2 if info.max_channels >= 2 else 1]:
                    path = write_audio(Path(tmp) / f"{fmt}_{sr}{info.suffix}", y, sr=sr, fmt=fmt)
                    out, rate = decode_with_pyav(path)
                    with av.open(str(path)) as container:
                        names = (container.format.name, container.streams.audio[0].codec.name)
                    ref = soxr.resample(mono, sr, rate)
                    n = min(len(ref), len(out))
                    c = correlate(out[:n, 0], ref[:n], mode="full", method="fft")
                    middle = slice(n - 1 - rate // 50, n + rate // 50)  # lags within 20 ms
                    corr = float(
                        c[middle].max() / np.sqrt(np.sum(ref[:n] ** 2) * np.sum(out[:n, 0] ** 2))
                    )
                    expected_rate = info.av_rate or written_rate(fmt, sr)
                    ok = (
                        abs(len(out) / rate - 1.0) <= 0.06
                        and corr > 0.9
                        and names == (info.container, info.codec)
                        and rate == expected_rate
                        and out.shape[1] == (1 if y.ndim == 1 else y.shape[1])
                    )
                    sf_note = "-"
                    if info.sf_subtype is not None:
                        sf_info = sf.info(path)
                        sf_ok = sf_info.subtype == info.sf_subtype
                        sf_ok = sf_ok and abs(sf_info.duration - 1.0) <= 0.06
                        sf_note = f"{sf_info.subtype} {sf_info.duration:.3f}s"
                        ok = ok and sf_ok
                    failures += not ok
                    print(
                        f"{'ok  ' if ok else 'FAIL'} {fmt:11s} in {sr:5d} Hz x{out.shape[1]}: "
                        f"{names[0]}/{names[1]} {rate} Hz {len(out) / rate:.3f}s corr {corr:.3f}"
                        f" | soundfile {sf_note}"
                    )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(_self_check())
