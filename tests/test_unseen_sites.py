"""Leave-one-site-out: folds, protocols, and verdicts that keep their promise on new sites.

The corpus is written here: every "site" records real voices (harmonic, speech-like
signals) and cloned ones (espeak-ng) through its own recording chain (its own
level, tilt and background noise), as the demo pages of the dev pools do.
"""

from collections import Counter

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
from click.testing import CliRunner
from conftest import voiced

from voicecheck.cli import main
from voicecheck.model import load_model
from voicecheck.research.evaluation import cross_validated_scores, resolve_protocols, site_folds
from voicecheck.research.manifest import load_manifest
from voicecheck.research.metrics import site_bootstrap, verdict_rates
from voicecheck.scoring import analyze

N_SITES = 10
HELD_OUT = ("site8", "site9")


def _chain(y: np.ndarray, sr: int, site: int, rng: np.random.Generator) -> np.ndarray:
    """A site's recording chain: its own tilt, level and background noise."""
    b, a = scipy.signal.butter(1, 300 + 250 * site, btype="high", fs=sr)
    y = scipy.signal.lfilter(b, a, y) * (0.3 + 0.06 * site)
    y = y + (0.001 + 0.0005 * site) * rng.standard_normal(y.size)
    return (0.9 * y / max(1.0, float(np.max(np.abs(y))))).astype(np.float32)


@pytest.fixture(scope="module")
def site_corpus(tmp_path_factory, espeak_speech):
    """10 sites, each with 4 real and 4 cloned clips (two cloning 'families')."""
    root = tmp_path_factory.mktemp("sites")
    y_tts, sr_tts = espeak_speech
    rng = np.random.default_rng(5)
    rows = ["path,label,system,family,source"]
    for s in range(N_SITES):
        for k in range(4):
            real = root / f"s{s}_real{k}.wav"
            y = voiced(3.0, sr=16000, f0=100 + 11 * k + 9 * s, seed=100 * s + k)
            sf.write(real, _chain(y, 16000, s, rng), 16000)
            rows.append(f"{real.name},bonafide,bonafide,,site{s}")
            fake = root / f"s{s}_fake{k}.wav"
            start = int((0.2 * k + 0.05 * s) * sr_tts)
            rate = sr_tts if k % 2 == 0 else int(sr_tts * 1.1)
            sf.write(fake, _chain(y_tts[start : start + 3 * sr_tts], rate, s, rng), rate)
            system = "espeak-ng" if k % 2 == 0 else "espeak-ng-fast"
            rows.append(f"{fake.name},spoof,{system},{system}-family,site{s}")
    (root / "list.csv").write_text("\n".join(rows) + "\n")

    def manifest(name: str, *, sites: tuple[str, ...] | None = None, extra: str = "") -> str:
        listing = root / f"{name}.csv"
        keep = [r for r in rows[1:] if sites is None or r.rsplit(",", 1)[1] in sites]
        listing.write_text("\n".join([rows[0], *keep]) + "\n")
        path = root / f"{name}.yaml"
        path.write_text(
            f"""
datasets:
  - name: sites
    root: {root}
    files: {{csv: {listing.name}}}
    label: {{column: label}}
    generator: {{column: system}}
    family: {{column: family}}
    source: {{column: source}}
    group_by: source
{extra}"""
        )
        return str(path)

    return root, manifest


def test_site_folds_hold_every_site_out_exactly_once():
    sites = [f"s{i}" for i in range(23)] * 3
    folds = site_folds(sites, 10)
    assert len(folds) == 10
    flat = [s for f in folds for s in f]
    assert sorted(flat) == sorted(set(sites))
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert site_folds(list(reversed(sites)), 10) == folds  # the order given does not matter
    assert site_folds(["a", "b"], 10) == [["a"], ["b"]]


def test_loro_and_lofo_hold_out_what_they_say(site_corpus):
    root, manifest = site_corpus
    # A training-only dataset: it trains every fold's model and is never scored.
    extra = f"""  - name: trainonly
    root: {root}
    files: {{glob: "s0_fake*.wav"}}
    label: spoof
    generator: extra-tts
    source: extra
    scored: false
"""
    clips = load_manifest(manifest("all", extra=extra)).clips()
    assert {c.dataset for c in clips if not c.scored} == {"trainonly"}
    rows = cross_validated_scores(
        clips,
        protocols=resolve_protocols(["loro", "lofo"]),
        conditions=["g711"],
        copies=1,
        n_jobs=1,
        folds=4,
    )
    counts = Counter((r["protocol"], r["path"]) for r in rows)
    assert set(counts.values()) == {1}
    per_protocol = Counter(r["protocol"] for r in rows)
    assert per_protocol == {"leave-one-site-out": 80, "leave-one-family-out": 80}
    assert not any("extra" in r["source"] for r in rows)
    folds = site_folds([f"sites:site{s}" for s in range(N_SITES)], 4)
    for r in rows:
        assert 0 <= r["score"] <= 1
        if r["protocol"] == "leave-one-site-out" or r["label"] == 0:
            k = int(r["fold"].split("-")[1]) - 1
            assert r["fold"].startswith("sites-") and f"sites:{r['source']}" in folds[k]
        else:
            assert r["fold"].startswith("families-")
            assert r["family"] in ("espeak-ng-family", "espeak-ng-fast-family")


@pytest.mark.slow
def test_verdicts_keep_their_promise_on_sites_never_seen(site_corpus, tmp_path):
    """Train on eight sites; the thresholds set from out-of-site scores hold on two more."""
    _, manifest = site_corpus
    train_sites = tuple(f"site{s}" for s in range(N_SITES) if f"site{s}" not in HELD_OUT)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--manifest",
            manifest("train", sites=train_sites),
            "--output",
            str(out),
            "--copies",
            "2",
            "--folds",
            "4",
            "--jobs",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    detector = load_model(out / "model.skops")
    card = detector.card
    metrics = card["metrics"]
    thresholds = card["thresholds"]
    assert card["validation_scores"]["protocol"] == "leave-one-site-out"
    assert metrics["n_sites"] == len(train_sites)
    assert "leave-one-site-out" in metrics["protocol"]

    # The card's measured out-of-site rates keep the promise, with an interval over sites.
    promise = metrics["verdict_promise"]
    for key, target in (("real_called_cloned", 0.01), ("cloned_called_human", 0.05)):
        assert promise[key]["low"] <= promise[key]["rate"] <= promise[key]["high"]
        assert promise[key]["rate"] <= target
    assert promise["n_sites"] == len(train_sites)

    # Calibration spreads: out-of-site scores use the whole scale, not a narrow band
    # around 0.5, so "higher than N % of real voices" says something.
    real = np.array(card["validation_scores"]["real"])
    cloned = np.array(card["validation_scores"]["cloned"])
    assert np.median(real) < 0.3 < 0.7 < np.median(cloned)

    # The held-out sites: real voices are not called cloned, clones not called human.
    held = load_manifest(manifest("held", sites=HELD_OUT)).clips()
    scores = np.array([analyze(c.path, detector).score for c in held])
    labels = np.array([c.y for c in held])
    rates = verdict_rates(scores, labels, cloned=thresholds["cloned"], human=thresholds["human"])
    assert rates["real_called_cloned"] <= 0.01
    assert rates["cloned_called_human"] <= 0.05
    assert np.mean(scores[labels == 1] >= thresholds["cloned"]) > 0.5  # and it still decides

    info = CliRunner().invoke(main, ["info", "--model", str(out / "model.skops")])
    assert info.exit_code == 0, info.output
    assert "on sites it never saw" in info.output


def test_site_bootstrap_interval_widens_when_one_site_holds_the_errors():
    scores = np.r_[np.full(90, 0.1), np.full(10, 0.9), np.full(100, 0.9)]
    labels = np.r_[np.zeros(100, int), np.ones(100, int)]
    spread = np.r_[np.arange(100) % 10, np.arange(100) % 10]  # errors spread over sites
    lumped = np.r_[np.repeat(np.arange(10), 10), np.arange(100) % 10]  # one site errs
    a = site_bootstrap(scores, labels, spread, cloned=0.5, human=0.2, n_boot=500)
    b = site_bootstrap(scores, labels, lumped, cloned=0.5, human=0.2, n_boot=500)
    assert a["real_called_cloned"]["rate"] == b["real_called_cloned"]["rate"] == 0.1
    width = {
        k: v["real_called_cloned"]["high"] - v["real_called_cloned"]["low"]
        for k, v in (("spread", a), ("lumped", b))
    }
    assert width["lumped"] > 2 * width["spread"]
    assert b["cloned_called_human"] == {"rate": 0.0, "low": 0.0, "high": 0.0}
