"""The phone channels a robocall crosses, simulated with real codecs.

A cloned voice rarely reaches a listener as the clean file its generator wrote: it
is band-limited, companded, squeezed through a speech codec, mixed with noise and
punched with lost packets. This module puts audio through those channels so that
the detector is trained and evaluated on what a phone line really delivers.

Every codec channel encodes and decodes in memory with the real encoder and decoder
of FFmpeg (through PyAV): G.711 mu-law and A-law, AMR-NB (opencore), Opus
(libopus), G.722 and MP3 (LAME). The decoded audio is shifted back by the codec's
measured delay and cut to the input's duration, so a sample at time *t* in the
input is at time *t* in the output.

``apply_channel`` applies one channel, ``apply_chain`` several in order,
``random_chain`` draws a phone-call condition for training augmentation and
``PHONE_CONDITIONS`` names the conditions the detector is evaluated under.

Examples
--------
>>> import numpy as np
>>> sr = 16_000
>>> t = np.arange(sr) / sr
>>> y = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
>>> out, out_sr = apply_channel(y, sr=sr, channel="amr_nb_12k2")
>>> out_sr, out.shape, out.dtype
(8000, (8000,), dtype('float32'))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from types import MappingProxyType

import av
import numpy as np
import soxr
from scipy.signal import butter, sosfiltfilt

from .constants import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ
from .errors import ChannelError

__all__ = [
    "AMR_NB_BITRATES_BPS",
    "CHANNELS",
    "PHONE_CONDITIONS",
    "ChannelSpec",
    "apply_chain",
    "apply_channel",
    "random_chain",
]

NARROWBAND_SR_HZ = 8_000
"""Sample rate of a narrowband (classic telephone) channel."""

WIDEBAND_SR_HZ = 16_000
"""Sample rate of a wideband ("HD voice") channel."""

AMR_NB_BITRATES_BPS = (4750, 5150, 5900, 6700, 7400, 7950, 10200, 12200)
"""The eight AMR-NB codec modes, in bit/s (3GPP TS 26.071)."""

OPUS_MIN_BITRATE_BPS = 6_000
OPUS_MAX_BITRATE_BPS = 510_000
OPUS_COMPLEXITY = 5
"""libopus encoder complexity (0-10); 5 is what WebRTC uses on phones."""

MP3_BITRATES_BPS = (8_000, 16_000, 24_000, 32_000, 40_000, 48_000, 56_000, 64_000)
"""MPEG-2 Layer III bit rates (bit/s) usable at 16 kHz for a low-bitrate voice file."""

MP3_LAME_QUALITY = 7
"""LAME algorithm quality (0 best and slowest, 9 fastest); 7 is LAME's fast mode (``-f``)."""

TELEPHONE_LOW_HZ = 300.0
TELEPHONE_HIGH_HZ = 3_400.0
TELEPHONE_FILTER_ORDER = 4
"""Butterworth order of each edge of the telephone band-pass (applied forward and back)."""

PACKET_MS = 20.0
"""Duration of one RTP packet of voice, in milliseconds."""

_S16_SCALE = 32768.0


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------

_ApplyFn = Callable[..., tuple[np.ndarray, int]]


@dataclass(frozen=True)
class ChannelSpec:
    """One phone channel of the registry.

    Parameters
    ----------
    name : str
        Registry key, e.g. ``"amr_nb"``.
    description : str
        One line saying what the channel does to audio.
    sr_out : int or None
        Sample rate of the output in Hz; None when it is the input's rate (or chosen
        with the ``sr_out`` parameter of ``clean``).
    apply : callable
        ``apply(y, *, sr, rng, **params) -> (y_out, sr_out)`` on validated input.
    defaults : Mapping[str, object]
        Every parameter the channel takes, with its default (read-only). A call may
        override these and no other names.
    needs_rng : bool
        True when the channel is random and ``apply_channel`` must be given ``rng``.
    """

    name: str
    description: str
    sr_out: int | None
    apply: _ApplyFn = field(repr=False, compare=False)
    defaults: Mapping[str, object] = field(default_factory=dict)
    needs_rng: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))


@dataclass(frozen=True)
class _Codec:
    """An FFmpeg encoder/decoder pair and how to feed it."""

    encoder: str
    decoder: str
    sample_format: str  # what the encoder takes: "s16", "flt" or "fltp"
    sr_hz: int  # the rate the codec runs at
    delay_samples: int  # decoded output lags the input by this much, at sr_hz (measured)
    options: Mapping[str, str] = field(default_factory=dict)


# Delays were measured by cross-correlating espeak-ng speech, white noise and a
# synthetic vowel with their decoded version (every AMR mode and several bit rates).
# FFmpeg's own figure (the first packet's negative pts) is 50 samples for AMR-NB,
# but the decoded waveform lags by exactly 40 (the 5 ms look-ahead). The Opus and
# MP3 decoders already drop their priming samples (pre-skip and skip-samples side
# data), so nothing remains to remove. G.722's QMF filter bank delays by 22 samples.
_G711_ULAW = _Codec("pcm_mulaw", "pcm_mulaw", "s16", NARROWBAND_SR_HZ, 0)
_G711_ALAW = _Codec("pcm_alaw", "pcm_alaw", "s16", NARROWBAND_SR_HZ, 0)
_AMR_NB = _Codec("libopencore_amrnb", "libopencore_amrnb", "s16", NARROWBAND_SR_HZ, 40)
_OPUS_OPTIONS = MappingProxyType(
    {"application": "voip", "compression_level": str(OPUS_COMPLEXITY), "vbr": "on"}
)
_OPUS_NB = _Codec("libopus", "opus", "flt", NARROWBAND_SR_HZ, 0, _OPUS_OPTIONS)
_OPUS_WB = _Codec("libopus", "opus", "flt", WIDEBAND_SR_HZ, 0, _OPUS_OPTIONS)
_G722 = _Codec("g722", "g722", "s16", WIDEBAND_SR_HZ, 22)
_MP3 = _Codec(
    "libmp3lame",
    "mp3float",
    "fltp",
    WIDEBAND_SR_HZ,
    0,
    MappingProxyType({"compression_level": str(MP3_LAME_QUALITY)}),
)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _n_out(n: int, sr_in: int, sr_out: int) -> int:
    """Number of samples that keep the duration of ``n`` samples across a rate change."""
    return max(1, round(n * sr_out / sr_in))


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad ``y`` to exactly ``n`` samples."""
    if len(y) >= n:
        return y[:n]
    return np.concatenate([y, np.zeros(n - len(y), dtype=y.dtype)])


def _resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample with soxr (HQ) to ``sr_out``, keeping the duration to the sample."""
    if sr_in == sr_out:
        return y
    out = soxr.resample(y, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)
    return _fit(out, _n_out(len(y), sr_in, sr_out))


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_bitrate(channel: str, bitrate: object, *, allowed: Sequence[int]) -> int:
    if not _is_int(bitrate) or int(bitrate) not in allowed:
        raise ChannelError(
            f"channel {channel!r}: bitrate {bitrate!r} is not supported; "
            f"expected one of (bit/s): {', '.join(str(b) for b in allowed)}",
            channel=channel,
            bitrate=repr(bitrate),
        )
    return int(bitrate)


def _check_choice(channel: str, param: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ChannelError(
            f"channel {channel!r}: {param} {value!r} is not supported; "
            f"expected one of: {', '.join(choices)}",
            channel=channel,
        )
    return value


def _codec_roundtrip(
    y: np.ndarray, *, sr: int, codec: _Codec, bit_rate: int | None = None
) -> tuple[np.ndarray, int]:
    """Encode and decode ``y`` with a real codec, aligned to the input.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
        Validated mono float32 audio in [-1, 1].
    sr : int
        Sample rate of ``y`` in Hz.
    codec : _Codec
        The encoder/decoder pair.
    bit_rate : int or None
        Target bit rate in bit/s, or None for codecs with one rate.

    Returns
    -------
    y_out : np.ndarray, shape (round(n * codec.sr_hz / sr),)
        Decoded float32 audio at ``codec.sr_hz``, its delay removed.
    sr_out : int
        ``codec.sr_hz``.
    """
    x = _resample(y, sr, codec.sr_hz)
    n = len(x)
    x = np.clip(x, -1.0, 1.0)
    if codec.sample_format == "s16":
        data = np.round(x * _S16_SCALE).clip(-_S16_SCALE, _S16_SCALE - 1).astype(np.int16)
    else:
        data = x.astype(np.float32, copy=False)

    enc = av.CodecContext.create(codec.encoder, "w")
    enc.sample_rate = codec.sr_hz
    enc.layout = "mono"
    enc.format = codec.sample_format
    if bit_rate is not None:
        enc.bit_rate = bit_rate
    enc.options = dict(codec.options)
    enc.open()
    # One frame for the whole signal: PyAV cuts it into the codec's frame_size
    # itself (and pads the last one), so there is no Python loop per frame.
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(data[np.newaxis, :]), format=codec.sample_format, layout="mono"
    )
    frame.sample_rate = codec.sr_hz
    frame.pts = 0
    packets = [*enc.encode(frame), *enc.encode(None)]

    dec = av.CodecContext.create(codec.decoder, "r")
    dec.sample_rate = codec.sr_hz
    dec.layout = "mono"
    if enc.extradata:
        dec.extradata = enc.extradata
    chunks: list[np.ndarray] = []
    dec_sr = codec.sr_hz
    for packet in [*packets, None]:
        for decoded in dec.decode(packet):
            dec_sr = decoded.sample_rate
            chunks.append(decoded.to_ndarray()[0])
    if not chunks:
        return np.zeros(n, dtype=np.float32), codec.sr_hz
    out = np.concatenate(chunks)
    if out.dtype == np.int16:
        out = out.astype(np.float32) / _S16_SCALE
    else:
        out = out.astype(np.float32, copy=False)
    # The Opus decoder always speaks 48 kHz; bring it back to the codec's rate.
    out = _resample(out, dec_sr, codec.sr_hz) if dec_sr != codec.sr_hz else out
    return _fit(out[codec.delay_samples :], n), codec.sr_hz


# ---------------------------------------------------------------------------
# Channels
# ---------------------------------------------------------------------------


def _clean(
    y: np.ndarray, *, sr: int, rng: np.random.Generator | None, sr_out: int | None
) -> tuple[np.ndarray, int]:
    if sr_out is None:
        return y.copy(), sr
    if not _is_int(sr_out) or not MIN_SAMPLE_RATE_HZ <= int(sr_out) <= MAX_SAMPLE_RATE_HZ:
        raise ChannelError(
            f"channel 'clean': sr_out {sr_out!r} is not a usable rate; expected None or an "
            f"integer from {MIN_SAMPLE_RATE_HZ} to {MAX_SAMPLE_RATE_HZ} Hz",
            channel="clean",
        )
    return _resample(y, sr, int(sr_out)), int(sr_out)


def _codec_channel(codec: _Codec) -> _ApplyFn:
    def apply(y: np.ndarray, *, sr: int, rng: np.random.Generator | None) -> tuple[np.ndarray, int]:
        return _codec_roundtrip(y, sr=sr, codec=codec)

    return apply


def _amr_nb_channel(name: str, fixed_bitrate: int | None = None) -> _ApplyFn:
    if fixed_bitrate is not None:

        def apply_fixed(
            y: np.ndarray, *, sr: int, rng: np.random.Generator | None
        ) -> tuple[np.ndarray, int]:
            return _codec_roundtrip(y, sr=sr, codec=_AMR_NB, bit_rate=fixed_bitrate)

        return apply_fixed

    def apply(
        y: np.ndarray, *, sr: int, rng: np.random.Generator | None, bitrate: object
    ) -> tuple[np.ndarray, int]:
        bit_rate = _check_bitrate(name, bitrate, allowed=AMR_NB_BITRATES_BPS)
        return _codec_roundtrip(y, sr=sr, codec=_AMR_NB, bit_rate=bit_rate)

    return apply


def _opus_channel(name: str, codec: _Codec) -> _ApplyFn:
    def apply(
        y: np.ndarray, *, sr: int, rng: np.random.Generator | None, bitrate: object
    ) -> tuple[np.ndarray, int]:
        if not _is_int(bitrate) or not OPUS_MIN_BITRATE_BPS <= int(bitrate) <= OPUS_MAX_BITRATE_BPS:
            raise ChannelError(
                f"channel {name!r}: bitrate {bitrate!r} is not supported; expected an "
                f"integer from {OPUS_MIN_BITRATE_BPS} to {OPUS_MAX_BITRATE_BPS} bit/s",
                channel=name,
                bitrate=repr(bitrate),
            )
        return _codec_roundtrip(y, sr=sr, codec=codec, bit_rate=int(bitrate))

    return apply


def _mp3_low(
    y: np.ndarray, *, sr: int, rng: np.random.Generator | None, bitrate: object
) -> tuple[np.ndarray, int]:
    bit_rate = _check_bitrate("mp3_low", bitrate, allowed=MP3_BITRATES_BPS)
    return _codec_roundtrip(y, sr=sr, codec=_MP3, bit_rate=bit_rate)


def _telephone_band(
    y: np.ndarray, *, sr: int, rng: np.random.Generator | None, low_hz: object, high_hz: object
) -> tuple[np.ndarray, int]:
    nyquist_hz = NARROWBAND_SR_HZ / 2
    if not (_is_real(low_hz) and _is_real(high_hz) and 0 < low_hz < high_hz < nyquist_hz):
        raise ChannelError(
            f"channel 'telephone_band': band {low_hz!r}-{high_hz!r} Hz is not usable; "
            f"expected 0 < low_hz < high_hz < {nyquist_hz:g} Hz",
            channel="telephone_band",
        )
    x = _resample(y, sr, NARROWBAND_SR_HZ)
    sos = butter(
        TELEPHONE_FILTER_ORDER,
        [float(low_hz), float(high_hz)],
        btype="bandpass",
        fs=NARROWBAND_SR_HZ,
        output="sos",
    )
    # Forward and back: zero phase, so the output stays time-aligned with the input.
    # The default padding needs a few dozen samples; shorter clips are filtered unpadded.
    padlen = min(3 * (2 * sos.shape[0] + 1), len(x) - 1)
    return sosfiltfilt(sos, x, padlen=max(padlen, 0)).astype(np.float32), NARROWBAND_SR_HZ


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pink (1/f power) noise of ``n`` samples, shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    k = np.arange(len(spectrum), dtype=np.float64)
    k[0] = 1.0
    spectrum /= np.sqrt(k)
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def _noise(
    y: np.ndarray, *, sr: int, rng: np.random.Generator, snr_db: object, color: object
) -> tuple[np.ndarray, int]:
    if not _is_real(snr_db):
        raise ChannelError(
            f"channel 'noise': snr_db {snr_db!r} is not a finite number of decibels",
            channel="noise",
        )
    color = _check_choice("noise", "color", color, ("white", "pink"))
    signal_power = float(np.mean(np.square(y, dtype=np.float64)))
    if signal_power == 0.0:
        raise ChannelError(
            "channel 'noise': the audio is all zeros, so a signal-to-noise ratio has no "
            "meaning; expected audio with some signal",
            channel="noise",
        )
    noise = rng.standard_normal(len(y)) if color == "white" else _pink(rng, len(y))
    noise_power = float(np.mean(np.square(noise)))
    if noise_power == 0.0:  # a single sample of pink noise has no AC part
        return y.copy(), sr
    target_power = signal_power / 10.0 ** (float(snr_db) / 10.0)
    noise *= math.sqrt(target_power / noise_power)
    return (y + noise).astype(np.float32), sr


def _packet_loss(
    y: np.ndarray,
    *,
    sr: int,
    rng: np.random.Generator,
    loss_rate: object,
    packet_ms: object,
    concealment: object,
) -> tuple[np.ndarray, int]:
    if not _is_real(loss_rate) or not 0.0 <= loss_rate <= 1.0:
        raise ChannelError(
            f"channel 'packet_loss': loss_rate {loss_rate!r} is not a probability; "
            "expected a number from 0 to 1",
            channel="packet_loss",
        )
    if not _is_real(packet_ms) or not 0.0 < packet_ms <= 1000.0:
        raise ChannelError(
            f"channel 'packet_loss': packet_ms {packet_ms!r} is not usable; "
            "expected a duration above 0 and at most 1000 ms",
            channel="packet_loss",
        )
    concealment = _check_choice("packet_loss", "concealment", concealment, ("zero", "repeat"))
    packet = max(1, round(sr * float(packet_ms) / 1000.0))
    n = len(y)
    n_packets = -(-n // packet)
    lost = rng.random(n_packets) < float(loss_rate)
    packets = _fit(y, n_packets * packet).reshape(n_packets, packet).copy()
    if concealment == "zero":
        packets[lost] = 0.0
    else:
        # Each lost packet repeats the last one received; before any, silence.
        idx = np.where(lost, -1, np.arange(n_packets))
        last_good = np.maximum.accumulate(idx)
        source = np.vstack([packets, np.zeros((1, packet), dtype=packets.dtype)])
        packets = source[np.where(last_good < 0, n_packets, last_good)]
    return packets.reshape(-1)[:n], sr


_AMR_PRESETS = {"amr_nb_4k75": 4750, "amr_nb_7k95": 7950, "amr_nb_12k2": 12200}

_SPECS: list[ChannelSpec] = [
    ChannelSpec(
        "clean",
        "No degradation; optionally resampled to sr_out (None keeps the input rate)",
        None,
        defaults={"sr_out": None},
        apply=_clean,
    ),
    ChannelSpec(
        "g711_ulaw",
        "G.711 mu-law (North America, Japan), 8 kHz, 64 kbit/s",
        NARROWBAND_SR_HZ,
        apply=_codec_channel(_G711_ULAW),
    ),
    ChannelSpec(
        "g711_alaw",
        "G.711 A-law (Europe, rest of the world), 8 kHz, 64 kbit/s",
        NARROWBAND_SR_HZ,
        apply=_codec_channel(_G711_ALAW),
    ),
    ChannelSpec(
        "amr_nb",
        "AMR-NB mobile speech codec (GSM/UMTS), 8 kHz, one of the 8 modes (bit/s)",
        NARROWBAND_SR_HZ,
        defaults={"bitrate": 12200},
        apply=_amr_nb_channel("amr_nb"),
    ),
    *(
        ChannelSpec(
            name,
            f"AMR-NB at {bitrate / 1000:g} kbit/s, 8 kHz",
            NARROWBAND_SR_HZ,
            apply=_amr_nb_channel(name, bitrate),
        )
        for name, bitrate in _AMR_PRESETS.items()
    ),
    ChannelSpec(
        "opus_nb",
        "Opus narrowband (VoIP, WhatsApp-like), 8 kHz",
        NARROWBAND_SR_HZ,
        defaults={"bitrate": 12000},
        apply=_opus_channel("opus_nb", _OPUS_NB),
    ),
    ChannelSpec(
        "opus_wb",
        "Opus wideband (VoIP), 16 kHz",
        WIDEBAND_SR_HZ,
        defaults={"bitrate": 20000},
        apply=_opus_channel("opus_wb", _OPUS_WB),
    ),
    ChannelSpec(
        "g722",
        "G.722 wideband ('HD voice' DECT/SIP), 16 kHz, 64 kbit/s",
        WIDEBAND_SR_HZ,
        apply=_codec_channel(_G722),
    ),
    ChannelSpec(
        "mp3_low",
        "Low-bitrate MP3 (voice mail, call recorders), 16 kHz mono",
        WIDEBAND_SR_HZ,
        defaults={"bitrate": 24000},
        apply=_mp3_low,
    ),
    ChannelSpec(
        "telephone_band",
        "300-3400 Hz Butterworth band-pass of the analogue telephone line, 8 kHz",
        NARROWBAND_SR_HZ,
        defaults={"low_hz": TELEPHONE_LOW_HZ, "high_hz": TELEPHONE_HIGH_HZ},
        apply=_telephone_band,
    ),
    ChannelSpec(
        "noise",
        "Additive white or pink noise at snr_db (dB) against the signal's mean power",
        None,
        defaults={"snr_db": 20.0, "color": "white"},
        needs_rng=True,
        apply=_noise,
    ),
    ChannelSpec(
        "packet_loss",
        "Drops packet_ms (20 ms) packets with probability loss_rate; zero-fill or repeat",
        None,
        defaults={"loss_rate": 0.05, "packet_ms": PACKET_MS, "concealment": "zero"},
        needs_rng=True,
        apply=_packet_loss,
    ),
]

CHANNELS: Mapping[str, ChannelSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
"""Every channel by name (read-only)."""

ChainStep = str | tuple[str, Mapping[str, object]]

PHONE_CONDITIONS: dict[str, list[ChainStep]] = {
    "clean_8k": [("clean", {"sr_out": NARROWBAND_SR_HZ})],
    "clean_16k": [("clean", {"sr_out": WIDEBAND_SR_HZ})],
    "g711": ["g711_ulaw"],
    "amr_nb": ["amr_nb_7k95"],
    "opus": ["opus_nb"],
    "mp3": ["mp3_low"],
}
"""The named conditions the detector is evaluated under, as chains for ``apply_chain``."""


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def _validate_audio(y: object, sr: object) -> np.ndarray:
    if not _is_int(sr) or not MIN_SAMPLE_RATE_HZ <= int(sr) <= MAX_SAMPLE_RATE_HZ:
        raise ChannelError(
            f"sample rate {sr!r} is not usable; expected an integer from "
            f"{MIN_SAMPLE_RATE_HZ} to {MAX_SAMPLE_RATE_HZ} Hz",
            sr=repr(sr),
        )
    arr = np.asarray(y)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ChannelError(
            f"audio has dtype {arr.dtype}; expected floating-point samples in [-1, 1]",
            dtype=str(arr.dtype),
        )
    if arr.ndim != 1:
        raise ChannelError(
            f"audio has shape {arr.shape}; expected mono samples of shape (n,)",
            shape=list(arr.shape),
        )
    if arr.size == 0:
        raise ChannelError("audio is empty (0 samples); expected at least one sample")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ChannelError(
            f"audio holds {bad} non-finite sample(s) (NaN or infinity); expected finite "
            "samples in [-1, 1]",
            non_finite=bad,
        )
    # A 16-bit phone path clips; so does the channel.
    return np.clip(arr, -1.0, 1.0).astype(np.float32)


def apply_channel(
    y: np.ndarray,
    *,
    sr: int,
    channel: str,
    rng: np.random.Generator | None = None,
    **params: object,
) -> tuple[np.ndarray, int]:
    """Put mono audio through one phone channel.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
        Mono floating-point audio in [-1, 1] (samples beyond are clipped).
    sr : int
        Sample rate of ``y`` in Hz.
    channel : str
        A name in :data:`CHANNELS`.
    rng : np.random.Generator, optional
        Source of randomness; required by the random channels (``noise``,
        ``packet_loss``), ignored by the others.
    **params
        Overrides of the channel's parameters (``CHANNELS[channel].defaults``), e.g.
        ``bitrate=4750`` for ``amr_nb`` or ``snr_db=10.0`` for ``noise``.

    Returns
    -------
    y_out : np.ndarray, shape (round(n * sr_out / sr),)
        float32 audio in [-1, 1], time-aligned with ``y`` (codec delay removed,
        trailing codec padding cut).
    sr_out : int
        Sample rate of ``y_out`` in Hz: the codec's rate, or ``sr`` for channels
        that keep the rate.

    Raises
    ------
    ChannelError
        If the channel is unknown, a parameter is unknown or out of range, ``rng`` is
        missing for a random channel, or the audio is empty, not mono, not floating
        point or holds NaN or infinity.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = (0.1 * rng.standard_normal(16_000)).astype(np.float32)
    >>> out, out_sr = apply_channel(y, sr=16_000, channel="g711_ulaw")
    >>> out_sr, len(out)
    (8000, 8000)
    >>> noisy, _ = apply_channel(y, sr=16_000, channel="noise", rng=rng, snr_db=10.0)
    >>> float(round(10 * np.log10(np.mean(y**2) / np.mean((noisy - y) ** 2)), 1))
    10.0
    """
    if not isinstance(channel, str) or channel not in CHANNELS:
        raise ChannelError(
            f"unknown channel {channel!r}; expected one of: {', '.join(sorted(CHANNELS))}",
            channel=repr(channel),
        )
    spec = CHANNELS[channel]
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        expected = ", ".join(spec.defaults) if spec.defaults else "no parameters"
        raise ChannelError(
            f"channel {channel!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"expected: {expected}",
            channel=channel,
        )
    if spec.needs_rng and not isinstance(rng, np.random.Generator):
        raise ChannelError(
            f"channel {channel!r} is random and needs rng; got {type(rng).__name__}, "
            "expected a numpy Generator such as np.random.default_rng(seed)",
            channel=channel,
        )
    x = _validate_audio(y, sr)
    out, sr_out = spec.apply(x, sr=int(sr), rng=rng, **{**spec.defaults, **params})
    return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False), int(sr_out)


def apply_chain(
    y: np.ndarray,
    *,
    sr: int,
    chain: Sequence[ChainStep],
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, int]:
    """Put mono audio through several phone channels, in order.

    Parameters
    ----------
    y : np.ndarray, shape (n,)
        Mono floating-point audio in [-1, 1].
    sr : int
        Sample rate of ``y`` in Hz.
    chain : sequence of str or (str, dict)
        Channel names, each alone or with its parameter overrides, e.g.
        ``[("noise", {"snr_db": 20.0}), "amr_nb_7k95"]``. An empty chain returns
        the validated input unchanged.
    rng : np.random.Generator, optional
        Shared by the random channels of the chain, in order.

    Returns
    -------
    y_out : np.ndarray, shape (m,)
        float32 audio of the same duration as ``y``.
    sr_out : int
        Sample rate of ``y_out`` in Hz (that of the last channel that sets one).

    Raises
    ------
    ChannelError
        If a step is malformed, or as :func:`apply_channel`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = (0.1 * rng.standard_normal(16_000)).astype(np.float32)
    >>> out, out_sr = apply_chain(y, sr=16_000, chain=PHONE_CONDITIONS["amr_nb"])
    >>> out_sr, len(out)
    (8000, 8000)
    """
    if isinstance(chain, str | bytes) or not isinstance(chain, Sequence):
        raise ChannelError(
            f"chain {chain!r} is not a sequence of steps; expected a list such as "
            "['telephone_band', ('noise', {'snr_db': 20.0})]",
        )
    out, out_sr = _validate_audio(y, sr), int(sr)
    for i, step in enumerate(chain):
        if isinstance(step, str):
            name, params = step, {}
        elif (
            isinstance(step, tuple | list)
            and len(step) == 2
            and isinstance(step[0], str)
            and isinstance(step[1], Mapping)
        ):
            name, params = step[0], dict(step[1])
        else:
            raise ChannelError(
                f"chain step {i} is {step!r}; expected a channel name or a "
                "(name, params dict) pair",
            )
        out, out_sr = apply_channel(out, sr=out_sr, channel=name, rng=rng, **params)
    return out, out_sr


_RANDOM_CODECS: tuple[tuple[str, Callable[[np.random.Generator], dict[str, object]]], ...] = (
    ("clean", lambda rng: {"sr_out": NARROWBAND_SR_HZ}),
    ("clean", lambda rng: {"sr_out": WIDEBAND_SR_HZ}),
    ("telephone_band", lambda rng: {}),
    ("g711_ulaw", lambda rng: {}),
    ("g711_alaw", lambda rng: {}),
    ("amr_nb", lambda rng: {"bitrate": int(rng.choice(AMR_NB_BITRATES_BPS))}),
    ("opus_nb", lambda rng: {"bitrate": int(rng.choice([8000, 10000, 12000, 16000]))}),
    ("opus_wb", lambda rng: {"bitrate": int(rng.choice([16000, 20000, 24000, 32000]))}),
    ("g722", lambda rng: {}),
    ("mp3_low", lambda rng: {"bitrate": int(rng.choice([16000, 24000, 32000]))}),
)

RANDOM_NOISE_PROBABILITY = 0.5
RANDOM_SNR_DB_RANGE = (15.0, 40.0)
RANDOM_LOSS_PROBABILITY = 0.3
RANDOM_LOSS_RATE_RANGE = (0.01, 0.10)


def random_chain(rng: np.random.Generator) -> list[tuple[str, dict[str, object]]]:
    """Draw a random phone-call condition for training augmentation.

    The chain is: optional noise (probability 0.5, white or pink, 15-40 dB SNR), then
    one transmission path drawn uniformly among clean at 8 kHz, clean at 16 kHz, the
    telephone band-pass, G.711 mu-law and A-law, AMR-NB (any mode), Opus narrowband
    and wideband, G.722 and low-bitrate MP3, then optional packet loss (probability
    0.3, 1-10 % of 20 ms packets, zero-filled or repeated). Real and cloned clips
    should be drawn from this same distribution.

    Parameters
    ----------
    rng : np.random.Generator
        The only source of randomness: the same state gives the same chain.

    Returns
    -------
    list of (str, dict)
        Steps for :func:`apply_chain`, with plain Python values (JSON-serialisable).

    Raises
    ------
    ChannelError
        If ``rng`` is not a numpy Generator.

    Examples
    --------
    >>> import numpy as np
    >>> random_chain(np.random.default_rng(7)) == random_chain(np.random.default_rng(7))
    True
    """
    if not isinstance(rng, np.random.Generator):
        raise ChannelError(
            f"rng is {type(rng).__name__}; expected a numpy Generator such as "
            "np.random.default_rng(seed)"
        )
    chain: list[tuple[str, dict[str, object]]] = []
    if rng.random() < RANDOM_NOISE_PROBABILITY:
        snr_db = round(float(rng.uniform(*RANDOM_SNR_DB_RANGE)), 2)
        color = "white" if rng.random() < 0.5 else "pink"
        chain.append(("noise", {"snr_db": snr_db, "color": color}))
    name, draw_params = _RANDOM_CODECS[int(rng.integers(len(_RANDOM_CODECS)))]
    chain.append((name, draw_params(rng)))
    if rng.random() < RANDOM_LOSS_PROBABILITY:
        loss_rate = round(float(rng.uniform(*RANDOM_LOSS_RATE_RANGE)), 4)
        concealment = "zero" if rng.random() < 0.5 else "repeat"
        chain.append(("packet_loss", {"loss_rate": loss_rate, "concealment": concealment}))
    return chain
