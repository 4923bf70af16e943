import json
import shutil

import numpy as np
import pytest
import skops.io as sio

from voicecheck.analysis import feature_names
from voicecheck.errors import ModelError
from voicecheck.model import (
    Detector,
    FlatForest,
    Thresholds,
    card_path_for,
    load_model,
    save_model,
)


def _copy_model(detector: Detector, tmp_path, src_dir=None):
    """Copy the session model's two files into tmp_path and return the .skops path."""
    src = next(p for p in src_dir.iterdir() if p.suffix == ".skops")
    dst = tmp_path / "m.skops"
    shutil.copy(src, dst)
    shutil.copy(card_path_for(src), card_path_for(dst))
    return dst


@pytest.fixture
def model_file(small_model, tmp_path, tmp_path_factory):
    # The session model lives in its own folder; find it through the card id.
    base = tmp_path_factory.getbasetemp()
    src_dir = next(p for p in base.iterdir() if p.name.startswith("model"))
    return _copy_model(small_model, tmp_path, src_dir)


def test_round_trip_gives_same_scores(small_model, model_file, rng):
    X = rng.standard_normal((20, len(feature_names()))).astype(np.float32)
    again = load_model(model_file)
    np.testing.assert_allclose(again.predict_proba(X), small_model.predict_proba(X))
    assert 0 <= again.predict_proba(X).min() and again.predict_proba(X).max() <= 1


def test_scores_follow_the_informative_feature(small_model):
    X = np.zeros((2, len(feature_names())), np.float32)
    X[0, 0], X[1, 0] = -3, 3
    lo, hi = small_model.predict_proba(X)
    assert hi > 0.8 and lo < 0.2


def test_card_records_what_the_model_needs(model_file):
    card = json.loads(card_path_for(model_file).read_text())
    assert card["feature_names"] == list(feature_names())
    assert card["feature_params"]["ANALYSIS_SR_HZ"] == 8000
    assert {"scikit-learn", "numpy", "librosa", "skops", "voicecheck"} <= set(
        card["library_versions"]
    )
    assert card["model_id"].startswith("test-small-")
    assert set(card["thresholds"]) == {"cloned", "human", "eer"}


def test_missing_card_is_refused(model_file):
    card_path_for(model_file).unlink()
    with pytest.raises(ModelError, match="card .* is missing"):
        load_model(model_file)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.skops")


def test_altered_file_is_refused(model_file):
    data = bytearray(model_file.read_bytes())
    data[-100] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its card"):
        load_model(model_file)


def test_feature_mismatch_is_refused(model_file):
    path = card_path_for(model_file)
    card = json.loads(path.read_text())
    card["feature_names"] = card["feature_names"][:-1]
    path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="retrain"):
        load_model(model_file)


def test_changed_analysis_setting_is_refused(model_file):
    path = card_path_for(model_file)
    card = json.loads(path.read_text())
    card["feature_params"]["HOP_LENGTH"] = 123
    path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="HOP_LENGTH"):
        load_model(model_file)


def test_other_sklearn_version_is_refused(model_file):
    path = card_path_for(model_file)
    card = json.loads(path.read_text())
    card["library_versions"]["scikit-learn"] = "0.24.2"
    path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="scikit-learn 0.24.2"):
        load_model(model_file)


class Sneaky:
    """A type no voicecheck model contains."""

    def __init__(self):
        self.payload = "run me"


def test_untrusted_type_is_refused(tmp_path):
    path = save_model(
        Sneaky(),
        {"name": "evil", "thresholds": {"cloned": 0.9, "human": 0.1, "eer": 0.5}},
        tmp_path / "e.skops",
    )
    with pytest.raises(ModelError, match="does not trust.*Sneaky"):
        load_model(path)


def test_damaged_file_is_refused(model_file):
    model_file.write_bytes(b"not a zip file")
    card = json.loads(card_path_for(model_file).read_text())
    import hashlib

    card["skops_sha256"] = hashlib.sha256(b"not a zip file").hexdigest()
    card_path_for(model_file).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="cannot be read"):
        load_model(model_file)


def test_wrong_feature_count_is_refused(small_model):
    with pytest.raises(ModelError, match="expected"):
        small_model.predict_proba(np.zeros((3, 5)))


@pytest.mark.parametrize(
    ("score", "verdict"),
    [
        (0.95, "likely_cloned"),
        (0.8, "likely_cloned"),
        (0.5, "inconclusive"),
        (0.3, "inconclusive"),
        (0.1, "likely_human"),
    ],
)
def test_verdict_bands(score, verdict):
    assert Thresholds(cloned=0.8, human=0.3, eer=0.5).verdict(score) == verdict


def test_default_model_loads_and_matches_this_version():
    detector = load_model()
    assert detector.card["feature_names"] == list(feature_names())
    assert detector.thresholds.human <= detector.thresholds.cloned
    assert "metrics" in detector.card and "pooled" in detector.card["metrics"]


def test_skops_file_holds_only_trusted_types():
    from voicecheck.model import TRUSTED_TYPES, default_model_path

    assert set(sio.get_untrusted_types(file=default_model_path())) <= set(TRUSTED_TYPES)


@pytest.mark.parametrize("which", ["shipped", "session"])
def test_flat_forest_gives_scikit_learns_probabilities_exactly(which, small_model, rng):
    detector = load_model() if which == "shipped" else small_model
    assert detector._forest is not None  # the fast path is in use for these models
    X = rng.standard_normal((FlatForest.MAX_ROWS, len(feature_names()))).astype(np.float32) * 3
    X[rng.random(X.shape) < 0.2] = np.nan  # missing values take each node's learned side
    X[0] = np.nan
    X[1] = np.inf
    X[2] = -np.inf
    expected = detector.estimator.predict_proba(X)[:, 1]
    np.testing.assert_array_equal(detector.predict_proba(X), expected)
    np.testing.assert_array_equal(detector.predict_proba(X[:1]), expected[:1])


def test_flat_forest_is_not_built_for_models_it_cannot_reproduce(small_model):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).standard_normal((60, 3))
    y = (X[:, 0] > 0).astype(int)
    isotonic = CalibratedClassifierCV(LogisticRegression(), method="isotonic", cv=2).fit(X, y)
    assert FlatForest.from_estimator(isotonic, n_features=3) is None
    assert FlatForest.from_estimator(LogisticRegression().fit(X, y), n_features=3) is None
