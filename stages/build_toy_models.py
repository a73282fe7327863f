"""Stage build_toy_models: seeded tiny base + instruct models and a locally trained tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages._common import ParamsOption, stage_params, user_errors
from trait_interp.config import from_mapping
from trait_interp.errors import UserInputError
from trait_interp.io import atomic_dir
from trait_interp.toy import (
    CHAT_TEMPLATE,
    ToyModelSettings,
    add_number_tokens,
    build_judge_model,
    build_model,
    perturbed_copy,
    train_tokenizer,
)

PARAMS = ("toy_models",)


@user_errors
def main(
    corpus: Annotated[Path, typer.Option(help="Text file (one line per sample) to train the tokenizer on.")],
    out_base: Annotated[Path, typer.Option(help="Output folder of the base model (completion mode).")],
    out_instruct: Annotated[Path, typer.Option(help="Output folder of the instruct model (chat template).")],
    out_judge: Annotated[Path, typer.Option(help="Output folder of the toy judge (numbers 0-100 as single tokens).")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Build the toy models (base, instruct and the stand-in judge) deterministically from toy_models.seed."""
    settings = from_mapping(ToyModelSettings, stage_params(params, PARAMS)["toy_models"], f"{params}:toy_models")
    if not corpus.is_file():
        raise UserInputError(f"{corpus}: tokenizer corpus not found")
    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    tokenizer = train_tokenizer(lines, settings.vocab_size, chat=False)
    base = build_model(settings, tokenizer)
    instruct = perturbed_copy(base, settings.instruct_noise, settings.seed)
    with atomic_dir(out_base) as tmp:
        base.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    tokenizer.chat_template = CHAT_TEMPLATE  # the instruct model: same vocabulary, plus a chat template
    with atomic_dir(out_instruct) as tmp:
        instruct.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    judge_tokenizer = add_number_tokens(tokenizer)  # the instruct tokenizer is saved: extending it is safe now
    judge = build_judge_model(settings, judge_tokenizer)
    with atomic_dir(out_judge) as tmp:
        judge.save_pretrained(tmp, safe_serialization=True)
        judge_tokenizer.save_pretrained(tmp)
    typer.echo(
        f"toy models: {out_base} (base), {out_instruct} (instruct), {out_judge} (judge), {settings.num_layers} layers"
    )
