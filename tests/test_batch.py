"""Batch scoring on a real Dask cluster: inputs, outputs, resume after a crash, training."""

import csv
import hashlib
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pyarrow.dataset as ds
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import voiced
from distributed import Client, KilledWorker, LocalCluster

from voicecheck.batch import COLUMNS, THREAD_ENV, loaded_models, map_unordered
from voicecheck.cli import main
from voicecheck.model import save_model

VERDICTS = {"likely_cloned", "likely_human", "inconclusive"}


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes; a task whose worker dies fails at once (no retry on death)."""
    settings = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.nanny.pre-spawn-environ": THREAD_ENV,  # as voicecheck's own clusters
    }
    with dask.config.set(settings):
        local = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    with Client(local, set_as_default=False) as warm:  # imports, so that tests time their work
        warm.run(importlib.import_module, "voicecheck.scoring")
    yield local
    local.close()


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture(scope="module")
def models(small_model, tmp_path_factory):
    """Two model files with the same estimator and different ids."""
    root = tmp_path_factory.mktemp("batch-models")
    card = {k: small_model.card[k] for k in ("thresholds", "metrics", "validation_scores")}
    return {
        name: save_model(small_model.estimator, {**card, "name": name}, root / f"{name}.skops")
        for name in ("first", "second")
    }


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    """12 calls in a folder tree, a text file, a silent call, a hidden file, a non-match."""
    root = tmp_path_factory.mktemp("calls")
    good = []
    for i in range(12):
        folder = root / ("" if i < 6 else f"day{i % 3}")
        folder.mkdir(exist_ok=True)
        path = folder / f"call {i} é.wav"
        sf.write(path, voiced(3.0, sr=8000, f0=100 + 9 * i, seed=i), 8000, subtype="ULAW")
        good.append(path)
    text = root / "notes.wav"
    text.write_text("this is not audio at all, just text pretending to be a wav file")
    silent = root / "day1" / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 8000)
    (root / ".hidden.wav").write_bytes(b"RIFF")
    (root / ".trash").mkdir()
    sf.write(root / ".trash" / "old.wav", voiced(3.0, sr=8000), 8000)
    (root / "readme.txt").write_text("calls of Monday")
    return {"root": root, "good": good, "text": text, "silent": silent}


@pytest.fixture(scope="module")
def many_calls(tmp_path_factory):
    """30 calls of 10 s: long enough that a batch is still running when a test stops it."""
    root = tmp_path_factory.mktemp("many")
    bases = [voiced(10.0, sr=8000, f0=100 + 30 * k, seed=k) for k in range(3)]
    for i in range(30):
        y = np.roll(bases[i % 3], 800 * i)
        sf.write(root / f"c{i:02d}.wav", y, 8000, subtype="ULAW")
    return root


def batch(cluster, *args, input=None):
    return CliRunner().invoke(
        main, ["batch", *map(str, args), "--scheduler", cluster.scheduler_address], input=input
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    """The whole rows of a batch CSV (a row a kill cut short is left out)."""
    data = path.read_bytes()
    text = data[: data.rfind(b"\n") + 1].decode("utf-8")
    return list(csv.DictReader(text.splitlines(keepends=True)))


def _digest(model: Path) -> str:
    return hashlib.sha256(model.read_bytes()).hexdigest()[:12]


def data_rows(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def wait_for_rows(path: Path, n: int, *, proc=None, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while data_rows(path) < n:
        assert proc is None or proc.poll() is None, "the batch ended before the test stopped it"
        assert time.monotonic() < deadline, f"{path} has fewer than {n} rows after {timeout_s} s"
        time.sleep(0.005)


def test_folder_to_csv_one_row_per_file_then_resume_skips_all(
    cluster, client, calls, models, tmp_path
):
    out = tmp_path / "out.csv"
    args = [calls["root"], "--output", out, "--model", models["first"], "--pattern", "*.wav"]
    result = batch(cluster, *args, "--files-per-task", 3)
    assert result.exit_code == 1, result.output  # two files cannot be scored
    assert "scored 12 file(s), 2 failed, 0 skipped" in result.output
    rows = read_csv(out)
    assert tuple(rows[0]) == COLUMNS
    by_path = {r["path"]: r for r in rows}
    assert len(rows) == len(by_path) == 14
    assert set(by_path) == {str(p) for p in [*calls["good"], calls["text"], calls["silent"]]}
    model_id = f"first-{_digest(models['first'])}"
    for path in calls["good"]:
        r = by_path[str(path)]
        assert 0 <= float(r["score"]) <= 1 and r["verdict"] in VERDICTS, r
        assert r["error"] == "" and r["codec"] == "pcm_mulaw" and r["sample_rate"] == "8000"
        assert float(r["duration_s"]) == 3.0 and r["channels"] == "1"
        assert r["model_id"] == model_id and r["scored_at"].endswith("Z")
        assert int(r["size_bytes"]) == path.stat().st_size and float(r["elapsed_ms"]) > 0
    text, silent = by_path[str(calls["text"])], by_path[str(calls["silent"])]
    assert text["error_code"] == "unsupported_format" and text["score"] == ""
    assert silent["error_code"] == "no_speech" and silent["duration_s"] == "2.0"
    # every worker loaded the model once and kept it
    assert set(map(tuple, client.run(loaded_models).values())) == {(model_id,)}

    again = batch(cluster, *args)
    assert again.exit_code == 0, again.output
    assert "scored 0 file(s), 0 failed, 14 skipped" in again.output
    assert read_csv(out) == rows


def test_list_to_parquet_parts_and_retry_errors(cluster, calls, models, tmp_path):
    out = tmp_path / "scores.parquet"
    missing = tmp_path / "missing.wav"
    listed = [*calls["good"][:5], calls["text"], missing]
    lst = tmp_path / "list.txt"
    lst.write_text(
        "# calls of Monday\n\n" + "\n".join(f"  {p}" for p in listed) + f"\n{listed[0]}\n"
    )
    args = [lst, "-o", out, "--model", models["first"], "--files-per-task", 2, "--part-rows", 3]
    result = batch(cluster, *args)
    assert result.exit_code == 1, result.output
    parts = sorted(p.name for p in out.iterdir())
    assert parts == [f"part-{i:05d}.parquet" for i in range(len(parts))] and len(parts) >= 3
    table = ds.dataset(out, format="parquet").to_table()
    assert table.schema.names == list(COLUMNS)
    rows = {r["path"]: r for r in table.to_pylist()}
    assert table.num_rows == len(rows) == 7  # the line listed twice is scored once
    for path in listed[:5]:
        assert 0 <= rows[str(path)]["score"] <= 1 and rows[str(path)]["verdict"] in VERDICTS
    assert rows[str(calls["text"])]["error_code"] == "unsupported_format"
    assert "does not exist" in rows[str(missing)]["error"]

    sf.write(missing, voiced(3.0, sr=8000), 8000)  # the missing file arrives
    leftover = out / ".part-00009.parquet.4242.tmp"  # a part a crash left half written
    leftover.write_bytes(b"PAR1 and then nothing")
    assert ds.dataset(out, format="parquet").count_rows() == 7  # readers skip it
    retried = batch(cluster, *args, "--retry-errors")
    assert retried.exit_code == 1, retried.output  # notes.wav is still not audio
    assert "removed 2 error row(s)" in retried.output
    assert "scored 1 file(s), 1 failed, 6 skipped" in retried.output  # 5 done, 1 listed twice
    after = {r["path"]: r for r in ds.dataset(out, format="parquet").to_table().to_pylist()}
    assert len(after) == 7 and ds.dataset(out, format="parquet").count_rows() == 7
    assert not leftover.exists()
    assert after[str(missing)]["error"] is None and 0 <= after[str(missing)]["score"] <= 1
    for path in listed[:5]:
        assert after[str(path)]["scored_at"] == rows[str(path)]["scored_at"]


def test_list_from_standard_input(cluster, calls, models, tmp_path):
    out = tmp_path / "out.csv"
    paths = "\n".join(str(p) for p in calls["good"][:3]) + "\n"
    result = batch(cluster, "-", "-o", out, "--model", models["first"], input=paths)
    assert result.exit_code == 0, result.output
    assert sorted(r["path"] for r in read_csv(out)) == sorted(str(p) for p in calls["good"][:3])


def test_torn_last_csv_line_is_cut_and_its_file_scored_again(cluster, calls, models, tmp_path):
    out = tmp_path / "out.csv"
    folder = calls["root"] / "day0"
    args = [folder, "-o", out, "--model", models["first"]]
    assert batch(cluster, *args).exit_code == 0
    before = read_csv(out)
    data = out.read_bytes()
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
    out.write_bytes(data[: len(data) - len(last) // 2 - 1])  # a crash in the middle of a row
    torn_path = before[-1]["path"]

    result = batch(cluster, *args)
    assert result.exit_code == 0, result.output
    assert "removed an incomplete last row" in result.output
    assert "scored 1 file(s), 0 failed, 1 skipped" in result.output
    after = read_csv(out)
    assert sorted(r["path"] for r in after) == sorted(r["path"] for r in before)
    assert after[:-1] == before[:-1] and after[-1]["path"] == torn_path
    assert after[-1]["scored_at"] > before[-1]["scored_at"]


def test_another_model_or_layout_is_refused_until_restart(cluster, calls, models, tmp_path):
    out = tmp_path / "out.csv"
    folder = calls["root"] / "day0"
    assert batch(cluster, folder, "-o", out, "--model", models["first"]).exit_code == 0
    kept = out.read_bytes()

    refused = batch(cluster, folder, "-o", out, "--model", models["second"])
    assert refused.exit_code == 2
    assert f"holds results of the model first-{_digest(models['first'])}" in refused.output
    assert f"this run scores with second-{_digest(models['second'])}" in refused.output
    assert "--restart" in refused.output and "Traceback" not in refused.output
    assert out.read_bytes() == kept

    restarted = batch(cluster, folder, "-o", out, "--model", models["second"], "--restart")
    assert restarted.exit_code == 0, restarted.output
    assert {r["model_id"] for r in read_csv(out)} == {f"second-{_digest(models['second'])}"}

    other = tmp_path / "other.csv"
    other.write_text("path,score\na.wav,0.5\n")
    layout = batch(cluster, folder, "-o", other, "--model", models["first"])
    assert layout.exit_code == 2 and "has the columns path, score" in layout.output
    assert other.read_text() == "path,score\na.wav,0.5\n"


def test_usage_errors_exit_2(cluster, calls, models, tmp_path):
    assert batch(cluster, tmp_path / "nowhere", "-o", tmp_path / "o.csv").exit_code == 2
    unknown = batch(cluster, calls["root"], "-o", tmp_path / "out.json")
    assert unknown.exit_code == 2 and "end it with .csv or .parquet" in unknown.output
    lst = tmp_path / "list.txt"
    lst.write_text(f"{calls['good'][0]}\n")
    assert batch(cluster, lst, "-o", tmp_path / "o.csv", "--pattern", "*.wav").exit_code == 2
    both = CliRunner().invoke(
        main,
        ["batch", str(lst), "-o", str(tmp_path / "o.csv"), "--workers", "2", "--scheduler", "x"],
    )
    assert both.exit_code == 2


def test_sigterm_stops_cleanly_and_the_next_run_goes_on(cluster, many_calls, models, tmp_path):
    out = tmp_path / "out.csv"
    args = [many_calls, "-o", out, "--model", models["first"], "--files-per-task", 1]
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a late signal must not kill pytest

    def terminate_after_rows() -> None:
        wait_for_rows(out, 4)
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=terminate_after_rows)
    try:
        watcher.start()
        stopped = batch(cluster, *args)
        watcher.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.exit_code == 143, stopped.output
    assert "interrupted: run the same command again" in stopped.output
    first = read_csv(out)
    assert 4 <= len(first) < 30 and out.read_bytes().endswith(b"\n")

    resumed = batch(cluster, *args)
    assert resumed.exit_code == 0, resumed.output
    assert f", {len(first)} skipped" in resumed.output
    rows = read_csv(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in many_calls.iterdir())
    assert rows[: len(first)] == first


@pytest.mark.slow
def test_resume_after_kill_9_of_the_process_group(cluster, many_calls, models, tmp_path):
    out = tmp_path / "out.csv"
    args = [many_calls, "-o", out, "--model", models["first"], "--files-per-task", 1]
    command = [sys.executable, "-m", "voicecheck.cli", "batch", *map(str, args), "--workers", "1"]
    proc = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_rows(out, 5, proc=proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, stderr.decode()
    before = {r["path"]: r for r in read_csv(out)}
    assert 5 <= len(before) < 30

    result = batch(cluster, *args)
    assert result.exit_code == 0, result.output
    assert f"{len(before)} skipped" in result.output
    rows = read_csv(out)
    paths = [r["path"] for r in rows]
    assert sorted(paths) == sorted(str(p) for p in many_calls.iterdir())  # each file once
    for r in rows:
        if r["path"] in before:
            assert r == before[r["path"]]  # not scored again
        assert 0 <= float(r["score"]) <= 1


def test_a_worker_killed_mid_task_loses_no_file(cluster, client, many_calls, models, tmp_path):
    out = tmp_path / "out.csv"
    args = [many_calls, "-o", out, "--model", models["first"], "--files-per-task", 5]

    def kill_a_worker() -> None:
        wait_for_rows(out, 1)
        os.kill(next(iter(client.run(os.getpid).values())), signal.SIGKILL)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    result = batch(cluster, *args)
    killer.join()
    assert result.exit_code == 0, result.output
    assert "scored again, one a task, after their worker died" in result.output
    rows = read_csv(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in many_calls.iterdir())
    assert all(r["error"] == "" and 0 <= float(r["score"]) <= 1 for r in rows)
    client.wait_for_workers(2, timeout=60)


def test_build_table_on_the_cluster_equals_in_process(
    cluster, tiny_manifest, monkeypatch, tmp_path
):
    from voicecheck.research.manifest import load_manifest
    from voicecheck.research.training import build_table, training_chains

    clips = load_manifest(tiny_manifest).clips()[::6]
    monkeypatch.setenv("VOICECHECK_CACHE_DIR", str(tmp_path / "cache"))
    done = []
    on_cluster = build_table(
        clips,
        chains=training_chains,
        copies=2,
        seed=5,
        n_jobs=2,
        scheduler=cluster.scheduler_address,
        progress=lambda n, total: done.append((n, total)),
    )
    assert done[-1] == (2 * len(clips), 2 * len(clips))
    assert len(list((tmp_path / "cache" / "features").glob("*.npz"))) == 2 * len(clips)
    monkeypatch.setenv("VOICECHECK_CACHE_DIR", "")  # compute again, without the cache
    here = build_table(clips, chains=training_chains, copies=2, seed=5, n_jobs=1)
    np.testing.assert_array_equal(on_cluster.X, here.X)
    np.testing.assert_array_equal(on_cluster.y, here.y)
    np.testing.assert_array_equal(on_cluster.clip_of_row, here.clip_of_row)
    assert on_cluster.clips == here.clips and on_cluster.skipped == here.skipped


def test_map_unordered_draws_items_as_tasks_finish(client):
    drawn = []

    def items():
        for i in range(40):
            drawn.append(i)
            yield i

    results = []
    for item, value in map_unordered(abs, (-i for i in items()), client=client, window=3):
        results.append((item, value))
        assert len(drawn) <= len(results) + 3
    assert sorted(v for _, v in results) == list(range(40))
    assert all(value == -item for item, value in results)


def test_map_unordered_returns_the_death_of_a_worker(client):
    outcomes = dict(map_unordered(os._exit, [3], client=client, errors="return"))
    assert isinstance(outcomes[3], KilledWorker)
    with pytest.raises(KilledWorker):
        list(map_unordered(os._exit, [4], client=client))
    client.wait_for_workers(2, timeout=60)
