import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import voiced

from voicecheck.cli import main


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def calls(tmp_path):
    """A G.711 call, a stereo call, a file that is not audio, and a silent file."""
    good = tmp_path / "call é.wav"
    sf.write(good, voiced(6.0, sr=8000), 8000, subtype="ULAW")
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([voiced(4.0, sr=8000), voiced(4.0, sr=8000, f0=200)], 1), 8000)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all, just text pretending to be a wav file")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 8000)
    return {"good": good, "stereo": stereo, "text": text, "silent": silent}


def test_score_prints_a_table(runner, calls):
    result = runner.invoke(main, ["score", str(calls["good"])])
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()[:2]
    assert header.split()[:4] == ["FILE", "SCORE", "VERDICT", "DURATION"]
    assert "call é.wav" in row
    assert any(v in row for v in ("likely_cloned", "likely_human", "inconclusive"))
    assert "pcm_mulaw 8000 Hz" in row


def test_json_has_full_results(runner, calls):
    result = runner.invoke(main, ["score", "--format", "json", str(calls["good"])])
    assert result.exit_code == 0
    (row,) = json.loads(result.output)
    assert 0 <= row["score"] <= 1 and row["error"] is None
    assert row["audio"]["codec"] == "pcm_mulaw"
    assert "segments" not in row


def test_segments_option(runner, calls):
    result = runner.invoke(main, ["score", "--format", "json", "--segments", str(calls["good"])])
    (row,) = json.loads(result.output)
    assert len(row["segments"]) >= 3
    assert {"start_s", "end_s", "score"} == set(row["segments"][0])
    table = runner.invoke(main, ["score", "--segments", str(calls["good"])])
    seg_lines = [line for line in table.output.splitlines() if line.strip().startswith("ch0")]
    assert len(seg_lines) == len(row["segments"])
    assert seg_lines[0].split()[1].startswith("0.00-")


def test_csv_one_row_per_input_and_going_on_after_errors(runner, calls, tmp_path):
    out = tmp_path / "results.csv"
    missing = tmp_path / "missing.wav"
    result = runner.invoke(
        main,
        [
            "score",
            "--format",
            "csv",
            "--output",
            str(out),
            str(calls["good"]),
            str(calls["text"]),
            str(missing),
            str(calls["silent"]),
            str(calls["stereo"]),
        ],
    )
    assert result.exit_code == 1
    assert "3 of 5 file(s) could not be scored" in result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["path"] for r in rows] == [
        str(calls[k]) if k != "missing" else str(missing)
        for k in ("good", "text", "missing", "silent", "stereo")
    ]
    assert list(rows[0])[:4] == ["path", "score", "verdict", "error"]
    good, text, miss, silent, stereo = rows
    assert good["error"] == "" and 0 <= float(good["score"]) <= 1
    assert text["error_code"] == "unsupported_format" and "not a recognised audio" in text["error"]
    assert "does not exist" in miss["error"]
    assert silent["error_code"] == "no_speech"
    assert stereo["channels"] == "2" and len(stereo["channel_scores"].split(";")) == 2


def test_input_list(runner, calls, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text(f"# calls of Monday\n{calls['good']}\n\n{calls['stereo']}\n")
    result = runner.invoke(main, ["score", "--format", "json", "--input-list", str(lst)])
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in json.loads(result.stdout)] == [
        str(calls["good"]),
        str(calls["stereo"]),
    ]


def test_usage_errors_exit_2(runner, calls):
    assert runner.invoke(main, ["score"]).exit_code == 2
    assert runner.invoke(main, ["score", "--format", "xml", str(calls["good"])]).exit_code == 2
    assert runner.invoke(main, ["frobnicate"]).exit_code == 2


def test_bad_model_is_a_readable_error(runner, calls, tmp_path):
    result = runner.invoke(
        main, ["score", "--model", str(tmp_path / "x.skops"), str(calls["good"])]
    )
    assert result.exit_code == 1
    assert "Error: model file" in result.output and "Traceback" not in result.output


def test_info_prints_the_card(runner):
    result = runner.invoke(main, ["info"])
    assert result.exit_code == 0
    assert result.output.startswith("model            voicecheck-default-")
    assert "EER" in result.output
    card = json.loads(runner.invoke(main, ["info", "--json"]).output)
    assert len(card["feature_names"]) > 100


def test_installed_console_script_end_to_end(calls, tmp_path):
    exe = shutil.which(
        "voicecheck",
        path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    )
    assert exe, "the voicecheck console script is not installed"
    many = [str(calls["good"])] * 3
    proc = subprocess.run(
        [exe, "score", "--format", "csv", *many], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 3 and len({r["score"] for r in rows}) == 1
    assert "Scoring" in proc.stderr  # progress goes to stderr, never into the CSV


def test_sample_writes_a_g711_robocall(runner, tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng missing")
    out = tmp_path / "robocall.wav"
    result = runner.invoke(main, ["sample", str(out)])
    assert result.exit_code == 0
    info = sf.info(out)
    assert (info.samplerate, info.subtype) == (8000, "ULAW") and info.duration > 3
