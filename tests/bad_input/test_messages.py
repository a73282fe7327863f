"""Messages that point to the quickest fix: a trait the toy lexicon lacks, vetting turned off, pca on unpaired data."""

from __future__ import annotations

import json

import pytest

from tests.bad_input_toy import toy_models
from tests.conftest import REPO
from tests.pipeline.test_stages import _fails, invoke, make_params, write_trait

LEXICON = REPO / "datasets/toy/lexicon.json"
DEFINITION = REPO / "datasets/traits/behavior/refusal/definition.txt"
LEXICON_JUDGE = {"judge.backend": "lexicon", "judge.relevance_check": False}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("messages")
    toy_models(tmp)
    return tmp


def generate(tmp, params, trait: str, n: int, n_negative: int | None = None):
    pos, neg = write_trait(tmp, n=n, n_negative=n_negative)
    out = tmp / "responses.jsonl"
    result = invoke("generate-responses", "--trait", trait, "--positive", pos, "--negative", neg, "--out", out,
                    "--params", params)
    assert result.exit_code == 0, result.output
    return out


def vet(tmp, params, trait: str, responses):
    return invoke("vet-responses", "--trait", trait, "--responses", responses, "--definition", DEFINITION,
                  "--judge-cache", tmp / "cache.jsonl", "--out", tmp / "vetting.jsonl", "--metrics", tmp / "m.json",
                  "--params", params)


def test_a_trait_without_planted_words_names_the_quickest_fix_and_it_works(toy, tmp_path):
    """A real trait tried on the toy: the lexicon judge has no words for it; vetting.enabled: false runs it."""
    trait = "behavior/sycophancy"
    assert trait not in json.loads(LEXICON.read_text())["traits"]
    params = make_params(tmp_path, toy, **LEXICON_JUDGE)
    responses = generate(tmp_path, params, trait, n=4)
    _fails(vet(tmp_path, params, trait, responses), f"no lexicon for trait '{trait}'",
           "to try a real trait on the toy, set vetting.enabled: false")
    assert not (tmp_path / "vetting.jsonl").exists()
    off = make_params(tmp_path, toy, **LEXICON_JUDGE, **{"vetting.enabled": False})
    result = vet(tmp_path, off, trait, responses)
    assert result.exit_code == 0, result.output
    assert f"{trait}: vetting is off (vetting.enabled: false): all 8 responses kept, nothing judged" in result.output


def test_vetting_off_on_unpaired_data_does_not_report_judged_pairs(toy, tmp_path):
    params = make_params(tmp_path, toy, **{"vetting.enabled": False, "extraction.paired": False,
                                           "vetting.min_pairs": 10})
    responses = generate(tmp_path, params, "behavior/refusal", n=6, n_negative=3)
    result = vet(tmp_path, params, "behavior/refusal", responses)
    assert result.exit_code == 0, result.output  # min_pairs is about judged pairs: nothing was judged
    assert "vetting is off (vetting.enabled: false): all 9 responses kept, nothing judged" in result.output
    assert "kept 3 pairs of 6" not in result.output and "pairs of" not in result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["enabled"] is False and metrics["judge"]["calls"] == 0


@pytest.mark.parametrize("n_negative", [8, 6])  # equal counts used to run pca on arbitrary "pairs" silently
def test_pca_on_unpaired_data_says_drop_it_or_pair_the_data(toy, tmp_path, n_negative):
    params = make_params(tmp_path, toy, **{"extraction.paired": False, "extraction.sites": ["residual"],
                                           "extraction.val_fraction": 0.4, "vectors.methods": ["probe", "pca"]})
    responses = generate(tmp_path, params, "behavior/refusal", n=8, n_negative=n_negative)
    acts = tmp_path / "activations"
    result = invoke("capture-activations", "--responses", responses, "--out", acts, "--params", params)
    assert result.exit_code == 0, result.output
    result = invoke("extract-vectors", "--activations", acts, "--out", tmp_path / "vectors", "--params", params)
    _fails(result, f"{params}:vectors.methods: pca needs paired data", "drop it from vectors.methods",
           "pair the data (extraction.paired: true")
    assert not (tmp_path / "vectors").exists()
    without = make_params(tmp_path, toy, **{"extraction.paired": False, "extraction.sites": ["residual"],
                                            "vectors.methods": ["probe", "mean_diff"]})
    result = invoke("extract-vectors", "--activations", acts, "--out", tmp_path / "vectors", "--params", without)
    assert result.exit_code == 0, result.output
