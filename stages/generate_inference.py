"""Stage generate_inference: the application model answers every prompt of a prompt set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from stages._common import (
    ModelRecordOption,
    ParamsOption,
    resolved_model,
    stage_params,
    user_errors,
)
from trait_interp.core.config import from_mapping
from trait_interp.core.datasets import load_prompt_set
from trait_interp.core.errors import UserInputError

PARAMS = ("inference",)


@user_errors
def main(
    model: ModelRecordOption,
    prompt_set: Annotated[Path, typer.Option(help="Prompt set (.json): name, description, prompts [{id, text, note}].")],
    out: Annotated[Path, typer.Option(help="Responses table to write (.jsonl).")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Generate greedy answers with exact token ids and strings (the prompt set's system prompt applies)."""
    import pandas as pd

    from schemas.inference import InferenceResponses
    from trait_interp.core.generation import GenerationSettings, generate_greedy
    from trait_interp.core.models import context_limit, load_model, load_tokenizer
    from trait_interp.core.prompting import (
        PromptSpec,
        check_context,
        prompt_ids,
        token_strings,
        uses_chat_template,
    )
    from trait_interp.core.tables import write_table

    p = stage_params(params, PARAMS)
    record, spec, where = resolved_model(model)
    settings = from_mapping(GenerationSettings, p["inference"], f"{params}:inference")
    if settings.max_new_tokens == "auto":
        raise UserInputError(f"{params}:inference.max_new_tokens: give a number of tokens (auto is for extraction)")
    prompts = load_prompt_set(prompt_set)

    tokenizer = load_tokenizer(spec)
    chat = uses_chat_template(tokenizer, spec.prompt_mode)
    ids = [
        prompt_ids(tokenizer, PromptSpec(q.text, prompts.system_prompt), chat, spec.merge_system_prompt)
        for q in prompts.prompts
    ]
    labels = [f"{prompt_set}: prompt id {q.id!r}" for q in prompts.prompts]
    check_context(ids, labels, int(settings.max_new_tokens), context_limit(spec), "inference.max_new_tokens")
    loaded = load_model(spec, where)
    responses = generate_greedy(
        loaded, ids, int(settings.max_new_tokens), tokenizer.pad_token_id, record.eos_token_ids,
        settings.batch_size, progress=True,
    )
    table = pd.DataFrame(
        {
            "prompt_set": prompts.name,
            "prompt_id": [str(q.id) for q in prompts.prompts],
            "prompt": [q.text for q in prompts.prompts],
            "system_prompt": prompts.system_prompt,
            "note": [q.note for q in prompts.prompts],
            "extra": [json.dumps(q.extra, ensure_ascii=False, sort_keys=True) for q in prompts.prompts],
            "model": record.key,
            "source": spec.source,
            "chat": chat,
            "prompt_ids": ids,
            "response_ids": responses,
            "prompt_tokens": [token_strings(tokenizer, i) for i in ids],
            "response_tokens": [token_strings(tokenizer, r) for r in responses],
            "prompt_end": [len(i) for i in ids],
            "response": [tokenizer.decode(r, skip_special_tokens=True) for r in responses],
        }
    )
    write_table(table, InferenceResponses, out)
    typer.echo(f"{prompts.name}: {len(table)} responses from {record.key} -> {out}")
