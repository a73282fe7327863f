"""Stage generate_responses: greedy completions of both sides of every scenario of one trait."""

from __future__ import annotations

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
from trait_interp.core.datasets import TraitScenarios, load_scenarios, pair_scenarios
from trait_interp.core.positions import parse_position, resolve_max_new_tokens

PARAMS = ("extraction.position", "extraction.paired", "generation")
# the options whose paths this stage writes, one trait at a time (stages/for_each_trait.py)
TRAIT_OUTPUTS = ("out",)


@user_errors
def main(
    trait: Annotated[str, typer.Option(help="Trait name, category/trait.")],
    positive: Annotated[Path, typer.Option(help="positive.txt (or .jsonl) of the trait.")],
    negative: Annotated[Path, typer.Option(help="negative.txt (or .jsonl), line-paired with positive.")],
    out: Annotated[Path, typer.Option(help="Responses table to write (.jsonl).")],
    model: ModelRecordOption,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Generate greedy responses for both sides of every scenario with the extraction model."""
    import pandas as pd

    from schemas.responses import Responses
    from trait_interp.core.generation import GenerationSettings, generate_greedy
    from trait_interp.core.models import context_limit, load_model, load_tokenizer
    from trait_interp.core.prompting import (
        PromptSpec,
        check_context,
        prompt_ids,
        uses_chat_template,
    )
    from trait_interp.core.tables import write_table

    p = stage_params(params, PARAMS)
    record, spec, where = resolved_model(model)
    position = parse_position(p["extraction.position"])
    gen = from_mapping(GenerationSettings, p["generation"], f"{params}:generation")
    max_new = resolve_max_new_tokens(position, None if gen.max_new_tokens == "auto" else gen.max_new_tokens)
    scenarios = TraitScenarios(trait, load_scenarios(positive), load_scenarios(negative), positive, negative)
    pairs = pair_scenarios(scenarios, paired=p["extraction.paired"])

    tokenizer = load_tokenizer(spec)
    chat = uses_chat_template(tokenizer, spec.prompt_mode)
    rows = [
        (pair.pair_index, polarity, scenario)
        for pair in pairs
        for polarity, scenario in (("positive", pair.positive), ("negative", pair.negative))
        if scenario is not None
    ]
    prompts = [
        prompt_ids(tokenizer, PromptSpec(s.text, s.system_prompt), chat, spec.merge_system_prompt) for _, _, s in rows
    ]
    files = {"positive": positive, "negative": negative}
    labels = [f"{files[polarity]}:{s.line}" for _, polarity, s in rows]
    check_context(prompts, labels, max_new, context_limit(spec), "generation.max_new_tokens")
    loaded = load_model(spec, where)
    responses = generate_greedy(loaded, prompts, max_new, tokenizer.pad_token_id, record.eos_token_ids, gen.batch_size,
                                progress=True)
    table = pd.DataFrame(
        {
            "trait": trait,
            "pair_index": [r[0] for r in rows],
            "polarity": [r[1] for r in rows],
            "scenario_line": [r[2].line for r in rows],
            "prompt": [r[2].text for r in rows],
            "system_prompt": [r[2].system_prompt for r in rows],
            "chat": chat,
            "prompt_ids": prompts,
            "response_ids": responses,
            "response": [tokenizer.decode(ids, skip_special_tokens=True) for ids in responses],
            "model": record.key,
        }
    )
    write_table(table, Responses, out)
    typer.echo(f"{trait}: {len(table)} responses ({max_new} new tokens max, chat={chat}) -> {out}")
