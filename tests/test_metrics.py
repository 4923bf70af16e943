import numpy as np
import pytest

from voicecheck.research import metrics


def test_perfect_separation_has_zero_eer():
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1])
    e, t = metrics.eer(s, y)
    assert e == 0.0 and 0.3 < t <= 0.7
    assert metrics.roc_auc(s, y) == 1.0
    assert metrics.min_dcf(s, y) == 0.0


def test_inverted_scores_have_full_eer():
    s = np.array([0.9, 0.8, 0.1, 0.2])
    y = np.array([0, 0, 1, 1])
    assert metrics.eer(s, y)[0] == 1.0


def test_random_scores_have_eer_near_half(rng):
    s = rng.random(4000)
    y = rng.integers(0, 2, 4000)
    assert metrics.eer(s, y)[0] == pytest.approx(0.5, abs=0.03)
    assert metrics.roc_auc(s, y) == pytest.approx(0.5, abs=0.03)
    assert metrics.min_dcf(s, y) == pytest.approx(1.0, abs=0.05)


def test_known_eer_by_hand():
    # Real at 0..9, cloned at 5.5..14.5. At a threshold of 7.25, two real clips (8, 9)
    # score above it and two cloned clips (5.5, 6.5) below it: 2/10 each.
    real = np.arange(10.0)
    fake = np.arange(5.5, 15.0)
    s = np.concatenate([real, fake])
    y = np.array([0] * 10 + [1] * 10)
    e, t = metrics.eer(s, y)
    assert e == pytest.approx(0.2)
    assert 6.5 < t <= 8


def test_threshold_at_false_alarm_allows_at_most_that_rate(rng):
    s = rng.random(1000)
    y = rng.integers(0, 2, 1000)
    t = metrics.threshold_at_false_alarm(s, y, 0.01)
    assert metrics.rates_at(s, y, t)["false_alarm_rate"] <= 0.01
    assert metrics.rates_at(s, y, t - 0.01)["false_alarm_rate"] > 0.01


def test_threshold_at_miss_allows_at_most_that_rate(rng):
    s = rng.random(1000)
    y = rng.integers(0, 2, 1000)
    t = metrics.threshold_at_miss(s, y, 0.05)
    assert metrics.rates_at(s, y, t)["miss_rate"] <= 0.05


def test_one_class_is_an_error():
    with pytest.raises(ValueError, match="both"):
        metrics.eer(np.array([0.1, 0.2]), np.array([0, 0]))
