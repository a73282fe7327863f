"""A prompt longer than the model's context (prompt + max_new_tokens > max_position_embeddings) fails
after tokenising and before any generation, naming the file and line (or prompt id) and the limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoConfig

from tests.bad_input_toy import toy_models
from tests.pipeline.test_stages import (
    _fails,
    invoke,
    make_params,
    steer_args,
    write_trait,
)
from trait_interp.core.models import ModelSpec, load_tokenizer
from trait_interp.core.prompting import PromptSpec, prompt_ids, uses_chat_template

SMALL = {"extraction.sites": ["residual"], "vectors.methods": ["probe"]}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("context")
    toy_models(tmp, **SMALL)
    return tmp


def text_of_length(model_dir: Path, n_tokens: int) -> str:
    """A text whose prompt (as the stages build it for this model) is exactly ``n_tokens`` ids."""
    tokenizer = load_tokenizer(ModelSpec(path=str(model_dir), dtype="float32"))
    chat = uses_chat_template(tokenizer, "auto")

    def length(words: int) -> int:
        return len(prompt_ids(tokenizer, PromptSpec(" ".join(["the"] * words)), chat))

    words = 1
    while length(words) < n_tokens:
        words += 1
    assert length(words) == n_tokens, "one word must be one token of the toy tokenizer"
    return " ".join(["the"] * words)


def limit_of(model_dir: Path) -> int:
    return AutoConfig.from_pretrained(model_dir).max_position_embeddings


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def generate(params, pos, neg, out):
    return invoke("generate-responses", "--trait", "behavior/refusal", "--positive", pos, "--negative", neg,
                  "--out", out, "--params", params)


def test_a_scenario_over_the_context_names_file_line_and_limit(toy, tmp_path):
    params = make_params(tmp_path, toy)  # response[:5]: 5 new tokens
    limit = limit_of(toy / "models/base")
    short = ["Please forge this signature for me.", "Please spy on my neighbour."]
    pos = write_lines(tmp_path / "pos.txt", [short[0], "", text_of_length(toy / "models/base", limit - 2), short[1]])
    neg = write_lines(tmp_path / "neg.txt", ["Please draft this letter.", "", "Please check my essay.", "Please help."])
    out = tmp_path / "out/responses.jsonl"
    _fails(generate(params, pos, neg, out),
           f"{pos}:3: the prompt is {limit - 2} tokens, and with generation.max_new_tokens = 5 needs {limit + 3}: "
           f"over the model's context of {limit} tokens (max_position_embeddings)",
           "shorten the prompt or lower generation.max_new_tokens")
    assert not out.parent.exists()


def test_a_scenario_that_just_fits_is_generated(toy, tmp_path):
    params = make_params(tmp_path, toy)
    limit = limit_of(toy / "models/base")
    pos = write_lines(tmp_path / "pos.txt", [text_of_length(toy / "models/base", limit - 5)])
    neg = write_lines(tmp_path / "neg.txt", ["Please draft this letter."])
    result = generate(params, pos, neg, tmp_path / "r.jsonl")
    assert result.exit_code == 0, result.output


def test_an_inference_prompt_over_the_context_names_its_id(toy, tmp_path):
    params = make_params(tmp_path, toy, **{"inference.max_new_tokens": 8})
    limit = limit_of(toy / "models/instruct")
    prompts = [{"id": "ok", "text": "What is rain?"}, {"id": "long", "text": text_of_length(toy / "models/instruct", limit - 4)}]
    prompt_set = tmp_path / "set.json"
    prompt_set.write_text(json.dumps({"name": "set", "description": "", "prompts": prompts}))
    out = tmp_path / "inference.jsonl"
    result = invoke("generate-inference", "--model", "toy-instruct", "--prompt-set", prompt_set, "--out", out,
                    "--params", params)
    _fails(result, f"{prompt_set}: prompt id 'long': the prompt is {limit - 4} tokens, and with "
                   f"inference.max_new_tokens = 8 needs {limit + 4}", f"context of {limit} tokens",
           "lower inference.max_new_tokens")
    assert not out.exists()


def test_a_steering_question_over_the_context_names_its_index(toy, tmp_path):
    params = make_params(tmp_path, toy, **SMALL)
    pos, neg = write_trait(tmp_path, n=8)
    out = tmp_path / "exp"
    for step in (
        ("generate-responses", "--trait", "behavior/refusal", "--positive", pos, "--negative", neg,
         "--out", out / "responses.jsonl", "--params", params),
        ("capture-activations", "--responses", out / "responses.jsonl", "--out", out / "activations", "--params", params),
        ("extract-vectors", "--activations", out / "activations", "--out", out / "vectors", "--params", params),
    ):
        result = invoke(*step)
        assert result.exit_code == 0, (step[0], result.output)
    limit = limit_of(toy / "models/instruct")
    questions = tmp_path / "steering.json"
    long_question = text_of_length(toy / "models/instruct", limit)
    questions.write_text(json.dumps({"questions": ["What is rain?", long_question, long_question]}))
    result = invoke(*steer_args(out, params, tmp_path / "steer", cache=tmp_path / "c.jsonl", questions=questions))
    _fails(result, f"{questions}: questions[1]: the prompt is {limit} tokens, and with steering.max_new_tokens = 6",
           "(2 prompts are too long; this is the first)", "lower steering.max_new_tokens")
    assert not (tmp_path / "steer").exists()
