"""Shared parts of the corpus builder: constants, package helpers, items and sources."""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ...errors import VoiceCheckError

MANIFEST_COLUMNS = (
    "path",
    "label",
    "system",
    "engine",
    "voice",
    "speaker",
    "source",
    "package",
    "language",
    "licence",
    "text",
    "duration_s",
    "sample_rate",
    "vocoder",
)
"""Columns of ``manifest.csv``. ``system`` names the generator (``bonafide`` for real
speech), ``source`` the package or engine family (for grouped splits; a vocoded clip
keeps the source of the real clip it was made from)."""

KINDS = ("real", "tts", "vocoded")
SIZES = ("small", "full")

MIN_CLIP_S = 0.4
"""Shortest clip kept, in seconds."""
MAX_CLIP_S = 12.0
"""Longest clip kept, in seconds."""
MIN_ACTIVE_S = 0.3
"""Least active signal (speech_seconds) a clip needs, in seconds."""
VOCODED_SHARE = 1 / 3
"""Share of the synthetic minutes made by vocoders (the rest by TTS engines)."""
NEURAL_VOCODER_WEIGHT = 3.0
"""The neural vocoder (HiFi-GAN) gets this many times a classic vocoder's share of the
vocoded minutes: neural vocoders make most of the cloned voices met in the field."""
SUBPROCESS_TIMEOUT_S = 120
"""Longest an engine may take for one clip, in seconds."""
ENGLISH_WEIGHT = 3.0
"""The US English IVR prompts (the detector's main domain) may give 3 times the clips
and minutes of another real source: most real packages are not in English."""
PROBE_CLIPS = 8
"""Clips per source in a build's first round, to measure their length before planning."""
PEAK_LIMIT = 0.99
"""Clips that would clip in 16-bit PCM are scaled down to this peak (full scale)."""

DOC_DIR = Path("/usr/share/doc")
INSTALL_HINT = "run `bash packaging/corpus-deps.sh`"


class CorpusError(VoiceCheckError):
    """The corpus cannot be built as asked."""

    status = 400
    code = "corpus_error"
    title = "Corpus build error"


@dataclass(frozen=True)
class Plan:
    """How much a corpus size takes."""

    real_clips: int
    """Most clips per real source."""
    real_minutes: float
    """Most minutes per real source."""
    real_total: int | None
    """Most real clips over all real sources (None: no limit)."""
    tts_clips: int
    """Most clips per TTS source."""
    vocoded_clips: int
    """Most clips per vocoder."""
    fallback_synthetic_minutes: float
    """Synthetic minutes when no real source is available (nothing to balance)."""


PLANS: dict[str, Plan] = {
    "small": Plan(
        real_clips=3,
        real_minutes=0.1,
        real_total=20,
        tts_clips=3,
        vocoded_clips=2,
        fallback_synthetic_minutes=0.5,
    ),
    "full": Plan(
        real_clips=200,
        real_minutes=6.0,
        real_total=None,
        tts_clips=600,
        vocoded_clips=600,
        fallback_synthetic_minutes=30.0,
    ),
}


# ---------------------------------------------------------------------------
# Helpers: hashing, Debian packages, licences, decoding
# ---------------------------------------------------------------------------


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


def clip_id(source: str, key: str, seed: int) -> str:
    """Return the 16-hex-digit id of a clip: a hash of (source, item key, seed).

    >>> clip_id("espeak-ng", "en-us|0|Hello.", 0) == clip_id("espeak-ng", "en-us|0|Hello.", 0)
    True
    >>> len(clip_id("espeak-ng", "x", 1))
    16
    """
    return _digest(source, key, seed).hex()[:16]


def _int_seed(*parts: object) -> int:
    return int.from_bytes(_digest(*parts)[:8], "little")


@cache
def dpkg_files(package: str) -> tuple[str, ...] | None:
    """Files an installed Debian package ships (None when it is not installed)."""
    exe = shutil.which("dpkg-query")
    if exe is None:
        return None
    proc = subprocess.run(
        [exe, "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or "install ok installed" not in proc.stdout:
        return None
    proc = subprocess.run([exe, "-L", package], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    return tuple(line for line in proc.stdout.splitlines() if line.startswith("/"))


def _dpkg_versions(packages: Iterable[str]) -> dict[str, str]:
    exe = shutil.which("dpkg-query")
    names = sorted(set(packages))
    if exe is None or not names:
        return {}
    proc = subprocess.run(
        [exe, "-W", "-f=${Package}\t${Version}\t${Status}\n", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and "install ok installed" in parts[2]:
            out[parts[0]] = parts[1]
    return out


def _pypi_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


_LICENCE_ALIASES = {"CC-SA-BY-3.0": "CC-BY-SA-3.0", "other": ""}


def _deb822_paragraphs(text: str) -> list[dict[str, str]]:
    paragraphs = []
    for block in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if fields:
            paragraphs.append(fields)
    return paragraphs


@cache
def debian_licence(package: str, match: str = "*") -> str | None:
    """Short licence name of a file of ``package`` from its machine-readable copyright.

    Reads ``/usr/share/doc/<package>/copyright`` in the Debian ``copyright-format
    1.0`` and returns the ``License`` of the last ``Files`` paragraph whose pattern
    matches ``match`` (a path in the upstream source tree, e.g.
    ``data/voices/slt/x``), as the file spells it (``CC-BY-SA-3.0``, ``GPL-2+``).

    Returns None when the file is missing, not machine-readable, or says ``other``;
    the caller then uses the licence it knows from reading the file.
    """
    path = DOC_DIR / package / "copyright"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not text.startswith("Format:"):
        return None
    found = None
    for para in _deb822_paragraphs(text):
        files, licence = para.get("files"), para.get("license")
        if files is None or not licence:
            continue
        patterns = [p.rstrip(":") for p in files.split()]
        if any(fnmatch.fnmatchcase(match, p) for p in patterns):
            found = licence.splitlines()[0].strip()
    if found is None:
        return None
    return _LICENCE_ALIASES.get(found, found) or None


def _decode(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio file to mono float32 at its own rate (soundfile, else PyAV)."""
    try:
        y, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return y.mean(axis=1, dtype=np.float32), int(sr)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            sr = int(stream.rate)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise ValueError(f"cannot decode {path}: {exc}") from None
    if not chunks:
        return np.zeros(0, dtype=np.float32), sr
    return np.concatenate(chunks).astype(np.float32), sr


def _wav_bytes(data: bytes, what: str) -> tuple[np.ndarray, int]:
    try:
        y, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise RuntimeError(f"{what} wrote no readable WAV ({exc})") from None
    return y.mean(axis=1, dtype=np.float32), int(sr)


def _run(cmd: Sequence[str], *, what: str, stdin: bytes | None = None) -> bytes:
    try:
        proc = subprocess.run(
            list(cmd), input=stdin, capture_output=True, timeout=SUBPROCESS_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} took more than {SUBPROCESS_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"{what} failed ({proc.returncode}): {' '.join(err[-2:])}")
    return proc.stdout


def _render_to_file(cmd: Callable[[str], list[str]], *, what: str, stdin: bytes | None = None):
    with tempfile.TemporaryDirectory(prefix="voicecheck-tts-") as tmp:
        out = os.path.join(tmp, "out.wav")
        _run(cmd(out), what=what, stdin=stdin)
        try:
            data = Path(out).read_bytes()
        except OSError:
            raise RuntimeError(f"{what} wrote no file") from None
    return _wav_bytes(data, what)


def _lang(code: str) -> str:
    """ISO 639-1 part of a language tag: ``en-GB`` -> ``en``, ``pt_BR`` -> ``pt``."""
    return re.split(r"[-_@]", code)[0].lower()


# ---------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One clip a source will make: what goes in and what the manifest says about it."""

    key: str
    """Identity of the item within its source (hashed into the clip id)."""
    speaker: str
    language: str
    system: str
    text: str = ""
    voice: str = ""
    path: str = ""
    """Input audio file: the recording (real) or the real clip to resynthesise (vocoded)."""
    params: tuple[tuple[str, Any], ...] = ()
    """Engine settings (speed, pitch) drawn when the item was planned."""
    package: str = ""
    """Package of this item when it is not the source's first package."""
    licence: str = ""
    """Licence of this item when it is not the source's."""
    family: str = ""
    """Manifest ``source`` column when it is not the source's."""
    duration_s: float | None = None
    """Known duration (vocoded items), for planning."""

    def param(self, name: str, default: Any = None) -> Any:
        """Return the engine setting ``name``."""
        return dict(self.params).get(name, default)


def _interleave(groups: dict[str, list[Item]], rng: np.random.Generator) -> list[Item]:
    """Round-robin over groups (in a seeded order), so that any prefix is balanced."""
    names = sorted(groups)
    names = [names[i] for i in rng.permutation(len(names))]
    lists = [groups[n] for n in names]
    out = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(x[i] for x in lists if i < len(x))
    return out


class Source:
    """One place clips come from: a package of recordings, a TTS engine or a vocoder.

    ``deterministic`` says whether the same item always gives the same samples.

    Parameters
    ----------
    name : str
        Registry name (``--source NAME``) and folder of its clips.
    kind : str
        ``real``, ``tts`` or ``vocoded``.
    family : str
        The manifest's ``source`` column: the package or engine family.
    debian, pypi : tuple of str
        Packages that provide it.
    languages : tuple of str
        Languages it speaks.
    licence_hint : str
        Licence when the copyright file is not machine-readable.
    licence_match : str
        Path matched against the copyright file's ``Files`` patterns.
    default : bool
        Part of a build when no sources are named.
    note : str
        Which files it keeps, or why it is opt-in.
    weight : float
        A real source's caps (clips and minutes) are this many times the size's; a
        vocoded source's share of the vocoded minutes is in proportion to it.
    """

    engine = ""
    deterministic = True

    def __init__(
        self,
        name: str,
        *,
        kind: str,
        family: str,
        debian: tuple[str, ...] = (),
        pypi: tuple[str, ...] = (),
        languages: tuple[str, ...] = (),
        licence_hint: str = "unknown",
        licence_match: str = "*",
        default: bool = True,
        note: str = "",
        weight: float = 1.0,
    ) -> None:
        self.name = name
        self.weight = weight
        self.kind = kind
        self.family = family
        self.debian = debian
        self.pypi = pypi
        self.languages = languages
        self.licence_hint = licence_hint
        self.licence_match = licence_match
        self.default = default
        self.note = note

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @property
    def label(self) -> str:
        """``bonafide`` for real speech, ``spoof`` otherwise."""
        return "bonafide" if self.kind == "real" else "spoof"

    @property
    def packages(self) -> tuple[str, ...]:
        """Debian and PyPI packages, PyPI ones prefixed ``pypi:``."""
        return self.debian + tuple(f"pypi:{p}" for p in self.pypi)

    def missing(self) -> str | None:
        """Why the source cannot be used here, or None when it can."""
        return None

    def available(self) -> bool:
        """Whether the files and programs the source needs are installed."""
        return self.missing() is None

    def licence(self, package: str | None = None, match: str | None = None) -> str:
        """Short licence name (SPDX-like) of the source's (or an item's) audio."""
        package = package or (self.debian[0] if self.debian else "")
        found = debian_licence(package, match or self.licence_match) if package else None
        return found or self.licence_hint

    def items(self, rng: np.random.Generator, limit: int, real: Sequence[Item] = ()) -> list[Item]:
        """Plan up to ``limit`` clips, in the order they should be made.

        ``real`` holds the real clips of the build (vocoded sources use them).
        """
        raise NotImplementedError

    def render(self, item: Item, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Make one clip: mono float32 samples and their rate in Hz."""
        raise NotImplementedError
