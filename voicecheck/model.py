"""The detector: a calibrated gradient-boosting pipeline, its safe file and its card.

A model is two files side by side: ``NAME.skops`` (the scikit-learn estimator,
saved with :mod:`skops.io`, which never runs code on load) and ``NAME.card.json``
(feature names and parameters, library versions, training-data manifest hash,
metrics and thresholds). :func:`load_model` checks the card against this
installation and refuses a mismatch with a message that says what to do.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import skops
import skops.io as sio
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline

from . import __version__, constants
from .analysis import feature_names
from .errors import ModelError

CARD_SCHEMA = 1
VERDICTS = ("likely_human", "inconclusive", "likely_cloned")

# The only types a voicecheck model file may contain. skops refuses everything else,
# so a crafted file cannot make the loader run code.
TRUSTED_TYPES = [
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.float64",
    "numpy.int64",
    "numpy.random.mtrand.RandomState",
    "numpy.random._mt19937.MT19937",
    "builtins.slice",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.frozen._frozen.FrozenEstimator",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._label.LabelEncoder",
    "collections.OrderedDict",
]

DEFAULT_HGB_PARAMS: dict[str, Any] = {
    "learning_rate": 0.1,
    "max_iter": 150,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "max_features": 0.5,
    # Early stopping on a random split of segments would validate on clips (and sources)
    # the booster trains on; voicecheck.research.training stops early on a held-out source instead.
    "early_stopping": False,
}


def build_pipeline(*, random_state: int = 0, **params: Any) -> Pipeline:
    """Return the untrained classifier pipeline.

    Parameters
    ----------
    random_state : int
        Seed for the booster's subsampling and early-stopping split.
    **params
        Overrides of :data:`DEFAULT_HGB_PARAMS`.

    Returns
    -------
    sklearn.pipeline.Pipeline
        A single ``HistGradientBoostingClassifier`` step (it handles NaN itself).
    """
    hgb = HistGradientBoostingClassifier(
        **{**DEFAULT_HGB_PARAMS, **params}, random_state=random_state
    )
    return Pipeline([("hgb", hgb)])


def calibrate(
    fitted: Pipeline,
    X: np.ndarray,
    y: np.ndarray,
    *,
    sigmoid: _SigmoidCalibration | None = None,
) -> CalibratedClassifierCV:
    """Calibrate a fitted pipeline on held-out data (Platt scaling).

    Parameters
    ----------
    fitted : Pipeline
        A pipeline fitted on other data.
    X : np.ndarray, shape (n_samples, n_features)
        Held-out feature vectors.
    y : np.ndarray, shape (n_samples,)
        Labels, 1 for cloned and 0 for human.
    sigmoid : _SigmoidCalibration or None
        A Platt scaling already fitted on out-of-site log-odds of other models (the folds
        of a leave-sites-out run); it is used as it is and ``X``, ``y`` may be empty.

    Returns
    -------
    CalibratedClassifierCV
        Whose ``predict_proba(X)[:, 1]`` is the calibrated cloned-voice probability.
    """
    cal = CalibratedClassifierCV(FrozenEstimator(fitted), method="sigmoid")
    if sigmoid is None:
        return cal.fit(X, y)
    # Fit the wrapper's bookkeeping on made-up points, then put the given scaling in.
    n_features = fitted[-1].n_features_in_
    cal.fit(np.zeros((10, n_features), np.float32), np.arange(10) % 2)
    calibrator = cal.calibrated_classifiers_[0].calibrators[0]
    calibrator.a_, calibrator.b_ = float(sigmoid.a_), float(sigmoid.b_)
    return cal


def feature_params() -> dict[str, Any]:
    """Every analysis constant, as written into the model card."""
    return {
        k: getattr(constants, k)
        for k in dir(constants)
        if k.isupper() and isinstance(getattr(constants, k), int | float)
    }


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape features and model."""
    import librosa

    return {
        "voicecheck": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "librosa": librosa.__version__,
        "skops": skops.__version__,
    }


@dataclass(frozen=True)
class Thresholds:
    """Score thresholds that turn a calibrated score into a verdict.

    Attributes
    ----------
    cloned : float
        Scores at or above this are ``likely_cloned`` (chosen for at most 1 % false
        alarms on real voices in validation).
    human : float
        Scores below this are ``likely_human``; in between is ``inconclusive``.
    eer : float
        The equal-error-rate threshold, recorded for reference.
    """

    cloned: float
    human: float
    eer: float

    def verdict(self, score: float) -> str:
        """Return ``likely_cloned``, ``likely_human`` or ``inconclusive``."""
        if score >= self.cloned:
            return "likely_cloned"
        if score < self.human:
            return "likely_human"
        return "inconclusive"

    def to_dict(self) -> dict[str, float]:
        """Return the thresholds as a JSON-ready dict."""
        return {"cloned": self.cloned, "human": self.human, "eer": self.eer}


class Detector:
    """A loaded model with its card.

    Parameters
    ----------
    estimator : object
        A fitted scikit-learn classifier with ``predict_proba``.
    card : dict
        The model card.
    """

    def __init__(self, estimator: Any, card: dict[str, Any]) -> None:
        self.estimator = estimator
        self.card = card
        t = card["thresholds"]
        self.thresholds = Thresholds(cloned=t["cloned"], human=t["human"], eer=t["eer"])
        self._forest = FlatForest.from_estimator(estimator, n_features=len(card["feature_names"]))

    @property
    def model_id(self) -> str:
        """Stable identifier of the model (name and file hash)."""
        return str(self.card["model_id"])

    @property
    def version(self) -> str:
        """Version of voicecheck that trained the model."""
        return str(self.card["library_versions"]["voicecheck"])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Return calibrated cloned-voice probabilities, shape (n_samples,)."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != len(self.card["feature_names"]):
            raise ModelError(
                f"feature matrix has shape {X.shape}; expected (n, "
                f"{len(self.card['feature_names'])})"
            )
        if X.shape[0] == 0:
            return np.zeros(0, np.float64)
        if self._forest is not None and X.shape[0] <= FlatForest.MAX_ROWS:
            return self._forest.predict_proba(X)
        return self.estimator.predict_proba(X)[:, 1]


class FlatForest:
    """The trees of a calibrated gradient-boosting model, evaluated with array operations.

    scikit-learn walks the trees of a ``HistGradientBoostingClassifier`` one Python call
    per tree, and validates the input again in each wrapper (calibration, pipeline), a
    fixed cost that dwarfs the work for the handful of segments of one call. Here all
    trees of all calibrated copies are one node table that every row walks at once, level
    by level; the raw scores are added tree by tree in scikit-learn's order and go through
    the same sigmoid calibration, so the probabilities are the same numbers.

    Built only for what it can reproduce exactly (binary ``CalibratedClassifierCV`` with
    sigmoid calibration of a ``HistGradientBoostingClassifier``, bare or as the only step
    of a ``Pipeline``, numeric features); :meth:`from_estimator` returns None otherwise
    and when a check against scikit-learn's own answer disagrees.
    """

    MAX_ROWS = 128
    """Above this many rows scikit-learn's compiled loop is as fast (measured: 200 rows)."""

    def __init__(
        self,
        nodes: dict[str, np.ndarray],
        roots: np.ndarray,
        copy_of_tree: np.ndarray,
        baselines: np.ndarray,
        calibration: np.ndarray,
        depth: int,
    ) -> None:
        self.nodes = nodes
        self.roots = roots
        self.copy_of_tree = copy_of_tree
        self.baselines = baselines
        self.calibration = calibration
        self.depth = depth

    @classmethod
    def from_estimator(cls, estimator: Any, *, n_features: int) -> FlatForest | None:
        """Flatten ``estimator``, or return None when it is not a supported kind."""
        if not isinstance(estimator, CalibratedClassifierCV) or len(estimator.classes_) != 2:
            return None
        tables, roots, copy_of_tree, baselines, calibration = [], [], [], [], []
        offset, depth = 0, 0
        for k, calibrated in enumerate(estimator.calibrated_classifiers_):
            model = calibrated.estimator
            if isinstance(model, FrozenEstimator):
                model = model.estimator
            if isinstance(model, Pipeline):
                if len(model.steps) != 1:
                    return None
                model = model.steps[0][1]
            if (
                not isinstance(model, HistGradientBoostingClassifier)
                or model.n_trees_per_iteration_ != 1
                or model.is_categorical_ is not None
                or len(calibrated.calibrators) != 1
                or type(calibrated.calibrators[0]) is not _SigmoidCalibration
            ):
                return None
            for (predictor,) in model._predictors:
                nodes = predictor.nodes
                if nodes["is_categorical"].any():
                    return None
                tables.append(nodes)
                roots.append(offset)
                copy_of_tree.append(k)
                offset += len(nodes)
                depth = max(depth, int(nodes["depth"].max()))
            baselines.append(float(np.asarray(model._baseline_prediction).ravel()[0]))
            calibrator = calibrated.calibrators[0]
            calibration.append((float(calibrator.a_), float(calibrator.b_)))
        if not tables:
            return None
        starts = np.array(roots)
        table = np.concatenate(tables)
        shift = np.repeat(starts, [len(t) for t in tables])
        nodes = {
            "feature": table["feature_idx"].astype(np.intp),
            "threshold": table["num_threshold"].astype(np.float64),
            "missing_left": table["missing_go_to_left"].astype(bool),
            "left": table["left"].astype(np.intp) + shift,
            "right": table["right"].astype(np.intp) + shift,
            "leaf": table["is_leaf"].astype(bool),
            "value": table["value"].astype(np.float64),
        }
        forest = cls(
            nodes,
            starts,
            np.array(copy_of_tree),
            np.array(baselines),
            np.array(calibration),
            depth,
        )
        # The same answer as scikit-learn's, or no fast path at all.
        rng = np.random.default_rng(0)
        probe = rng.standard_normal((64, n_features)).astype(np.float32) * 4
        probe[rng.random(probe.shape) < 0.1] = np.nan
        probe = np.vstack([probe, np.zeros((1, n_features), np.float32)])
        try:
            expected = estimator.predict_proba(probe)[:, 1]
        except (ValueError, TypeError):
            return None
        if not np.allclose(forest.predict_proba(probe), expected, rtol=1e-12, atol=1e-15):
            return None
        return forest

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Return the calibrated positive-class probability of each row, shape (n,)."""
        X = np.asarray(X, dtype=np.float64)
        n = self.nodes
        rows = np.arange(X.shape[0])[:, None]
        current = np.broadcast_to(self.roots, (X.shape[0], self.roots.size)).copy()
        for _ in range(self.depth):
            leaf = n["leaf"][current]
            if leaf.all():
                break
            values = X[rows, n["feature"][current]]
            go_left = np.where(
                np.isnan(values), n["missing_left"][current], values <= n["threshold"][current]
            )
            step = np.where(go_left, n["left"][current], n["right"][current])
            current = np.where(leaf, current, step)
        leaf_values = n["value"][current]
        proba = np.zeros(X.shape[0])
        for k, (a, b) in enumerate(self.calibration):
            raw = np.full(X.shape[0], self.baselines[k])
            for column in np.flatnonzero(self.copy_of_tree == k):
                raw += leaf_values[:, column]  # tree by tree, as scikit-learn adds them
            proba += expit(-(a * raw + b))
        return proba / len(self.calibration)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def card_path_for(model_path: Path) -> Path:
    """Return the card file that belongs to ``model_path``."""
    return model_path.with_suffix(".card.json")


def save_model(estimator: Any, card: dict[str, Any], path: str | Path) -> Path:
    """Save ``estimator`` with skops and write its card beside it.

    Returns the path of the ``.skops`` file. The card gains ``model_id``,
    ``skops_sha256``, ``feature_names``, ``feature_params`` and ``library_versions``.
    """
    path = Path(path).with_suffix(".skops")
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump(estimator, path)
    digest = _sha256(path)
    full = {
        "schema": CARD_SCHEMA,
        "model_id": f"{card.get('name', path.stem)}-{digest[:12]}",
        "skops_file": path.name,
        "skops_sha256": digest,
        "feature_names": list(feature_names()),
        "feature_params": feature_params(),
        "library_versions": library_versions(),
        **card,
    }
    card_path_for(path).write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
    return path


def default_model_path() -> Path:
    """Path of the model that ships inside the package."""
    return Path(str(resources.files("voicecheck") / "models" / "default.skops"))


def read_card(path: str | Path) -> dict[str, Any]:
    """Read the card of the model at ``path`` without loading the model."""
    path = Path(path)
    card_path = card_path_for(path.with_suffix(".skops"))
    if not card_path.exists():
        raise ModelError(
            f"model card {card_path} is missing; a model is a .skops file with its "
            ".card.json beside it (train one with `voicecheck train`)"
        )
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"model card {card_path} is not valid JSON: {exc}") from None
    for key in ("model_id", "feature_names", "feature_params", "library_versions", "thresholds"):
        if key not in card:
            raise ModelError(f"model card {card_path} has no '{key}'; retrain the model")
    return card


def check_card(card: dict[str, Any]) -> None:
    """Refuse a card that does not match this installation."""
    names = list(feature_names())
    if card["feature_names"] != names:
        raise ModelError(
            f"model was trained on {len(card['feature_names'])} features that differ from the "
            f"{len(names)} this version computes; retrain it with `voicecheck train` "
            "or install the voicecheck version that made it "
            f"({card['library_versions'].get('voicecheck', '?')})"
        )
    params = feature_params()
    changed = sorted(k for k in params if card["feature_params"].get(k) != params[k])
    if changed:
        raise ModelError(
            f"model was trained with other analysis settings ({', '.join(changed)}); "
            "retrain it with `voicecheck train`"
        )
    trained = card["library_versions"].get("scikit-learn", "")
    if trained.split(".")[:2] != sklearn.__version__.split(".")[:2]:
        raise ModelError(
            f"model was trained with scikit-learn {trained}; this is {sklearn.__version__}. "
            f"Install scikit-learn=={'.'.join(trained.split('.')[:2])}.* or retrain the model"
        )


def load_model(path: str | Path | None = None) -> Detector:
    """Load a model and check it against its card.

    Parameters
    ----------
    path : path or None
        A ``.skops`` file; ``None`` loads the default model shipped in the package.

    Returns
    -------
    Detector

    Raises
    ------
    voicecheck.errors.ModelError
        The file or its card is missing, damaged, altered, holds untrusted types
        or was made by an incompatible installation.
    """
    path = default_model_path() if path is None else Path(path)
    if not path.exists():
        raise ModelError(
            f"model file {path} does not exist; give a .skops file made by `voicecheck train`"
        )
    card = read_card(path)
    digest = _sha256(path)
    if card.get("skops_sha256") != digest:
        raise ModelError(
            f"model file {path} does not match its card (sha256 {digest[:12]}..., card says "
            f"{str(card.get('skops_sha256'))[:12]}...); the file was altered or belongs to "
            "another card: use the pair `voicecheck train` wrote"
        )
    check_card(card)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # skops raises several types on damaged files
        raise ModelError(f"model file {path} cannot be read: {exc}") from None
    unknown = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unknown:
        raise ModelError(
            f"model file {path} contains types voicecheck does not trust: {', '.join(unknown)}; "
            "refusing to load it. Only load models made by `voicecheck train`"
        )
    try:
        estimator = sio.load(path, trusted=sorted(set(untrusted)))
    except Exception as exc:
        raise ModelError(f"model file {path} cannot be loaded: {exc}") from None
    return Detector(estimator, card)
