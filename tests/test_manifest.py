from pathlib import Path

import pytest

from voicecheck.errors import ManifestError
from voicecheck.research.manifest import expand_vars, load_manifest

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return p


def test_shipped_manifest_lists_the_dev_pool():
    m = load_manifest(ROOT / "data_manifest.yaml")
    dev = m.dataset("devpool")
    if not (dev.root / "manifest.csv").exists():
        pytest.skip("shared dev pool not present")
    clips = dev.clips()
    assert len(clips) > 1000
    assert {c.label for c in clips} == {"bonafide", "spoof"}
    assert all(c.path.exists() for c in clips[:50])
    assert clips[0].group.startswith("devpool:")
    assert len(m.sha256(clips)) == 64


def test_env_substitution(monkeypatch):
    monkeypatch.setenv("VC_TEST_ROOT", "/data/x")
    assert expand_vars("${VC_TEST_ROOT}/a") == "/data/x/a"
    monkeypatch.delenv("VC_TEST_ROOT")
    assert expand_vars("${VC_TEST_ROOT:-/fallback}/a") == "/fallback/a"
    with pytest.raises(ManifestError, match="VC_TEST_ROOT is not set"):
        expand_vars("${VC_TEST_ROOT}/a")


def test_glob_dataset_with_constants(tmp_path):
    (tmp_path / "calls").mkdir()
    for name in ("a.wav", "b.wav"):
        (tmp_path / "calls" / name).write_bytes(b"x")
    m = load_manifest(
        write(
            tmp_path,
            """
datasets:
  - name: mine
    root: calls
    files: {glob: "*.wav"}
    label: bonafide
    generator: bonafide
    source: hotline
""",
        )
    )
    clips = m.clips()
    assert [c.path.name for c in clips] == ["a.wav", "b.wav"]
    assert clips[0].group == "mine:hotline" and clips[0].y == 0


def test_csv_dataset_reads_columns(tmp_path):
    (tmp_path / "list.csv").write_text("file,lab,sys\nx.wav,spoof,A01\ny.wav,bonafide,\n")
    m = load_manifest(
        write(
            tmp_path,
            """
datasets:
  - name: la
    root: .
    files: {csv: list.csv, path_column: file}
    label: {column: lab}
    generator: {column: sys, default: bonafide}
    group_by: generator
""",
        )
    )
    a, b = m.clips()
    assert (a.label, a.generator, a.group) == ("spoof", "A01", "la:A01")
    assert (b.label, b.generator) == ("bonafide", "bonafide")


def test_derived_dataset_shares_the_groups_of_its_parent(tmp_path):
    (tmp_path / "real.csv").write_text("file,repo\nx.wav,demo-a\ny.wav,demo-b\n")
    (tmp_path / "copies.csv").write_text("file,repo\nx.wav,demo-a\n")
    m = load_manifest(
        write(
            tmp_path,
            """
datasets:
  - name: pool
    root: .
    files: {csv: real.csv, path_column: file}
    label: bonafide
    source: {column: repo}
  - name: pool-vocoded
    root: .
    files: {csv: copies.csv, path_column: file}
    label: spoof
    generator: hifigan
    source: {column: repo}
    group_with: pool
""",
        )
    )
    real_a, real_b, copy_a = m.clips()
    assert copy_a.dataset == "pool-vocoded"
    assert copy_a.group == real_a.group == "pool:demo-a" != real_b.group


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo: 1", "top-level 'datasets'"),
        (
            "datasets:\n  - name: a\n    root: .\n    files: {glob: '*'}\n    label: spoof\n"
            "    group_with: b\n",
            "'group_with' is 'b', which is not a dataset",
        ),
        ("datasets:\n  - root: x\n", "has no 'name'"),
        ("datasets:\n  - name: a\n    files: {glob: '*'}\n    label: spoof\n", "'a' has no 'root'"),
        (
            "datasets:\n  - name: a\n    root: .\n    files: {zip: x}\n    label: spoof\n",
            "'a', field 'files'",
        ),
        (
            "datasets:\n  - name: a\n    root: .\n    files: {glob: '*'}\n    label: spoof\n"
            "    group_by: clip\n",
            "field 'group_by'",
        ),
        ("datasets: [\n", "not valid YAML"),
    ],
)
def test_invalid_manifests_name_dataset_and_field(tmp_path, text, message):
    with pytest.raises(ManifestError, match=message):
        load_manifest(write(tmp_path, text))


def test_bad_label_names_row(tmp_path):
    (tmp_path / "l.csv").write_text("path,label\na.wav,fake\n")
    m = load_manifest(
        write(
            tmp_path,
            """
datasets:
  - name: d
    root: .
    files: {csv: l.csv}
    label: {column: label}
""",
        )
    )
    with pytest.raises(ManifestError, match="dataset 'd', row 1: label is 'fake'"):
        m.clips()


def test_missing_csv_is_explained(tmp_path):
    m = load_manifest(
        write(
            tmp_path,
            "datasets:\n  - name: d\n    root: nowhere\n"
            "    files: {csv: m.csv}\n    label: spoof\n",
        )
    )
    with pytest.raises(ManifestError, match="does not exist"):
        m.clips()


def test_optional_dataset_is_skipped_until_built(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    m = load_manifest(
        write(
            tmp_path,
            """
datasets:
  - name: here
    root: .
    files: {glob: "*.wav"}
    label: bonafide
  - name: later
    root: not-built-yet
    optional: true
    files: {csv: manifest.csv}
    label: {column: label}
""",
        )
    )
    assert [c.dataset for c in m.clips()] == ["here"]
    assert [d.name for d in m.missing_optional()] == ["later"]
    with pytest.raises(ManifestError, match="does not exist"):
        m.clips(["later"])
