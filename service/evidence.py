"""Pictures and documents of one analysis: the score timeline and the evidence report.

:func:`timeline_png` draws, for each channel of a recording, its spectrogram with the
segment scores over it: the picture on the console's result page. :func:`evidence_pdf`
writes the downloadable evidence report, an A4 PDF in plain language that an election
official can attach to a complaint: the verdict, the score and what it means, the cues,
the per-channel results, the timeline, the file's facts and SHA-256, the model and the
notes. :func:`verdict_label` names a verdict the same way in both.

Both renderers are pure functions of their inputs, with no global state: matplotlib is
used through its object-oriented API on an Agg canvas (never pyplot), and every PDF has
its own :class:`fpdf.FPDF`, so they are safe in threaded server workers. The same input
gives the same bytes.

Examples
--------
>>> import numpy as np
>>> sr = 16_000
>>> y = (0.1 * np.sin(2 * np.pi * 220 * np.arange(2 * sr) / sr)).astype(np.float32)
>>> channels = [{"channel": 0, "score": 0.82, "verdict": "likely_cloned",
...              "segments": [{"start_s": 0.0, "end_s": 2.0, "score": 0.82}]}]
>>> png = timeline_png(y[None, :], sr, channels, {"cloned": 0.7, "human": 0.3, "eer": 0.6})
>>> png[1:4]
b'PNG'
>>> pdf = evidence_pdf({"id": "an_example", "score": 0.82, "verdict": "likely_cloned",
...                     "channels": channels}, timeline=png)
>>> pdf[:5]
b'%PDF-'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["evidence_pdf", "timeline_png", "verdict_label"]

# --------------------------------------------------------------------------------------------
# Words

VERDICT_LABELS = {
    "likely_cloned": "Likely cloned",
    "likely_human": "Likely human",
    "inconclusive": "Inconclusive",
}
"""The words shown for each verdict the model gives."""

DEFAULT_THRESHOLDS = {"cloned": 0.7, "human": 0.3}
"""Thresholds drawn when an analysis carries none (scores 0-1)."""

NOT_RECORDED = "not recorded"
"""Shown in the report for a fact the analysis does not carry."""


def verdict_label(verdict: str | None) -> str:
    """Return the words shown for a verdict.

    Parameters
    ----------
    verdict : str or None
        ``"likely_cloned"``, ``"likely_human"`` or ``"inconclusive"``; ``None`` for a
        channel that was not scored. Any other value is shown with its underscores
        turned into spaces, so that a newer verdict still reads.

    Returns
    -------
    str

    Examples
    --------
    >>> verdict_label("likely_cloned"), verdict_label("inconclusive"), verdict_label(None)
    ('Likely cloned', 'Inconclusive', 'Not scored')
    """
    if verdict is None:
        return "Not scored"
    if verdict in VERDICT_LABELS:
        return VERDICT_LABELS[verdict]
    return str(verdict).replace("_", " ").strip().capitalize() or "Not scored"


def _channel_name(index: int, n_channels: int) -> str:
    """``Call`` for a mono file, else ``Channel 1 (left)``, ``Channel 2 (right)``, ``Channel 3``."""
    if n_channels == 1:
        return "Call"
    side = {0: " (left)", 1: " (right)"}.get(index, "") if n_channels == 2 else ""
    return f"Channel {index + 1}{side}"


def _score_text(score: float | None) -> str:
    return "—" if score is None else f"{score:.2f}"


def _thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    thr = dict(DEFAULT_THRESHOLDS)
    thr.update({k: float(v) for k, v in (thresholds or {}).items() if v is not None})
    return thr


# --------------------------------------------------------------------------------------------
# The timeline picture (matplotlib's object-oriented API on an Agg canvas; no pyplot)

SPEC_FMAX_HZ = 8_000.0
"""Highest frequency the spectrogram shows, in Hz (or the Nyquist frequency, if lower)."""

SPEC_WINDOW_S = 0.032
"""Spectrogram window length, in seconds (rounded to a power-of-two number of samples)."""

SPEC_MAX_COLUMNS = 2_000
"""At most this many spectrogram columns are drawn; longer calls average frames together."""

SPEC_MAX_FRAMES = 16_000
"""At most this many FFT frames per channel; longer calls space the frames further apart."""

SPEC_BLOCK_FRAMES = 4_096
"""FFT frames computed at once, which bounds memory on long calls."""

SPEC_RANGE_DB = 70.0
"""Dynamic range of the spectrogram, in dB below its top (white at and below it)."""

SPEC_TOP_MIN_DBFS = -50.0
"""The spectrogram's top (black) is its loudest cell, but never below this level, in dB
relative to a full-scale sine; so silence is drawn white, not as amplified dither."""

PANEL_HEIGHT_IN = 2.9
"""Height of one channel's panel, in inches (pixels = inches x dpi)."""

PANEL_TITLE_IN = 0.34
"""Room above each panel's axes for its title, in inches."""

PANEL_XAXIS_IN = 0.52
"""Room under each panel's axes for the time axis and its label, in inches."""

MARGIN_LEFT_IN = 0.62
MARGIN_RIGHT_IN = 0.72
"""Room beside the axes for the frequency and score axes and their labels, in inches."""

LEGEND_PAD_IN = 0.12
LEGEND_ROW_IN = 0.24
"""Room under the panels for the legend: padding and each row, in inches."""

TOP_PAD_IN = 0.04

MIN_WIDTH_PX = 320
"""Narrowest timeline drawn, in pixels."""

# Okabe-Ito colours (readable by colour-blind viewers); every colour also has its own line
# style or marker, and the spectrogram is in greys, so nothing depends on hue alone.
SCORE_COLOUR = "#0072B2"  # blue, solid line with round markers
CLONED_COLOUR = "#D55E00"  # vermillion, long dashes; also the shading
HUMAN_COLOUR = "#009E73"  # bluish green, short dashes
CLONED_DASHES = (0, (7, 3))
HUMAN_DASHES = (0, (2, 2))
SPEC_CMAP = "Greys"


def _spectrogram(y: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    """Log-power spectrogram of one channel, at most :data:`SPEC_MAX_COLUMNS` columns wide.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Audio at ``sr`` Hz.
    sr : int
        Sample rate, in Hz.

    Returns
    -------
    db : np.ndarray, shape (n_bins, n_columns), float32
        Power in dB below the loudest cell (or below :data:`SPEC_TOP_MIN_DBFS`, if the
        loudest cell is quieter), clipped at ``-SPEC_RANGE_DB``; row ``k``
        is centred on ``k * bin_hz`` and the rows reach up to ``SPEC_FMAX_HZ`` (or the
        Nyquist frequency); columns are evenly spaced over the whole signal.
    bin_hz : float
        Spacing of the rows, in Hz.
    """
    from scipy.fft import rfft
    from scipy.signal import get_window

    n_fft = int(2 ** round(math.log2(max(sr * SPEC_WINDOW_S, 16))))
    y = np.asarray(y, dtype=np.float32)
    if y.size < n_fft:
        y = np.pad(y, (0, n_fft - y.size))
    n_possible = 1 + (y.size - n_fft) // (n_fft // 2)
    hop = n_fft // 2
    if n_possible > SPEC_MAX_FRAMES:
        hop = math.ceil((y.size - n_fft) / (SPEC_MAX_FRAMES - 1))
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop]
    n_frames = frames.shape[0]
    fmax_hz = min(SPEC_FMAX_HZ, sr / 2)
    n_bins = int(fmax_hz * n_fft / sr) + 1
    window = get_window("hann", n_fft).astype(np.float32)
    group = math.ceil(n_frames / SPEC_MAX_COLUMNS)
    starts = np.arange(0, n_frames, group)
    power = np.empty((starts.size, n_bins), np.float64)
    # Blocks are whole groups of frames, so each column is summed within one block.
    block = max(group, SPEC_BLOCK_FRAMES // group * group)
    for b0 in range(0, n_frames, block):
        spec = rfft(frames[b0 : b0 + block] * window, axis=1)[:, :n_bins]
        p = spec.real.astype(np.float64) ** 2 + spec.imag.astype(np.float64) ** 2
        local = np.arange(0, p.shape[0], group)
        sums = np.add.reduceat(p, local, axis=0)
        counts = np.diff(np.append(local, p.shape[0]))[:, None]
        power[b0 // group : b0 // group + local.size] = sums / counts
    full_scale = (float(window.sum()) / 2) ** 2  # power of a full-scale sine's peak bin
    db = 10 * np.log10(power.T / full_scale + 1e-20)
    db = np.maximum(db - max(float(db.max()), SPEC_TOP_MIN_DBFS), -SPEC_RANGE_DB)
    return db.astype(np.float32), sr / n_fft


def _owned_spans(segments: Sequence[Mapping[str, Any]]) -> list[tuple[float, float, float | None]]:
    """The time each segment's score is drawn over: ``(start_s, end_s, score)``.

    Segments may overlap (each is scored on a window that overlaps its neighbours), so each
    one is drawn from halfway between its centre and its neighbours' centres, never beyond
    its own start and end; segments that do not touch leave a gap between them.
    """
    segs = sorted(
        (float(s["start_s"]), float(s["end_s"]), s.get("score"))
        for s in segments
        if s.get("start_s") is not None and s.get("end_s") is not None
    )
    centres = [(a + b) / 2 for a, b, _ in segs]
    spans = []
    for i, (a, b, score) in enumerate(segs):
        lo = a if i == 0 else max(a, (centres[i - 1] + centres[i]) / 2)
        hi = b if i == len(segs) - 1 else min(b, (centres[i] + centres[i + 1]) / 2)
        if hi > lo:
            spans.append((lo, hi, None if score is None else float(score)))
    return spans


def _step_line(spans: list[tuple[float, float, float | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Points of a step line over ``spans``, broken (NaN) where a span has no score or a gap."""
    xs: list[float] = []
    ys: list[float] = []
    last_end: float | None = None
    for lo, hi, score in spans:
        if score is None:
            continue
        if last_end is not None and not math.isclose(lo, last_end, abs_tol=1e-6):
            xs.append(math.nan)
            ys.append(math.nan)
        xs += [lo, hi]
        ys += [score, score]
        last_end = hi
    return np.array(xs), np.array(ys)


def _merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1] + 1e-6:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _no_speech(channel: Mapping[str, Any]) -> bool:
    """The channel was analysed and held no speech (rather than not analysed at all)."""
    error = channel.get("error") or {}
    return error.get("code") == "no_speech" or (
        channel.get("segments") is not None and not _has_speech(channel)
    )


def _panel_title(channel: Mapping[str, Any], name: str) -> str:
    score = channel.get("score")
    if score is not None:
        return f"{name}: score {score:.2f}, {verdict_label(channel.get('verdict')).lower()}"
    return f"{name}: {'no speech found' if _no_speech(channel) else 'not scored'}"


def _has_speech(channel: Mapping[str, Any]) -> bool:
    return any(s.get("score") is not None for s in channel.get("segments") or ())


def _draw_panel(
    ax,
    y: np.ndarray | None,
    sr: int,
    channel: Mapping[str, Any],
    thr: Mapping[str, float],
    *,
    name: str,
) -> None:
    from matplotlib import patheffects
    from matplotlib.collections import PolyCollection

    duration_s = 0.0
    if y is not None:
        db, bin_hz = _spectrogram(y, sr)
        duration_s = y.size / sr
        low_khz, high_khz = -bin_hz / 2000, (db.shape[0] - 0.5) * bin_hz / 1000
        ax.imshow(
            db,
            origin="lower",
            aspect="auto",
            cmap=SPEC_CMAP,
            vmin=-SPEC_RANGE_DB,
            vmax=0.0,
            extent=(0.0, duration_s, low_khz, high_khz),
            interpolation="nearest",
            resample=False,
        )
    ax.set_ylim(0.0, min(SPEC_FMAX_HZ, sr / 2) / 1000)
    ax.set_xlabel("Time (s)")
    ax.set_ylabel("Frequency (kHz)")
    ax.set_title(_panel_title(channel, name), loc="left", fontsize=11, fontweight="bold")

    score_ax = ax.twinx()
    score_ax.set_ylim(0.0, 1.0)
    score_ax.set_ylabel("Cloned-voice score")
    spans = _owned_spans(channel.get("segments") or ())
    end_s = max([duration_s] + [hi for _, hi, _ in spans]) or 1.0
    ax.set_xlim(0.0, end_s)

    cloned = [(lo, hi) for lo, hi, s in spans if s is not None and s >= thr["cloned"]]
    if cloned:
        boxes = [[(lo, 0), (hi, 0), (hi, 1), (lo, 1)] for lo, hi in _merged(cloned)]
        score_ax.add_collection(
            PolyCollection(
                boxes,
                facecolors=CLONED_COLOUR,
                alpha=0.16,
                edgecolors="none",
                transform=score_ax.get_xaxis_transform(),
            )
        )
    halo = [patheffects.withStroke(linewidth=3.5, foreground="white")]
    for key, colour, dashes, word, va in (
        ("cloned", CLONED_COLOUR, CLONED_DASHES, "likely cloned at or above", "bottom"),
        ("human", HUMAN_COLOUR, HUMAN_DASHES, "likely human below", "top"),
    ):
        t = thr[key]
        # A solid white line under the dashes keeps them visible on a dark spectrogram.
        score_ax.axhline(t, color="white", lw=3.2, alpha=0.7)
        score_ax.axhline(t, color=colour, lw=1.6, ls=dashes)
        score_ax.annotate(
            f"{word} {t:.2f}",
            xy=(1.0, t),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 3 if va == "bottom" else -3),
            textcoords="offset points",
            ha="right",
            va=va,
            fontsize=8,
            color=colour,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )
    xs, ys = _step_line(spans)
    if xs.size:
        score_ax.plot(xs, ys, color=SCORE_COLOUR, lw=2.0, path_effects=halo, solid_capstyle="butt")
        centres = [((lo + hi) / 2, s) for lo, hi, s in spans if s is not None]
        score_ax.plot(
            [c for c, _ in centres],
            [s for _, s in centres],
            ls="none",
            marker="o",
            ms=3.5,
            mfc=SCORE_COLOUR,
            mec="white",
            mew=0.8,
        )
    if not _has_speech(channel):
        if y is None:
            text = "No audio for this channel."
        elif _no_speech(channel):
            text = "No speech found on this channel, so it was not scored."
        else:
            text = "This channel was not scored."
        ax.text(
            0.5,
            0.5,
            text,
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=11,
            zorder=5,
            bbox={"boxstyle": "round,pad=0.5", "fc": "white", "ec": "#555555"},
        )


def _legend_handles(thr: Mapping[str, float]) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    return [
        Line2D([], [], color=SCORE_COLOUR, lw=2.0, marker="o", ms=4, label="Segment score"),
        Line2D([], [], ls="none", label="(gap: no speech in that segment)"),
        Line2D([], [], color=CLONED_COLOUR, lw=1.6, ls=CLONED_DASHES, label="Cloned threshold"),
        Line2D([], [], color=HUMAN_COLOUR, lw=1.6, ls=HUMAN_DASHES, label="Human threshold"),
        Patch(
            facecolor=CLONED_COLOUR,
            alpha=0.16,
            edgecolor="none",
            label=f"Segment at or above {thr['cloned']:.2f}",
        ),
    ]


def timeline_png(
    samples: np.ndarray,
    sr: int,
    channels: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, float] | None,
    *,
    width_px: int = 1200,
    dpi: int = 100,
) -> bytes:
    """Draw each channel's spectrogram with its segment scores over it, as a PNG.

    One panel per entry of ``channels`` (one per audio channel when ``channels`` is empty):
    the log-magnitude spectrogram up to 8 kHz (or the Nyquist frequency) in greys, and on a
    second axis the segment scores as a step line over time, broken where a segment held
    no speech, with the cloned and human thresholds as labelled dashed lines and the
    segments at or above the cloned threshold shaded. A channel with no speech gets a panel
    that says so.

    Parameters
    ----------
    samples : np.ndarray, shape (n_channels, n_samples) or (n_samples,)
        The call's audio at ``sr`` Hz, one row per channel.
    sr : int
        Sample rate of ``samples``, in Hz.
    channels : sequence of dict
        Per-channel results: ``channel`` (0-based index into ``samples``), ``score``
        (0-1 or None), ``verdict``, ``segments`` (each ``start_s``, ``end_s`` in seconds
        and ``score``, None when the segment held no speech), optional ``error``.
    thresholds : dict
        ``cloned`` and ``human`` thresholds (scores 0-1); others are ignored.
    width_px : int
        Width of the picture, in pixels; the height follows from the number of panels.
    dpi : int
        Pixels per inch, which sets the size of the text relative to the picture.

    Returns
    -------
    bytes
        The PNG file.

    Raises
    ------
    ValueError
        When ``samples`` is not 1-D or 2-D, ``sr`` or ``dpi`` is not positive, or
        ``width_px`` is below :data:`MIN_WIDTH_PX`.

    Examples
    --------
    >>> import numpy as np
    >>> sr = 16_000
    >>> noise = np.random.default_rng(0).standard_normal((2, 3 * sr)).astype(np.float32)
    >>> chans = [{"channel": 0, "score": 0.1, "verdict": "likely_human",
    ...           "segments": [{"start_s": 0.0, "end_s": 3.0, "score": 0.1}]},
    ...          {"channel": 1, "score": None, "verdict": None, "segments": []}]
    >>> png = timeline_png(0.01 * noise, sr, chans, {"cloned": 0.7, "human": 0.3}, width_px=640)
    >>> int.from_bytes(png[16:20], "big")  # width from the PNG header
    640
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.ndim != 2:
        raise ValueError(
            f"samples has shape {audio.shape}; expected (n_channels, n_samples) or (n_samples,)"
        )
    if sr <= 0:
        raise ValueError(f"sr is {sr}; expected a sample rate above 0 Hz")
    if dpi <= 0:
        raise ValueError(f"dpi is {dpi}; expected a positive number of pixels per inch")
    if width_px < MIN_WIDTH_PX:
        raise ValueError(f"width_px is {width_px}; expected at least {MIN_WIDTH_PX} pixels")
    thr = _thresholds(thresholds)
    panels = list(channels) or [{"channel": i} for i in range(audio.shape[0])]
    n_audio = max(audio.shape[0], len(panels))

    width_in = width_px / dpi
    ncols = 5 if width_in >= 10 else 3 if width_in >= 6 else 2
    legend_in = LEGEND_PAD_IN + LEGEND_ROW_IN * math.ceil(len(_legend_handles(thr)) / ncols)
    height_in = PANEL_HEIGHT_IN * len(panels) + legend_in + TOP_PAD_IN
    # Agg truncates the canvas size to whole pixels: the quarter pixel keeps rounding error
    # in width_px / dpi from losing a column.
    fig = Figure(figsize=((width_px + 0.25) / dpi, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    # Fixed margins, not a layout engine: the same size for every call, and much faster.
    left, right = MARGIN_LEFT_IN / width_in, 1 - MARGIN_RIGHT_IN / width_in
    axes_in = PANEL_HEIGHT_IN - PANEL_TITLE_IN - PANEL_XAXIS_IN
    for k, channel in enumerate(panels):
        bottom_in = legend_in + PANEL_HEIGHT_IN * (len(panels) - 1 - k) + PANEL_XAXIS_IN
        ax = fig.add_axes((left, bottom_in / height_in, right - left, axes_in / height_in))
        index = int(channel.get("channel", k))
        y = audio[index] if 0 <= index < audio.shape[0] else None
        _draw_panel(ax, y, sr, channel, thr, name=_channel_name(index, n_audio))
    fig.legend(
        handles=_legend_handles(thr),
        loc="lower center",
        bbox_to_anchor=(0.5, 0.0),
        ncols=ncols,
        fontsize=9,
        handlelength=3.2,
        frameon=False,
    )
    out = BytesIO()
    fig.savefig(out, format="png", dpi=dpi, metadata={"Software": None})
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# The evidence report (fpdf2)

FONT = "DejaVu"
MONO = "DejaVuMono"
FALLBACK = "LastResort"
FONT_FILES = {
    (FONT, ""): "DejaVuSans.ttf",
    (FONT, "B"): "DejaVuSans-Bold.ttf",
    (MONO, ""): "DejaVuSansMono.ttf",
}
"""Fonts registered in every report, from matplotlib's bundled fonts (Unicode coverage). DejaVu
Sans draws Latin, Greek, Cyrillic, Arabic (with its joining forms) and Hebrew; text is shaped
with HarfBuzz (see :func:`_new_pdf`), so Arabic letters join and right-to-left words run from
right to left."""

FALLBACK_FILE = "LastResortHE-Regular.ttf"
"""matplotlib's last-resort font, for characters DejaVu lacks (Chinese, Japanese, Hindi, ...):
they are drawn as boxes naming their Unicode block, yet stay in the text, so they can be
copied and searched. It is slow to load (about a second), so it is added only to a report
that needs it, and only for the characters it needs."""

SYSTEM_FALLBACK_FILES = (
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",  # Debian fonts-droid-fallback
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # Debian fonts-wqy-microhei
)
"""System fonts that draw Chinese, Japanese and Korean readably, tried before the last-resort
font (``make run`` installs the first)."""

BODY_PT = 10.5
LINE_MM = 5.4
LABEL_MM = 46.0
"""Width of the label column of the facts, in millimetres."""

HASH_PT = 9.5
"""Largest size of the SHA-256 in monospace, in points (smaller if it would wrap)."""

TIMELINE_TEXT_MM = 30.0
"""Room for the timeline's heading and caption above the picture, in millimetres."""

SCALE_HEIGHT_MM = 7.0
"""Height of the drawn 0-1 score scale, in millimetres."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _clean(value: Any) -> str:
    """Text fit for the PDF: no control characters (except newlines), no lone surrogates."""
    text = "" if value is None else str(value)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    text = _CONTROL.sub(" ", text)
    return text.encode("utf-8", "replace").decode("utf-8")


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _utc(value: Any) -> str:
    t = _when(value)
    if t is None:
        return _clean(value) if value else NOT_RECORDED
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: Any) -> str:
    if seconds is None:
        return NOT_RECORDED
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    minutes, rest = divmod(s, 60)
    hours, minutes = divmod(int(minutes), 60)
    clock = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
    return f"{clock} {rest:04.1f} s ({s:,.1f} s)"


def _size(n_bytes: Any) -> str:
    if n_bytes is None:
        return NOT_RECORDED
    n = int(n_bytes)
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n:,} bytes ({n / div:.1f} {unit})"
    return f"{n:,} bytes"


def _percent(rate: Any) -> str:
    return f"{100 * float(rate):.1f} %"


def _strings(value: Any):
    """Every string in a nested structure of mappings and sequences (keys excluded)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, Sequence | set):
        for v in value:
            yield from _strings(v)


def _new_pdf(case: Mapping[str, Any], case_id: str):
    """An A4 :class:`fpdf.FPDF` with the report's fonts and footer."""
    import matplotlib
    from fpdf import FPDF

    class EvidencePDF(FPDF):
        def footer(self) -> None:
            self.set_y(-13)
            self.set_font(FONT, size=8)
            self.set_text_color(90)
            left = f"voicecheck evidence report · case {case_id}"
            while self.get_string_width(left) > self.epw * 0.7 - 2:
                left = left[:-2] + "…"
            self.cell(self.epw * 0.7, 5, left)
            self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align="R")
            self.set_text_color(0)

    pdf = EvidencePDF(orientation="portrait", unit="mm", format="A4")
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    for (family, style), name in FONT_FILES.items():
        pdf.add_font(family, style, folder / name)
    covered = pdf.fonts[FONT.lower()].cmap.keys() & pdf.fonts[FONT.lower() + "B"].cmap.keys()
    missing = {ord(c) for text in _strings(case) for c in _clean(text)} - covered
    missing = sorted(c for c in missing if c >= 0x20)
    fallbacks = []
    if missing:
        for n, path in enumerate(SYSTEM_FALLBACK_FILES):
            if Path(path).is_file():
                pdf.add_font(f"System{n}", "", path, unicode_range=missing)
                fallbacks.append(f"System{n}")
                missing = sorted(set(missing) - pdf.fonts[f"system{n}"].cmap.keys())
            if not missing:
                break
    if missing and (folder / FALLBACK_FILE).is_file():
        pdf.add_font(FALLBACK, "", folder / FALLBACK_FILE, unicode_range=missing)
        fallbacks.append(FALLBACK)
    if fallbacks:
        pdf.set_fallback_fonts(fallbacks, exact_match=False)
    # HarfBuzz (uharfbuzz) shapes the text: Arabic letters take their joined forms and
    # ligatures, and each paragraph is laid out by the Unicode bidirectional algorithm, its
    # direction taken from its first letter (a note in Hebrew or Arabic reads right to left,
    # a Latin name inside it stays left to right). Each glyph maps back to its characters,
    # so text copied or extracted from the report reads in the order it was written.
    pdf.set_text_shaping(use_shaping_engine=True)
    pdf.set_margins(left=18, top=18, right=18)
    pdf.set_auto_page_break(auto=True, margin=20)
    return pdf


def _heading(pdf, text: str) -> None:
    if pdf.get_y() > pdf.page_break_trigger - 25:  # keep a heading with its first lines
        pdf.add_page()
    pdf.ln(3)
    pdf.set_font(FONT, "B", 13)
    pdf.multi_cell(0, 7, _clean(text), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.set_draw_color(170)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
    pdf.set_draw_color(0)
    pdf.ln(2)
    pdf.set_font(FONT, "", BODY_PT)


def _paragraph(pdf, text: Any, *, bold: bool = False, size: float = BODY_PT) -> None:
    pdf.set_font(FONT, "B" if bold else "", size)
    pdf.multi_cell(0, size * 0.52, _clean(text), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", BODY_PT)


def _fact(pdf, label: str, value: Any, *, mono: bool = False) -> None:
    """One fact: the label in a left column, the value wrapped in the right one."""
    if pdf.get_y() > pdf.page_break_trigger - LINE_MM:
        pdf.add_page()
    pdf.set_font(FONT, "B", BODY_PT)
    y = pdf.get_y()
    pdf.multi_cell(LABEL_MM - 2, LINE_MM, label, align="L", new_x="LMARGIN", new_y="NEXT")
    label_bottom, label_page = pdf.get_y(), pdf.page_no()
    pdf.set_xy(pdf.l_margin + LABEL_MM, y)
    text = NOT_RECORDED if value is None or value == "" else _clean(value)
    width = pdf.epw - LABEL_MM
    if mono:
        size = HASH_PT
        pdf.set_font(MONO, "", size)
        while size > 6 and pdf.get_string_width(text) > width - 2:
            size -= 0.5
            pdf.set_font(MONO, "", size)
    else:
        pdf.set_font(FONT, "", BODY_PT)
    pdf.multi_cell(width, LINE_MM, text, align="L", new_x="LMARGIN", new_y="NEXT")
    if pdf.page_no() == label_page:
        pdf.set_y(max(pdf.get_y(), label_bottom))
    pdf.ln(0.8)
    pdf.set_font(FONT, "", BODY_PT)


def _score_scale(pdf, score: float | None, thr: Mapping[str, float]) -> None:
    """A 0-1 bar with the three verdict zones named in it and the score marked."""
    if pdf.get_y() > pdf.page_break_trigger - (SCALE_HEIGHT_MM + 14):
        pdf.add_page()
    x0, width = pdf.l_margin, pdf.epw
    y0 = pdf.get_y() + 7
    zones = (
        (0.0, thr["human"], (204, 236, 226), "likely human"),
        (thr["human"], thr["cloned"], (232, 232, 232), "inconclusive"),
        (thr["cloned"], 1.0, (247, 212, 191), "likely cloned"),
    )
    pdf.set_font(FONT, "", 8)
    for lo, hi, fill, word in zones:
        lo, hi = max(0.0, min(lo, 1.0)), max(0.0, min(hi, 1.0))
        if hi <= lo:
            continue
        pdf.set_fill_color(*fill)
        pdf.rect(x0 + lo * width, y0, (hi - lo) * width, SCALE_HEIGHT_MM, style="F")
        if (hi - lo) * width > pdf.get_string_width(word) + 2:
            pdf.set_xy(x0 + lo * width, y0)
            pdf.cell((hi - lo) * width, SCALE_HEIGHT_MM, word, align="C")
    pdf.set_draw_color(90)
    pdf.rect(x0, y0, width, SCALE_HEIGHT_MM)
    for t in (0.0, thr["human"], thr["cloned"], 1.0):
        x = x0 + max(0.0, min(t, 1.0)) * width
        pdf.line(x, y0 + SCALE_HEIGHT_MM, x, y0 + SCALE_HEIGHT_MM + 1.5)
        pdf.set_xy(x - 8, y0 + SCALE_HEIGHT_MM + 1.5)
        pdf.cell(16, 3.5, f"{t:.2f}", align="C")
    if score is not None:
        x = x0 + max(0.0, min(float(score), 1.0)) * width
        pdf.set_draw_color(0)
        pdf.set_fill_color(0)
        pdf.polygon([(x - 1.6, y0 - 2.2), (x + 1.6, y0 - 2.2), (x, y0)], style="F")
        pdf.set_line_width(0.5)
        pdf.line(x, y0, x, y0 + SCALE_HEIGHT_MM)
        pdf.set_line_width(0.2)
        pdf.set_font(FONT, "B", 8)
        label = f"this call: {score:.2f}"
        w = pdf.get_string_width(label) + 2
        pdf.set_xy(min(max(x - w / 2, x0), x0 + width - w), y0 - 6.5)
        pdf.cell(w, 4, label, align="C")
    pdf.set_draw_color(0)
    pdf.set_fill_color(255)
    pdf.set_y(y0 + SCALE_HEIGHT_MM + 6.5)
    pdf.set_font(FONT, "", BODY_PT)


def _channels_table(pdf, channels: Sequence[Mapping[str, Any]], *, n_audio: int) -> None:
    from fpdf.fonts import FontFace

    pdf.set_font(FONT, "", BODY_PT - 0.5)
    with pdf.table(
        col_widths=(30, 18, 74, 40),
        text_align=("LEFT", "RIGHT", "LEFT", "RIGHT"),
        headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235)),
        line_height=LINE_MM,
        width=pdf.epw,
    ) as table:
        table.row(("Channel", "Score", "Verdict", "Speech segments scored"))
        for k, channel in enumerate(channels):
            index = int(channel.get("channel", k))
            segments = channel.get("segments") or []
            scored = sum(1 for s in segments if s.get("score") is not None)
            verdict = verdict_label(channel.get("verdict"))
            error = channel.get("error") or {}
            if channel.get("score") is None:
                why = error.get("detail") or error.get("code")
                if why:
                    verdict = f"{verdict}: {_clean(why)}"
                elif not scored:
                    verdict = f"{verdict}: no speech found"
            table.row(
                (
                    _channel_name(index, n_audio),
                    _score_text(channel.get("score")),
                    verdict,
                    f"{scored} of {len(segments)}",
                )
            )
    pdf.set_font(FONT, "", BODY_PT)


def _timeline(pdf, png: bytes) -> None:
    """The timeline under its heading and caption, on a new page if it does not fit."""
    from PIL import Image

    with Image.open(BytesIO(png)) as image:
        w_px, h_px = image.size
    width = pdf.epw
    height = width * h_px / w_px
    room = pdf.page_break_trigger - pdf.t_margin - TIMELINE_TEXT_MM
    if height > room:
        width, height = width * room / height, room
    if pdf.get_y() + TIMELINE_TEXT_MM + height > pdf.page_break_trigger:
        pdf.add_page()
    _heading(pdf, "Timeline")
    _paragraph(
        pdf,
        "For each channel: the sound (darker is louder, low pitches at the bottom) and, "
        "as a line, the score of each segment over time. The line breaks where there was "
        "no speech; shaded stretches scored at or above the cloned threshold.",
    )
    pdf.ln(1)
    x = pdf.l_margin + (pdf.epw - width) / 2
    pdf.image(
        BytesIO(png),
        x=x,
        y=pdf.get_y(),
        w=width,
        h=height,
        alt_text="Spectrogram of each channel with the cloned-voice score of each segment",
    )
    pdf.set_y(pdf.get_y() + height + 2)


def _audit_rows(pdf, rows: Sequence[Mapping[str, Any]]) -> None:
    """The case's audit rows, each with its place in the audit log's hash chain."""
    _heading(pdf, "The audit log")
    if not rows:
        _paragraph(pdf, "No audit log records are attached to this report.")
        return
    _paragraph(
        pdf,
        "The service's audit log recorded these requests about this case. Each record "
        "carries its sequence number in the log's hash chain and its SHA-256 chain hash, "
        "computed over the record and the hash of the record before it, so no record can "
        "be changed, removed or moved without breaking the chain. To check them, compare "
        "each hash with the line of the same sequence number in an export of the log "
        "(voicecheck audit export --format jsonl); voicecheck audit verify checks the "
        "whole chain.",
    )
    pdf.ln(1)
    for row in rows:
        what = " ".join(str(row.get(k)) for k in ("method", "path") if row.get(k))
        outcome = row.get("outcome") or NOT_RECORDED
        status = f" (HTTP {row['status']})" if row.get("status") else ""
        seq = row.get("seq")
        title = f"Sequence {seq}" if seq is not None else "Not chained"
        when = row.get("time")
        if isinstance(when, int | float):
            when = datetime.fromtimestamp(when, UTC).isoformat()
        _paragraph(
            pdf,
            f"{title} · record id {row.get('id')} · {_utc(when)} · {what} · {outcome}{status}",
            bold=True,
            size=9.5,
        )
        if seq is None:
            _paragraph(
                pdf,
                "Written before the audit log was chained, or still being answered: "
                "this record has no chain hash.",
                size=9.5,
            )
        else:
            _fact(pdf, "Chain hash", row.get("hash"), mono=True)
            _fact(pdf, "Previous hash", row.get("prev_hash"), mono=True)
        pdf.ln(1)


def evidence_pdf(case: Mapping[str, Any], *, timeline: bytes | None = None) -> bytes:
    """Write the evidence report of one analysis, an A4 PDF for a non-technical reader.

    The report gives, in plain words: the verdict and advice; the calibrated score on a
    drawn 0-1 scale with the thresholds and what the score means; the main cues; the
    result of each channel; the timeline picture (when given); the file's facts and its
    SHA-256 in monospace; the analysis and model facts; the notes; and how to read the
    report (the score is a statistical estimate, not proof) and check the file's hash.
    Every page's footer carries the case id and the page number; the PDF's title,
    subject and creation date are set. Missing facts read "not recorded"; long text wraps
    and runs onto further pages.

    Parameters
    ----------
    case : dict
        The analysis: ``id``, ``created_at``, ``analysed_by``, ``filename``, ``sha256``,
        ``size_bytes``, ``verdict``, ``score``, ``headline``, ``advice``, ``meaning``, ``promise``,
        ``thresholds``, ``channels`` (as for :func:`timeline_png`), ``cues`` (each
        ``title`` and ``text``), ``audio`` (``container``, ``codec``, ``sample_rate``,
        ``channels``, ``duration_s``, ``size_bytes``), ``model`` (``id``, ``version``,
        ``name``, ``created``, ``eer``, ``protocol``), ``notes`` (each ``time``,
        ``author``, ``text``), ``generated_at`` and ``audit`` (the case's audit log rows,
        each ``id``, ``time``, ``method``, ``path``, ``status``, ``outcome``, ``seq``,
        ``prev_hash`` and ``hash``; the section is left out without this key). Every key
        may be missing.
    timeline : bytes, optional
        A PNG from :func:`timeline_png`, drawn at the page's width.

    Returns
    -------
    bytes
        The PDF file.

    Raises
    ------
    ValueError
        When ``timeline`` is given but is not a PNG.

    Examples
    --------
    >>> pdf = evidence_pdf({"id": "an_1", "filename": "appel_électoral.wav",
    ...                     "verdict": "likely_human", "score": 0.12})
    >>> pdf[:5], pdf.rstrip().endswith(b"%%EOF")
    (b'%PDF-', True)
    """
    if timeline is not None and not bytes(timeline[:8]) == PNG_SIGNATURE:
        raise ValueError("timeline is not a PNG image; expected the bytes of timeline_png")
    case_id = _clean(case.get("id") or NOT_RECORDED)
    audio = case.get("audio") or {}
    model = case.get("model") or {}
    thr = _thresholds(case.get("thresholds"))
    score = case.get("score")
    verdict = case.get("verdict")
    channels = list(case.get("channels") or [])
    filename = case.get("filename")

    pdf = _new_pdf(case, case_id)
    title = "voicecheck evidence report"
    pdf.set_title(f"{title}: {_clean(filename)}" if filename else title)
    pdf.set_subject(f"Case {case_id}: {verdict_label(verdict).lower()}, score {_score_text(score)}")
    pdf.set_creator("voicecheck")
    pdf.set_lang("en")
    pdf.set_creation_date(_when(case.get("generated_at")) or datetime.now(UTC))
    pdf.add_page()

    pdf.set_font(FONT, "B", 20)
    pdf.cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 9)
    pdf.set_text_color(90)
    pdf.multi_cell(
        0,
        4.5,
        f"Case {case_id} · report made {_utc(case.get('generated_at'))}",
        align="L",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_text_color(0)
    pdf.ln(4)

    headline = case.get("headline") or f"Verdict: {verdict_label(verdict)}"
    _paragraph(pdf, headline, bold=True, size=16)
    pdf.ln(1.5)
    if case.get("advice"):
        _paragraph(pdf, case["advice"])

    _heading(pdf, "The score")
    if score is None:
        _paragraph(pdf, "This recording was not given a score.")
    else:
        _paragraph(
            pdf,
            f"Score: {score:.2f}, on a scale from 0 (sounds like a real person) to 1 "
            f"(sounds like a cloned, machine-generated voice). Verdict: "
            f"{verdict_label(verdict).lower()}.",
        )
    _score_scale(pdf, score, thr)
    rule = (
        f"Scores of {thr['cloned']:.2f} or higher are reported as likely cloned, scores "
        f"below {thr['human']:.2f} as likely human, and scores in between as inconclusive."
    )
    if thr.get("eer") is not None:
        rule += (
            f" At {thr['eer']:.2f}, the model wrongly flags as many real voices as it misses "
            "cloned ones in testing (its equal-error point)."
        )
    _paragraph(pdf, rule)
    if case.get("meaning"):
        pdf.ln(1)
        _paragraph(pdf, case["meaning"])
    if case.get("promise"):
        pdf.ln(1)
        _paragraph(pdf, case["promise"])

    _heading(pdf, "What the score rests on")
    cues = [c for c in case.get("cues") or [] if c.get("title") or c.get("text")]
    if not cues:
        _paragraph(pdf, "No breakdown of the score into cues is available for this analysis.")
    for cue in cues:
        _paragraph(pdf, cue.get("title") or cue.get("cue") or "Cue", bold=True)
        if cue.get("text"):
            _paragraph(pdf, cue["text"])
        pdf.ln(1)

    _heading(pdf, "Results per channel")
    if channels:
        _paragraph(
            pdf,
            "Each channel of the recording (often one person per channel) is scored on its "
            "own, in short overlapping segments; segments without speech are not scored.",
        )
        pdf.ln(1)
        n_audio = audio.get("channels") or len({c.get("channel") for c in channels})
        _channels_table(pdf, channels, n_audio=int(n_audio))
    else:
        _paragraph(pdf, "No per-channel results are recorded for this analysis.")

    if timeline is not None:
        _timeline(pdf, timeline)

    _heading(pdf, "The file")
    n_channels = audio.get("channels")
    layout = {1: " (mono)", 2: " (stereo)"}.get(n_channels, "") if n_channels else ""
    rate = audio.get("sample_rate")
    _fact(pdf, "File name", filename)
    _fact(pdf, "Format", audio.get("container"))
    _fact(pdf, "Codec", audio.get("codec"))
    _fact(pdf, "Sample rate", f"{int(rate):,} Hz" if rate else None)
    _fact(pdf, "Channels", f"{n_channels}{layout}" if n_channels else None)
    _fact(pdf, "Duration", _duration(audio.get("duration_s")))
    _fact(pdf, "Size", _size(case.get("size_bytes", audio.get("size_bytes"))))
    _fact(pdf, "SHA-256", case.get("sha256"), mono=True)

    _heading(pdf, "The analysis")
    _fact(pdf, "Analysed (UTC)", _utc(case.get("created_at")))
    _fact(pdf, "Analysed by", case.get("analysed_by"))
    _fact(pdf, "Case id", case_id)
    _fact(pdf, "Model", model.get("id") or model.get("name"))
    _fact(pdf, "Software version", model.get("version"))
    _fact(pdf, "Model card date", _utc(model.get("created")) if model.get("created") else None)
    eer = model.get("eer")
    if eer is not None:
        protocol = model.get("protocol")
        eer_text = f"{_percent(eer)} of voices misjudged at the equal-error point in testing"
        eer_text += f" (test protocol: {protocol})" if protocol else ""
    else:
        eer_text = None
    _fact(pdf, "Model error rate", eer_text)

    same = [r for r in case.get("same_recording") or [] if isinstance(r, Mapping)]
    if same:
        _heading(pdf, "The same recording in other cases")
        _paragraph(
            pdf,
            f"This exact file (same SHA-256) was also analysed {len(same)} other "
            f"time{'s' if len(same) != 1 else ''}:",
        )
        for other in same[:20]:
            by = f" by {other['analysed_by']}" if other.get("analysed_by") else ""
            _paragraph(
                pdf,
                f"• {_utc(other.get('created_at'))}{by}: {verdict_label(other.get('verdict'))}, "
                f"case {other.get('id')}, file {other.get('filename') or 'unnamed'}",
                size=9.5,
            )
        if len(same) > 20:
            _paragraph(pdf, f"… and {len(same) - 20} more.", size=9.5)

    _heading(pdf, "Notes")
    notes = [n for n in case.get("notes") or [] if n.get("text")]
    if not notes:
        _paragraph(pdf, "No notes were added to this case.")
    for note in notes:
        who = " · ".join(
            part
            for part in (_utc(note["time"]) if note.get("time") else "", note.get("author"))
            if part
        )
        _paragraph(pdf, who or "Note", bold=True, size=9.5)
        _paragraph(pdf, note["text"])
        pdf.ln(2)

    if "audit" in case:
        _audit_rows(pdf, [r for r in case.get("audit") or [] if isinstance(r, Mapping)])

    _heading(pdf, "How to read this report")
    _paragraph(
        pdf,
        "The score is a statistical estimate made by a computer model trained on examples "
        "of real and cloned voices. It is not proof that a voice is cloned or real: a "
        "real voice can score high and a cloned one low, especially on poor phone lines or "
        "short recordings. Weigh it with the other facts of the case.",
    )
    pdf.ln(1.5)
    _paragraph(
        pdf,
        "To check that a file is the one analysed here, compute its SHA-256 fingerprint and "
        "compare it with the one under \u201cThe file\u201d: on Linux, "
        "sha256sum <file>; on macOS, shasum -a 256 <file>; on Windows (PowerShell), "
        "Get-FileHash -Algorithm SHA256 <file>. If even one character differs, the file "
        "is not the same.",
    )
    return bytes(pdf.output())
