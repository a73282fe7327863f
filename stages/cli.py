"""``trait-interp <stage>``: every DVC stage as a command (also ``python -m stages``)."""

from __future__ import annotations

import typer

from stages import (
    build_toy_lora,
    build_toy_models,
    calibrate_massive_dims,
    capture_activations,
    capture_raw,
    compare_groups,
    compare_judged_groups,
    cross_evaluate,
    decompose,
    evaluate_vectors,
    extract_vectors,
    generate_inference,
    generate_responses,
    label_responses,
    model_diff,
    project,
    report,
    serve,
    steering_eval,
    trait_correlation,
    validate,
    vet_responses,
)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # keep secrets (API keys) out of tracebacks
    help="trait-interp: extract, steer and monitor behavioural traits. Each command is one DVC stage, "
    "except serve (the dashboard).",
)

STAGES = {
    "validate": validate,
    "build-toy-models": build_toy_models,
    "build-toy-lora": build_toy_lora,
    "generate-responses": generate_responses,
    "vet-responses": vet_responses,
    "capture-activations": capture_activations,
    "extract-vectors": extract_vectors,
    "evaluate-vectors": evaluate_vectors,
    "steering-eval": steering_eval,
    "generate-inference": generate_inference,
    "calibrate-massive-dims": calibrate_massive_dims,
    "project": project,
    "capture-raw": capture_raw,
    "label-responses": label_responses,
    "compare-groups": compare_groups,
    "compare-judged-groups": compare_judged_groups,
    "trait-correlation": trait_correlation,
    "decompose": decompose,
    "model-diff": model_diff,
    "cross-evaluate": cross_evaluate,
    "report": report,
}

for _name, _module in STAGES.items():
    app.command(name=_name)(_module.main)
app.command(name="serve")(serve.main)  # not a stage: serves (or exports) what the report stage built


def main() -> None:
    app(prog_name="trait-interp")
