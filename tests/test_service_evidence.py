"""The result page's timeline picture and the downloadable evidence report."""

from __future__ import annotations

import copy
import io
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from voicecheck.service import evidence

SR = 16_000
THRESHOLDS = {"cloned": 0.7, "human": 0.3, "eer": 0.6}
SHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
FILENAME = "appel_électoral_选举.wav"
SCORE_RGB = (0x00, 0x72, 0xB2)  # the score line's colour


def tone(duration_s: float, *, sr: int = SR, n_channels: int = 1) -> np.ndarray:
    """A 200 Hz harmonic tone switched on and off twice a second, on every channel."""
    t = np.arange(int(duration_s * sr)) / sr
    y = sum(np.sin(2 * np.pi * k * 200 * t) / k for k in range(1, 10))
    y = 0.05 * y * (np.sin(2 * np.pi * 2 * t) > 0)
    return np.tile(y.astype(np.float32), (n_channels, 1))


def segments(duration_s: float, scores) -> list[dict]:
    """3 s segments every 1.5 s, as the analysis makes them, with the given scores."""
    return [
        {"start_s": 1.5 * i, "end_s": 1.5 * i + 3.0, "score": s}
        for i, s in zip(range(int((duration_s - 3.0) / 1.5) + 1), scores, strict=False)
    ]


def channel(index: int, scores, *, duration_s: float = 6.0) -> dict:
    segs = segments(duration_s, scores)
    scored = [s["score"] for s in segs if s["score"] is not None]
    if not scored:
        return {
            "channel": index,
            "score": None,
            "verdict": None,
            "segments": segs,
            "error": {"code": "no_speech", "detail": "no speech found on this channel"},
        }
    score = float(np.mean(scored))
    verdict = "likely_cloned" if score >= 0.7 else "likely_human" if score < 0.3 else "inconclusive"
    return {"channel": index, "score": round(score, 4), "verdict": verdict, "segments": segs}


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def score_line_pixels(png: bytes) -> int:
    """Pixels of the score line's colour above the legend."""
    rgb = decode(png).astype(int)
    panels = rgb[: int(rgb.shape[0] * 0.85)]
    return int((np.abs(panels - SCORE_RGB).sum(axis=2) < 30).sum())


def warm_pixels(png: bytes) -> int:
    """Pixels tinted by the shading of segments at or above the cloned threshold."""
    rgb = decode(png).astype(int)
    panels = rgb[: int(rgb.shape[0] * 0.85)]
    return int((panels[..., 0] - panels[..., 2] > 25).sum())


# --------------------------------------------------------------------------------------------
# verdict_label


def test_verdict_label_names_each_verdict():
    assert evidence.verdict_label("likely_cloned") == "Likely cloned"
    assert evidence.verdict_label("likely_human") == "Likely human"
    assert evidence.verdict_label("inconclusive") == "Inconclusive"
    assert evidence.verdict_label(None) == "Not scored"
    assert evidence.verdict_label("likely_edited") == "Likely edited"


# --------------------------------------------------------------------------------------------
# timeline_png


@pytest.fixture(scope="module")
def pictures() -> dict[str, bytes]:
    """One-channel timelines whose three segments all score high, middling or not at all."""
    return {
        name: evidence.timeline_png(
            tone(6.0), SR, [channel(0, [score] * 3)], THRESHOLDS, width_px=600
        )
        for name, score in (("high", 0.9), ("middling", 0.5), ("no speech", None))
    }


@pytest.fixture(scope="module")
def timeline() -> bytes:
    """A stereo call: the left channel likely cloned, the right one without speech."""
    return evidence.timeline_png(
        tone(6.0, n_channels=2),
        SR,
        [channel(0, [0.8, 0.9, 0.85]), channel(1, [None, None, None])],
        THRESHOLDS,
        width_px=800,
    )


def test_timeline_is_1200_pixels_wide_by_default():
    png = evidence.timeline_png(tone(6.0), SR, [channel(0, [0.2, 0.4, 0.9])], THRESHOLDS)
    assert decode(png).shape[1] == 1200


def test_timeline_width_survives_rounding():
    png = evidence.timeline_png(tone(3.0), SR, [], THRESHOLDS, width_px=1000, dpi=96)
    assert decode(png).shape[1] == 1000


def test_timeline_has_one_panel_per_channel(pictures, timeline):
    mono = decode(evidence.timeline_png(tone(6.0), SR, [], THRESHOLDS, width_px=800))
    stereo = decode(timeline)
    assert stereo.shape[1] == mono.shape[1] == 800
    assert stereo.shape[0] - mono.shape[0] == pytest.approx(evidence.PANEL_HEIGHT_IN * 100, abs=2)


def test_timeline_without_channel_results_draws_each_audio_channel(timeline):
    stereo = evidence.timeline_png(tone(6.0, n_channels=2), SR, [], THRESHOLDS, width_px=800)
    assert decode(stereo).shape == decode(timeline).shape


def test_timeline_draws_the_segment_scores(pictures):
    assert score_line_pixels(pictures["middling"]) > 300
    assert score_line_pixels(pictures["no speech"]) < 30


def test_timeline_shades_segments_at_or_above_the_cloned_threshold(pictures):
    assert warm_pixels(pictures["high"]) > 10 * max(warm_pixels(pictures["middling"]), 300)


def test_timeline_draws_a_channel_without_speech(pictures, timeline):
    assert decode(pictures["no speech"]).shape[1] == 600
    assert decode(timeline).shape[0] > 2 * evidence.PANEL_HEIGHT_IN * 100


def test_timeline_at_the_telephone_rate_and_for_a_very_short_call():
    png = evidence.timeline_png(tone(0.01, sr=8_000), 8_000, [], THRESHOLDS, width_px=600)
    assert decode(png).shape[1] == 600


def test_timeline_is_the_same_for_the_same_input(pictures):
    again = evidence.timeline_png(tone(6.0), SR, [channel(0, [0.5] * 3)], THRESHOLDS, width_px=600)
    assert again == pictures["middling"]


def test_timeline_refuses_audio_of_the_wrong_shape():
    with pytest.raises(ValueError, match="n_channels, n_samples"):
        evidence.timeline_png(np.zeros((1, 2, 100), np.float32), SR, [], THRESHOLDS)


# --------------------------------------------------------------------------------------------
# evidence_pdf


@pytest.fixture(scope="module")
def case() -> dict:
    return {
        "id": "an_3f9c2e71b0d4",
        "created_at": "2026-11-29T08:12:03Z",
        "analysed_by": "County elections office",
        "filename": FILENAME,
        "sha256": SHA256,
        "size_bytes": 160044,
        "verdict": "likely_cloned",
        "score": 0.82,
        "headline": "The voice is likely cloned (machine-generated)",
        "advice": "Treat the call as suspicious and keep the original file unchanged.",
        "meaning": (
            "In our tests, 62% of cloned voices and 4% of real voices scored 0.82 or higher."
        ),
        "promise": "On recordings from 92 sites the model never saw, 1% of real voices.",
        "thresholds": THRESHOLDS,
        "channels": [channel(0, [0.8, 0.9, 0.85]), channel(1, [None, None, None])],
        "cues": [
            {
                "cue": "pitch",
                "title": "Pitch and intonation",
                "effect": 0.12,
                "score_without": 0.70,
                "direction": "cloned",
                "text": "The pitch moves more smoothly than in real speech.",
            }
        ],
        "audio": {
            "container": "wav",
            "codec": "pcm_mulaw",
            "sample_rate": 8000,
            "channels": 2,
            "duration_s": 10.0,
            "size_bytes": 160044,
            "decoder": "soundfile",
        },
        "model": {
            "id": "voicecheck-default-ee40a94cd4b9",
            "version": "0.4.0",
            "name": "voicecheck-default",
            "created": "2026-11-29T06:18:29Z",
            "eer": 0.2685,
            "protocol": "text",
        },
        "notes": [
            {
                "time": "2026-11-29T09:00:00Z",
                "author": "Duty officer",
                "text": "Caller said polling stations move to Wednesday. Звонок записан.",
            }
        ],
        "generated_at": "2026-11-29T09:30:00Z",
    }


@pytest.fixture(scope="module")
def report(case, timeline) -> bytes:
    return evidence.evidence_pdf(case, timeline=timeline)


def text_of(pdf: bytes, *, footers: bool = True) -> str:
    pages = [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]
    if not footers:
        pages = [p[: p.rindex("voicecheck evidence report · case")] for p in pages]
    return "\n".join(pages)


def squeeze(text: str) -> str:
    return "".join(text.split())


def test_report_states_the_facts_of_the_case(report, case):
    text = text_of(report)
    assert "voicecheck evidence report" in text
    assert case["headline"] in text
    assert SHA256 in text  # on one line, so that it can be compared with sha256sum
    assert FILENAME in text
    assert case["notes"][0]["text"] in text
    assert case["model"]["id"] in text
    assert case["meaning"] in text
    assert case["promise"] in text
    assert "Pitch and intonation" in text
    assert "2026-11-29 08:12:03 UTC" in text
    assert "Likely cloned" in text
    assert "not proof" in text
    assert "sha256sum" in text


def test_report_pages_carry_the_case_id_and_page_numbers(report, case):
    pages = PdfReader(io.BytesIO(report)).pages
    for number, page in enumerate(pages, start=1):
        footer = page.extract_text()
        assert case["id"] in footer
        assert f"Page {number} of {len(pages)}" in footer


def test_report_metadata(report, case):
    meta = PdfReader(io.BytesIO(report)).metadata
    assert meta.title.startswith("voicecheck evidence report")
    assert case["id"] in meta.subject
    assert meta.creation_date == datetime(2026, 11, 29, 9, 30, tzinfo=UTC)


def test_report_is_a4(report):
    box = PdfReader(io.BytesIO(report)).pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (595, 842)


def test_report_embeds_the_timeline(report):
    with_image = PdfReader(io.BytesIO(report))
    without = PdfReader(io.BytesIO(evidence.evidence_pdf({"id": "an_no_timeline"})))

    def images(reader: PdfReader) -> int:
        count = 0
        for page in reader.pages:
            xobjects = page.get("/Resources", {}).get("/XObject", {})
            count += sum(x.get_object()["/Subtype"] == "/Image" for x in xobjects.values())
        return count

    assert images(with_image) == 1
    assert images(without) == 0


def test_report_lists_every_channel(report):
    text = text_of(report)
    assert "Channel 1 (left)" in text
    assert "Channel 2 (right)" in text
    assert "no speech found on this channel" in text
    assert "3 of 3" in text and "0 of 3" in text


def test_report_without_optional_facts():
    text = text_of(evidence.evidence_pdf({"id": "an_minimal", "verdict": "inconclusive"}))
    assert "an_minimal" in text
    assert "Inconclusive" in text
    assert "not recorded" in text
    assert "No notes were added" in text
    assert "No breakdown of the score into cues" in text


def test_report_accepts_an_empty_case():
    assert text_of(evidence.evidence_pdf({})).startswith("voicecheck evidence report")


def test_long_notes_and_names_wrap_onto_more_pages(case, report):
    long_case = copy.deepcopy(case)
    note = " ".join(f"word{i:04d}" for i in range(600))  # about 5000 characters
    long_case["notes"] = [{"time": "2026-11-29T09:00:00Z", "author": "Officer", "text": note}]
    long_case["filename"] = "x" * 400 + ".wav"  # one word wider than the page
    pdf = evidence.evidence_pdf(long_case)
    text = squeeze(text_of(pdf, footers=False))
    assert len(PdfReader(io.BytesIO(pdf)).pages) > len(PdfReader(io.BytesIO(report)).pages)
    assert squeeze(note) in text
    assert "x" * 400 + ".wav" in text


def test_report_is_the_same_for_the_same_case(timeline):
    case = {"id": "an_same", "generated_at": "2026-11-29T09:30:00Z", "notes": [{"text": "é"}]}
    first = evidence.evidence_pdf(case, timeline=timeline)
    assert evidence.evidence_pdf(case, timeline=timeline) == first


def test_report_refuses_a_timeline_that_is_not_a_png(case):
    with pytest.raises(ValueError, match="not a PNG"):
        evidence.evidence_pdf(case, timeline=b"GIF89a")
