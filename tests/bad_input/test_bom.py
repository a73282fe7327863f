"""A UTF-8 byte-order mark at the start of any file the user writes changes nothing.

Windows editors save ``\\ufeff`` first; ``str.strip()`` keeps it, so an undecoded BOM became part of
the first scenario's prompt (extra tokens) and broke every JSON file. Each test runs a stage on the
file with and without a BOM and compares the outputs byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.pipeline.test_stages import (
    _fails,
    build_args,
    invoke,
    make_params,
    write_trait,
)
from trait_interp.core.datasets import load_scenarios, load_steering_questions

BOM = "\ufeff"
LEXICON = REPO / "datasets/toy/lexicon.json"
REFUSAL = REPO / "datasets/traits/behavior/refusal"


def with_bom(source: Path, dest: Path) -> Path:
    """``dest``: the text of ``source`` with a BOM in front (as a Windows editor saves it)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(BOM.encode("utf-8") + source.read_bytes())
    return dest


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Toy models (barely trained: seconds), a params file and a 6-pair refusal trait."""
    tmp = tmp_path_factory.mktemp("bom")
    params = make_params(tmp, **{"judge.backend": "lexicon", "judge.relevance_check": False})
    result = invoke(*build_args(params, tmp / "models", tmp / "training"))
    assert result.exit_code == 0, result.output
    pos, neg = write_trait(tmp, n=6)
    return tmp, params, pos, neg


def generate(params: Path, pos: Path, neg: Path, out: Path) -> bytes:
    result = invoke("generate-responses", "--trait", "behavior/refusal", "--positive", pos, "--negative", neg,
                    "--out", out, "--params", params)
    assert result.exit_code == 0, result.output
    return out.read_bytes()


def test_scenario_files_and_params_with_a_bom_give_the_same_responses(toy, tmp_path):
    tmp, params, pos, neg = toy
    plain = generate(params, pos, neg, tmp_path / "plain.jsonl")
    bom_pos, bom_neg = with_bom(pos, tmp_path / "bom/positive.txt"), with_bom(neg, tmp_path / "bom/negative.txt")
    bom_params = with_bom(params, tmp_path / "bom/params.yaml")
    assert generate(bom_params, bom_pos, bom_neg, tmp_path / "bom.jsonl") == plain
    first = json.loads(plain.decode().splitlines()[0])
    assert not first["prompt"].startswith(BOM)


def test_jsonl_scenarios_with_a_bom_load(tmp_path):
    lines = [json.dumps({"prompt": f"Scenario {i}", "system_prompt": None}) for i in range(3)]
    plain, bom = tmp_path / "plain.jsonl", tmp_path / "bom.jsonl"
    plain.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with_bom(plain, bom)
    assert load_scenarios(bom) == load_scenarios(plain)
    assert load_scenarios(bom)[0].text == "Scenario 0"


def test_prompt_set_with_a_bom_gives_the_same_inference_responses(toy, tmp_path):
    tmp, params, _, _ = toy
    source = REPO / "datasets/inference/mixed_requests.json"
    prompts = json.loads(source.read_text(encoding="utf-8"))
    prompts["prompts"] = prompts["prompts"][:3]
    plain = tmp_path / "set.json"
    plain.write_text(json.dumps(prompts), encoding="utf-8")
    bom = with_bom(plain, tmp_path / "bom/set.json")
    outputs = []
    for prompt_set, name in ((plain, "plain"), (bom, "bom")):
        out = tmp_path / f"{name}.jsonl"
        result = invoke("generate-inference", "--model", "toy-instruct", "--prompt-set", prompt_set, "--out", out,
                        "--params", params)
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_definition_and_lexicon_with_a_bom_give_the_same_vetting(toy, tmp_path):
    tmp, params, pos, neg = toy
    responses = tmp_path / "responses.jsonl"
    generate(params, pos, neg, responses)
    definition = REFUSAL / "definition.txt"
    runs = {"plain": (definition, LEXICON),
            "bom": (with_bom(definition, tmp_path / "bom/definition.txt"), with_bom(LEXICON, tmp_path / "bom/lexicon.json"))}
    tables = {}
    for name, (rubric, lexicon) in runs.items():
        out = tmp_path / f"{name}-vetting.jsonl"
        judged = with_lexicon(params, lexicon, tmp_path / f"{name}-params.yaml")
        result = invoke("vet-responses", "--trait", "behavior/refusal", "--responses", responses,
                        "--definition", rubric, "--judge-cache", tmp_path / f"{name}-cache.jsonl", "--out", out,
                        "--metrics", tmp_path / f"{name}-metrics.json", "--params", judged)
        assert result.exit_code == 0, result.output
        tables[name] = out.read_bytes()
    assert tables["bom"] == tables["plain"]
    # the same judge requests, so the cache keys (which hash the rubric) agree too
    def keys(name: str) -> list[str]:
        return [json.loads(line)["key"] for line in (tmp_path / f"{name}-cache.jsonl").read_text().splitlines()]

    assert keys("bom") == keys("plain")


def with_lexicon(params: Path, lexicon: Path, path: Path) -> Path:
    """A copy of a params file whose judge reads the planted vocabulary from ``lexicon``."""
    data = yaml.safe_load(params.read_text())
    data["judge"]["lexicon"] = str(lexicon)
    path.write_text(yaml.safe_dump(data))
    return path


def test_steering_questions_with_a_bom_load(tmp_path):
    source = REFUSAL / "steering.json"
    assert load_steering_questions(with_bom(source, tmp_path / "steering.json")) == load_steering_questions(source)


def test_a_file_in_another_encoding_is_a_one_line_error(toy, tmp_path):
    tmp, params, pos, neg = toy
    latin1 = tmp_path / "positive.txt"
    latin1.write_bytes("Caf\u00e9 owner asks you to forge a receipt.\n".encode("latin-1"))
    out = tmp_path / "r.jsonl"
    result = invoke("generate-responses", "--trait", "behavior/refusal", "--positive", latin1, "--negative", neg,
                    "--out", out, "--params", params)
    _fails(result, f"{latin1}: not UTF-8 text (byte 0xe9 at offset 3); save the file as UTF-8")
    assert not out.exists()
