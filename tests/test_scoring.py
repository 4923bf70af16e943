import io

import numpy as np
import pytest
import soundfile as sf
from conftest import voiced

from voicecheck.audio import load_audio
from voicecheck.errors import NoSpeechError
from voicecheck.scoring import analyze, analyze_audio


def wav(y, sr=8000, subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def test_result_has_every_field(small_model):
    result = analyze(wav(voiced(7.0, sr=8000)), small_model).to_dict()
    assert set(result) >= {
        "score",
        "verdict",
        "thresholds",
        "segments",
        "channels",
        "audio",
        "model",
        "processing_ms",
    }
    assert 0 <= result["score"] <= 1
    assert result["verdict"] in {"likely_cloned", "likely_human", "inconclusive"}
    assert result["audio"]["codec"] == "pcm_s16le" and result["audio"]["channels"] == 1
    assert result["model"]["id"].startswith("test-small-")
    assert len(result["segments"]) >= 4
    assert result["segments"][0]["start_s"] == 0.0


def test_channel_score_is_mean_of_speech_segments(small_model):
    result = analyze(wav(voiced(7.0, sr=8000)), small_model)
    scores = [s["score"] for s in result.segments if s["score"] is not None]
    assert result.score == pytest.approx(np.mean(scores), abs=1e-3)


def test_stereo_scores_each_channel_and_reports_the_higher(small_model):
    left = voiced(5.0, sr=8000, f0=120)
    right = voiced(5.0, sr=8000, f0=210, seed=4)
    audio = load_audio(wav(np.stack([left, right], axis=1)))
    result = analyze_audio(audio, small_model)
    assert [c.channel for c in result.channels] == [0, 1]
    scores = [c.score for c in result.channels]
    assert all(s is not None for s in scores)
    assert result.score == max(scores)


def test_silent_channel_is_reported_not_fatal(small_model):
    left = voiced(5.0, sr=8000)
    right = np.zeros_like(left)
    result = analyze(wav(np.stack([left, right], axis=1)), small_model)
    assert result.channels[0].score is not None
    assert result.channels[1].score is None
    assert result.channels[1].error["code"] == "no_speech"


def test_silence_is_refused(small_model):
    with pytest.raises(NoSpeechError, match="silent"):
        analyze(wav(np.zeros(16000, np.float32)), small_model)
