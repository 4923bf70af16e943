import numpy as np
import pytest
from conftest import voiced

from voicecheck import analysis
from voicecheck.constants import ANALYSIS_SR_HZ, SEGMENT_HOP_S, SEGMENT_S

SR = ANALYSIS_SR_HZ


def test_segment_bounds_cover_the_recording_with_overlap():
    n = analysis.n_frames_of(int(10 * SR))
    bounds = analysis.segment_bounds(n)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    lengths = {e - s for s, e in bounds}
    assert lengths == {analysis.SEGMENT_FRAMES}
    hops = {b[0] - a[0] for a, b in zip(bounds, bounds[1:], strict=False)}
    assert max(hops) <= analysis.SEGMENT_HOP_FRAMES


def test_short_recording_is_one_segment():
    n = analysis.n_frames_of(int(1.2 * SR))
    assert analysis.segment_bounds(n) == [(0, n)]
    assert analysis.segment_bounds(0) == []


def test_segments_report_times_in_seconds():
    seg = analysis.segment_features(voiced(7.0, sr=SR))
    assert seg.X.shape == (len(seg.start_s), len(analysis.feature_names()))
    assert seg.start_s[0] == 0
    assert seg.end_s[0] == pytest.approx(SEGMENT_S, abs=0.03)
    assert seg.start_s[1] == pytest.approx(SEGMENT_HOP_S, abs=1e-6)
    assert seg.end_s[-1] == pytest.approx(7.0, abs=0.03)
    assert seg.has_speech.all()


def test_blocks_give_the_same_features_as_one_pass():
    y = voiced(9.0, sr=SR, seed=3)
    whole = analysis.segment_features(y, block_frames=10_000)
    blocked = analysis.segment_features(y, block_frames=170)
    np.testing.assert_allclose(blocked.X, whole.X, rtol=1e-4, atol=1e-4)


def test_features_ignore_loudness():
    y = voiced(4.0, sr=SR, seed=5)
    loud = analysis.segment_features(y)
    quiet = analysis.segment_features(y * 0.1)
    np.testing.assert_allclose(loud.X, quiet.X, rtol=1e-3, atol=1e-3)


def test_level_gain_reaches_target():
    from voicecheck.constants import TARGET_LEVEL_DBFS

    y = voiced(3.0, sr=SR) * 0.01
    out = y * analysis.level_gain(y)
    frames = out[: out.size // 80 * 80].reshape(-1, 80)
    power = (frames**2).mean(axis=1)
    active = 10 * np.log10(power + 1e-12) > 10 * np.log10(power.max()) - 35
    assert 10 * np.log10(power[active].mean()) == pytest.approx(TARGET_LEVEL_DBFS, abs=0.5)


def test_pause_segments_are_marked_without_speech():
    y = np.concatenate([voiced(3.0, sr=SR), np.zeros(int(6 * SR), np.float32), voiced(3.0, sr=SR)])
    seg = analysis.segment_features(y)
    assert seg.has_speech[0] and seg.has_speech[-1]
    assert not seg.has_speech.all()


def test_feature_names_are_unique():
    names = analysis.feature_names()
    assert len(names) == len(set(names)) > 100
