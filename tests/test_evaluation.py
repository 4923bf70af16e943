"""Grouped protocols on a small corpus the tests write themselves."""

from collections import Counter

import pytest

from voicecheck.errors import ChannelError, VoiceCheckError
from voicecheck.research.evaluation import (
    check_conditions,
    cross_validated_scores,
    generator_family,
    resolve_protocols,
)
from voicecheck.research.manifest import load_manifest


@pytest.fixture(scope="module")
def cv_rows(tiny_manifest):
    clips = load_manifest(tiny_manifest).clips()
    return cross_validated_scores(
        clips,
        protocols=["leave-one-source-out", "leave-one-generator-out"],
        conditions=["g711", "amr_nb"],
        copies=1,
        n_jobs=1,
    )


def test_every_clip_scored_once_per_protocol_and_condition(cv_rows):
    counts = Counter((r["protocol"], r["condition"], r["path"]) for r in cv_rows)
    assert set(counts.values()) == {1}
    per = Counter((r["protocol"], r["condition"]) for r in cv_rows)
    assert per == {
        (p, c): 24
        for p in ("leave-one-source-out", "leave-one-generator-out")
        for c in ("g711", "amr_nb")
    }


def test_source_folds_hold_out_the_clip_source(cv_rows):
    for r in cv_rows:
        if r["protocol"] == "leave-one-source-out" or r["label"] == 0:
            assert r["fold"] == f"tiny:{r['source']}"
        else:
            assert r["fold"] == generator_family(r["generator"])
        assert 0 <= r["score"] <= 1


def test_scores_separate_an_easy_corpus(cv_rows):
    from voicecheck.research.metrics import eer

    rows = [r for r in cv_rows if r["protocol"] == "leave-one-source-out"]
    e, _ = eer([r["score"] for r in rows], [r["label"] for r in rows])
    assert e < 0.25


def test_generator_families():
    assert generator_family("StyleTTS 2 (ablation noSD)") == generator_family("StyleTTS 2")
    assert generator_family("HiFi-GAN") == generator_family("hifigan") == "hifigan"
    assert generator_family("Tacotron2 + WaveGlow") == "tacotron2+waveglow"
    assert generator_family("Tacotron2 + WaveGlow") != generator_family("WaveGlow")


def test_protocol_and_condition_names_are_checked():
    assert resolve_protocols(["loso", "logo", "shipped"]) == [
        "leave-one-source-out",
        "leave-one-generator-out",
        "shipped-model",
    ]
    with pytest.raises(VoiceCheckError, match="unknown protocol 'random'"):
        resolve_protocols(["random"])
    with pytest.raises(ChannelError, match="unknown condition 'g729'"):
        check_conditions(["g711", "g729"])
