"""Feature extractors: pure functions from a 16 kHz mono signal to feature arrays.

Every frame-level function uses the same non-centred frames: frame ``i`` covers samples
``[i * HOP_LENGTH, i * HOP_LENGTH + FRAME_LENGTH)`` (32 ms every 10 ms), with a 25 ms Hann
window centred in it, and ``n_frames = 1 + (len(y) - FRAME_LENGTH) // HOP_LENGTH``. Time is
on the last axis and every array is float32.

Feature families (:func:`frame_feature_names` lists the rows of :func:`frame_features`):

- cepstral (:mod:`.cepstral`): MFCC, LFCC and CQCC coefficients 1..n (coefficient 0, the
  level, is dropped), regression deltas and delta-deltas of MFCC and LFCC;
- spectral shape (:mod:`.spectral`): centroid, bandwidth, flatness, roll-off, octave-band
  contrast, flux, all from the one power spectrogram;
- temporal (:mod:`.temporal`): zero-crossing rate, frame level in dBFS;
- prosody (:mod:`.prosody`): fundamental frequency and voicing (normalised square
  difference function);
- segment summaries (:mod:`.summary`): statistics over the active-speech frames of a
  segment (:func:`activity`), without absolute level, speech fraction or duration.
"""

from ._framing import frame_count
from .cepstral import (
    cepstra,
    constant_q_filterbank,
    cqcc,
    deltas,
    lfcc,
    linear_filterbank,
    mel_filterbank,
    mfcc,
)
from .frames import (
    ANALYSIS_REACH_FRAMES,
    FEATURE_CONTEXT_FRAMES,
    FrameFeatures,
    activity,
    frame_feature_names,
    frame_features,
)
from .prosody import pitch
from .spectral import (
    fine_structure,
    log_power_of,
    lpc_residual,
    phase_coherence,
    power_of,
    power_spectrogram,
    spectral_bandwidth,
    spectral_centroid,
    spectral_contrast,
    spectral_flatness,
    spectral_flux,
    spectral_rolloff,
    spectral_shape,
    spectral_shape_names,
    spectrum_frames,
    subband_energies,
)
from .summary import summarize, summarize_segments, summary_names
from .temporal import log_energy, zero_crossing_rate

__all__ = [
    "ANALYSIS_REACH_FRAMES",
    "FEATURE_CONTEXT_FRAMES",
    "FrameFeatures",
    "activity",
    "cepstra",
    "constant_q_filterbank",
    "cqcc",
    "deltas",
    "fine_structure",
    "frame_count",
    "frame_feature_names",
    "frame_features",
    "lfcc",
    "linear_filterbank",
    "log_energy",
    "log_power_of",
    "lpc_residual",
    "mel_filterbank",
    "mfcc",
    "phase_coherence",
    "pitch",
    "power_of",
    "power_spectrogram",
    "spectral_bandwidth",
    "spectral_centroid",
    "spectral_contrast",
    "spectral_flatness",
    "spectral_flux",
    "spectral_rolloff",
    "spectral_shape",
    "spectral_shape_names",
    "spectrum_frames",
    "subband_energies",
    "summarize",
    "summarize_segments",
    "summary_names",
    "zero_crossing_rate",
]
