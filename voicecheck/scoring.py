"""Score a recording: per segment, per channel, and for the whole call.

Each channel of a recording is scored on its own (call recordings often carry one
party per channel). A channel's score is the mean calibrated score of its segments
that hold speech; the call's score is the highest channel score, because a call
is suspicious when either party's voice is cloned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .analysis import require_speech_segments, segment_features
from .audio import Audio, Source, load_audio
from .constants import MAX_DURATION_S
from .errors import NoSpeechError, VoiceCheckError
from .explain import explain_segments
from .model import Detector


@dataclass
class ChannelResult:
    """The result for one channel of a recording."""

    channel: int
    score: float | None
    verdict: str | None
    segments: list[dict[str, float]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    cues: list[dict[str, Any]] | None = None
    """Cue-group attributions of :func:`voicecheck.explain.explain_segments`, when asked for."""

    def to_dict(self, *, segments: bool = True) -> dict[str, Any]:
        """Return the result as a JSON-ready dict (``cues`` only when explained)."""
        d: dict[str, Any] = {"channel": self.channel, "score": self.score, "verdict": self.verdict}
        if segments:
            d["segments"] = self.segments
        if self.cues is not None:
            d["cues"] = self.cues
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass
class Analysis:
    """The result for one recording."""

    score: float
    verdict: str
    thresholds: dict[str, float]
    segments: list[dict[str, float]]
    channels: list[ChannelResult]
    audio: dict[str, Any]
    model: dict[str, str]
    processing_ms: float
    cues: list[dict[str, Any]] | None = None
    """The cues of the channel that gave the call's score, when explained."""

    def to_dict(self, *, segments: bool = True) -> dict[str, Any]:
        """Return the result as a JSON-ready dict (``cues`` only when explained)."""
        d: dict[str, Any] = {
            "score": self.score,
            "verdict": self.verdict,
            "thresholds": self.thresholds,
        }
        if segments:
            d["segments"] = self.segments
        if self.cues is not None:
            d["cues"] = self.cues
        d["channels"] = [c.to_dict(segments=segments) for c in self.channels]
        d["audio"] = self.audio
        d["model"] = self.model
        d["processing_ms"] = self.processing_ms
        return d


def score_channel(
    y: np.ndarray, detector: Detector, *, channel: int = 0, explain: bool = False
) -> ChannelResult:
    """Score one channel of validated audio at the analysis rate.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono float32 audio at ``ANALYSIS_SR_HZ``.
    detector : Detector
        The loaded model.
    channel : int
        Index of the channel, reported back.
    explain : bool
        Also attribute the score to cue groups (``cues``); the model then scores one
        more copy of the speech segments per group (feature extraction is not repeated).

    Returns
    -------
    ChannelResult
        With ``error`` set (and no score) when the channel holds no speech.
    """
    seg = segment_features(y)
    try:
        mask = require_speech_segments(seg)
    except VoiceCheckError as exc:
        return ChannelResult(
            channel=channel, score=None, verdict=None, error={"code": exc.code, "detail": str(exc)}
        )
    probs = detector.predict_proba(seg.X)
    score = float(np.mean(probs[mask]))
    segments = [
        {
            "start_s": round(float(s), 3),
            "end_s": round(float(e), 3),
            "score": round(float(p), 4) if ok else None,
        }
        for s, e, p, ok in zip(seg.start_s, seg.end_s, probs, mask, strict=True)
    ]
    return ChannelResult(
        channel=channel,
        score=round(score, 4),
        verdict=detector.thresholds.verdict(score),
        segments=segments,
        cues=explain_segments(seg.X, mask, detector, probs=probs) if explain else None,
    )


def analyze_audio(
    audio: Audio, detector: Detector, *, started: float | None = None, explain: bool = False
) -> Analysis:
    """Score every channel of ``audio`` and combine them.

    Parameters
    ----------
    audio : Audio
        Validated audio at the analysis rate.
    detector : Detector
        The loaded model.
    started : float or None
        ``time.perf_counter()`` when processing began; now when None.
    explain : bool
        Attribute each channel's score to cue groups; the call's ``cues`` are those
        of the channel that gave the call's score.

    Returns
    -------
    Analysis

    Raises
    ------
    voicecheck.errors.NoSpeechError
        When no channel holds enough speech.
    """
    started = time.perf_counter() if started is None else started
    results = [
        score_channel(audio.samples[i], detector, channel=i, explain=explain)
        for i in range(audio.n_channels)
    ]
    return call_analysis(
        results,
        detector,
        audio=audio.info.to_dict(),
        processing_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def call_analysis(
    results: list[ChannelResult],
    detector: Detector,
    *,
    audio: dict[str, Any],
    processing_ms: float,
) -> Analysis:
    """The call's analysis from its channels' results: the call scores as its highest channel.

    Raises
    ------
    voicecheck.errors.NoSpeechError
        When no channel holds enough speech.
    """
    scored = [r for r in results if r.score is not None]
    if not scored:
        raise NoSpeechError(results[0].error["detail"] if results[0].error else "no speech")
    best = max(scored, key=lambda r: r.score)
    return Analysis(
        score=best.score,
        verdict=detector.thresholds.verdict(best.score),
        thresholds=detector.thresholds.to_dict(),
        segments=best.segments,
        channels=results,
        audio=audio,
        model={"id": detector.model_id, "version": detector.version},
        processing_ms=processing_ms,
        cues=best.cues,
    )


def analyze(
    source: Source,
    detector: Detector,
    *,
    max_duration_s: float = MAX_DURATION_S,
    explain: bool = False,
) -> Analysis:
    """Decode, validate and score one recording.

    Parameters
    ----------
    source : path, bytes or binary file object
        The encoded recording.
    detector : Detector
        The loaded model.
    max_duration_s : float
        Longest recording accepted, in seconds.
    explain : bool
        Attribute the score to cue groups (see :func:`analyze_audio`).

    Returns
    -------
    Analysis
    """
    started = time.perf_counter()
    audio = load_audio(source, max_duration_s=max_duration_s)
    return analyze_audio(audio, detector, started=started, explain=explain)
