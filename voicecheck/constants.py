"""Every fixed number of the analysis, with its unit in its name.

These values are written into the model card; a model trained with other values
is refused at load time. :func:`cache_root` says where derived data may be kept.
"""

import os
from pathlib import Path


def cache_root() -> Path | None:
    """Folder for caches (features, built vocoder graphs), or None for no caching.

    ``VOICECHECK_CACHE_DIR``, by default ``~/.cache/voicecheck``; set empty to turn caching off.
    """
    value = os.environ.get("VOICECHECK_CACHE_DIR", str(Path.home() / ".cache" / "voicecheck"))
    return Path(value) if value else None


ANALYSIS_SR_HZ = 8_000
"""All audio is resampled to this rate before any feature is computed.

Telephone band: every call crosses a narrowband link somewhere, and content above
4 kHz mostly tells which recording setup (and so which sample rate) a clip came
from, a shortcut that does not survive the phone network.
"""

FRAME_LENGTH = 256
"""FFT size in samples at ``ANALYSIS_SR_HZ`` (32 ms)."""

WIN_LENGTH = 200
"""Analysis window in samples at ``ANALYSIS_SR_HZ`` (25 ms)."""

HOP_LENGTH = 80
"""Hop between frames in samples at ``ANALYSIS_SR_HZ`` (10 ms)."""

FEATURE_REVISION = 2
"""Raised whenever an extractor's values change under the same names (revision 2: pitch
searched at half the rate, the excitation and phase rows added). It is an analysis constant,
so the model card records it, a model made from other values refuses to load, and the
feature cache of training misses."""

N_MELS = 32
N_MFCC = 20
N_LINEAR_FILTERS = 32
N_SUBBANDS = 32
"""Equal-width sub-bands of 0-4 kHz (125 Hz each) whose log energies are frame features."""
FINE_BANDS = 4
"""Bands (1 kHz each) in which the spectral fine structure is measured."""
ENVELOPE_LIFTER = 24
"""Cepstral coefficients kept for the spectral envelope; the rest is the fine structure."""
LPC_ORDER = 12
"""Order of the linear predictor whose residual (the excitation) is described per frame."""
PHASE_BANDS = 8
"""Bands (500 Hz each) in which the frame-to-frame phase coherence is measured."""
N_LFCC = 20
CQ_BINS_PER_OCTAVE = 12
CQ_FMIN_HZ = 125.0
N_CQCC = 20
FMIN_PITCH_HZ = 60.0
FMAX_PITCH_HZ = 400.0
CONTRAST_BANDS = 4
ROLLOFF_PERCENT = 0.85
DELTA_WIDTH_FRAMES = 9

SEGMENT_S = 3.0
"""Length of one analysis window (segment) in seconds."""

SEGMENT_HOP_S = 1.5
"""Hop between segments in seconds (50 % overlap)."""

BLOCK_S = 30.0
"""Long recordings are analysed in blocks of this many seconds to bound memory."""

MIN_DURATION_S = 0.5
"""Shortest recording accepted, in seconds."""

MAX_DURATION_S = 4 * 3600.0
"""Default longest recording accepted, in seconds (configurable)."""

MIN_SPEECH_S = 0.3
"""Least amount of active speech, in seconds, needed for a score."""

MIN_SAMPLE_RATE_HZ = 4_000
MAX_SAMPLE_RATE_HZ = 192_000
MAX_CHANNELS = 8

SILENCE_DBFS = -60.0
"""A recording whose peak level is below this (dB re full scale) is silent."""

ACTIVITY_RANGE_DB = 35.0
"""Frames more than this many dB below the loudest frame count as pauses."""

ACTIVITY_FLOOR_DBFS = -55.0
"""Frames below this absolute level (dB re full scale) count as pauses."""

TARGET_LEVEL_DBFS = -26.0
"""Active-speech level every recording is normalised to before features."""
