"""Shared fixtures: seeded randomness, speech-like signals, a small trained model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from voicecheck.analysis import feature_names

SR = 16_000


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240)


def voiced(
    duration_s: float = 2.0, *, sr: int = SR, f0: float = 140.0, seed: int = 0
) -> np.ndarray:
    """A speech-like signal: a harmonic complex with vibrato and syllable-rate loudness."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * sr)) / sr
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 4 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 20) if k * f0 < sr / 2 - 200)
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t - np.pi / 2)) ** 2
    y = y * envelope + 0.003 * rng.standard_normal(t.size)
    return (0.25 * y / np.max(np.abs(y))).astype(np.float32)


@pytest.fixture
def speech_like() -> np.ndarray:
    return voiced()


@pytest.fixture(scope="session")
def espeak_speech():
    """A real spoken sentence from espeak-ng (skips when espeak-ng is missing)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (make system-deps)")
    from voicecheck.samples import espeak

    return espeak("Your polling place has changed. Please vote next Tuesday instead.")


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """A small model trained once per session on synthetic feature vectors."""
    from voicecheck.model import build_pipeline, calibrate, load_model, save_model

    rng = np.random.default_rng(7)
    n, d = 600, len(feature_names())
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.standard_normal(n) > 0).astype(int)
    fitted = build_pipeline(max_iter=30, early_stopping=False).fit(X[:400], y[:400])
    model = calibrate(fitted, X[400:], y[400:])
    path = tmp_path_factory.mktemp("model") / "small.skops"
    save_model(
        model, {"name": "test-small", "thresholds": {"cloned": 0.8, "human": 0.3, "eer": 0.5}}, path
    )
    return load_model(path)


@pytest.fixture(autouse=True, scope="session")
def _private_feature_cache(tmp_path_factory):
    """Keep the tests' feature cache out of the user's home folder."""
    import os

    os.environ["VOICECHECK_CACHE_DIR"] = str(tmp_path_factory.mktemp("feature-cache"))
