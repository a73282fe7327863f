"""Stage build_toy_lora: a seeded LoRA adapter on the toy instruct model (the toy model variant)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages._common import ParamsOption, stage_params, user_errors
from trait_interp.core.config import from_mapping
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import read_text

PARAMS = ("toy_lora",)


def read_texts(path: Path) -> list[str]:
    """Non-empty lines; each ``user<TAB>reply`` (a chat turn) or plain text."""
    if not path.is_file():
        raise UserInputError(f"{path}: LoRA training texts not found")
    texts = [line for line in read_text(path).splitlines() if line.strip()]
    if not texts:
        raise UserInputError(f"{path}: no training texts; add lines 'user<TAB>reply'")
    for number, line in enumerate(texts, 1):
        if line.count("\t") > 1 or ("\t" in line and not all(part.strip() for part in line.split("\t"))):
            raise UserInputError(f"{path}: line {number} must be 'user<TAB>reply' (one tab, both sides non-empty) or plain text")
    return texts


@user_errors
def main(
    instruct: Annotated[Path, typer.Option(help="Folder of the toy instruct model the adapter is trained on.")],
    texts: Annotated[Path, typer.Option(help="Training texts, one per line: 'user<TAB>reply' or plain text.")],
    out: Annotated[Path, typer.Option(help="Output folder of the adapter (adapter_config.json, adapter_model.safetensors).")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Train the toy LoRA adapter deterministically from toy_lora (seed, steps, rank, lr)."""
    from trait_interp.toy.models import ToyLoraSettings, build_toy_lora

    settings = from_mapping(ToyLoraSettings, stage_params(params, PARAMS)["toy_lora"], f"{params}:toy_lora")
    if settings.steps < 1 or settings.rank < 1 or settings.lr <= 0:
        raise UserInputError(f"{params}:toy_lora: steps and rank must be >= 1 and lr > 0")
    if not (instruct / "config.json").is_file():
        raise UserInputError(f"{instruct}: toy instruct model not found; build it (dvc repro build_toy_models)")
    lines = read_texts(texts)
    build_toy_lora(instruct, out, settings.seed, lines, settings.steps, settings.rank, settings.lr)
    typer.echo(f"toy LoRA: {out} (rank {settings.rank}, {settings.steps} steps on {len(lines)} texts, base {instruct})")
