"""Score a call while it is heard: decoded audio in, one result per analysis window out.

A :class:`LiveCall` takes the audio of a live call piece by piece (any length, typically
20 ms) and gives back each analysis window as soon as it is complete. The windows are those
of file scoring (:func:`voicecheck.analysis.segment_bounds`: 3 s every 1.5 s, plus one
that ends with the call), their frame features are computed by the same functions
(:func:`voicecheck.features.frame_features` with the same context frames on either side,
summarised by :func:`voicecheck.features.summarize_segments`) and scored by the same
:class:`~voicecheck.model.Detector`, so a finished call gives the analysis that file
scoring gives its recording (:meth:`LiveCall.finish` returns a
:class:`voicecheck.scoring.Analysis`).

One thing differs by necessity: file scoring normalises a channel's speech level with the
level of the whole recording (:func:`voicecheck.analysis.level_gain`), which a live call
does not know yet. Each block of frames is normalised with the level of everything heard
so far on its channel (:class:`LevelMeter`, the same measure kept as a histogram), so a
call whose level is steady scores as its recording does, and a call whose level changes
much after its first seconds can differ.

Memory per channel is bounded: the samples not yet analysed, the frame features of the
last 4.5 s and the level histogram, whatever the length of the call; only the list of
window scores (a few numbers per 1.5 s) grows.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from voicecheck import features
from voicecheck.analysis import (
    CONTEXT_FRAMES,
    SEGMENT_FRAMES,
    SEGMENT_HOP_FRAMES,
    SegmentFeatures,
    feature_names,
    frame_names,
    n_frames_of,
    require_speech_segments,
    segment_bounds,
)
from voicecheck.constants import (
    ACTIVITY_RANGE_DB,
    ANALYSIS_SR_HZ,
    FRAME_LENGTH,
    HOP_LENGTH,
    MIN_DURATION_S,
    MIN_SPEECH_S,
    SILENCE_DBFS,
    TARGET_LEVEL_DBFS,
)
from voicecheck.errors import AudioTooShortError, EmptyAudioError, VoiceCheckError
from voicecheck.model import Detector
from voicecheck.scoring import Analysis, ChannelResult, call_analysis

ENCODINGS = {"mulaw": "pcm_mulaw", "alaw": "pcm_alaw", "pcm16": "pcm_s16le"}
"""Encodings a raw stream may declare, with their codec names in FFmpeg's vocabulary."""

SAMPLE_BYTES = {"mulaw": 1, "alaw": 1, "pcm16": 2}
"""Bytes per sample of each encoding."""

SILENCE_CODE = {"mulaw": b"\xff", "alaw": b"\xd5", "pcm16": b"\x00\x00"}
"""The code of a zero sample in each encoding (what a gap in a track is filled with)."""

SAMPLE_RATES_HZ = (8000, 16000)
"""Sample rates a raw stream may declare."""

LIVE_MIN_WINDOWS = 3
"""Windows holding speech a channel needs before the running verdict leaves
``inconclusive`` (3 windows: 6 s of the call)."""

LEVEL_BIN_DB = 0.05
"""Width of one bin of the level histogram, in dB."""

_LEVEL_LOW_DB = -130.0  # lowest frame level kept apart in the histogram (10 log10(1e-12) = -120)
_LEVEL_HIGH_DB = 10.0  # a full-scale square wave is 0 dB; PCM cannot pass +6 dB


@cache
def decode_table(encoding: str) -> np.ndarray:
    """The float32 value of each of the 256 codes of a G.711 ``encoding``.

    The values are libsndfile's, so that a stream decodes exactly as its WAV recording does.

    >>> table = decode_table("mulaw")
    >>> table.shape, float(table[0xFF]), float(table[0x00]) < -0.9
    ((256,), 0.0, True)
    """
    subtype = {"mulaw": "ULAW", "alaw": "ALAW"}[encoding]
    codes = io.BytesIO(bytes(range(256)))
    y, _ = sf.read(
        codes,
        format="RAW",
        subtype=subtype,
        samplerate=ANALYSIS_SR_HZ,
        channels=1,
        dtype="float32",
    )
    return np.ascontiguousarray(y, dtype=np.float32)


def decode(data: bytes, encoding: str) -> np.ndarray:
    r"""Samples of ``data`` in ``encoding`` as float32 full-scale values, shape (n,).

    ``data`` must hold whole samples (an even byte count for ``pcm16``).

    >>> decode(b"\x00\x40\x00\xc0", "pcm16").tolist()
    [0.5, -0.5]
    """
    if encoding == "pcm16":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) * np.float32(1 / 32768)
    return decode_table(encoding)[np.frombuffer(data, dtype=np.uint8)]


class LevelMeter:
    """The active-speech level of everything heard so far, measured as for a recording.

    :func:`voicecheck.analysis.level_gain` takes the power of every 10 ms frame, keeps the
    frames within ``ACTIVITY_RANGE_DB`` of the loudest and averages their power. This keeps
    a histogram of frame levels (``LEVEL_BIN_DB`` wide) with each bin's summed power, so the
    same measure is available at any moment in fixed memory (about 45 kB).
    """

    def __init__(self) -> None:
        n = int(round((_LEVEL_HIGH_DB - _LEVEL_LOW_DB) / LEVEL_BIN_DB)) + 1
        self._count = np.zeros(n, np.int64)
        self._power = np.zeros(n, np.float64)
        self._rest = np.zeros(0, np.float32)  # samples of an unfinished frame
        self._peak = 0.0
        self.n_samples = 0

    def update(self, y: np.ndarray) -> None:
        """Take the next samples of the channel."""
        self.n_samples += y.size
        if y.size:
            self._peak = max(self._peak, float(np.max(np.abs(y))))
        y = np.concatenate([self._rest, y]) if self._rest.size else y
        n = y.size // HOP_LENGTH
        self._rest = y[n * HOP_LENGTH :].copy()
        if not n:
            return
        frames = y[: n * HOP_LENGTH].reshape(n, HOP_LENGTH)
        power = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / HOP_LENGTH
        level = 10 * np.log10(power + 1e-12)
        bins = np.clip(((level - _LEVEL_LOW_DB) / LEVEL_BIN_DB).astype(np.int64), 0, None)
        bins = np.minimum(bins, self._count.size - 1)
        np.add.at(self._count, bins, 1)
        np.add.at(self._power, bins, power)

    def gain(self) -> float:
        """Gain that brings the level heard so far to ``TARGET_LEVEL_DBFS`` (1.0 for silence)."""
        if self.n_samples < HOP_LENGTH or self._peak < 10 ** (SILENCE_DBFS / 20):
            return 1.0
        filled = np.flatnonzero(self._count)
        if not filled.size:
            return 1.0
        top = filled[-1]
        # frames above (loudest - range): every bin whose levels lie above it
        first = top - int(math.floor(ACTIVITY_RANGE_DB / LEVEL_BIN_DB)) + 1
        first = max(first, 0)
        count = self._count[first : top + 1].sum()
        level_db = 10 * math.log10(self._power[first : top + 1].sum() / count)
        return float(10 ** ((TARGET_LEVEL_DBFS - level_db) / 20))


@dataclass
class Window:
    """One scored analysis window of one channel."""

    channel: int
    start_s: float
    end_s: float
    score: float | None
    """Calibrated score, or None when the window holds too little speech."""
    speech_s: float

    def to_dict(self) -> dict[str, Any]:
        """The window as file scoring lists it in ``segments``."""
        return {
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "score": None if self.score is None else round(self.score, 4),
        }


class LiveChannel:
    """One channel of a live call at the analysis rate, scored window by window.

    Parameters
    ----------
    detector : Detector
        The loaded model.
    channel : int
        Index of the channel, reported back.
    """

    def __init__(self, detector: Detector, *, channel: int = 0) -> None:
        self.detector = detector
        self.channel = channel
        self.names = frame_names()
        self._energy_row = self.names.index("energy_db")
        self.meter = LevelMeter()
        self._samples = np.zeros(0, np.float32)
        self._samples_start = 0  # absolute index of _samples[0]
        self._pending: list[np.ndarray] = []  # samples received since the last window
        self.n_samples = 0
        self._frames = np.zeros((len(self.names), 0), np.float32)
        self._frames_start = 0  # absolute index of the first frame in _frames
        self._computed = 0  # frames [0, _computed) have been computed
        self._next = 0  # regular window number to complete next
        self.windows: list[Window] = []
        self.finished = False
        self.cpu_s = 0.0

    # -- audio in, windows out ----------------------------------------------------------

    def push(self, y: np.ndarray) -> list[Window]:
        """Take the next samples (float32 at ``ANALYSIS_SR_HZ``); the windows now complete."""
        if self.finished:
            raise RuntimeError("the channel is finished")
        y = np.asarray(y, np.float32)
        if not y.size:
            return []
        # Pieces are only gathered here (a call sends 50 a second); they are measured and
        # joined when a window is complete.
        self._pending.append(y)
        self.n_samples += y.size
        start = self._next * SEGMENT_HOP_FRAMES
        if start + SEGMENT_FRAMES + CONTEXT_FRAMES > n_frames_of(self.n_samples):
            return []
        started = time.process_time()
        self._take_pending()
        available = n_frames_of(self.n_samples)
        done: list[Window] = []
        while True:
            start = self._next * SEGMENT_HOP_FRAMES
            end = start + SEGMENT_FRAMES
            if end + CONTEXT_FRAMES > available:
                break
            self._compute_to(end, total=None)
            done.append(self._score(start, end))
            self._next += 1
        self._trim()
        self.cpu_s += time.process_time() - started
        return done

    def _take_pending(self) -> None:
        if not self._pending:
            return
        new = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending = []
        self.meter.update(new)
        self._samples = np.concatenate([self._samples, new]) if self._samples.size else new.copy()

    def finish(self) -> list[Window]:
        """End of the call: the windows left (as file scoring ends a recording)."""
        if self.finished:
            return []
        started = time.process_time()
        self._take_pending()
        self.finished = True
        total = n_frames_of(self.n_samples)
        bounds = segment_bounds(total)
        emitted = {round(w.start_s, 6) for w in self.windows}
        done: list[Window] = []
        if total:
            self._compute_to(total, total=total)
        for start, end in bounds:
            if round(start * HOP_LENGTH / ANALYSIS_SR_HZ, 6) in emitted:
                continue
            done.append(self._score(start, end))
        self._samples = np.zeros(0, np.float32)
        self._frames = np.zeros((len(self.names), 0), np.float32)
        self.cpu_s += time.process_time() - started
        return done

    # -- results -------------------------------------------------------------------------

    @property
    def duration_s(self) -> float:
        """Seconds of audio heard on this channel."""
        return self.n_samples / ANALYSIS_SR_HZ

    def scores(self) -> list[float]:
        """Scores of the windows holding speech, in order."""
        return [w.score for w in self.windows if w.score is not None]

    def running_score(self) -> float | None:
        """Mean score of the windows so far that hold speech (None before the first)."""
        scores = self.scores()
        return float(np.mean(scores)) if scores else None

    def result(self) -> ChannelResult:
        """The channel's result, as :func:`voicecheck.scoring.score_channel` gives it."""
        windows = self.windows
        seg = SegmentFeatures(
            X=np.zeros((len(windows), 0), np.float32),
            start_s=np.array([w.start_s for w in windows]),
            end_s=np.array([w.end_s for w in windows]),
            speech_s=np.array([w.speech_s for w in windows]),
        )
        try:
            mask = require_speech_segments(seg)
        except VoiceCheckError as exc:
            return ChannelResult(
                channel=self.channel,
                score=None,
                verdict=None,
                error={"code": exc.code, "detail": str(exc)},
            )
        probs = np.array([np.nan if w.score is None else w.score for w in windows])
        score = float(np.mean(probs[mask]))
        return ChannelResult(
            channel=self.channel,
            score=round(score, 4),
            verdict=self.detector.thresholds.verdict(score),
            segments=[w.to_dict() for w in windows],
        )

    # -- inside --------------------------------------------------------------------------

    def _compute_to(self, stop: int, *, total: int | None) -> None:
        """Compute the frame features of frames ``[_computed, stop)``.

        Each frame gets ``CONTEXT_FRAMES`` frames of context on both sides, cut only at the
        start of the call and, when ``total`` is given (the call has ended), at its end, as
        :func:`voicecheck.analysis.iter_frame_blocks` does for a recording.
        """
        f0 = self._computed
        if stop <= f0:
            return
        c0 = max(0, f0 - CONTEXT_FRAMES)
        c1 = stop + CONTEXT_FRAMES if total is None else min(total, stop + CONTEXT_FRAMES)
        a = c0 * HOP_LENGTH - self._samples_start
        b = (c1 - 1) * HOP_LENGTH + FRAME_LENGTH - self._samples_start
        chunk = self._samples[a:b]
        gain = np.float32(self.meter.gain())
        values = features.frame_features(chunk * gain, sr=ANALYSIS_SR_HZ).values
        values = values[:, f0 - c0 : f0 - c0 + (stop - f0)]
        if self._frames.size:
            values = np.concatenate([self._frames, values], axis=1)
        self._frames = values
        self._computed = stop

    def _score(self, start: int, end: int) -> Window:
        """Summarise and score the window of frames ``[start, end)``."""
        a = start - self._frames_start
        values = self._frames[:, a : a + (end - start)]
        active = features.activity(values[self._energy_row][None, :])
        X = features.summarize_segments(
            values, names=self.names, starts=np.array([0]), active=active
        )[0].astype(np.float32)
        speech_s = float(np.count_nonzero(active)) * HOP_LENGTH / ANALYSIS_SR_HZ
        score = None
        if speech_s >= MIN_SPEECH_S:
            score = float(self.detector.predict_proba(X)[0])
        window = Window(
            channel=self.channel,
            start_s=start * HOP_LENGTH / ANALYSIS_SR_HZ,
            end_s=((end - 1) * HOP_LENGTH + FRAME_LENGTH) / ANALYSIS_SR_HZ,
            score=score,
            speech_s=speech_s,
        )
        self.windows.append(window)
        return window

    def _trim(self) -> None:
        """Forget samples and frames no later window needs."""
        # The next regular window starts here; a window that ends with the call (on finish)
        # starts at most SEGMENT_FRAMES before the frames computed so far.
        keep_frames = min(self._next * SEGMENT_HOP_FRAMES, max(0, self._computed - SEGMENT_FRAMES))
        drop = keep_frames - self._frames_start
        if drop > 0:
            self._frames = self._frames[:, drop:]
            self._frames_start = keep_frames
        keep_samples = max(0, self._computed - CONTEXT_FRAMES) * HOP_LENGTH
        drop = keep_samples - self._samples_start
        if drop > 0:
            self._samples = self._samples[drop:]
            self._samples_start = keep_samples


@dataclass
class LiveCall:
    """A live call of one or more channels, scored as it is heard.

    Parameters
    ----------
    detector : Detector
        The loaded model.
    channels : int
        Number of channels (parties) of the call.
    sample_rate : int
        Rate of the audio pushed, in Hz; other rates than ``ANALYSIS_SR_HZ`` are resampled
        as file decoding does (soxr, quality ``"HQ"``, all channels in one stream).
    """

    detector: Detector
    channels: int = 1
    sample_rate: int = ANALYSIS_SR_HZ
    live: list[LiveChannel] = field(init=False)
    _resampler: Any = field(init=False, default=None)
    started: float = field(init=False, default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.live = [LiveChannel(self.detector, channel=i) for i in range(self.channels)]
        if self.sample_rate != ANALYSIS_SR_HZ:
            self._resampler = soxr.ResampleStream(
                self.sample_rate, ANALYSIS_SR_HZ, self.channels, dtype="float32", quality="HQ"
            )

    @property
    def duration_s(self) -> float:
        """Seconds of the call heard (the longest channel)."""
        return max(ch.duration_s for ch in self.live)

    @property
    def cpu_s(self) -> float:
        """Processor time spent on the analysis so far, in seconds."""
        return sum(ch.cpu_s for ch in self.live)

    def push(self, frames: np.ndarray) -> list[Window]:
        """Take interleaved audio, shape (n, channels) float32 at ``sample_rate``."""
        if self._resampler is not None:
            frames = self._resampler.resample_chunk(np.ascontiguousarray(frames, np.float32))
        out: list[Window] = []
        for i, ch in enumerate(self.live):
            out += ch.push(np.ascontiguousarray(frames[:, i]))
        return out

    def push_channel(self, channel: int, y: np.ndarray) -> list[Window]:
        """Take samples of one channel at ``ANALYSIS_SR_HZ`` (tracks that arrive apart)."""
        return self.live[channel].push(y)

    def running(self) -> tuple[float | None, str]:
        """The call's score so far (the highest channel score) and its running verdict.

        The verdict stays ``inconclusive`` until the channel that gives the score has
        ``LIVE_MIN_WINDOWS`` windows holding speech.
        """
        best: tuple[float, int] | None = None
        for ch in self.live:
            scores = ch.scores()
            if scores:
                value = float(np.mean(scores))
                if best is None or value > best[0]:
                    best = (value, len(scores))
        if best is None:
            return None, "inconclusive"
        score, n = best
        if n < LIVE_MIN_WINDOWS:
            return round(score, 4), "inconclusive"
        verdict = self.detector.thresholds.verdict(score)
        return round(score, 4), verdict

    def finish(self) -> list[Window]:
        """End of the call: the last windows of every channel."""
        out: list[Window] = []
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(
                np.zeros((0, self.channels), np.float32), last=True
            )
            self._resampler = None
            for i, ch in enumerate(self.live):
                if tail.size:
                    out += ch.push(np.ascontiguousarray(tail[:, i]))
        for ch in self.live:
            out += ch.finish()
        return out

    def analysis(self, audio: dict[str, Any]) -> Analysis:
        """The finished call's analysis, as :func:`voicecheck.scoring.analyze_audio` gives it.

        Parameters
        ----------
        audio : dict
            The ``audio`` facts to report (container, codec, rates, channels, duration).

        Raises
        ------
        voicecheck.errors.AudioError
            ``empty_audio``, ``audio_too_short`` or ``no_speech``, as for a recording.
        """
        if self.duration_s == 0:
            raise EmptyAudioError("the stream ended before any audio arrived")
        if self.duration_s < MIN_DURATION_S:
            raise AudioTooShortError(
                f"audio is {self.duration_s:.2f} s long; at least {MIN_DURATION_S:.1f} s is needed"
            )
        return call_analysis(
            [ch.result() for ch in self.live],
            self.detector,
            audio=audio,
            processing_ms=round(self.cpu_s * 1000, 1),
        )


def n_features() -> int:
    """Length of the feature vector of one window."""
    return len(feature_names())
