"""The report stage (dashboard data) on a synthetic experiment, its bad inputs, and the site files."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from schemas.evaluation import VectorEvaluation
from schemas.inference import InferenceResponses
from tests.dashboard_inputs import (
    GATE_LAYER,
    GATE_THRESHOLD,
    INTERVENTION,
    LONG_ROW,
    NOTES,
    SWEEP_METHODS,
    SWEEP_RATIOS,
    SWEEP_ROWS,
    TRAITS,
    gate_fired,
    gate_value,
    label_of,
    massive_value,
    prompt_text,
    raw_value,
    sweep_cell,
    synthetic_experiment,
)
from tests.pipeline.test_stages import invoke
from trait_interp.core.tables import read_table
from trait_interp.dashboard.site import data_script, export_site, is_site, read_data
from trait_interp.extraction.evaluation import best_index


def _data(site: Path, key: str):
    read_key, value = read_data(site / "data" / f"{key}.js")
    assert read_key == key
    return value


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic = synthetic_experiment(root / "exp")
    result = invoke(*synthetic.args(root / "report"))
    assert result.exit_code == 0, result.output
    return synthetic, root / "report"


def test_the_site_has_pages_and_every_data_file(built):
    synthetic, site = built
    assert is_site(site)
    for asset in ("index.html", "style.css", "js/app.js", "js/charts.js", "js/dynamics.js", "js/picker.js"):
        assert (site / asset).is_file()
    index = _data(site, "index")
    assert index["traits"] == list(TRAITS) and index["sets"][0]["n_prompts"] == 120
    assert [e["trait"] for e in index["extraction"]] == list(TRAITS) and index["model_diff"]["b"] == "toy-lora"
    assert len(list((site / "data/sets/0").glob("p*.js"))) == 120 + 1  # a token file per prompt, and prompts.js
    html = (site / "index.html").read_text()
    assert "http" not in html.replace("http-equiv", "")  # nothing from a CDN: every script is in the folder


def test_token_files_hold_every_response_token_and_the_raw_projection(built):
    synthetic, site = built
    responses = read_table(synthetic.responses, InferenceResponses)
    index = _data(site, "sets/0/prompts")
    assert [(s["trait"], s["layer"]) for s in index["series"]] == [(t, la) for t in TRAITS for la in (1, 2)]
    for row in (0, LONG_ROW, 119):
        tokens = _data(site, index["prompts"][row]["file"])
        assert tokens["tokens"] == list(responses["response_tokens"].iloc[row])
        n_prompt = len(responses["prompt_tokens"].iloc[row])
        for column, series in enumerate(index["series"]):
            trait = TRAITS.index(series["trait"])
            expected = [raw_value(row, trait, series["layer"], n_prompt + t) for t in range(len(tokens["tokens"]))]
            assert tokens["values"][column] == pytest.approx(expected, abs=1e-3)
            top_k = [massive_value("top_k", row, trait, n_prompt + t) for t in range(len(tokens["tokens"]))]
            assert tokens["massive"]["top_k"][column] == pytest.approx(top_k, abs=1e-3)


def test_values_are_raw_whatever_cleaning_the_table_was_written_with(built, tmp_path):
    synthetic, site = built
    cleaned = synthetic_experiment(tmp_path / "exp", n_prompts=12, cleaned="top_k")
    assert invoke(*cleaned.args(tmp_path / "report")).exit_code == 0
    index = _data(tmp_path / "report", "sets/0/prompts")
    assert index["cleaning"]["table"] == "top_k" and index["cleaning"]["available"] == ["recommended", "top_k"]
    assert index["cleaning"]["dims"]["recommended"] == [1]
    for row in (0, 5):
        for got, raw in zip(_data(tmp_path / "report", f"sets/0/p{row}")["values"], _data(site, f"sets/0/p{row}")["values"]):
            assert got == pytest.approx(raw, abs=1e-3)


def test_picker_index_has_full_texts_filters_labels_and_midpoints(built):
    synthetic, site = built
    index = _data(site, "sets/0/prompts")
    prompts = index["prompts"]
    assert prompts[LONG_ROW]["prompt"] == prompt_text(LONG_ROW) and len(prompts[LONG_ROW]["prompt"]) > 3000
    filters = {f["name"]: f for f in index["filters"]}
    assert set(filters) == {"note", "category", "refused"}  # 'source' has one value: nothing to filter
    assert filters["refused"]["kind"] == "label"
    counts = dict(map(tuple, filters["refused"]["values"]))
    assert counts == {"yes": sum(label_of(r) == "yes" for r in range(120)), "no": sum(label_of(r) == "no" for r in range(120)),
                      None: 12}
    assert dict(map(tuple, filters["note"]["values"])) == {note: 30 for note in NOTES}
    assert prompts[9]["fields"]["refused"] is None and prompts[0]["fields"]["refused"] == "yes"
    evaluation = read_table(synthetic.root / "extraction" / TRAITS[1] / "evaluation.csv", VectorEvaluation)
    for series in index["series"]:
        if series["trait"] == TRAITS[1]:
            row = evaluation[(evaluation.site == "residual") & (evaluation.method == "probe") & (evaluation.layer == series["layer"])]
            assert series["midpoint"] == pytest.approx(float(row["threshold"].iloc[0]))


def test_extraction_best_is_the_evaluation_best_and_steering_means_skip_unscored(built):
    synthetic, site = built
    data = _data(site, "extraction/0")
    evaluation = read_table(synthetic.root / "extraction" / TRAITS[0] / "evaluation.csv", VectorEvaluation)
    real = evaluation[evaluation.method != "random_baseline"]
    top = real.loc[best_index(real)]
    assert (data["best"][0]["site"], data["best"][0]["method"], data["best"][0]["layer"]) == (top.site, top.method, top.layer)
    assert all(b["method"] != "random_baseline" for b in data["best"])
    assert len(data["rows"]) == len(evaluation)
    steering = _data(site, "steering/0")
    by_id = {c["id"]: c for c in steering["configs"]}
    assert by_id["search-1"]["trait_mean"] == pytest.approx((20 + 39) + (1 + 2) / 3)  # question 3 unscored
    assert [c["id"] for c in steering["configs"] if c["best"]] == ["search-0"]
    assert len(steering["answers"]["baseline"]) == 4 and steering["min_coherence"] == 70.0


def test_sweep_grids_are_the_results_and_the_comparison_is_the_best_coherent_cell(built):
    synthetic, site = built
    index = _data(site, "index")
    assert [e["trait"] for e in index["sweep"]] == list(TRAITS)
    data = _data(site, "sweep/1")
    assert data["rows"] == list(SWEEP_ROWS) and data["ratios"] == list(SWEEP_RATIOS)
    assert data["methods"] == list(SWEEP_METHODS) and data["min_coherence"] == 70.0
    for m, method in enumerate(SWEEP_METHODS):
        grid = data["grids"][method]
        for i in range(len(SWEEP_ROWS)):
            for j, ratio in enumerate(SWEEP_RATIOS):
                trait_mean, coherence = sweep_cell(m, i, ratio, 1)
                assert grid["delta"][i][j] == pytest.approx(trait_mean - 50.0)
                assert grid["coherence_mean"][i][j] == pytest.approx(coherence)
                assert grid["coherent"][i][j] == (coherence >= 70)
    # by hand: the largest delta among the coherent cells
    cells = [(sweep_cell(0, i, r, 1)[0] - 50, sweep_cell(0, i, r, 1)[1], SWEEP_ROWS[i], r)
             for i in range(len(SWEEP_ROWS)) for r in SWEEP_RATIOS]
    best = max((c for c in cells if c[1] >= 70), key=lambda c: c[0])
    probe = data["comparison"][0]
    assert (probe["method"], probe["layers"], probe["ratio"], probe["delta"]) == ("probe", best[2], best[3], best[0])
    assert probe["best_extraction_layer"] is not None
    config = probe["config"]
    answers = _data(site, data["answers"][0])[str(config)]
    assert [a["q"] for a in answers] == [0, 1, 2] and answers[0]["response"] == f"probe {best[2]} {best[3]:+g} answer 0"
    assert len(data["baseline_answers"]) == 3 and data["questions"]["2"] == f"Sweep question 2 about {TRAITS[1]}?"


def test_model_diff_clauses_are_ranked(built):
    _, site = built
    data = _data(site, "model_diff")
    top = data["clauses"][TRAITS[0]]["1"]
    assert [c["mean_delta"] for c in top["increase"]] == sorted([c["mean_delta"] for c in top["increase"]], reverse=True)
    assert top["increase"][0]["text"] == "clause of prompt 30" and top["decrease"][0]["text"] == "clause of prompt 1"
    assert len(top["increase"]) == 12 and all(c["mean_delta"] < 0 for c in top["decrease"])
    assert {(r["trait"], r["layer"]) for r in data["paired"]} == {(t, la) for t in TRAITS for la in (1, 2)}


def test_traits_at_their_own_layers(tmp_path):
    """layer: best projects each trait at its own layer: each trait's series, midpoint and diff rows at its layer."""
    own = synthetic_experiment(tmp_path / "exp", n_prompts=6, own_layers={TRAITS[0]: (1,), TRAITS[1]: (3,)})
    result = invoke(*own.args(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    index = _data(tmp_path / "report", "sets/0/prompts")
    assert [(s["trait"], s["layer"]) for s in index["series"]] == [(TRAITS[0], 1), (TRAITS[1], 3)]
    for series in index["series"]:
        evaluation = read_table(own.root / "extraction" / series["trait"] / "evaluation.csv", VectorEvaluation)
        row = evaluation[(evaluation.site == "residual") & (evaluation.method == "probe") & (evaluation.layer == series["layer"])]
        assert series["midpoint"] == pytest.approx(float(row["threshold"].iloc[0]))
    responses = read_table(own.responses, InferenceResponses)
    tokens = _data(tmp_path / "report", index["prompts"][2]["file"])
    n_prompt = len(responses["prompt_tokens"].iloc[2])
    for column, (trait, layer) in enumerate(((0, 1), (1, 3))):
        expected = [raw_value(2, trait, layer, n_prompt + t) for t in range(len(tokens["tokens"]))]
        assert tokens["values"][column] == pytest.approx(expected, abs=1e-3)
    diff = _data(tmp_path / "report", "model_diff")
    assert {(r["trait"], r["layer"]) for r in diff["paired"]} == {(TRAITS[0], 1), (TRAITS[1], 3)}
    assert set(diff["clauses"][TRAITS[0]]) == {"1"} and set(diff["clauses"][TRAITS[1]]) == {"3"}


def test_an_interventions_answers_are_a_prompt_set_with_the_gates_marks(tmp_path):
    """Each intervened answer: the gate's reading per response token, where it fired and steered, the threshold."""
    synthetic = synthetic_experiment(tmp_path / "exp", n_prompts=4, intervention=True)
    result = invoke(*synthetic.args(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    site = tmp_path / "report"
    sets = _data(site, "index")["sets"]
    assert [(s["intervention"] if "intervention" in s else None) for s in sets] == [None, INTERVENTION]
    index = _data(site, sets[1]["key"] + "/prompts")
    assert index["intervention"]["gate"]["threshold"] == GATE_THRESHOLD and index["n_prompts"] == 6
    (series,) = index["series"]
    assert (series["trait"], series["layer"], series["read"], series["threshold"]) == (TRAITS[0], GATE_LAYER, "gate",
                                                                                      GATE_THRESHOLD)
    filters = {f["name"]: dict(map(tuple, f["values"])) for f in index["filters"]}
    assert filters["group"] == {"trigger": 3, "non_trigger": 3} and set(filters["fired"]) <= {"yes", "no"}
    for row, prompt in enumerate(index["prompts"]):
        tokens = _data(site, prompt["file"])
        n = len(tokens["tokens"])
        assert n == 4 + row % 3 and prompt["compare"]["trait"] == [50.0, 50.0 + 10 * row]
        expected = [gate_value(row, 3 + t) for t in range(n - 1)] + [None]  # the last token was never read
        assert tokens["values"][0] == pytest.approx(expected, abs=1e-4)
        assert tokens["fired"][0] == [int(gate_fired(row, 3 + t)) for t in range(n - 1)] + [None]
        assert tokens["prompt"][0]["fired"] == [t for t in range(3) if gate_fired(row, t)]
        assert prompt["compare"]["baseline"] == " b0 b1"


def _fails(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: ")
    for needle in needles:
        assert needle in line, line


def test_bad_inputs_are_one_line_errors_and_leave_no_site(tmp_path):
    synthetic = synthetic_experiment(tmp_path / "exp", n_prompts=6)
    out = tmp_path / "report"
    evaluation = synthetic.root / "extraction" / TRAITS[1] / "evaluation.csv"
    evaluation.rename(evaluation.with_suffix(".bak"))
    _fails(invoke(*synthetic.args(out)), str(evaluation), "table not found")
    evaluation.with_suffix(".bak").rename(evaluation)
    labels = synthetic.root / "analyses/labels/refused.csv"
    labels.write_text("id,verdict\n1,yes\n")
    _fails(invoke(*synthetic.args(out)), str(labels), "prompt_id,label")
    labels.unlink()
    _fails(invoke(*synthetic.args(out)), str(labels))
    assert not out.exists()


def test_projections_of_other_responses_are_an_error(tmp_path):
    synthetic = synthetic_experiment(tmp_path / "exp", n_prompts=6)
    table = pd.read_parquet(synthetic.projections)
    table = table[~((table.prompt_id == "3") & (table.token_index == table[table.prompt_id == "3"].token_index.max()))]
    table.to_parquet(synthetic.projections, index=False)
    _fails(invoke(*synthetic.args(tmp_path / "report")), str(synthetic.projections), "prompt 3", "re-run the project stage")


def test_bad_cleaning_param_and_a_table_without_its_cleaning_column(tmp_path):
    synthetic = synthetic_experiment(tmp_path / "exp", n_prompts=6, cleaned="top_k")
    text = synthetic.params.read_text()
    synthetic.params.write_text(text.replace("clean_massive_dims: top_k", "clean_massive_dims: all"))
    _fails(invoke(*synthetic.args(tmp_path / "report")), "monitoring.clean_massive_dims", "'all'")
    synthetic.params.write_text(text)
    table = pd.read_parquet(synthetic.projections).drop(columns=["massive_top_k"])
    table.to_parquet(synthetic.projections, index=False)
    _fails(invoke(*synthetic.args(tmp_path / "report")), "massive_top_k", "re-run the project stage")


def test_data_scripts_round_trip_and_refuse_nan_and_odd_keys(tmp_path):
    text = data_script("sets/0/p1", {"a": [1.5, None], "s": "</script>\u2028"})
    assert text.startswith('TI.receive("sets/0/p1",') and text.count("\n") == 1
    (tmp_path / "x.js").write_text(text)
    assert read_data(tmp_path / "x.js") == ("sets/0/p1", {"a": [1.5, None], "s": "</script>\u2028"})
    with pytest.raises(ValueError):
        data_script("x", {"a": math.nan})
    for key in ("../x", "a/../b", "a b", "/x", ""):
        with pytest.raises(ValueError, match="data key"):
            data_script(key, 1)


def test_static_export_copies_and_never_replaces_an_unrelated_folder(built, tmp_path):
    _, site = built
    index = export_site(site, tmp_path / "export")
    assert index == (tmp_path / "export/index.html").resolve() and is_site(tmp_path / "export")
    assert export_site(site, tmp_path / "export") == index  # an earlier export may be replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(ValueError, match="not a dashboard export"):
        export_site(site, tmp_path / "mine")
    with pytest.raises(ValueError, match="outside"):
        export_site(site, site / "copy")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"
    result = invoke("serve", "--report", site, "--static", tmp_path / "cli-export")
    assert result.exit_code == 0 and "file://" in result.output
    _fails(invoke("serve", "--report", tmp_path / "mine"), "no built dashboard", "dvc repro report")
    shutil.rmtree(tmp_path / "export")

