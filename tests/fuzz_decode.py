"""Fuzz :func:`voicecheck.audio.load_audio` with atheris (libFuzzer for Python).

Every input must either decode or be refused with a :class:`~voicecheck.errors.VoiceCheckError`
subclass. Any other exception, a crash inside a decoding library, a hang longer than
``-timeout`` seconds or memory beyond ``-rss_limit_mb`` is a finding: libFuzzer stops and
writes the input to a ``crash-*``, ``timeout-*`` or ``oom-*`` file (under
``-artifact_prefix``).

Run it on a seed corpus of small valid recordings (``tests/test_hostile_input.py`` writes
one; any folder of short WAV/FLAC/OGG/MP3/AMR files will do)::

    python tests/fuzz_decode.py CORPUS_DIR -max_total_time=600 -timeout=10 -rss_limit_mb=1024

New interesting inputs are added to ``CORPUS_DIR``. To replay inputs, a finding for one::

    python tests/fuzz_decode.py crash-1234abcd

Only voicecheck and soundfile are instrumented for coverage: the decoders themselves
(libsndfile, FFmpeg) are C libraries built without coverage hooks, so the fuzzer is
guided by the Python paths each input takes and finds decoder failures by mutation.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["voicecheck", "soundfile"]):
    from voicecheck.audio import load_audio
    from voicecheck.errors import VoiceCheckError


def TestOneInput(data: bytes) -> None:
    """Decode ``data``; only a VoiceCheckError may come out."""
    try:
        load_audio(data, require_speech=False)
    except VoiceCheckError:
        pass


def main() -> None:
    """Hand the command line to libFuzzer and fuzz until it stops."""
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
