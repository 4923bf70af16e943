"""Non-centred framing shared by every frame-level extractor.

Frame ``i`` covers the samples ``[i * hop_length, i * hop_length + frame_length)``; there is
no padding at either end, so features computed on overlapping blocks of a long recording
can be stitched together exactly.
"""

from __future__ import annotations

import numpy as np

from voicecheck.constants import FRAME_LENGTH, HOP_LENGTH


def frame_count(
    n_samples: int, *, frame_length: int = FRAME_LENGTH, hop_length: int = HOP_LENGTH
) -> int:
    """Return how many whole frames fit in a signal.

    Parameters
    ----------
    n_samples : int
        Length of the signal in samples.
    frame_length : int
        Frame length in samples.
    hop_length : int
        Hop between frame starts in samples.

    Returns
    -------
    int
        ``1 + (n_samples - frame_length) // hop_length``, or 0 when the signal is shorter
        than one frame.

    Examples
    --------
    >>> from voicecheck.features import frame_count
    >>> frame_count(8_000, frame_length=256, hop_length=80)
    97
    >>> [frame_count(n, frame_length=256, hop_length=80) for n in (255, 256, 335, 336)]
    [0, 1, 1, 2]
    """
    if frame_length < 1 or hop_length < 1:
        raise ValueError(
            f"frame_length={frame_length} and hop_length={hop_length}; both must be >= 1"
        )
    if n_samples < frame_length:
        return 0
    return 1 + (n_samples - frame_length) // hop_length


def as_mono_float32(y: np.ndarray) -> np.ndarray:
    """Return ``y`` as a 1-D float32 array, refusing anything else."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"y has shape {y.shape}; a 1-D mono signal is expected")
    return y


def frame_view(y: np.ndarray, *, frame_length: int, hop_length: int) -> np.ndarray:
    """Return a read-only view of ``y`` as frames, shape ``(n_frames, frame_length)``.

    The frame axis comes first here because the FFTs and reductions run along the
    contiguous sample axis; public functions transpose their outputs so time is last.
    """
    n_frames = frame_count(y.shape[-1], frame_length=frame_length, hop_length=hop_length)
    if n_frames == 0:
        return np.zeros((0, frame_length), dtype=y.dtype)
    view = np.lib.stride_tricks.sliding_window_view(y, frame_length)
    return view[: (n_frames - 1) * hop_length + 1 : hop_length]
