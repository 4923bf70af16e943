"""From validated audio to per-segment feature vectors.

A channel's active-speech level is normalised, its frame-level features are computed in blocks of
:data:`~voicecheck.constants.BLOCK_S` seconds (so that memory stays bounded on long
calls) and summarised per segment of :data:`~voicecheck.constants.SEGMENT_S`
seconds with :data:`~voicecheck.constants.SEGMENT_HOP_S` hop.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from voicecheck import features

from .audio import frame_power
from .constants import (
    ACTIVITY_RANGE_DB,
    ANALYSIS_SR_HZ,
    BLOCK_S,
    FRAME_LENGTH,
    HOP_LENGTH,
    MIN_SPEECH_S,
    SEGMENT_HOP_S,
    SEGMENT_S,
    SILENCE_DBFS,
    TARGET_LEVEL_DBFS,
)
from .errors import NoSpeechError

CONTEXT_FRAMES = features.FEATURE_CONTEXT_FRAMES
"""Frames of context computed on each side of a block and dropped (deltas, flux)."""

SEGMENT_FRAMES = int(round(SEGMENT_S * ANALYSIS_SR_HZ / HOP_LENGTH))
SEGMENT_HOP_FRAMES = int(round(SEGMENT_HOP_S * ANALYSIS_SR_HZ / HOP_LENGTH))
BLOCK_FRAMES = int(round(BLOCK_S * ANALYSIS_SR_HZ / HOP_LENGTH))
MIN_SPEECH_FRAMES = int(round(MIN_SPEECH_S * ANALYSIS_SR_HZ / HOP_LENGTH))


@cache
def frame_names() -> tuple[str, ...]:
    """Names of the frame-level features, in order."""
    return tuple(features.frame_feature_names())


@cache
def feature_names() -> tuple[str, ...]:
    """Names of the per-segment feature vector the model sees, in order."""
    return tuple(features.summary_names(frame_names()))


@dataclass(frozen=True)
class SegmentFeatures:
    """Feature vectors of one channel, one row per segment.

    Attributes
    ----------
    X : np.ndarray, shape (n_segments, n_features), float32
        Summary features per segment; NaN where undefined.
    start_s, end_s : np.ndarray, shape (n_segments,), float64
        Segment boundaries in seconds from the start of the recording.
    speech_s : np.ndarray, shape (n_segments,), float64
        Seconds of active speech in each segment.
    """

    X: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    speech_s: np.ndarray

    @property
    def has_speech(self) -> np.ndarray:
        """Boolean mask of segments with enough speech to be scored."""
        return self.speech_s >= MIN_SPEECH_S


def level_gain(y: np.ndarray) -> float:
    """Gain that brings the active-speech level of ``y`` to ``TARGET_LEVEL_DBFS``.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono audio at ``ANALYSIS_SR_HZ``, full-scale units.

    Returns
    -------
    float
        Linear gain; 1.0 for silence.

    Examples
    --------
    >>> import math
    >>> import numpy as np
    >>> y = 0.01 * np.sin(np.arange(8000) / 5).astype(np.float32)
    >>> round(20 * math.log10(level_gain(y)), 1)  # a -43 dBFS tone is raised by 17 dB
    17.0
    """
    if y.size < HOP_LENGTH or max(float(y.max()), -float(y.min())) < 10 ** (SILENCE_DBFS / 20):
        return 1.0
    power = frame_power(y, hop=HOP_LENGTH)
    energy_db = 10 * np.log10(power + 1e-12)
    # Relative to the loudest frame only, so that the gain found does not depend on
    # the input's own level.
    active = energy_db > energy_db.max() - ACTIVITY_RANGE_DB
    level_db = 10 * np.log10(power[active].mean())
    return float(10 ** ((TARGET_LEVEL_DBFS - level_db) / 20))


def segment_bounds(n_frames: int) -> list[tuple[int, int]]:
    """Split ``n_frames`` frames into overlapping segments.

    Returns
    -------
    list of (start_frame, end_frame)
        Half-open frame ranges; a recording shorter than one segment is one
        segment; the last segment ends at the last frame.
    """
    if n_frames <= 0:
        return []
    if n_frames <= SEGMENT_FRAMES:
        return [(0, n_frames)]
    bounds = [
        (s, s + SEGMENT_FRAMES) for s in range(0, n_frames - SEGMENT_FRAMES + 1, SEGMENT_HOP_FRAMES)
    ]
    if bounds[-1][1] < n_frames:
        bounds.append((n_frames - SEGMENT_FRAMES, n_frames))
    return bounds


def n_frames_of(n_samples: int) -> int:
    """Number of analysis frames in ``n_samples`` samples (non-centred framing)."""
    if n_samples < FRAME_LENGTH:
        return 0
    return 1 + (n_samples - FRAME_LENGTH) // HOP_LENGTH


def iter_frame_blocks(y: np.ndarray, *, gain: float = 1.0, block_frames: int = BLOCK_FRAMES):
    """Yield ``(first_frame, values)`` of frame-level features, block by block.

    Each block is scaled by ``gain`` and computed with ``CONTEXT_FRAMES`` frames of
    context on both sides, which are dropped, so the stitched result equals a
    whole-clip computation and no scaled copy of the whole recording is made.
    """
    total = n_frames_of(y.size)
    for f0 in range(0, total, block_frames):
        f1 = min(total, f0 + block_frames)
        c0 = max(0, f0 - CONTEXT_FRAMES)
        c1 = min(total, f1 + CONTEXT_FRAMES)
        chunk = y[c0 * HOP_LENGTH : (c1 - 1) * HOP_LENGTH + FRAME_LENGTH]
        values = features.frame_features(chunk * np.float32(gain), sr=ANALYSIS_SR_HZ).values
        yield f0, values[:, f0 - c0 : f0 - c0 + (f1 - f0)]


def segment_features(y: np.ndarray, *, block_frames: int = BLOCK_FRAMES) -> SegmentFeatures:
    """Compute the per-segment feature vectors of one channel.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono float32 audio at ``ANALYSIS_SR_HZ``.
    block_frames : int
        Frames computed at once; bounds memory on long recordings.

    Returns
    -------
    SegmentFeatures
    """
    gain = level_gain(y)
    names = frame_names()
    energy_row = names.index("energy_db")
    bounds = segment_bounds(n_frames_of(y.size))
    starts_all = np.array([b[0] for b in bounds], dtype=np.intp)
    length = bounds[0][1] - bounds[0][0] if bounds else 0  # every segment is this long
    rows: list[np.ndarray] = []
    speech: list[np.ndarray] = []
    buffer = np.zeros((len(names), 0), np.float32)
    buffer_start = 0  # absolute index of the buffer's first frame
    next_seg = 0
    for f0, values in iter_frame_blocks(y, gain=gain, block_frames=block_frames):
        buffer = np.concatenate([buffer, values], axis=1) if buffer.size else values
        available = f0 + values.shape[1]
        done = next_seg
        while done < len(bounds) and bounds[done][1] <= available:
            done += 1
        if done > next_seg:
            # Every segment complete in the buffer, summarised at once.
            starts = starts_all[next_seg:done] - buffer_start
            energy = np.lib.stride_tricks.sliding_window_view(buffer[energy_row], length)
            active = features.activity(energy[starts])
            rows.append(
                features.summarize_segments(buffer, names=names, starts=starts, active=active)[0]
            )
            speech.append(np.count_nonzero(active, axis=1) * (HOP_LENGTH / ANALYSIS_SR_HZ))
            next_seg = done
        if next_seg < len(bounds):
            keep_from = bounds[next_seg][0]
            buffer = buffer[:, keep_from - buffer_start :]
            buffer_start = keep_from
    n_feat = len(feature_names())
    X = np.vstack(rows).astype(np.float32) if rows else np.zeros((0, n_feat), np.float32)
    speech_s = np.concatenate(speech).astype(np.float64) if speech else np.zeros(0)
    starts = np.array([b[0] for b in bounds], dtype=np.float64) * HOP_LENGTH / ANALYSIS_SR_HZ
    ends = (
        np.array([b[1] - 1 for b in bounds], dtype=np.float64) * HOP_LENGTH + FRAME_LENGTH
    ) / ANALYSIS_SR_HZ
    return SegmentFeatures(X=X, start_s=starts, end_s=ends, speech_s=speech_s)


def require_speech_segments(seg: SegmentFeatures) -> np.ndarray:
    """Return the mask of scoreable segments, or raise :class:`NoSpeechError`."""
    mask = seg.has_speech
    if not mask.any():
        raise NoSpeechError(
            f"no {SEGMENT_S:.0f} s window of this channel holds {MIN_SPEECH_S:.1f} s of speech;"
            " expected audible speech"
        )
    return mask
