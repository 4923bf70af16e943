import json
import re
import struct

import numpy as np
import pytest
from scipy.stats import norm

from voicecheck.research import metrics
from voicecheck.research.report import (
    CHANNEL_TEXT,
    PROTOCOL_TEXT,
    ScoreTable,
    evaluate_table,
    plot_det,
    plot_histograms,
    plot_roc,
    weak_spots,
    write_report,
)

SEED = 20240
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LOSO, LOGO, SHIPPED = "leave-one-source-out", "leave-one-generator-out", "shipped-model"
CARD = {
    "model_id": "voicecheck-test-0123456789ab",
    "data_manifest": {"sha256": "f" * 64, "datasets": ["devpool"]},
    "thresholds": {"cloned": 2.5, "eer": 1.0},
    "threshold_policy": {"cloned": "at most 1% false alarms on real voices"},
}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def rows(scores, label, **fields):
    return [{"score": float(s), "label": label, **fields} for s in scores]


def two_class(real, cloned, **fields) -> ScoreTable:
    return ScoreTable.from_records(
        rows(real, 0, **fields) + rows(cloned, 1, generator="g", **fields)
    )


def make_table(seed: int = SEED) -> ScoreTable:
    """Three protocols, several conditions, generators and sources, with known weak spots.

    - ``amr_nb`` is much worse than ``clean_16k`` (cloned mean 0.7 against 3.0);
    - generator ``weakgen`` scores like real voices (EER near 50%);
    - generator ``single`` has one clip, scored far above every real clip (EER 0);
    - source ``callhome`` is real-only; source ``noisyreal`` is real-only and scores high;
    - ``opus`` in the leave-one-generator-out protocol has real clips only.
    """
    rng = np.random.default_rng(seed)
    shift = {"clean_16k": 3.0, "g711": 2.0, "amr_nb": 0.7, "opus": 2.0}
    protocols = {
        LOSO: ["clean_16k", "g711", "amr_nb"],
        LOGO: ["clean_16k", "amr_nb", "opus"],
        SHIPPED: ["g711"],
    }
    out = []
    for protocol, conditions in protocols.items():
        for condition in conditions:
            common = {"condition": condition, "protocol": protocol}
            for source in ("vctk", "libri", "callhome"):
                fold = source if protocol == LOSO else "all"
                for i, s in enumerate(rng.normal(0.0, 1.0, 60)):
                    out += rows(
                        [s], 0, source=source, fold=fold, path=f"{source}/r{i}.wav", **common
                    )
            for i, s in enumerate(rng.normal(1.8, 1.0, 20)):
                fold = "noisyreal" if protocol == LOSO else "all"
                out += rows([s], 0, source="noisyreal", fold=fold, path=f"nr/{i}.wav", **common)
            if protocol == LOGO and condition == "opus":
                continue
            gens = {"xtts": shift[condition], "bark": shift[condition], "weakgen": 0.0}
            for g, mu in gens.items():
                for i, s in enumerate(rng.normal(mu, 1.0, 60)):
                    source = ("vctk", "libri")[i % 2]
                    fold = source if protocol == LOSO else g
                    out += rows(
                        [s], 1, generator=g, source=source, fold=fold, path=f"{g}/{i}.wav", **common
                    )
            fold = "vctk" if protocol == LOSO else "single"
            out += rows([50.0], 1, generator="single", source="vctk", fold=fold, **common)
    return ScoreTable.from_records(out)


@pytest.fixture(scope="module")
def table() -> ScoreTable:
    return make_table()


@pytest.fixture(scope="module")
def evaluated(table):
    return evaluate_table(table, threshold=1.0, thresholds={"cloned": 2.5})


@pytest.fixture(scope="module")
def report(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    written = write_report(table, out, title="Test evaluation", model_card=CARD)
    return out, written


# ------------------------------------------------------------------ known answers


def test_perfect_separation_has_zero_eer():
    m = evaluate_table(two_class([0.1, 0.2, 0.3], [0.7, 0.8, 0.9]), threshold=0.5)
    pooled = m["protocols"][""]["conditions"][""]["pooled"]
    assert pooled["eer"] == 0.0 and pooled["min_dcf"] == 0.0 and pooled["roc_auc"] == 1.0
    assert pooled["at_threshold"]["shipped"] == {"false_alarm_rate": 0.0, "miss_rate": 0.0}
    assert (pooled["n_real"], pooled["n_cloned"]) == (3, 3)


def test_inverted_scores_have_full_eer():
    m = evaluate_table(two_class([0.7, 0.8, 0.9], [0.1, 0.2, 0.3]), threshold=0.5)
    pooled = m["protocols"][""]["conditions"][""]["pooled"]
    assert pooled["eer"] == 1.0 and pooled["roc_auc"] == 0.0
    assert pooled["at_threshold"]["shipped"] == {"false_alarm_rate": 1.0, "miss_rate": 1.0}


def test_gaussian_scores_have_the_textbook_eer(rng):
    # Real N(0, 1) against cloned N(2, 1): the EER is at the midpoint 1, Phi(-1) = 15.9%.
    table = two_class(rng.normal(0, 1, 3000), rng.normal(2, 1, 3000))
    pooled = evaluate_table(table, threshold=1.0)["protocols"][""]["conditions"][""]["pooled"]
    assert pooled["eer"] == pytest.approx(norm.cdf(-1), abs=0.02)
    assert pooled["eer_threshold"] == pytest.approx(1.0, abs=0.15)
    assert pooled["roc_auc"] == pytest.approx(norm.cdf(2 / np.sqrt(2)), abs=0.02)
    rates = pooled["at_threshold"]["shipped"]
    assert rates["false_alarm_rate"] == pytest.approx(norm.cdf(-1), abs=0.02)
    assert rates["miss_rate"] == pytest.approx(norm.cdf(-1), abs=0.02)


# ------------------------------------------------------------------ evaluate_table


def test_structure_follows_protocols_and_conditions(table, evaluated):
    assert list(evaluated["protocols"]) == [LOSO, LOGO, SHIPPED]
    assert list(evaluated["protocols"][LOSO]["conditions"]) == ["clean_16k", "g711", "amr_nb"]
    assert evaluated["thresholds"] == {"shipped": 1.0, "cloned": 2.5}
    assert evaluated["n_clips"] == len(table)
    assert evaluated["n_real"] + evaluated["n_cloned"] == len(table)
    loso = evaluated["protocols"][LOSO]
    assert loso["description"] == PROTOCOL_TEXT[LOSO]
    assert loso["folds"] == ["callhome", "libri", "noisyreal", "vctk"]
    c = loso["conditions"]["clean_16k"]
    assert set(c) == {"pooled", "per_generator", "per_family", "per_source", "per_fold"}
    assert set(c["per_generator"]) == {"xtts", "bark", "weakgen", "single"}
    assert set(c["per_source"]) == {"vctk", "libri", "callhome", "noisyreal"}
    for block in [c["pooled"], *c["per_generator"].values(), *c["per_source"].values()]:
        assert set(block["at_threshold"]) == {"shipped", "cloned"}
    json.dumps(evaluated, allow_nan=False)  # JSON-ready: plain types, no NaN


def test_pooled_values_match_metrics(table, evaluated):
    m = (table.protocol == LOSO) & (table.condition == "g711")
    pooled = evaluated["protocols"][LOSO]["conditions"]["g711"]["pooled"]
    expected = metrics.summary(table.score[m], table.label[m])
    assert {k: pooled[k] for k in expected} == expected
    assert pooled["at_threshold"]["cloned"]["miss_rate"] == pytest.approx(
        metrics.rates_at(table.score[m], table.label[m], 2.5)["miss_rate"], abs=1e-4
    )


def test_generator_is_measured_against_all_real_clips(table, evaluated):
    c = evaluated["protocols"][LOSO]["conditions"]["clean_16k"]
    m = (table.protocol == LOSO) & (table.condition == "clean_16k")
    s, y, g = table.score[m], table.label[m], table.generator[m]
    keep = (y == 0) | (g == "weakgen")
    weak = c["per_generator"]["weakgen"]
    assert weak["eer"] == round(metrics.eer(s[keep], y[keep])[0], 4)
    assert weak["n_real"] == c["pooled"]["n_real"] == 200
    assert weak["n_cloned"] == 60
    assert 0.35 < weak["eer"] < 0.65  # scores like real voices
    assert c["per_generator"]["xtts"]["eer"] < 0.15
    single = c["per_generator"]["single"]
    assert (single["n_cloned"], single["eer"], single["roc_auc"]) == (1, 0.0, 1.0)
    assert single["at_threshold"]["cloned"]["miss_rate"] == 0.0


def test_one_class_sources_report_counts_and_rates_not_eer(evaluated):
    callhome = evaluated["protocols"][LOSO]["conditions"]["clean_16k"]["per_source"]["callhome"]
    assert (callhome["n_real"], callhome["n_cloned"]) == (60, 0)
    assert callhome["eer"] is None and callhome["min_dcf"] is None and callhome["roc_auc"] is None
    assert callhome["mean_score_real"] == pytest.approx(0.0, abs=0.4)
    assert callhome["mean_score_cloned"] is None
    rates = callhome["at_threshold"]["cloned"]
    assert rates["miss_rate"] is None and 0 <= rates["false_alarm_rate"] < 0.05
    vctk = evaluated["protocols"][LOSO]["conditions"]["clean_16k"]["per_source"]["vctk"]
    assert vctk["eer"] is not None and vctk["n_cloned"] == 3 * 30 + 1


def test_condition_with_one_class_reports_null_and_counts(evaluated):
    opus = evaluated["protocols"][LOGO]["conditions"]["opus"]
    pooled = opus["pooled"]
    assert (pooled["n_real"], pooled["n_cloned"]) == (200, 0)
    assert pooled["eer"] is None and pooled["eer_threshold"] is None
    assert pooled["at_threshold"]["shipped"]["miss_rate"] is None
    assert opus["per_generator"] == {}


def test_empty_table_evaluates_to_nothing():
    m = evaluate_table(ScoreTable.from_records([]), threshold=0.5)
    assert m == {
        "n_clips": 0,
        "n_real": 0,
        "n_cloned": 0,
        "thresholds": {"shipped": 0.5},
        "protocols": {},
    }
    assert weak_spots(m) == []


def test_weak_spots_name_the_bad_groups(evaluated):
    spots = weak_spots(evaluated)
    text = "\n".join(spots)
    assert re.search(r"\[leave-one-source-out\] clean_16k: generator weakgen has EER", text)
    assert re.search(
        r"\[leave-one-source-out\] amr_nb: EER .* on clean_16k \(\+\d+\.\d points\)", text
    )
    assert "g711: EER" not in text  # g711 is within 10 points of clean
    assert re.search(r"real voices of source noisyreal are called cloned", text)
    assert "[leave-one-generator-out] opus: cannot be measured (200 real, 0 cloned" in text
    assert "generator xtts" not in text.split("amr_nb")[0]  # xtts is fine on clean


# ------------------------------------------------------------------ the table


def test_csv_round_trips(table, tmp_path):
    odd = ScoreTable.from_records(
        [
            {"score": 0.1 + 0.2, "label": 0, "path": 'calls/çà, "quoted".wav', "source": "a"},
            {"score": -1e-17, "label": 1, "generator": "x,y", "condition": "amr_nb"},
        ]
    )
    for t in (table, odd):
        path = t.to_csv(tmp_path / "scores.csv")
        back = ScoreTable.from_csv(path)
        assert back.to_records() == t.to_records()
        assert back.score.dtype == np.float64 and back.label.dtype == np.int64
    assert path.read_text(encoding="utf-8").splitlines()[0] == (
        "score,label,generator,source,condition,protocol,fold,path,family"
    )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"score": 0.5, "label": 2}, "label"),
        ({"score": float("nan"), "label": 0}, "finite"),
        ({"label": 0}, "score"),
    ],
)
def test_bad_rows_are_refused_with_a_reason(record, message):
    with pytest.raises(ValueError, match=message):
        ScoreTable.from_records([record])


def test_csv_without_a_label_column_is_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("score,path\n0.5,a.wav\n")
    with pytest.raises(ValueError, match="no label column"):
        ScoreTable.from_csv(path)


# ------------------------------------------------------------------ plots and report


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


def test_report_writes_every_file(report):
    out, written = report
    names = [p.name for p in written]
    assert names == [
        "metrics.json",
        "scores.csv",
        "det.png",
        "roc.png",
        "histograms.png",
        "report.md",
        "report.html",
    ]
    for p in written:
        assert p.parent == out and p.stat().st_size > 0
    for name in ("det.png", "roc.png", "histograms.png"):
        width, height = png_size(out / name)
        assert width >= 500 and height >= 400
        assert (out / name).stat().st_size > 20_000


def test_report_metrics_json_matches_evaluate_table(report, table):
    out, _ = report
    document = json.loads((out / "metrics.json").read_text())
    assert (
        document["protocols"] == evaluate_table(table, thresholds=CARD["thresholds"])["protocols"]
    )
    assert document["thresholds"] == CARD["thresholds"]  # taken from the model card
    assert document["model_id"] == CARD["model_id"]
    assert document["data_manifest_sha256"] == "f" * 64
    assert document["weak_spots"]
    assert ScoreTable.from_csv(out / "scores.csv").to_records() == table.to_records()


def test_report_states_protocols_numbers_and_weak_spots(report, table):
    out, _ = report
    md = (out / "report.md").read_text(encoding="utf-8")
    page = (out / "report.html").read_text(encoding="utf-8")
    m = evaluate_table(table, thresholds=CARD["thresholds"])
    clean = m["protocols"][LOSO]["conditions"]["clean_16k"]["pooled"]
    weak = m["protocols"][LOSO]["conditions"]["clean_16k"]["per_generator"]["weakgen"]
    expected = [
        PROTOCOL_TEXT[LOSO],
        PROTOCOL_TEXT[LOGO],
        CHANNEL_TEXT,
        CARD["model_id"],
        "f" * 64,
        f"{clean['eer'] * 100:.1f}%",
        f"{clean['min_dcf']:.3f}",
        f"{clean['roc_auc']:.3f}",
        f"{weak['eer'] * 100:.1f}%",
        "Weak spots",
        "generator weakgen has EER",
        "at most 1% false alarms on real voices",
    ]
    for text in expected:
        assert text in md
        assert text.replace('"', "&quot;") in page or text in page
    # Per-generator table of clean_16k: worst (weakgen) first, the one-clip generator last.
    section = md.split(f"### {LOSO}, clean_16k")[1].split("Per source")[0]
    generators = re.findall(r"^\| (\w+) \| \d+ \|", section, flags=re.MULTILINE)
    assert generators[0] == "weakgen" and generators[-1] == "single"
    assert "![DET curves](det.png)" in md


def test_html_stands_alone(report):
    out, _ = report
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == 3
    assert re.findall(r'(?:src|href)="(?!data:)', page) == []
    assert "<style>" in page and "<link" not in page


def test_formats_choose_the_readable_reports(table, tmp_path):
    small = table.select(table.protocol == SHIPPED)
    written = write_report(small, tmp_path, title="md only", thresholds=0.5, formats=("md",))
    assert [p.name for p in written][-1] == "report.md"
    assert not (tmp_path / "report.html").exists()
    assert "Threshold `shipped` = 0.500" in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="pdf"):
        write_report(small, tmp_path, title="x", formats=("pdf",))


def test_degenerate_tables_still_plot(tmp_path):
    real_only = ScoreTable.from_records(rows([0.1, 0.2, 0.3], 0, condition="g711"))
    for plot in (plot_det, plot_roc, plot_histograms):
        path = plot(real_only, tmp_path / f"{plot.__name__}.png", thresholds={"cloned": 0.5})
        assert path.read_bytes()[:8] == PNG_MAGIC
    written = write_report(ScoreTable.from_records([]), tmp_path / "empty", title="Nothing")
    assert "0 scored clips" in (tmp_path / "empty" / "report.md").read_text()
    assert [png_size(p) for p in written if p.suffix == ".png"]  # valid, if empty, images
