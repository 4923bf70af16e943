"""Sample recordings voicecheck makes itself (for the demo and for tests)."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import VoiceCheckError


def espeak(
    text: str, *, voice: str = "en-us", speed_wpm: int = 160, pitch: int = 50
) -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng.

    Returns
    -------
    y : np.ndarray, shape (n_samples,), float32
        Synthetic speech in full-scale units.
    sr : int
        Its sample rate in Hz (22050).
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise VoiceCheckError(
            "espeak-ng is not installed; install it with `apt-get install espeak-ng`"
        )
    proc = subprocess.run(
        [exe, "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "--stdout", text],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout:
        raise VoiceCheckError(f"espeak-ng failed: {proc.stderr.decode(errors='replace').strip()}")
    y, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    return y, sr


def robocall(path: str | Path, *, text: str, voice: str = "en-us") -> Path:
    """Write ``text`` spoken by espeak-ng through G.711 mu-law as an 8 kHz WAV file."""
    from .channel import apply_channel

    y, sr = espeak(text, voice=voice)
    y8, sr8 = apply_channel(y, sr=sr, channel="g711_ulaw")
    path = Path(path)
    sf.write(path, np.clip(y8, -1, 1), sr8, format="WAV", subtype="ULAW")
    return path
