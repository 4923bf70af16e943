"""Training and evaluation end to end on a small corpus the test writes itself."""

import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import voiced

from voicecheck.cli import main
from voicecheck.model import load_model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, espeak_speech):
    """4 sources, each with 3 'real' (harmonic) and 3 'cloned' (espeak-ng) clips."""
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
            sf.write(fake, y_tts[start:], sr_tts)
            rows.append(f"{fake.name},spoof,espeak-ng,src{s}")
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


@pytest.mark.slow
def test_train_then_evaluate(corpus, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(
        main,
        [
            "train",
            "--manifest",
            str(corpus),
            "--output",
            str(out),
            "--copies",
            "1",
            "--folds",
            "4",
            "--jobs",
            "1",
            "--name",
            "tiny",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "grouped validation: EER" in result.output
    for name in ("model.skops", "model.card.json", "metrics.json", "config.json"):
        assert (out / name).exists()
    detector = load_model(out / "model.skops")
    card = detector.card
    assert card["model_id"].startswith("tiny-")
    assert card["data_manifest"]["datasets"] == ["tiny"]
    assert len(card["data_manifest"]["sha256"]) == 64
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_clips"] == 24
    assert set(metrics["per_source"]) == {"src0", "src1", "src2", "src3"}
    # Harmonic tones against espeak-ng are easy to tell apart even out of group.
    assert metrics["pooled"]["eer"] < 0.2
    assert 0 <= card["thresholds"]["human"] <= card["thresholds"]["cloned"] <= 1

    report = tmp_path / "eval.json"
    result = runner.invoke(
        main,
        [
            "evaluate",
            "--model",
            str(out / "model.skops"),
            "--manifest",
            str(corpus),
            "--condition",
            "amr_nb",
            "--jobs",
            "1",
            "--output",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "through amr_nb: EER" in result.output
    evaluation = json.loads(report.read_text())
    assert evaluation["condition"] == "amr_nb"
    assert evaluation["pooled"]["n_real"] == 12 and evaluation["pooled"]["n_cloned"] == 12
    assert set(evaluation["at_shipped_thresholds"]["cloned"]) == {"false_alarm_rate", "miss_rate"}


def test_unknown_condition_is_a_readable_error(corpus):
    result = CliRunner().invoke(
        main, ["evaluate", "--manifest", str(corpus), "--condition", "g729"]
    )
    assert result.exit_code == 1
    assert "unknown condition 'g729'" in result.output


def test_training_needs_two_classes(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    sf.write(tmp_path / "a.wav", voiced(2.0, sr=8000), 8000)
    sf.write(tmp_path / "b.wav", voiced(2.0, sr=8000, f0=180), 8000)
    m = tmp_path / "m.yaml"
    m.write_text(
        f"datasets:\n  - name: r\n    root: {tmp_path}\n    files: {{glob: '*.wav'}}\n"
        "    label: bonafide\n    source: one\n"
    )
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--manifest",
            str(m),
            "--output",
            str(tmp_path / "o"),
            "--jobs",
            "1",
            "--copies",
            "1",
        ],
    )
    assert result.exit_code == 1
    assert "needs real and cloned clips" in result.output


def test_same_seed_same_features(corpus):
    from voicecheck.manifest import load_manifest
    from voicecheck.training import build_table, training_chains

    clips = load_manifest(corpus).clips()[:4]
    a = build_table(clips, chains=training_chains, copies=1, seed=3, n_jobs=1)
    b = build_table(clips, chains=training_chains, copies=1, seed=3, n_jobs=1)
    np.testing.assert_array_equal(a.X, b.X)
    assert [c["chain"] for c in a.clips] == [c["chain"] for c in b.clips]
