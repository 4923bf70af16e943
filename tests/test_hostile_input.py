"""Hostile inputs: each is refused with the right error, quickly and in bounded memory.

Every input is built here, byte by byte or with a real encoder: truncated headers,
length fields that lie, layouts no telephone ever sent, NaN samples, non-audio files,
and small files that decode to hours. They are decoded in a child process with an
address-space limit, watched with a timeout, so that a regression that hangs or runs
away with memory fails its own test instead of taking the suite down. The bounds are
generous on purpose: the point is "no hang, no out-of-memory", not a timing.

The same inputs go through ``voicecheck.scoring.analyze`` where scoring adds something
(short, silent, multichannel). The last test runs the atheris harness
``tests/fuzz_decode.py`` for 20 s on a seed corpus of small valid recordings.
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
import pytest
import soundfile as sf
from conftest import voiced
from media import require_format, write_audio

from voicecheck import errors

TIME_LIMIT_S = 10.0
"""Longest one input may take to be answered (from its path and from its bytes)."""

MEMORY_LIMIT_MB = 1024
"""Most resident memory the child may reach, interpreter and libraries included."""

ADDRESS_SPACE_MB = 2048
"""RLIMIT_AS of the child: an allocation beyond it fails at once instead of swapping."""

HANG_S = 60.0
"""Time without an answer after which the child is declared hung and killed."""

TESTS = Path(__file__).parent
CHILD_ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
}

# The child: limit the address space, then for each input decode it from its path and
# from its bytes (or score it, with the default model) and print one JSON line: the
# answer to each (error code and message, or "ok"), the seconds taken and the peak
# resident memory so far. Anything but a VoiceCheckError is answered as "crash" with
# its traceback; a crash of the interpreter itself ends the child (the parent notices).
CHILD = r"""
import json, resource, sys, time, traceback
spec = json.loads(sys.stdin.readline())
limit = spec["address_space_mb"] << 20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from pathlib import Path
from voicecheck.errors import VoiceCheckError
from voicecheck.audio import load_audio
if spec["analyze"]:
    from voicecheck.model import load_model
    from voicecheck.scoring import analyze
    detector = load_model()

def answer(source, kwargs):
    try:
        if spec["analyze"]:
            result = analyze(source, detector, **kwargs)
            return {"code": "ok", "channels": [c.error["code"] if c.error else "scored"
                                               for c in result.channels]}
        audio = load_audio(source, **kwargs)
        return {"code": "ok", "channels": audio.n_channels, "duration_s": audio.duration_s}
    except VoiceCheckError as exc:
        return {"code": exc.code, "status": exc.status, "message": str(exc)}
    except BaseException:
        return {"code": "crash", "message": traceback.format_exc()}

print(json.dumps({"ready": True}), flush=True)
for case in spec["cases"]:
    t0 = time.perf_counter()
    answers = {"path": answer(case["path"], case["kwargs"])}
    if Path(case["path"]).is_file():
        answers["bytes"] = answer(Path(case["path"]).read_bytes(), case["kwargs"])
    print(json.dumps({
        "name": case["name"],
        "answers": answers,
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }), flush=True)
"""


def pump(stream, put: Callable[[str | None], object]) -> None:
    """Hand each line of ``stream`` to ``put``, then None at its end."""
    for line in stream:
        put(line)
    put(None)


def next_answer(lines: queue.Queue) -> dict:
    """The child's next JSON line; EOFError when it died, queue.Empty when it hangs."""
    while True:
        line = lines.get(timeout=HANG_S)
        if line is None:
            raise EOFError
        if line.startswith("{"):  # a decoding library may print to stdout too
            return json.loads(line)


def answer_in_child(cases: list[dict], *, analyze: bool = False) -> dict[str, dict]:
    """Answer ``cases`` (name, path, kwargs) in limited children; a result per name.

    One child answers the cases in order. When it hangs (no answer for ``HANG_S``) or
    dies, the case it was on gets a ``failure`` and a new child takes the rest.
    """
    results: dict[str, dict] = {}
    remaining = list(cases)
    spec = {"analyze": analyze, "address_space_mb": ADDRESS_SPACE_MB}
    while remaining:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=CHILD_ENV,
            cwd=TESTS,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        stderr: list[str] = []
        threading.Thread(target=pump, args=(proc.stdout, lines.put), daemon=True).start()
        threading.Thread(target=pump, args=(proc.stderr, stderr.append), daemon=True).start()
        proc.stdin.write(json.dumps({**spec, "cases": remaining}) + "\n")
        proc.stdin.close()
        try:
            next_answer(lines)  # ready: imports done
            while remaining:
                result = next_answer(lines)
                results[result["name"]] = result
                remaining.pop(0)
        except (queue.Empty, EOFError) as exc:
            proc.kill()
            proc.wait()
            if isinstance(exc, queue.Empty):
                how = f"gave no answer for {HANG_S:.0f} s"
            else:
                how = f"died with exit status {proc.returncode}"
            log = "".join(line for line in stderr if line)[-4000:]
            results[remaining.pop(0)["name"]] = {"failure": f"the child {how}:\n{log}"}
        else:
            proc.wait()
    return results


# --- building hostile inputs --------------------------------------------------------


def riff(
    *,
    sr: int = 8000,
    channels: int = 1,
    bits: int = 16,
    fmt_tag: int = 1,
    data: bytes = b"",
    declared: int | None = None,
    riff_size: int | None = None,
    byte_rate: int | None = None,
    block_align: int | None = None,
    before_fmt: bytes = b"",
    before_data: bytes = b"",
) -> bytes:
    """A WAV file with every header field under control (by default, a truthful one)."""
    align = channels * bits // 8 if block_align is None else block_align
    rate = sr * (channels * bits // 8) if byte_rate is None else byte_rate
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, sr, rate & 0xFFFFFFFF, align & 0xFFFF, bits)
    size = len(data) if declared is None else declared
    body = (
        b"WAVE"
        + before_fmt
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + before_data
        + b"data"
        + struct.pack("<I", size)
        + data
    )
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def pcm16(y: np.ndarray) -> bytes:
    return (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()


def wav(y: np.ndarray, *, sr: int = 8000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def crc8(data: bytes) -> int:
    """CRC-8 of a FLAC frame header (polynomial x^8 + x^2 + x + 1)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def crc16(data: bytes) -> int:
    """CRC-16 of a FLAC frame (polynomial x^16 + x^15 + x^2 + 1)."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def flac_silence(duration_s: float, *, channels: int = 1, declare: bool = True) -> bytes:
    """A valid FLAC file of 8 kHz digital silence, ~14 bytes per 8 s frame and channel.

    Each frame holds 65535 samples per channel in CONSTANT subframes, so 5 hours of
    mono fit in ~30 kB. With ``declare=False`` the STREAMINFO block says 0 samples
    (length unknown), as a live encoder writes it.
    """
    sr, block = 8000, 65535
    n_frames = int(duration_s * sr) // block
    total = n_frames * block if declare else 0
    # STREAMINFO: block sizes, frame sizes (0: unknown), rate, channels-1, bits-1, samples
    info = block << 128 | block << 112 | sr << 44 | (channels - 1) << 41 | 15 << 36 | total
    out = [b"fLaC", bytes([0x80, 0, 0, 34]), info.to_bytes(18, "big"), bytes(16)]
    for i in range(n_frames):
        # sync, fixed block size; 16-bit block size at the end, 8 kHz; channels, 16 bits
        header = bytes([0xFF, 0xF8, 0x74, (channels - 1) << 4 | 0x08])
        header += chr(i).encode("utf-8", "surrogatepass")  # frame number, UTF-8 coded
        header += (block - 1).to_bytes(2, "big")
        frame = header + bytes([crc8(header)]) + b"\x00\x00\x00" * channels  # CONSTANT 0
        out.append(frame + crc16(frame).to_bytes(2, "big"))
    return b"".join(out)


def flac_declaring(flac: bytes, n_samples: int) -> bytes:
    """``flac`` with the sample count of its STREAMINFO block set (0: unknown)."""
    info = int.from_bytes(flac[8:26], "big") & ~((1 << 36) - 1) | n_samples
    return flac[:8] + info.to_bytes(18, "big") + flac[26:]


def flac_claiming(flac: bytes, duration_s: float) -> bytes:
    """``flac`` (8 kHz) claiming ``duration_s`` in its STREAMINFO block."""
    return flac_declaring(flac, int(duration_s * 8000))


def wav_as_flac(y: np.ndarray, *, sr: int = 8000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def amr_no_data(duration_s: float) -> bytes:
    """An AMR-NB file of NO_DATA frames: one byte per 20 ms of audio."""
    return b"#!AMR\n" + b"\x7c" * int(duration_s * 50)


def mp3_claiming(mp3: bytes, duration_s: float) -> bytes:
    """``mp3`` with its Xing header's frame count changed to claim ``duration_s``."""
    at = mp3.index(b"Xing") + 8
    frames = int(duration_s * 8000 / 576)  # MPEG-2.5 layer III at 8 kHz: 576 samples a frame
    return mp3[:at] + frames.to_bytes(4, "big") + mp3[at + 4 :]


def mp4_claiming(mp4: bytes, duration_s: float) -> bytes:
    """``mp4`` with the durations in its movie and media headers set to ``duration_s``."""
    out = bytearray(mp4)
    for box in (b"mvhd", b"mdhd"):
        at = out.index(box) + 4  # version 0: flags, created, modified, timescale, duration
        timescale = int.from_bytes(out[at + 12 : at + 16], "big")
        out[at + 16 : at + 20] = int(duration_s * timescale).to_bytes(4, "big")
    return bytes(out)


def video_only_mp4() -> bytes:
    """One 16x16 MPEG-4 video frame in an MP4 container, no audio stream."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=1)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def matroska_pcm(y: np.ndarray, *, sr: int = 8000) -> bytes:
    """``y`` (n, 8) as 16-bit PCM in a Matroska container: a file only FFmpeg reads."""
    pcm = np.round(np.clip(y, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("pcm_s16le", rate=sr)
        stream.codec_context.layout = "7.1"
        stream.codec_context.format = "s16"
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="7.1")
        frame.sample_rate, frame.pts = sr, 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def png_bytes() -> bytes:
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + bytes(8) for _ in range(8)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def zip_bytes(inner: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("call.wav", inner)
    return buf.getvalue()


PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
    b"trailer << /Root 1 0 R >>\n%%EOF\n"
)
TEXT = b"Hello, this is your bank. Please confirm your PIN.\n" * 40


def noise_bytes(n: int, seed: int = 3) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, bytes]:
    """Small valid recordings (1.5 s of a speech-like signal) in the formats cut below."""
    root = tmp_path_factory.mktemp("media")
    out = {"wav": wav(Y)}
    for fmt, suffix in [
        ("flac", ".flac"),
        ("ogg_vorbis", ".ogg"),
        ("mp3", ".mp3"),
        ("amr_nb", ".amr"),
        ("3gp_amr", ".3gp"),
    ]:
        require_format(fmt)
        out[fmt] = write_audio(root / f"call{suffix}", Y, sr=8000, fmt=fmt).read_bytes()
    return out


# --- the cases ----------------------------------------------------------------------


class Case(NamedTuple):
    build: Callable[[dict[str, bytes]], bytes]
    error: type[errors.VoiceCheckError] | None  # None: the input is fine and accepted
    match: str = ""  # a regular expression the message must hold
    kwargs: dict = {}


Y = voiced(1.5, sr=8000)
OK = pcm16(Y)
LONG = voiced(20.0, sr=8000)
CUT = "but could not be opened"

CASES: dict[str, Case] = {
    "0 bytes": Case(lambda m: b"", errors.EmptyAudioError, r"is empty \(0 bytes\)"),
    # truncated headers
    "wav cut at 10 bytes": Case(
        lambda m: m["wav"][:10], errors.CorruptAudioError, "like WAV " + CUT
    ),
    "wav cut at 30 bytes": Case(
        lambda m: m["wav"][:30], errors.CorruptAudioError, "like WAV " + CUT
    ),
    "wav cut at 43 bytes": Case(
        lambda m: m["wav"][:43], errors.CorruptAudioError, "like WAV " + CUT
    ),
    "flac cut in STREAMINFO": Case(
        lambda m: m["flac"][:20], errors.CorruptAudioError, "like FLAC " + CUT
    ),
    "ogg cut in its first page": Case(
        lambda m: m["ogg_vorbis"][:40], errors.CorruptAudioError, "like OGG " + CUT
    ),
    "ogg cut in the vorbis headers": Case(
        lambda m: m["ogg_vorbis"][:200], errors.CorruptAudioError, "like OGG " + CUT
    ),
    "mp3 cut in its frame header": Case(
        lambda m: m["mp3"][:3], errors.CorruptAudioError, "like MP3 " + CUT
    ),
    "amr cut in its magic": Case(
        lambda m: m["amr_nb"][:4], errors.UnsupportedFormatError, "not a recognised audio file"
    ),
    "amr with its magic only": Case(
        lambda m: m["amr_nb"][:6], errors.EmptyAudioError, r"holds no audio samples \(amr"
    ),
    "amr cut in its first frame": Case(
        lambda m: m["amr_nb"][:12],
        errors.CorruptAudioError,
        r"\(amr, amr_nb\) could not be decoded",
    ),
    # length fields that lie
    "wav data size 2 GB, 2 kB present": Case(
        lambda m: riff(data=OK[:2000], declared=2_000_000_000),
        errors.CorruptAudioError,
        r"truncated: its header declares 125000.00 s of audio but only 0.12 s",
    ),
    "wav RIFF size too large": Case(lambda m: riff(data=OK, riff_size=0xFFFFFFF0), None),
    "wav RIFF size too small": Case(lambda m: riff(data=OK, riff_size=4), None),
    "wav fmt byte_rate 0": Case(lambda m: riff(data=OK, byte_rate=0), None),
    "wav fmt block_align 0": Case(lambda m: riff(data=OK, block_align=0), None),
    "wav fmt 0 bits per sample": Case(
        lambda m: riff(data=OK, bits=0), errors.UnsupportedFormatError, "codec that FFmpeg cannot"
    ),
    "wav 10 h at 8 kHz declared, 1 kB present": Case(
        lambda m: riff(data=OK[:1000], declared=10 * 3600 * 16000),
        errors.CorruptAudioError,
        r"declares 36000.00 s of audio but only 0.06 s",
    ),
    "wav 10 h declared with byte_rate 0": Case(
        lambda m: riff(data=OK[:1000], declared=10 * 3600 * 16000, byte_rate=0),
        errors.CorruptAudioError,
        r"declares 36000.00 s of audio",
    ),
    "flac whose STREAMINFO claims 1 h": Case(
        lambda m: flac_claiming(m["flac"], 3600.0),
        errors.CorruptAudioError,
        r"truncated: its header declares 3600.00 s of audio but only 1.50 s",
    ),
    "mp3 whose Xing header claims 10 h": Case(
        lambda m: mp3_claiming(m["mp3"], 36000.0),
        errors.AudioTooLongError,
        r"35999.8 s long, as the file declares; at most 14400 s",
    ),
    "mp3 whose Xing header claims 1 h": Case(
        lambda m: mp3_claiming(m["mp3"], 3600.0),
        errors.CorruptAudioError,
        r"truncated: its header declares 3599.84 s of audio but only 1.5\d s",
    ),
    # FFmpeg takes the length of an MP4 from its sample table, not from these fields.
    "3gp whose mvhd and mdhd claim 10 h": Case(lambda m: mp4_claiming(m["3gp_amr"], 36000.0), None),
    "wav data size 0xFFFFFFFF (streamed)": Case(lambda m: riff(data=OK, declared=0xFFFFFFFF), None),
    "wav data size 0 (streamed)": Case(lambda m: riff(data=OK, declared=0), None),
    # chunk walks
    "wav chunk whose size wraps around to itself": Case(
        lambda m: riff(data=OK, before_fmt=b"JUNK" + struct.pack("<I", 0xFFFFFFF8)),
        errors.CorruptAudioError,
        "like WAV " + CUT,
    ),
    "wav chunk running past the end before fmt": Case(
        lambda m: riff(data=OK, before_fmt=b"LIST" + struct.pack("<I", 1 << 30)),
        errors.CorruptAudioError,
        "like WAV " + CUT,
    ),
    "wav 5000 empty chunks before the data": Case(
        lambda m: riff(data=OK, before_data=b"JUNK\x00\x00\x00\x00" * 5000), None
    ),
    # sizes and layouts
    "1 sample": Case(lambda m: riff(data=b"\x10\x00"), errors.AudioTooShortError, r"0.00 s long"),
    "384 kHz": Case(
        lambda m: riff(sr=384_000, data=OK),
        errors.UnsupportedLayoutError,
        "384000 Hz; expected 4000-192000 Hz",
    ),
    "sample rate 0 Hz": Case(
        lambda m: riff(sr=0, data=OK), errors.UnsupportedLayoutError, "is 0 Hz; expected 4000"
    ),
    "sample rate 1 Hz": Case(
        lambda m: riff(sr=1, data=OK), errors.UnsupportedLayoutError, "is 1 Hz; expected 4000"
    ),
    "32 channels": Case(
        lambda m: riff(channels=32, data=OK[: 32 * 2 * 800]),
        errors.UnsupportedLayoutError,
        "32 channels; expected 1 to 8",
    ),
    "65535 channels": Case(
        lambda m: riff(channels=65535, data=OK[:2000]),
        errors.UnsupportedLayoutError,
        "65535 channels; expected 1 to 8",
    ),
    # FFmpeg decoding 8 channels (PyAV once read past planar frames of 8 channels)
    "8 channels in Matroska": Case(lambda m: matroska_pcm(np.tile(Y[:, None], (1, 8))), None),
    "8-channel flac of undeclared length": Case(
        lambda m: flac_declaring(wav_as_flac(np.tile(Y[:, None], (1, 8))), 0), None
    ),
    "float wav with a NaN": Case(
        lambda m: wav(np.where(np.arange(Y.size) == 4000, np.nan, Y), subtype="FLOAT"),
        errors.InvalidSamplesError,
        r"1 NaN or infinite sample\(s\) in its first 1.50 s",
    ),
    "float wav with inf": Case(
        lambda m: wav(np.where(np.arange(Y.size) > 9000, -np.inf, Y), subtype="FLOAT"),
        errors.InvalidSamplesError,
        r"2999 NaN or infinite sample\(s\)",
    ),
    "20 s float wav with a NaN at 5 s": Case(
        lambda m: wav(np.where(np.arange(LONG.size) == 40_000, np.nan, LONG), subtype="FLOAT"),
        errors.InvalidSamplesError,
        r"in its first 16.38 s",  # refused at the first block (2**17 frames), not after all
    ),
    # not audio
    "random bytes after RIFF": Case(
        lambda m: b"RIFF" + noise_bytes(4000), errors.CorruptAudioError, "like WAV " + CUT
    ),
    "random bytes after RIFF....WAVE": Case(
        lambda m: b"RIFF\x00\x10\x00\x00WAVE" + noise_bytes(4000),
        errors.CorruptAudioError,
        "like WAV " + CUT,
    ),
    "random bytes after fLaC": Case(
        lambda m: b"fLaC" + noise_bytes(4000), errors.CorruptAudioError, "like FLAC " + CUT
    ),
    "random bytes after OggS": Case(
        lambda m: b"OggS" + noise_bytes(4000), errors.CorruptAudioError, "like OGG " + CUT
    ),
    "random bytes after #!AMR": Case(
        lambda m: b"#!AMR\n" + noise_bytes(4000), errors.CorruptAudioError, r"\(amr, amr_nb\)"
    ),
    "zip": Case(lambda m: zip_bytes(m["wav"]), errors.UnsupportedFormatError, "not a recognised"),
    "png": Case(lambda m: png_bytes(), errors.UnsupportedFormatError, "has no audio stream"),
    "pdf": Case(lambda m: PDF, errors.UnsupportedFormatError, "not a recognised audio file"),
    "text": Case(lambda m: TEXT, errors.UnsupportedFormatError, "not a recognised audio file"),
    "mp4 with video only": Case(
        lambda m: video_only_mp4(), errors.UnsupportedFormatError, r"has no audio stream"
    ),
    # small files that decode to hours
    "30 kB flac of 5 h of silence, length declared": Case(
        lambda m: flac_silence(5 * 3600),
        errors.AudioTooLongError,
        r"17997.5 s long, as the file declares; at most 14400 s",
    ),
    "30 kB flac of 5 h of silence, length unknown": Case(
        lambda m: flac_silence(5 * 3600, declare=False),
        errors.AudioTooLongError,
        "longer than 600 s",
        {"max_duration_s": 600.0},
    ),
    "5 kB flac of 20 min of 8-channel silence": Case(
        lambda m: flac_silence(20 * 60, channels=8),
        errors.AudioTooLongError,
        r"1196.0 s long, as the file declares; at most 600 s",
        {"max_duration_s": 600.0},
    ),
    "180 kB amr of 1 h of no-data frames": Case(
        lambda m: amr_no_data(3600),
        errors.AudioTooLongError,
        "longer than 120 s",
        {"max_duration_s": 120.0},
    ),
}
"""Each input, what it must get, and the keyword arguments of ``load_audio``."""


def write_cases(root: Path, media: dict[str, bytes], cases: dict[str, Case]) -> list[dict]:
    specs = []
    for i, (name, case) in enumerate(cases.items()):
        path = root / f"input{i}.bin"
        path.write_bytes(case.build(media))
        specs.append({"name": name, "path": str(path), "kwargs": case.kwargs})
    return specs


@pytest.fixture(scope="module")
def decoded(tmp_path_factory, media) -> dict[str, dict]:
    """Every case answered by ``load_audio`` in a limited child."""
    root = tmp_path_factory.mktemp("hostile")
    specs = write_cases(root, media, CASES)
    specs.append({"name": "directory", "path": str(root), "kwargs": {}})
    specs.append({"name": "missing", "path": str(root / "no such call.wav"), "kwargs": {}})
    return answer_in_child(specs)


def check(name: str, case: Case, result: dict) -> None:
    assert "failure" not in result, f"{name}: {result.get('failure')}"
    assert result["seconds"] < TIME_LIMIT_S, f"{name}: took {result['seconds']:.1f} s"
    assert result["peak_rss_mb"] < MEMORY_LIMIT_MB, f"{name}: {result['peak_rss_mb']:.0f} MB"
    for how, answer in result["answers"].items():
        assert answer["code"] != "crash", f"{name} ({how}) crashed:\n{answer['message']}"
        if case.error is None:
            assert answer["code"] == "ok", f"{name} ({how}): refused: {answer}"
            continue
        assert answer["code"] == case.error.code, f"{name} ({how}): {answer}"
        assert re.search(case.match, answer["message"]), f"{name} ({how}): {answer['message']}"
        assert 400 <= answer["status"] < 500 and len(answer["message"]) > 20


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_gets_a_clear_error_quickly_in_bounded_memory(decoded, name):
    check(name, CASES[name], decoded[name])
    answers = decoded[name]["answers"]
    assert answers["path"]["code"] == answers["bytes"]["code"], answers


def test_a_directory_or_a_missing_path_is_not_audio(decoded):
    check(
        "directory",
        Case(None, errors.UnsupportedFormatError, "is a directory"),
        decoded["directory"],
    )
    check(
        "missing", Case(None, errors.UnsupportedFormatError, "does not exist"), decoded["missing"]
    )


# --- the same inputs, scored --------------------------------------------------------

SCORED: dict[str, Case] = {
    name: CASES[name]
    for name in [
        "0 bytes",
        "wav cut at 43 bytes",
        "1 sample",
        "32 channels",
        "float wav with a NaN",
        "wav 10 h at 8 kHz declared, 1 kB present",
        "text",
        "30 kB flac of 5 h of silence, length declared",
        "30 kB flac of 5 h of silence, length unknown",
    ]
} | {
    "4 s of digital silence": Case(
        lambda m: wav(np.zeros(32_000, np.float32)), errors.NoSpeechError, "audio is silent"
    ),
    "8 silent channels": Case(
        lambda m: wav(np.zeros((32_000, 8), np.float32)), errors.NoSpeechError, "silent"
    ),
    "8 channels, speech in one": Case(
        lambda m: wav(np.pad(voiced(6.0, sr=8000)[:, None], ((0, 0), (3, 4)))), None
    ),
}
"""Inputs for ``voicecheck.scoring.analyze``, and what it must answer."""


@pytest.fixture(scope="module")
def scored(tmp_path_factory, media) -> dict[str, dict]:
    """Every scored case answered by ``analyze`` (the default model) in a limited child."""
    return answer_in_child(
        write_cases(tmp_path_factory.mktemp("scored"), media, SCORED), analyze=True
    )


@pytest.mark.parametrize("name", list(SCORED))
def test_hostile_input_is_refused_by_analyze(scored, name):
    check(name, SCORED[name], scored[name])


def test_one_speaking_channel_of_eight_is_scored_and_the_rest_explained(scored):
    channels = scored["8 channels, speech in one"]["answers"]["bytes"]["channels"]
    assert channels == ["no_speech"] * 3 + ["scored"] + ["no_speech"] * 4


# --- fuzzing ------------------------------------------------------------------------

SEEDS = [
    ("wav_pcm16", ".wav"),
    ("wav_ulaw", ".wav"),
    ("wav_float", ".wav"),
    ("flac", ".flac"),
    ("ogg_vorbis", ".ogg"),
    ("mp3", ".mp3"),
    ("amr_nb", ".amr"),
    ("amr_wb", ".amr"),
]


def test_fuzzing_the_decoder_finds_nothing(tmp_path):
    seconds = int(os.environ.get("VOICECHECK_FUZZ_SECONDS", "20"))  # `make fuzz`: 600
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    y = voiced(0.3, sr=8000)  # small seeds: libFuzzer mutates up to the largest one's size
    for fmt, suffix in SEEDS:
        require_format(fmt)
        write_audio(corpus / f"{fmt}{suffix}", y, sr=8000, fmt=fmt)
    (corpus / "eight_channels.mkv").write_bytes(matroska_pcm(np.tile(y[:800, None], (1, 8))))
    artifacts = tmp_path / "findings"
    artifacts.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(TESTS / "fuzz_decode.py"),
            str(corpus),
            f"-max_total_time={seconds}",
            "-timeout=10",
            "-rss_limit_mb=1024",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 100,
        env=CHILD_ENV,
        cwd=tmp_path,
    )
    log = proc.stderr
    findings = sorted(p.name for p in artifacts.iterdir())
    assert proc.returncode == 0 and not findings, f"{findings}\n{log[-6000:]}"
    runs = re.search(r"stat::number_of_executed_units: (\d+)", log)
    assert runs and int(runs.group(1)) > 100, log[-3000:]
