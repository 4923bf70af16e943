"""Sources of real speech: recordings shipped in Debian packages."""

from __future__ import annotations

import os
import re
import shutil
from collections import defaultdict
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from .base import INSTALL_HINT, Item, Source, _decode, _interleave, _lang, dpkg_files


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
