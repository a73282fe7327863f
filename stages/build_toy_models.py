"""Stage build_toy_models: train the tiny base and chat models on the toy world's corpus (traits planted)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stages._common import ParamsOption, rounded, stage_params, user_errors
from trait_interp.core.config import from_mapping
from trait_interp.core.errors import UserInputError
from trait_interp.core.io import atomic_dir, read_text, write_json, write_with
from trait_interp.toy.lexicon import load_lexicons
from trait_interp.toy.world import load_world

if TYPE_CHECKING:
    import pandas as pd

    from trait_interp.toy.training import TrainResult

PARAMS = ("toy_models",)


def loss_curve(result: TrainResult) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({"step": range(1, len(result.losses) + 1), "loss": [round(x, 4) for x in result.losses]})


def training_summary(result: TrainResult, tail: int = 50) -> dict[str, float | int | None]:
    """Steps, the mean loss of the first and the last ``tail`` steps, and the time it took."""
    losses = result.losses
    return {
        "steps": len(losses),
        "first_loss": rounded(sum(losses[:tail]) / len(losses[:tail]), 4),
        "final_loss": rounded(sum(losses[-tail:]) / len(losses[-tail:]), 4),
        "seconds": rounded(result.seconds, 1),
        "cpu_seconds": rounded(result.cpu_seconds, 1),
    }


@user_errors
def main(
    world: Annotated[Path, typer.Option(help="Templates of the toy world's corpus (datasets/toy/world.json).")],
    lexicon: Annotated[Path, typer.Option(help="Planted vocabulary per trait (datasets/toy/lexicon.json).")],
    filler: Annotated[Path, typer.Option(help="Neutral text, one line per sample, mixed into the corpus.")],
    out_base: Annotated[Path, typer.Option(help="Output folder of the base model (completion mode).")],
    out_instruct: Annotated[Path, typer.Option(help="Output folder of the chat model (chat template).")],
    out_judge: Annotated[Path, typer.Option(help="Output folder of a stand-in LLM judge for the local backend.")],
    loss_base: Annotated[Path, typer.Option(help="Loss curve of the base model (.csv: step, loss).")],
    loss_chat: Annotated[Path, typer.Option(help="Loss curve of the chat model (.csv: step, loss).")],
    metrics: Annotated[Path, typer.Option(help="Training metrics (.json): steps, losses, seconds, corpus size.")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Write the toy corpus from its seed, train the base model on it, then tune the chat model from the base."""
    from trait_interp.toy.models import (
        ToyModelSettings,
        add_number_tokens,
        build_judge_model,
    )
    from trait_interp.toy.training import train_toy_models

    settings = from_mapping(ToyModelSettings, stage_params(params, PARAMS)["toy_models"], f"{params}:toy_models")
    for phase in ("base", "chat"):
        phase_settings = getattr(settings, phase)
        if phase_settings.steps < 1 or phase_settings.batch_size < 1 or phase_settings.lr <= 0:
            raise UserInputError(f"{params}:toy_models.{phase}: steps and batch_size must be >= 1 and lr > 0")
    if settings.examples_per_side < 1 or settings.threads < 1:
        raise UserInputError(f"{params}:toy_models: examples_per_side and threads must be >= 1")
    if not filler.is_file():
        raise UserInputError(f"{filler}: filler text not found")
    lines = [line for line in read_text(filler).splitlines() if line.strip()]
    trained = train_toy_models(settings, load_world(world), load_lexicons(lexicon), lines, progress=True)

    with atomic_dir(out_base) as tmp:
        trained.base.save_pretrained(tmp, safe_serialization=True)
        trained.tokenizer.save_pretrained(tmp)
    with atomic_dir(out_instruct) as tmp:
        trained.instruct.save_pretrained(tmp, safe_serialization=True)
        trained.chat_tokenizer.save_pretrained(tmp)
    judge_tokenizer = add_number_tokens(trained.chat_tokenizer)  # the instruct tokenizer is saved: extending it is safe
    judge = build_judge_model(settings, judge_tokenizer)
    with atomic_dir(out_judge) as tmp:
        judge.save_pretrained(tmp, safe_serialization=True)
        judge_tokenizer.save_pretrained(tmp)
    for path, result in ((loss_base, trained.base_training), (loss_chat, trained.chat_training)):
        write_with(path, lambda tmp, result=result: loss_curve(result).to_csv(tmp, index=False))
    write_json(metrics, {
        "base": training_summary(trained.base_training),
        "chat": training_summary(trained.chat_training),
        "corpus": {"texts": len(trained.corpus.texts), "chats": len(trained.corpus.chats)},
        "threads": settings.threads,
    })
    total = trained.base_training.seconds + trained.chat_training.seconds
    typer.echo(
        f"toy models trained in {total:.0f} s: {out_base} (base, loss {training_summary(trained.base_training)['final_loss']}), "
        f"{out_instruct} (chat, loss {training_summary(trained.chat_training)['final_loss']}), {out_judge} (stand-in judge)"
    )
