"""Shared fixtures: seeded randomness, speech-like signals, a small trained model."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from voicecheck.analysis import feature_names

SR = 16_000

# The atheris harness is a program (run by tests/test_hostile_input.py), not a test module.
collect_ignore = ["fuzz_decode.py"]


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
    held_out = model.predict_proba(X[400:])[:, 1]
    card = {
        "name": "test-small",
        "thresholds": {"cloned": 0.8, "human": 0.3, "eer": 0.5},
        "metrics": {
            "protocol": "synthetic vectors, held-out third",
            "pooled": {"eer": 0.2},
            "verdict_promise": {
                "n_sites": 12,
                "n_boot": 1000,
                "real_called_cloned": {"rate": 0.008, "low": 0.0, "high": 0.021},
                "cloned_called_human": {"rate": 0.047, "low": 0.02, "high": 0.081},
            },
        },
        "validation_scores": {
            "real": np.round(np.sort(held_out[y[400:] == 0]), 4).tolist(),
            "cloned": np.round(np.sort(held_out[y[400:] == 1]), 4).tolist(),
        },
    }
    save_model(model, card, path)
    return load_model(path)


@pytest.fixture(autouse=True, scope="session")
def _private_feature_cache(tmp_path_factory):
    """Keep the tests' feature cache out of the user's home folder."""
    import os

    os.environ["VOICECHECK_CACHE_DIR"] = str(tmp_path_factory.mktemp("feature-cache"))


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory, espeak_speech):
    """4 sources, each with 3 'real' (harmonic) and 3 'cloned' (espeak-ng, 2 kinds) clips."""
    root = tmp_path_factory.mktemp("corpus")
    y_tts, sr_tts = espeak_speech
    rows = ["path,label,system,source"]
    for s in range(4):
        for k in range(3):
            real = root / f"s{s}_real{k}.wav"
            sf.write(real, voiced(6.0, sr=16000, f0=110 + 25 * k + 5 * s, seed=s * 10 + k), 16000)
            rows.append(f"{real.name},bonafide,bonafide,src{s}")
            fake = root / f"s{s}_fake{k}.wav"
            start = int((0.3 * k + 0.1 * s) * sr_tts)
            if k < 2:
                sf.write(fake, y_tts[start:], sr_tts)
                rows.append(f"{fake.name},spoof,espeak-ng,src{s}")
            else:  # a second "generator": the same voice played 12 % faster and higher
                sf.write(fake, y_tts[start:], int(sr_tts * 1.12))
                rows.append(f"{fake.name},spoof,espeak-ng-fast,src{s}")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    manifest = root / "m.yaml"
    manifest.write_text(
        f"""
datasets:
  - name: tiny
    root: {root}
    files: {{csv: list.csv}}
    label: {{column: label}}
    generator: {{column: system}}
    source: {{column: source}}
    group_by: source
"""
    )
    return manifest


def make_service_app(tmp_path, detector, **settings):
    """A service application in ``tmp_path/data`` (job runner off: tests run jobs)."""
    from voicecheck.service import create_app

    return create_app(
        {
            "data_dir": str(tmp_path / "data"),
            "detector": detector,
            "job_runner": False,
            "log_format": "text",
            "log_level": "WARNING",
            **settings,
        }
    )


@pytest.fixture
def service_app(tmp_path, small_model):
    """A service application on a fresh data folder."""
    app = make_service_app(tmp_path, small_model)
    app.config["TESTING"] = True
    yield app
    app.extensions["voicecheck"].store.dispose()


@pytest.fixture
def client(service_app):
    return service_app.test_client()


@pytest.fixture
def api_key(service_app) -> str:
    """A key with the analyze and read scopes."""
    from voicecheck.service.auth import create_key

    return create_key(service_app.extensions["voicecheck"].store, "test-partner")[1]


@pytest.fixture
def auth(api_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture(scope="session")
def g711_call(tmp_path_factory, espeak_speech) -> bytes:
    """10 s of espeak-ng speech as a G.711 mu-law WAV at 8 kHz (bytes)."""
    import io

    import soxr

    y, sr = espeak_speech
    y8 = soxr.resample(y, sr, 8000)
    reps = int(np.ceil(10 * 8000 / y8.size))
    y8 = np.tile(y8, reps)[: 10 * 8000]
    buf = io.BytesIO()
    sf.write(buf, y8, 8000, format="WAV", subtype="ULAW")
    return buf.getvalue()
