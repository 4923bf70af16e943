import io

import numpy as np
import pytest
import soundfile as sf
from conftest import voiced

from voicecheck.analysis import feature_names
from voicecheck.explain import (
    CUE_GROUPS,
    explain_segments,
    group_columns,
    group_of,
    meaning_text,
    score_rates,
    verdict_text,
)
from voicecheck.scoring import analyze


def wav(y, sr=8000):
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_every_feature_falls_in_exactly_one_group():
    names = feature_names()
    for name in names:
        assert sum(g.matches(name) for g in CUE_GROUPS) == 1, name
    cols = group_columns(names)
    assert list(cols) == [g.key for g in CUE_GROUPS]  # every group is used, in order
    assert sorted(np.concatenate(list(cols.values())).tolist()) == list(range(len(names)))


def test_groups_are_the_expected_cues():
    assert group_of("mfcc_3_mean").key == "timbre"
    assert group_of("mfcc_d1_4_std").key == "timbre_motion"
    assert group_of("lfcc_d2_1_mean").key == "timbre_motion"
    assert group_of("lfcc_7_std").key == "high_frequency"
    assert group_of("cqcc_5_std").key == "harmonics"
    assert group_of("contrast_db_2_mean").key == "spectral_shape"
    assert group_of("f0_log2_median").key == "pitch"
    assert group_of("voiced_fraction").key == "pitch"
    assert group_of("energy_db_rel_std").key == "loudness"
    assert group_of("zcr_mean").key == "loudness"
    with pytest.raises(ValueError, match="belongs to 0 cue groups"):
        group_of("mfcc_3_median")


def test_groups_are_documented_for_lay_readers():
    keys = [g.key for g in CUE_GROUPS]
    assert len(set(keys)) == len(keys)
    for g in CUE_GROUPS:
        assert g.title and g.title[0].isupper()
        assert g.description.endswith(".") and "mfcc" not in g.description.lower()


def machine_like(rng, n=8):
    """Feature rows the small model (trained on the sign of column 0) scores as cloned."""
    X = rng.standard_normal((n, len(feature_names()))).astype(np.float32)
    X[:, 0] = 2.5
    return X


def test_effect_is_the_score_lost_without_the_group(small_model, rng):
    X = machine_like(rng)
    mask = np.ones(len(X), bool)
    mask[-2:] = False  # segments without speech take no part
    X[~mask] = -5.0
    cues = explain_segments(X, mask, small_model)
    assert len(cues) == len(CUE_GROUPS)
    full = float(np.mean(small_model.predict_proba(X)[mask]))
    cols = group_columns(feature_names())
    for cue in cues:
        by_hand = X.copy()
        by_hand[:, cols[cue["cue"]]] = np.nan
        without = float(np.mean(small_model.predict_proba(by_hand)[mask]))
        assert cue["score_without"] == pytest.approx(without, abs=1e-4)
        assert cue["effect"] == pytest.approx(full - without, abs=1e-4)


def test_cues_are_sorted_and_the_relied_on_cue_leads(small_model, rng):
    X = machine_like(rng)
    cues = explain_segments(X, np.ones(len(X), bool), small_model)
    effects = [abs(c["effect"]) for c in cues]
    assert effects == sorted(effects, reverse=True)
    top = cues[0]
    assert top["cue"] == "timbre"  # column 0, mfcc_1_mean, is what the model learnt
    assert top["effect"] > 0.1 and top["direction"] == "cloned"
    assert "more machine-made" in top["text"]
    assert f"{top['score_without']:.2f} instead of" in top["text"]
    for cue in cues:
        if abs(cue["effect"]) < 0.01:
            assert "made little difference" in cue["text"], cue


def test_human_leaning_cue_reads_as_such(small_model, rng):
    X = machine_like(rng)
    X[:, 0] = -2.5
    top = explain_segments(X, np.ones(len(X), bool), small_model)[0]
    assert top["cue"] == "timbre" and top["effect"] < 0 and top["direction"] == "human"
    assert "more like a real person" in top["text"]


def test_given_probabilities_are_reused(small_model, rng):
    X = machine_like(rng)
    mask = np.ones(len(X), bool)
    probs = small_model.predict_proba(X)
    assert explain_segments(X, mask, small_model, probs=probs) == explain_segments(
        X, mask, small_model
    )


def test_a_mask_without_speech_is_refused(small_model, rng):
    X = machine_like(rng, n=3)
    with pytest.raises(ValueError, match="0 speech segments"):
        explain_segments(X, np.zeros(3, bool), small_model)


CARD = {"validation_scores": {"real": [0.9, 0.1, 0.2, 0.4, 0.05], "cloned": [0.3, 0.95, 0.7, 0.4]}}


def test_score_rates_counts_clips_at_or_above():
    rates = score_rates(0.4, CARD)
    # the unsorted lists are sorted first; 0.4 itself counts as "at or above"
    assert rates == {
        "cloned_at_or_above": 0.75,
        "real_at_or_above": 0.4,
        "n_cloned": 4,
        "n_real": 5,
    }
    assert score_rates(0.41, CARD)["cloned_at_or_above"] == 0.5
    assert score_rates(0.0, CARD)["real_at_or_above"] == 1.0
    assert score_rates(0.99, CARD)["cloned_at_or_above"] == 0.0


def test_score_rates_without_validation_scores_is_none():
    assert score_rates(0.5, {"thresholds": {}}) is None
    assert score_rates(0.5, {"validation_scores": {"real": [], "cloned": [0.5]}}) is None


def test_score_rates_of_the_shipped_model_card():
    from voicecheck.model import default_model_path, read_card

    card = read_card(default_model_path())
    if "validation_scores" not in card:
        pytest.skip("the shipped model card has no validation scores")
    cloned = card["validation_scores"]["cloned"]
    median = float(np.median(cloned))
    rates = score_rates(median, card)
    assert rates["n_cloned"] == len(cloned)
    assert 0.5 <= rates["cloned_at_or_above"] < 0.6
    assert rates["real_at_or_above"] < rates["cloned_at_or_above"]  # the model separates them
    assert score_rates(0.0, card)["real_at_or_above"] == 1.0
    assert score_rates(1.01, card)["cloned_at_or_above"] == 0.0


def test_meaning_text_wording():
    rates = {"cloned_at_or_above": 0.623, "real_at_or_above": 0.04, "n_cloned": 4991, "n_real": 52}
    assert meaning_text(0.7141, rates) == (
        "In our tests, 62% of 4,991 cloned voices and 4% of 52 real voices"
        " scored at least as high as this call (0.71)."
    )
    tiny = {**rates, "cloned_at_or_above": 0.999, "real_at_or_above": 0.001}
    assert ">99% of 4,991 cloned" in meaning_text(0.9, tiny)
    assert "<1% of 52 real" in meaning_text(0.9, tiny)
    none = {**rates, "cloned_at_or_above": 1.0, "real_at_or_above": 0.0}
    assert "100% of 4,991 cloned voices and 0% of 52 real" in meaning_text(0.9, none)
    above_all = {**rates, "cloned_at_or_above": 0.0, "real_at_or_above": 0.0}
    assert meaning_text(0.97, above_all) == (
        "This call's score (0.97) is higher than that of all 4,991 cloned and 52 real voices"
        " in our tests."
    )
    assert "no stored test results" in meaning_text(0.9, None)
    assert "0.90" in meaning_text(0.9, None)


def test_verdict_text_for_every_verdict():
    from voicecheck.model import VERDICTS

    texts = {v: verdict_text(v) for v in VERDICTS}
    assert "likely cloned" in texts["likely_cloned"]["headline"]
    assert "forward the evidence report" in texts["likely_cloned"]["advice"]
    assert "real person" in texts["likely_human"]["headline"]
    assert "no detector is certain" in texts["likely_human"]["advice"]
    assert "between the thresholds" in texts["inconclusive"]["advice"]
    with pytest.raises(ValueError, match="verdict is 'cloned'; expected one of"):
        verdict_text("cloned")


def test_analyze_explains_only_when_asked(small_model):
    data = wav(voiced(5.0, sr=8000))
    plain = analyze(data, small_model)
    assert plain.cues is None and "cues" not in plain.to_dict()
    assert all("cues" not in c for c in plain.to_dict()["channels"])
    explained = analyze(data, small_model, explain=True)
    assert explained.score == plain.score
    d = explained.to_dict(segments=False)
    assert [c["cue"] for c in d["cues"]] == [c["cue"] for c in explained.channels[0].cues]
    assert {c["cue"] for c in d["cues"]} == {g.key for g in CUE_GROUPS}
    assert d["channels"][0]["cues"] == d["cues"]


def test_analyze_explains_the_channel_that_gave_the_score(small_model):
    left = voiced(5.0, sr=8000, f0=120)
    right = voiced(5.0, sr=8000, f0=210, seed=4)
    result = analyze(wav(np.stack([left, right], axis=1)), small_model, explain=True)
    best = max(result.channels, key=lambda c: c.score)
    assert result.cues == best.cues
    for c in result.channels:
        assert c.cues is not None and len(c.cues) == len(CUE_GROUPS)


def test_analyze_explains_speech(small_model, espeak_speech):
    y, sr = espeak_speech
    result = analyze(wav(y, sr=sr), small_model, explain=True).to_dict()
    for cue in result["cues"]:
        assert cue["direction"] in {"cloned", "human", "none"}
        assert 0 <= cue["score_without"] <= 1
        assert cue["text"].startswith(next(g.title for g in CUE_GROUPS if g.key == cue["cue"]))
