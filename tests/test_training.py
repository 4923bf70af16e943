"""Training and evaluation end to end on a small corpus the test writes itself."""

import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import voiced

from voicecheck.cli import main
from voicecheck.model import load_model


@pytest.mark.slow
def test_train_then_evaluate(tiny_manifest, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(
        main,
        [
            "train",
            "--manifest",
            str(tiny_manifest),
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
    assert "leave-one-site-out validation (4 sites): EER" in result.output
    assert "verdicts on unseen sites: real called likely_cloned" in result.output
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

    report = tmp_path / "eval"
    result = runner.invoke(
        main,
        [
            "evaluate",
            "--model",
            str(out / "model.skops"),
            "--manifest",
            str(tiny_manifest),
            "--condition",
            "amr_nb",
            "--condition",
            "g711",
            "--jobs",
            "1",
            "--output",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "shipped-model" in result.output and "amr_nb" in result.output
    evaluation = json.loads((report / "metrics.json").read_text())
    conditions = evaluation["protocols"]["shipped-model"]["conditions"]
    assert set(conditions) == {"amr_nb", "g711"}
    pooled = conditions["amr_nb"]["pooled"]
    assert pooled["n_real"] == 12 and pooled["n_cloned"] == 12
    assert set(pooled["at_threshold"]) >= {"cloned", "human", "eer"}
    for name in ("report.md", "report.html", "det.png", "roc.png", "histograms.png", "scores.csv"):
        assert (report / name).stat().st_size > 100


def test_unknown_condition_is_a_readable_error(tiny_manifest):
    result = CliRunner().invoke(
        main, ["evaluate", "--manifest", str(tiny_manifest), "--condition", "g729"]
    )
    assert result.exit_code == 1
    assert "unknown condition 'g729'" in result.output


def test_evaluate_takes_the_training_copies(tiny_manifest, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", "--manifest", str(tiny_manifest), "--copies", "0"])
    assert result.exit_code == 2
    assert "--copies" in result.output and "0" in result.output
    result = runner.invoke(
        main,
        [
            "evaluate",
            "--manifest",
            str(tiny_manifest),
            "--protocol",
            "loso",
            "--condition",
            "g711",
            "--copies",
            "1",
            "--jobs",
            "1",
            "--output",
            str(tmp_path / "eval"),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "eval" / "scores.csv").read_text().splitlines()
    assert len(rows) == 1 + 24  # every clip of the tiny corpus scored once, out of its source


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


def test_same_seed_same_features(tiny_manifest):
    from voicecheck.research.manifest import load_manifest
    from voicecheck.research.training import build_table, training_chains

    clips = load_manifest(tiny_manifest).clips()[:4]
    a = build_table(clips, chains=training_chains, copies=1, seed=3, n_jobs=1)
    b = build_table(clips, chains=training_chains, copies=1, seed=3, n_jobs=1)
    np.testing.assert_array_equal(a.X, b.X)
    assert [c["chain"] for c in a.clips] == [c["chain"] for c in b.clips]


def test_feature_cache_is_reused_until_the_feature_code_changes(tiny_manifest, monkeypatch):
    from voicecheck.research import training
    from voicecheck.research.manifest import load_manifest

    cache = training.cache_dir()
    clips = load_manifest(tiny_manifest).clips()[:2]

    def build():
        before = set(cache.glob("*.npz")) if cache.exists() else set()
        table = training.build_table(
            clips, chains=training.training_chains, copies=1, seed=11, n_jobs=1
        )
        return table, set(cache.glob("*.npz")) - before

    first, written = build()
    assert len(written) == 2  # one entry per clip copy
    again, written = build()
    assert not written  # read back from the cache
    np.testing.assert_array_equal(first.X, again.X)
    monkeypatch.setattr(training, "_feature_code_digest", lambda: "edited feature code")
    _, written = build()
    assert len(written) == 2  # computed afresh, stored under new keys


def _table(cells: dict[tuple[str, int], int]):
    from voicecheck.research.training import Table

    X, y, clip_of_row, clips = [], [], [], []
    for (group, label), n_clips in cells.items():
        for _ in range(n_clips):
            clips.append({"group": group, "label": "spoof" if label else "bonafide"})
            for _ in range(3):  # three segment rows per clip
                X.append([len(clips) - 1.0])
                y.append(label)
                clip_of_row.append(len(clips) - 1)
    return Table(
        X=np.array(X), y=np.array(y), clip_of_row=np.array(clip_of_row), clips=clips, skipped=[]
    )


def test_balanced_rows_cap_every_cell_at_the_median_and_keep_small_cells_whole():
    from voicecheck.research.training import balanced_rows

    table = _table({("big", 0): 40, ("big", 1): 4, ("mid", 0): 5, ("mid", 1): 6, ("small", 1): 1})
    keep = balanced_rows(table, seed=3)
    groups = np.array([c["group"] for c in table.clips])[table.clip_of_row]
    kept = {
        (g, y): int(keep[(groups == g) & (table.y == y)].sum())
        for g, y in [("big", 0), ("big", 1), ("mid", 0), ("mid", 1), ("small", 1)]
    }
    assert kept == {
        ("big", 0): 15,
        ("big", 1): 12,
        ("mid", 0): 15,
        ("mid", 1): 15,
        ("small", 1): 3,
    }  # median cell: 5 clips x 3 rows
    np.testing.assert_array_equal(keep, balanced_rows(table, seed=3))
    assert not np.array_equal(keep, balanced_rows(table, seed=4))


def test_subset_drops_rowless_clips_and_keeps_rows_with_their_clip():
    from voicecheck.research.training import subset

    table = _table({("a", 0): 3, ("a", 1): 2})
    rows = np.zeros(len(table.y), dtype=bool)
    rows[[0, 1, 9, 14]] = True  # clip 0 (two rows), clip 3 (one), clip 4 (one)
    part = subset(table, rows)
    assert len(part.clips) == 3
    assert part.clip_of_row.tolist() == [0, 0, 1, 2]
    # each row still points at its own clip (X holds the original clip index)
    original = {id(c): k for k, c in enumerate(table.clips)}
    assert [original[id(part.clips[i])] for i in part.clip_of_row] == part.X[:, 0].tolist()
