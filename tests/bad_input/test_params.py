"""Whole-params-file mistakes fail every stage at once, naming the key: a misspelled section, repeated entries."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.pipeline.test_stages import _fails, invoke
from trait_interp.core.config import PARAM_SECTIONS


def params_file(tmp: Path, edit) -> Path:
    """The project's params.yaml with ``edit(params)`` applied; model folders point nowhere (nothing may load)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(params)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def generate(params: Path, tmp: Path):
    trait = REPO / "datasets/traits/behavior/refusal"
    return invoke("generate-responses", "--trait", "behavior/refusal", "--positive", trait / "positive.txt",
                  "--negative", trait / "negative.txt", "--out", tmp / "out/responses.jsonl", "--params", params)


def test_a_misspelled_section_is_an_error_naming_it_and_the_known_sections(tmp_path):
    params = params_file(tmp_path, lambda p: p.update(steerng=p.pop("steering")))
    _fails(generate(params, tmp_path), f"{params}: unknown top-level key 'steerng'", "did you mean 'steering'?",
           "known sections: " + ", ".join(PARAM_SECTIONS))
    assert not (tmp_path / "out").exists()


def test_every_section_of_the_committed_params_is_known():
    assert set(yaml.safe_load((REPO / "params.yaml").read_text())) <= set(PARAM_SECTIONS)


@pytest.mark.parametrize(("key", "value"), [
    ("traits", ["behavior/refusal", "tone/formality", "behavior/refusal"]),
    ("prompt_sets", ["mixed_requests", "mixed_requests"]),
    ("monitor_models", ["toy-instruct", "toy-lora", "toy-instruct"]),
])
def test_a_repeated_entry_is_an_error_naming_the_param(tmp_path, key, value):
    params = params_file(tmp_path, lambda p: p.update({key: value}))
    _fails(generate(params, tmp_path), f"{params}: {key} lists {value[0]} more than once", "list each entry once")
    assert not (tmp_path / "out").exists()


def test_several_problems_say_how_to_list_them_all(tmp_path):
    def edit(p):
        p["traits"] = ["behavior/refusal"] * 2
        p["steerng"] = {}
    _fails(generate(params_file(tmp_path, edit), tmp_path), "unknown top-level key 'steerng'",
           "(and 1 more: run trait-interp validate to list them)")
