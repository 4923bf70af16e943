"""All frame-level features of a signal in one array, and the speech-activity mask.

:func:`frame_features` computes each frame's complex spectrum once and derives every spectral,
cepstral, excitation and phase feature from it; the waveform features (zero-crossing rate,
energy, pitch) use the same non-centred frames. Pauses are not analysed: a frame further than
:data:`ANALYSIS_REACH_FRAMES` from any frame above the activity floor is read by no summary,
so only its level and zero-crossing rate are computed. Frame ``i`` depends only on samples
``[i * HOP_LENGTH, i * HOP_LENGTH + FRAME_LENGTH)`` and, for the deltas, the flux and the
phase deviation, on at most :data:`FEATURE_CONTEXT_FRAMES` frames on each side: exactly so for
every audible frame (above the activity floor), the only frames a summary reads. A long
recording can therefore be processed in overlapping blocks: give each block that many extra
frames (or more) on each side and drop them afterwards; the audible frames come out as from
the whole signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from voicecheck.constants import (
    ACTIVITY_FLOOR_DBFS,
    ACTIVITY_RANGE_DB,
    ANALYSIS_SR_HZ,
    CONTRAST_BANDS,
    DELTA_WIDTH_FRAMES,
    FINE_BANDS,
    FRAME_LENGTH,
    HOP_LENGTH,
    N_CQCC,
    N_LFCC,
    N_MFCC,
    N_SUBBANDS,
    PHASE_BANDS,
)

from ._framing import as_mono_float32, frame_count
from .cepstral import cepstra, deltas
from .prosody import pitch
from .spectral import (
    fine_structure,
    log_power_of,
    lpc_residual,
    phase_coherence,
    power_of,
    spectral_shape,
    spectral_shape_names,
    spectrum_frames,
    subband_energies,
)
from .temporal import log_energy, zero_crossing_rate

ANALYSIS_REACH_FRAMES = DELTA_WIDTH_FRAMES // 2
"""A frame is analysed when an audible frame lies this close (the reach of a delta)."""

FEATURE_CONTEXT_FRAMES = DELTA_WIDTH_FRAMES // 2
"""Neighbouring frames on each side that can influence an audible frame's features (the deltas).

Every frame within :data:`ANALYSIS_REACH_FRAMES` of an audible one is analysed, so this holds
exactly for the frames a summary reads. A frame near a pause can also depend on which of its
neighbours are analysed, which looks as far again; no summary reads it.
"""

_CHUNK_FRAMES = 1536
"""Most frames whose spectra are computed at once (bounds temporary memory; a signal is cut
into equal chunks of at most this many; values change by rounding only)."""


@dataclass(frozen=True, eq=False)
class FrameFeatures:
    """Frame-level features of one signal.

    Attributes
    ----------
    values : np.ndarray, shape (n_features, n_frames), float32
        One row per feature, in the order of ``names``; units are in the names' suffixes
        (``_hz``, ``_db``) or given by :func:`frame_feature_names`. ``f0_hz`` is NaN in
        unvoiced frames; nothing else is ever NaN. Quiet frames (see :func:`frame_features`)
        hold 0 in every row but ``zcr``, ``energy_db``, ``f0_hz`` (NaN) and the deltas.
    names : tuple of str, length n_features
        Feature names, equal to :func:`frame_feature_names`.
    """

    values: np.ndarray
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[0] != len(self.names):
            raise ValueError(
                f"values has shape {self.values.shape}; ({len(self.names)}, n_frames) is expected"
            )

    @property
    def n_frames(self) -> int:
        """Number of frames (columns of ``values``)."""
        return self.values.shape[1]

    def row(self, name: str) -> np.ndarray:
        """Return the feature called ``name``, shape ``(n_frames,)``."""
        return self.values[self.names.index(name)]


def _numbered(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}_{k}" for k in range(1, n + 1))


@lru_cache(maxsize=1)
def frame_feature_names() -> tuple[str, ...]:
    """Return the names of the rows of :func:`frame_features`, in order, without computing.

    Returns
    -------
    tuple of str
        In order (``3 N_MFCC + 3 N_LFCC + N_CQCC + CONTRAST_BANDS + 10 + 2 N_SUBBANDS +
        3 FINE_BANDS + 1 + PHASE_BANDS`` names, with the
        numbers of :mod:`voicecheck.constants`):

        - ``mfcc_1`` .. ``mfcc_{N_MFCC}``: MFCC 1..N_MFCC (coefficient 0 dropped), then
          their deltas ``mfcc_d1_k`` and delta-deltas ``mfcc_d2_k`` (per frame, per
          frame**2);
        - ``lfcc_k``, ``lfcc_d1_k``, ``lfcc_d2_k``: the same for LFCC 1..N_LFCC;
        - ``cqcc_1`` .. ``cqcc_{N_CQCC}``: CQCC 1..N_CQCC;
        - ``centroid_hz``, ``bandwidth_hz``, ``flatness`` (0-1), ``rolloff_hz``,
          ``contrast_db_1`` .. ``contrast_db_{CONTRAST_BANDS + 1}`` (octave bands, dB),
          ``flux`` (0-sqrt 2);
        - ``zcr`` (crossings per sample pair), ``energy_db`` (dBFS);
        - ``f0_hz`` (Hz, NaN when unvoiced), ``voicing`` (0-1);
        - ``subband_db_k`` and their deltas ``subband_d1_k``: log energies of
          ``N_SUBBANDS`` equal-width bands of 0-4 kHz (dB);
        - ``fine_spread_k``, ``fine_peak_k``: the spectral fine structure (log spectrum
          minus its cepstral envelope) in ``FINE_BANDS`` 1 kHz bands;
        - ``lpc_gain_db``, ``residual_flatness_k`` (``FINE_BANDS`` bands, 0-1): the
          excitation left by a linear predictor;
        - ``phase_dev_k``: the frame-to-frame phase deviation in ``PHASE_BANDS`` bands
          (0-2).

    Examples
    --------
    >>> from voicecheck.features import frame_feature_names
    >>> names = frame_feature_names()
    >>> names[:2], names[150:154]
    (('mfcc_1', 'mfcc_2'), ('zcr', 'energy_db', 'f0_hz', 'voicing'))
    >>> names[-1]
    'phase_dev_8'
    """
    names: list[str] = []
    for family, n in (("mfcc", N_MFCC), ("lfcc", N_LFCC)):
        names += _numbered(family, n)
        names += _numbered(f"{family}_d1", n)
        names += _numbered(f"{family}_d2", n)
    names += _numbered("cqcc", N_CQCC)
    names += spectral_shape_names(n_bands=CONTRAST_BANDS)
    names += ("zcr", "energy_db", "f0_hz", "voicing")
    names += _numbered("subband_db", N_SUBBANDS)
    names += _numbered("subband_d1", N_SUBBANDS)
    names += _numbered("fine_spread", FINE_BANDS)
    names += _numbered("fine_peak", FINE_BANDS)
    names += ("lpc_gain_db", *_numbered("residual_flatness", FINE_BANDS))
    names += _numbered("phase_dev", PHASE_BANDS)
    return tuple(names)


@lru_cache(maxsize=1)
def _row_slices() -> dict[str, slice | int]:
    """Return where each feature block lives in the rows of :func:`frame_features`."""
    names = frame_feature_names()
    blocks = [
        "mfcc",
        "mfcc_d1",
        "mfcc_d2",
        "lfcc",
        "lfcc_d1",
        "lfcc_d2",
        "cqcc",
        "subband_db",
        "subband_d1",
        "fine_spread",
        "fine_peak",
        "phase_dev",
    ]
    rows: dict[str, slice | int] = {}
    for block in blocks:
        members = [i for i, name in enumerate(names) if name.rsplit("_", 1)[0] == block]
        rows[block] = slice(members[0], members[-1] + 1)
    shape = spectral_shape_names(n_bands=CONTRAST_BANDS)
    start = names.index(shape[0])
    rows["shape"] = slice(start, start + len(shape))
    for name in ("zcr", "energy_db", "f0_hz", "voicing", "flux"):
        rows[name] = names.index(name)
    start = names.index("lpc_gain_db")
    rows["excitation"] = slice(start, start + 1 + FINE_BANDS)
    return rows


def frame_features(y: np.ndarray, *, sr: float = ANALYSIS_SR_HZ) -> FrameFeatures:
    """Compute every frame-level feature of a signal.

    Frames are non-centred (see the module docstring), ``n_frames = 1 + (len(y) -
    FRAME_LENGTH) // HOP_LENGTH``, 0 for a signal shorter than one frame.

    A frame is *audible* when its level is above ``ACTIVITY_FLOOR_DBFS``; no quieter frame
    is ever active (:func:`activity`), so no segment summary reads it. Frames further than
    :data:`ANALYSIS_REACH_FRAMES` from every audible frame are *quiet*: they are not analysed
    and hold 0 in every row but ``zcr`` and ``energy_db`` (computed for every frame), ``f0_hz``
    (NaN) and the deltas (slopes over the neighbouring rows as they are). Pitch is searched
    in audible frames only. Every frame within reach of an audible one gets its full
    features, so the deltas of an audible frame read only analysed frames. The first
    analysed frame after a quiet one has no previous spectrum: its flux is 0 and its phase
    deviation 1.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono signal at ``ANALYSIS_SR_HZ``, full scale = 1.0.
    sr : float
        Sample rate in Hz; must be ``ANALYSIS_SR_HZ`` (the frame settings are in samples
        at that rate).

    Returns
    -------
    FrameFeatures
        ``values`` of shape ``(len(frame_feature_names()), n_frames)``, float32, and the
        ``names``.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.constants import ANALYSIS_SR_HZ as sr
    >>> from voicecheck.features import frame_count, frame_feature_names, frame_features
    >>> y = np.sin(2 * np.pi * 220 * np.arange(sr) / sr).astype(np.float32)
    >>> features = frame_features(y, sr=sr)
    >>> features.values.shape == (len(frame_feature_names()), frame_count(sr))
    True
    >>> features.values.dtype
    dtype('float32')
    >>> round(float(np.median(features.row("f0_hz"))))
    220
    """
    if sr != ANALYSIS_SR_HZ:
        raise ValueError(
            f"sr={sr} Hz; features are defined at {ANALYSIS_SR_HZ} Hz, resample the audio first"
        )
    y = as_mono_float32(y)
    names = frame_feature_names()
    n_frames = frame_count(y.size, frame_length=FRAME_LENGTH, hop_length=HOP_LENGTH)
    out = np.zeros((len(names), n_frames), dtype=np.float32)
    rows = _row_slices()
    out[rows["zcr"]] = zero_crossing_rate(y)
    energy_db = out[rows["energy_db"]] = log_energy(y)
    # A frame at or below the activity floor is a pause in every segment (see :func:`activity`):
    # no summary reads it. Only frames within a delta's reach of an audible one are analysed.
    audible = energy_db > ACTIVITY_FLOOR_DBFS
    analysed = _within_reach(audible, ANALYSIS_REACH_FRAMES)
    # Frames are processed in chunks so that the temporary arrays stay small; every frame's
    # spectrum is still computed once (plus one frame per chunk for the flux and the phase
    # deviation).
    chunk_frames = -(-n_frames // max(1, -(-n_frames // _CHUNK_FRAMES)))  # equal chunks
    for first in range(0, n_frames, max(1, chunk_frames)):
        stop = min(n_frames, first + chunk_frames)
        lead = 1 if first > 0 else 0  # the previous frame, for the flux and the phase
        end = (stop - 1) * HOP_LENGTH + FRAME_LENGTH
        chunk = y[(first - lead) * HOP_LENGTH : end]
        wanted = analysed[first - lead : stop]
        if wanted.all():
            _spectral_rows(out, spectrum_frames(chunk), slice(first, stop), slice(lead, None), sr)
        elif wanted[lead:].any():
            picked = np.flatnonzero(wanted)
            number = picked + (first - lead)
            keep = number >= first
            _spectral_rows(out, spectrum_frames(chunk, frames=picked), number[keep], keep, sr)
            # The first frame of a run follows a frame that was not analysed: it has no
            # previous spectrum, so no flux (0) and no phase advance (deviation 1).
            starts = number[keep & (np.diff(picked, prepend=-1) > 1)]
            out[rows["flux"], starts] = 0.0
            out[rows["phase_dev"], starts] = 1.0
        # no summary reads the pitch of a pause either: it is not searched
        out[rows["f0_hz"], first:stop], out[rows["voicing"], first:stop] = pitch(
            y[first * HOP_LENGTH : end], sr=sr, frames=audible[first:stop]
        )
    for family in ("mfcc", "lfcc"):
        out[rows[f"{family}_d1"]] = deltas(out[rows[family]], order=1)
        out[rows[f"{family}_d2"]] = deltas(out[rows[family]], order=2)
    out[rows["subband_d1"]] = deltas(out[rows["subband_db"]], order=1)
    return FrameFeatures(values=out, names=names)


def _spectral_rows(
    out: np.ndarray, X: np.ndarray, columns: slice | np.ndarray, keep: slice | np.ndarray, sr: float
) -> None:
    """Write every feature derived from the frame spectra ``X`` into ``out[:, columns]``.

    ``keep`` picks the rows of ``X`` that belong to ``columns``; the others are only there as
    the previous frame of the flux and the phase deviation.
    """
    rows = _row_slices()
    S = power_of(X)
    log_power = log_power_of(S)  # shared by the flatness and the fine structure
    out[rows["shape"], columns] = spectral_shape(S=S, sr=sr, log_power=log_power)[:, keep]
    out[rows["phase_dev"], columns] = phase_coherence(X=X)[:, keep]
    S, log_power = S[:, keep], log_power[keep]
    (
        out[rows["mfcc"], columns],
        out[rows["lfcc"], columns],
        out[rows["cqcc"], columns],
    ) = cepstra(S=S, sr=sr)
    out[rows["subband_db"], columns] = subband_energies(S=S)
    out[rows["fine_spread"], columns], out[rows["fine_peak"], columns] = fine_structure(
        S=S, log_power=log_power
    )
    out[rows["excitation"], columns] = lpc_residual(S=S)


def _within_reach(marked: np.ndarray, reach: int) -> np.ndarray:
    """True where a marked frame lies at most ``reach`` frames away (frames off the end are not)."""
    counts = np.concatenate([[0], np.cumsum(marked, dtype=np.int64)])
    index = np.arange(marked.size)
    low = np.maximum(index - reach, 0)
    high = np.minimum(index + reach + 1, marked.size)
    return counts[high] > counts[low]


def activity(
    energy_db: np.ndarray,
    *,
    range_db: float = ACTIVITY_RANGE_DB,
    floor_dbfs: float = ACTIVITY_FLOOR_DBFS,
    reference_db: float | None = None,
) -> np.ndarray:
    """Mark the frames that hold active speech rather than pauses.

    A frame is active when its level is within ``range_db`` of the reference level and
    above ``floor_dbfs``.

    Parameters
    ----------
    energy_db : np.ndarray, shape (..., n_frames)
        Frame levels in dBFS (the ``energy_db`` row of :func:`frame_features`); each row
        of a 2-D array (one segment each) is marked on its own.
    range_db : float
        Dynamic range in dB below the reference that still counts as speech.
    floor_dbfs : float
        Absolute level in dBFS at or below which a frame is a pause.
    reference_db : float or None
        Reference level in dBFS, by default the loudest frame of ``energy_db`` (of each
        row); pass the loudest level of the whole recording when ``energy_db`` is one
        block of it.

    Returns
    -------
    np.ndarray, shape (..., n_frames), bool
        True where the frame is active.

    Examples
    --------
    >>> import numpy as np
    >>> from voicecheck.features import activity
    >>> activity(np.array([-20.0, -50.0, -60.0, -30.0])).tolist()
    [True, True, False, True]
    >>> activity(np.array([-20.0, -50.0]), reference_db=0.0).tolist()
    [True, False]
    >>> activity(np.array([[-20.0, -50.0], [-50.0, -60.0]])).tolist()
    [[True, True], [True, False]]
    """
    energy_db = np.asarray(energy_db, dtype=np.float32)
    if energy_db.ndim == 0:
        raise ValueError("energy_db is a scalar; (..., n_frames) is expected")
    if energy_db.shape[-1] == 0:
        return np.zeros(energy_db.shape, dtype=bool)
    if reference_db is None:
        reference = energy_db.max(axis=-1, keepdims=True)
    else:
        reference = np.float32(reference_db)
    return (energy_db >= reference - np.float32(range_db)) & (energy_db > floor_dbfs)
