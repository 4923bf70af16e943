"""Right-to-left and joined scripts in the evidence report: Arabic and Hebrew notes and names."""

from __future__ import annotations

import io
import re

import pytest
from pypdf import PdfReader

from voicecheck.service import evidence

ARABIC_NOTE = "المتصل قال إن مراكز الاقتراع ستنتقل إلى يوم الأربعاء"
HEBREW_NOTE = "המתקשר אמר שהקלפיות עוברות ליום רביעי"
LATIN_TAIL = "Call recorded at 09:00 on line 3."
HEBREW_AUTHOR = "מפקח הבחירות"
FILENAME = "شكوى_الانتخابات_תלונה.wav"


def _case() -> dict:
    """One case whose notes mix Arabic, Hebrew and Latin text."""
    return {
        "id": "an_rtl_case",
        "filename": FILENAME,
        "analysed_by": "County elections office",
        "verdict": "likely_cloned",
        "score": 0.82,
        "headline": "The voice is likely cloned (machine-generated)",
        "notes": [
            {"time": "2026-11-29T09:00:00Z", "author": HEBREW_AUTHOR, "text": ARABIC_NOTE},
            {
                "time": "2026-11-29T09:05:00Z",
                "author": "Duty officer",
                "text": f"{HEBREW_NOTE}. {LATIN_TAIL}",
            },
        ],
        "generated_at": "2026-11-29T09:30:00Z",
    }


@pytest.fixture(scope="module")
def report() -> bytes:
    return evidence.evidence_pdf(_case())


@pytest.fixture(scope="module")
def text(report) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(report)).pages)


def whole_word(word: str) -> re.Pattern:
    return re.compile(rf"(?<!\w){re.escape(word)}(?!\w)")


def in_order(text: str, sentence: str) -> None:
    """Each word of ``sentence`` is in ``text`` as written (not mirrored), in reading order."""
    at = -1
    for word in sentence.split():
        found = whole_word(word).search(text, at + 1)
        assert found, f"{word!r} is missing from the report's text, or comes too early"
        if len(word) > 1:
            assert not whole_word(word[::-1]).search(text), f"{word!r} is drawn mirrored"
        at = found.start()


def test_an_arabic_note_reads_in_its_written_order(text):
    in_order(text, ARABIC_NOTE)
    assert ARABIC_NOTE in text


def test_a_hebrew_note_with_latin_text_reads_in_its_written_order(text):
    in_order(text, HEBREW_NOTE)
    assert HEBREW_NOTE in text
    assert LATIN_TAIL.rstrip(".") in text


def test_a_hebrew_author_and_the_note_time_both_read_correctly(text):
    assert "2026-11-29 09:00:00 UTC" in text
    in_order(text, HEBREW_AUTHOR)


def test_arabic_and_hebrew_file_names_keep_their_letters_in_order(text):
    for word in ("شكوى", "الانتخابات", "תלונה"):
        assert word in text and word[::-1] not in text
    assert "wav" in text and "vaw" not in text


def test_latin_text_still_reads_left_to_right(text):
    assert "voicecheck evidence report" in text
    assert "The voice is likely cloned (machine-generated)" in text
    assert "County elections office" in text
    assert "Duty officer" in text
    assert re.search(r"Page 1 of \d", text)


def test_arabic_letters_are_joined(report):
    """Shaping draws a letter in its joining forms and lam-alef as one ligature."""
    reader = PdfReader(io.BytesIO(report))
    maps = []
    for font in reader.pages[0]["/Resources"]["/Font"].values():
        font = font.get_object()
        if "DejaVuSans" in font["/BaseFont"] and "Mono" not in font["/BaseFont"]:
            maps.append(font["/ToUnicode"].get_object().get_data().decode())
    cmap = "\n".join(maps)
    lam = re.findall(r"<[0-9A-F]{4}> <0644>", cmap)
    assert len(set(lam)) >= 2, "lam (ل) is drawn in one form only: the letters are not joined"
    assert "<06440627>" in cmap, "lam-alef (لا) is not drawn as its ligature"


def test_the_report_is_the_same_for_the_same_case(report):
    again = evidence.evidence_pdf(_case())
    assert again == report
