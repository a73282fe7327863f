"""``trait-interp <stage>``: every DVC stage as a command (also ``python -m stages``).

Commands load lazily: ``trait-interp <stage> ...`` imports that stage's module alone (and through it
only the library it uses), never every stage, so a stage starts in about a second and the toy
world's stages can be deleted with the toy package. ``--help`` lists the commands from each module's
docstring without importing any.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import click
import typer

HERE = Path(__file__).parent

# command -> module of stages/ (a DVC stage of the same name, with underscores)
STAGES = {
    "validate": "validate",
    "stage-inputs": "stage_inputs",
    "build-toy-models": "build_toy_models",
    "build-toy-lora": "build_toy_lora",
    "resolve-toy-models": "resolve_toy_models",
    "resolve-models": "resolve_models",
    "generate-responses": "generate_responses",
    "vet-responses": "vet_responses",
    "capture-activations": "capture_activations",
    "extract-vectors": "extract_vectors",
    "evaluate-vectors": "evaluate_vectors",
    "steering-eval": "steering_eval",
    "steering-sweep": "steering_sweep",
    "for-each-trait": "for_each_trait",
    "intervention-eval": "intervention_eval",
    "generate-inference": "generate_inference",
    "calibrate-massive-dims": "calibrate_massive_dims",
    "monitor-layers": "monitor_layers",
    "project": "project",
    "capture-raw": "capture_raw",
    "label-responses": "label_responses",
    "compare-groups": "compare_groups",
    "compare-judged-groups": "compare_judged_groups",
    "trait-correlation": "trait_correlation",
    "decompose": "decompose",
    "model-diff": "model_diff",
    "cross-evaluate": "cross_evaluate",
    "steering-predictors": "steering_predictors",
    "report": "report",
}
# not stages: the dashboard server, switching params to a preset, running a command with a warm stage server
COMMANDS = {**STAGES, "serve": "serve", "preset": "preset", "warm": "warm"}


def available() -> dict[str, str]:
    """The commands whose module is present (the toy stages go with the toy package)."""
    return {name: module for name, module in COMMANDS.items() if (HERE / f"{module}.py").is_file()}


def summary(module: str) -> str:
    """The first line of a stage module's docstring, read without importing it."""
    doc = ast.get_docstring(ast.parse((HERE / f"{module}.py").read_text(encoding="utf-8"))) or ""
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    first = first.split(": ", 1)[-1] if first.startswith("Stage ") else first
    return first[:1].upper() + first[1:]


class LazyStages(typer.core.TyperGroup):
    """A command group that imports a stage's module only when that command runs (or shows its help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(available())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = available().get(name)
        if module is None:
            return None
        stage = importlib.import_module(f"stages.{module}")
        single = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
        single.command(name=name)(stage.main)
        command = typer.main.get_command(single)
        command.name = name
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, summary(module)) for name, module in available().items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(
    cls=LazyStages,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,  # keep secrets (API keys) out of tracebacks
    help="trait-interp: extract, steer and monitor behavioural traits. Each command is one DVC stage, "
    "except serve (the dashboard), preset and warm.",
)


@app.callback()
def _group() -> None:  # the group itself does nothing; its help is the app's
    pass


def main() -> None:
    app(prog_name="trait-interp")
