"""Traits with few pairs: the extraction metrics record the held-out counts and warn below MIN_VAL_PAIRS.

Most real collections have 15 pairs: at val_fraction 0.2 that leaves 3 held-out pairs, so val
accuracy moves in steps of 1/6. With a single held-out pair Cohen's d is undefined: a one-line
error (it used to be a raw ValueError traceback).
"""

from __future__ import annotations

import json

import pytest

from tests.bad_input_toy import toy_models
from tests.pipeline.test_stages import _fails, invoke, make_params, write_trait
from trait_interp.extraction.evaluation import MIN_VAL_PAIRS

SMALL = {"extraction.sites": ["residual"], "vectors.methods": ["probe", "mean_diff"], "extraction.val_fraction": 0.2}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("few-pairs")
    toy_models(tmp, **SMALL)
    return tmp


def extract(toy, tmp, n_pairs: int, **overrides):
    """generate -> capture -> extract for ``n_pairs`` pairs; returns (params, evaluate-vectors result, out)."""
    params = make_params(tmp, toy, **{**SMALL, **overrides})
    pos, neg = write_trait(tmp, n=n_pairs)
    out = tmp / "exp"
    for step in (
        ("generate-responses", "--trait", "behavior/refusal", "--positive", pos, "--negative", neg,
         "--out", out / "responses.jsonl", "--params", params),
        ("capture-activations", "--responses", out / "responses.jsonl", "--out", out / "activations", "--params", params),
        ("extract-vectors", "--activations", out / "activations", "--out", out / "vectors", "--params", params),
    ):
        result = invoke(*step)
        assert result.exit_code == 0, (step[0], result.output)
    result = invoke("evaluate-vectors", "--activations", out / "activations", "--vectors", out / "vectors",
                    "--table", out / "evaluation.csv", "--metrics", out / "metrics.json",
                    "--plot-accuracy", out / "acc.csv", "--plot-effect", out / "d.csv")
    return params, result, out


def test_fifteen_pairs_record_three_held_out_pairs_and_warn(toy, tmp_path):
    _, result, out = extract(toy, tmp_path, 15)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["held_out"] == {"positive": 3, "negative": 3, "min_recommended": MIN_VAL_PAIRS, "too_few": True}
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert warnings == ["warning: behavior/refusal: only 3 held-out pairs (fewer than 5): val accuracy moves in "
                        "steps of 0.17 and Cohen's d is uncertain; raise extraction.val_fraction or add scenarios"]


def test_enough_held_out_pairs_give_no_warning(toy, tmp_path):
    _, result, out = extract(toy, tmp_path, 30)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["held_out"] == {"positive": 6, "negative": 6, "min_recommended": MIN_VAL_PAIRS, "too_few": False}
    assert "warning" not in result.output


def test_one_held_out_pair_is_a_one_line_error(toy, tmp_path):
    _, result, out = extract(toy, tmp_path, 4, **{"extraction.val_fraction": 0.25})
    _fails(result, f"{out / 'activations'}: only 1 positive and 1 negative held-out examples",
           "need at least 2 per side: raise extraction.val_fraction (now 0.25) or add scenarios")
    assert not (out / "evaluation.csv").exists() and not (out / "metrics.json").exists()
