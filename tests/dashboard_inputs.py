"""A synthetic experiment for the report stage: every table it reads, written through the schemas.

Big enough to page through (120 prompts by default), with notes, an extra category field, a judge
label with some prompts unlabelled, one very long multi-line prompt and one unique search word.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from schemas.analyses import ClauseDiff, DiffCosine, ModelDiff
from schemas.evaluation import VectorEvaluation
from schemas.inference import InferenceResponses
from schemas.interventions import InterventionResponses, InterventionTrace
from schemas.projections import Projections
from schemas.steering import SteeringResponses
from schemas.sweep import SweepResponses, SweepResults
from trait_interp.core.tables import write_table
from trait_interp.steering.best import BestSteering, write_best
from trait_interp.steering.intervention_record import (
    GateRecord,
    InterventionRecord,
    write_record,
)
from trait_interp.steering.sweep_results import (
    MethodBestLayer,
    SweepBestLayers,
    write_best_layers,
)

TRAITS = ("behavior/refusal", "tone/formality")
MODEL, DIFF_MODEL, PROMPT_SET = "toy-instruct", "toy-lora", "big_set"
NOTES = ("roleplay", "fiction", "translation", "authority")
LONG_ROW = 7  # this prompt is long and multi-line: shown in full, never cut
NEEDLE_ROW = 37  # the only prompt with the word "zanzibar"
N_LAYERS = 4
INTERVENTION, GATE_LAYER, GATE_THRESHOLD = "refusal_gate", 2, 0.3


@dataclass(frozen=True)
class Synthetic:
    root: Path
    params: Path
    n_prompts: int
    layers: tuple[int, ...]
    intervention: bool = False

    def args(self, out: Path) -> list[str]:
        r = self.root
        gated = ["--intervention-responses", f"{r}/interventions/{{name}}/responses.jsonl",
                 "--intervention-trace", f"{r}/interventions/{{name}}/trace.parquet",
                 "--intervention-record", f"{r}/interventions/{{name}}/intervention.json"] if self.intervention else []
        return ["report", *gated, "--evaluation", f"{r}/extraction/{{trait}}/evaluation.csv",
                "--steering-responses", f"{r}/steering/{{trait}}/responses.jsonl",
                "--best", f"{r}/steering/{{trait}}/best.json",
                "--sweep-results", f"{r}/sweep/{{trait}}/results.csv",
                "--sweep-responses", f"{r}/sweep/{{trait}}/responses.jsonl",
                "--sweep-best", f"{r}/sweep/{{trait}}/best_layers.json",
                "--responses", f"{r}/inference/{{model}}/{{prompt_set}}/responses.jsonl",
                "--projections", f"{r}/inference/{{model}}/{{prompt_set}}/projections.parquet",
                "--calibration", f"{r}/inference/{{model}}/massive_dims.json",
                "--labels", f"{r}/analyses/labels/{{name}}.csv",
                "--diff-paired", str(r / "model_diff/paired.csv"), "--diff-cosines", str(r / "model_diff/cosines.csv"),
                "--diff-clauses", str(r / "model_diff/clauses.jsonl"), "--out", str(out), "--params", str(self.params)]

    @property
    def responses(self) -> Path:
        return self.root / "inference" / MODEL / PROMPT_SET / "responses.jsonl"

    @property
    def projections(self) -> Path:
        return self.root / "inference" / MODEL / PROMPT_SET / "projections.parquet"


def label_of(row: int) -> str | None:
    """The judge verdict of prompt row ``row``; every tenth prompt is unscored (no label)."""
    return None if row % 10 == 9 else ("yes" if row % 3 == 0 else "no")


def prompt_text(row: int) -> str:
    if row == LONG_ROW:
        return "\n".join(f"Line {k} of a long jailbreak preamble that must be shown in full." for k in range(60)) + "\nEND-OF-PROMPT"
    word = " zanzibar" if row == NEEDLE_ROW else ""
    return f"Synthetic request number {row + 1}{word}: please explain something about topic {row % 7}."


def raw_value(row: int, trait: int, layer: int, t: int) -> float:
    return round(3 * math.sin(0.7 * t + row + 2 * trait) + layer - trait, 4)


def massive_value(mode: str, row: int, trait: int, t: int) -> float:
    return round((0.5 if mode == "recommended" else 1.5) * math.cos(0.3 * t + row + trait), 4)


def synthetic_experiment(
    root: Path, n_prompts: int = 120, layers: tuple[int, ...] = (1, 2), cleaned: str = "none",
    own_layers: dict[str, tuple[int, ...]] | None = None, intervention: bool = False,
) -> Synthetic:
    """``own_layers``: trait -> its layers, for traits projected at different layers (``layer: best``);
    ``intervention``: also a gated intervention's answers and gate record (``INTERVENTION``)."""
    root.mkdir(parents=True, exist_ok=True)
    params = {
        "experiment": "synthetic", "traits": list(TRAITS), "application_model": MODEL, "monitor_models": [MODEL],
        "prompt_sets": [PROMPT_SET], "diff_model": DIFF_MODEL, "monitoring": {"clean_massive_dims": cleaned},
        "analyses": {"judge_labels": {"refused": {"prompt_set": PROMPT_SET, "trait": TRAITS[0], "threshold": 50}}},
        "interventions": {INTERVENTION: {"kind": "gated"}} if intervention else {},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for i, trait in enumerate(TRAITS):
        _extraction(root / "extraction" / trait, trait, i)
        _steering(root / "steering" / trait, trait, i)
        _sweep(root / "sweep" / trait, trait, i)
    by_trait = {trait: (own_layers or {}).get(trait, layers) for trait in TRAITS}
    _monitoring(root, n_prompts, by_trait, cleaned)
    _model_diff(root / "model_diff", by_trait)
    if intervention:
        _intervention(root / "interventions" / INTERVENTION)
    return Synthetic(root, root / "params.yaml", n_prompts, layers, intervention)


def _extraction(folder: Path, trait: str, index: int) -> None:
    rows = [
        {"trait": trait, "site": site, "method": method, "layer": layer,
         "train_accuracy": 0.8, "val_accuracy": round(0.5 + 0.1 * ((layer + m + index) % 5), 3),
         "cohens_d": round((layer - 1.5) * (1 if m % 2 else -1) + 0.1 * index, 3), "polarity_correct": layer != 0,
         "p_value": 0.05, "threshold": round(0.25 * layer - index, 3), "n_val_positive": 6, "n_val_negative": 6}
        for site in ("residual", "attn_out")
        for m, method in enumerate(("mean_diff", "probe", "random_baseline"))
        for layer in range(N_LAYERS)
    ]
    write_table(pd.DataFrame(rows), VectorEvaluation, folder / "evaluation.csv")


def _steering(folder: Path, trait: str, index: int) -> None:
    questions = [f"Question {q} about {trait}?" for q in range(4)]
    configs = [("baseline", 0, 0.0), ("search", 0, 10.0), ("search", 1, 13.0), ("search", 2, 8.5)]
    rows = [
        {"trait": trait, "kind": kind, "step": step, "layers": "2", "method": "probe", "site": "residual",
         "coefficient": coef, "ratio": coef / 20, "question_index": q, "question": text,
         "response": f"Answer to {q} at {coef}", "response_ids": [1, 2, 3],
         "trait_score": None if (q == 3 and step == 1) else 20 + 3 * coef + q, "coherence": 90 - 2 * coef - q}
        for kind, step, coef in configs
        for q, text in enumerate(questions)
    ]
    write_table(pd.DataFrame(rows), SteeringResponses, folder / "responses.jsonl")
    best = BestSteering(
        trait=trait, model=MODEL, position="response[:5]", layers=(2,), method="probe", site="residual",
        positions="all", direction="positive", coefficient=10.0, ratio=0.5, trait_mean=51.5, coherence_mean=68.5,
        baseline_trait_mean=21.5, baseline_coherence_mean=88.5, delta=30.0, valid=False, min_coherence=70.0,
        activation_norm=20.0,
    )
    write_best(folder / "best.json", best)


SWEEP_ROWS = ("0", "1", "2", "3", "1-2")  # layers, then one window
SWEEP_RATIOS = (-1.0, -0.5, 0.5, 1.0)
SWEEP_METHODS = ("probe", "random_baseline")


def sweep_cell(method: int, row: int, ratio: float, trait: int) -> tuple[float, float]:
    """(trait mean, coherence mean) of a synthetic sweep cell: the probe moves the trait, coherence falls with |ratio|."""
    push = (20 if method == 0 else 2) * ratio * (1 + row % 3) + trait
    return round(min(100.0, max(0.0, 50 + push)), 3), round(90 - 25 * abs(ratio) - 3 * row, 3)


def _sweep(folder: Path, trait: str, index: int) -> None:
    questions = [f"Sweep question {q} about {trait}?" for q in range(3)]
    results, responses = [], []
    for q, text in enumerate(questions):
        responses.append({"trait": trait, "config": 0, "kind": "baseline", "method": "none", "site": "residual",
                          "layers": "", "ratio": 0.0, "coefficient": 0.0, "question_index": q, "question": text,
                          "response": f"Baseline answer {q}", "response_ids": [1, 2], "trait_score": 50.0,
                          "coherence": 90.0, "relevance": None, "composite": 0.6})
    config = 0
    for m, method in enumerate(SWEEP_METHODS):
        for row, layers in enumerate(SWEEP_ROWS):
            first, last = (int(x) for x in (layers.split("-") if "-" in layers else (layers, layers)))
            for ratio in SWEEP_RATIOS:
                config += 1
                trait_mean, coherence = sweep_cell(m, row, ratio, index)
                results.append({
                    "trait": trait, "config": config, "kind": "window" if "-" in layers else "layer", "method": method,
                    "site": "residual", "layers": layers, "first_layer": first, "last_layer": last, "ratio": ratio,
                    "coefficient": ratio * 20, "trait_mean": trait_mean, "coherence_mean": coherence,
                    "relevance_mean": None, "composite": 0.5, "baseline_trait_mean": 50.0,
                    "baseline_coherence_mean": 90.0, "delta": trait_mean - 50.0, "effect": trait_mean - 50.0,
                    "side_effect": round(0.1 * abs(ratio) * (1 + row), 6), "coherent": coherence >= 70, "n": 3,
                    "n_scored": 3})
                for q, text in enumerate(questions):
                    responses.append({
                        "trait": trait, "config": config, "kind": results[-1]["kind"], "method": method,
                        "site": "residual", "layers": layers, "ratio": ratio, "coefficient": ratio * 20,
                        "question_index": q, "question": text, "response": f"{method} {layers} {ratio:+g} answer {q}",
                        "response_ids": [3, 4], "trait_score": trait_mean, "coherence": coherence, "relevance": None,
                        "composite": 0.5})
    table = pd.DataFrame(results)
    write_table(table, SweepResults, folder / "results.csv")
    write_table(pd.DataFrame(responses), SweepResponses, folder / "responses.jsonl")
    write_best_layers(folder / "best_layers.json", SweepBestLayers(trait, "residual", 70.0, (
        MethodBestLayer("probe", 2), MethodBestLayer("random_baseline", 2))))


def _monitoring(root: Path, n_prompts: int, layers: dict[str, tuple[int, ...]], cleaned: str) -> None:
    folder = root / "inference" / MODEL / PROMPT_SET
    responses, projections = [], []
    for row in range(n_prompts):
        prompt_tokens = ["<bos>", "Q", str(row)]
        response_tokens = [f" w{t}" for t in range(3 + row % 7)] + (["\n", "<eos>"] if row % 4 == 0 else [])
        responses.append({
            "prompt_set": PROMPT_SET, "prompt_id": str(row + 1), "prompt": prompt_text(row), "system_prompt": None,
            "note": NOTES[row % len(NOTES)], "extra": json.dumps({"category": f"cat{row % 5}", "source": "synthetic"}),
            "model": MODEL, "source": "synthetic", "chat": True,
            "prompt_ids": list(range(1, 1 + len(prompt_tokens))), "response_ids": list(range(10, 10 + len(response_tokens))),
            "prompt_tokens": prompt_tokens, "response_tokens": response_tokens, "prompt_end": len(prompt_tokens),
            "response": "".join(response_tokens),
        })
        tokens = prompt_tokens + response_tokens
        for i, trait in enumerate(TRAITS):
            for layer in layers[trait]:
                for t, token in enumerate(tokens):
                    raw = raw_value(row, i, layer, t)
                    massive = {mode: massive_value(mode, row, i, t) for mode in ("recommended", "top_k")}
                    projections.append({
                        "prompt_id": str(row + 1), "frame": "prompt" if t < len(prompt_tokens) else "response",
                        "token_index": t, "token": token, "layer": layer, "trait": trait, "method": "probe",
                        "site": "residual", "projection": raw - (massive[cleaned] if cleaned != "none" else 0.0),
                        "token_norm": 10.0, "massive_recommended": massive["recommended"], "massive_top_k": massive["top_k"],
                    })
    write_table(pd.DataFrame(responses), InferenceResponses, folder / "responses.jsonl")
    write_table(pd.DataFrame(projections), Projections, folder / "projections.parquet")
    calibration = {"model": MODEL, "recommended": [1], "top_dims_by_layer": {str(k): [1, 2 + k] for k in range(N_LAYERS)}}
    (root / "inference" / MODEL / "massive_dims.json").write_text(json.dumps(calibration))
    labels = [{"prompt_id": str(row + 1), "label": label_of(row), "score": 50.0} for row in range(n_prompts)
              if label_of(row) is not None]
    (root / "analyses" / "labels").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(labels).to_csv(root / "analyses" / "labels" / "refused.csv", index=False)


def _model_diff(folder: Path, layers: dict[str, tuple[int, ...]]) -> None:
    paired = [{"trait": trait, "method": "probe", "site": "residual", "layer": layer, "n_prompts": 10, "mean_a": 1.0,
               "mean_b": 1.0 + i + layer, "std_a": 1.0, "std_b": 1.0, "mean_diff": i + layer, "paired_d": 0.5 * (i + layer),
               "cohens_d": 0.4 * (i + layer), "p_value": 0.01}
              for i, trait in enumerate(TRAITS) for layer in layers[trait]]
    cosines = [{"trait": trait, "layer": layer, "cosine": round(0.1 * (layer - i), 3), "method": "probe", "site": "residual"}
               for i, trait in enumerate(TRAITS) for layer in range(N_LAYERS)]
    clauses = [{"prompt_id": str(p), "trait": trait, "method": "probe", "site": "residual", "layer": layer,
                "clause_rank": 1, "text": f"clause of prompt {p}", "start": 0, "end": 3, "n_tokens": 3,
                "mean_delta": round((p - 10) * 0.3, 3), "max_delta": 5.0}
               for trait in TRAITS for layer in layers[trait] for p in range(1, 31)]
    write_table(pd.DataFrame(paired), ModelDiff, folder / "paired.csv")
    write_table(pd.DataFrame(cosines), DiffCosine, folder / "cosines.csv")
    write_table(pd.DataFrame(clauses), ClauseDiff, folder / "clauses.jsonl")


def gate_value(row: int, t: int) -> float:
    """What the synthetic gate read at position ``t`` of intervened prompt ``row``."""
    return round(math.sin(0.9 * t + row), 4)


def gate_fired(row: int, t: int) -> bool:
    return t > 0 and gate_value(row, t) > GATE_THRESHOLD


def _intervention(folder: Path, n: int = 6) -> None:
    """A token-mode gate on TRAITS[0] at GATE_LAYER: 6 prompts, half triggers, answered unsteered and intervened."""
    responses, trace = [], []
    for row in range(n):
        prompt_tokens = ["<bos>", "Q", str(row)]
        group = "trigger" if row % 2 == 0 else "non_trigger"
        for condition in ("baseline", "intervened"):
            response_tokens = [f" a{t}" for t in range(4 + row % 3)] if condition == "intervened" else [" b0", " b1"]
            n_read = len(prompt_tokens) + len(response_tokens) - 1  # the last token is never read
            fired = [gate_fired(row, t) for t in range(n_read)] if condition == "intervened" else []
            responses.append({
                "intervention": INTERVENTION, "kind": "gated", "trait": TRAITS[0], "prompt_set": PROMPT_SET,
                "prompt_id": str(row + 1), "group": group, "condition": condition, "prompt": prompt_text(row),
                "note": NOTES[row % len(NOTES)], "extra": "{}", "prompt_ids": [1, 2, 3],
                "response_ids": list(range(10, 10 + len(response_tokens))), "prompt_tokens": prompt_tokens,
                "response_tokens": response_tokens, "response": "".join(response_tokens),
                "trait_score": 50.0 + (10 * row if condition == "intervened" else 0), "coherence": 80.0,
                "fired": any(fired) if condition == "intervened" else None,
                "steered": any(fired) if condition == "intervened" else None,
                "first_fired": fired.index(True) if any(fired) else None, "n_steered": sum(fired) if fired else None,
                "gate_score": max(gate_value(row, t) for t in range(1, n_read)) if fired else None,
                "changed": True if condition == "intervened" else None, "kl": 0.01 * row if condition == "intervened" else None,
            })
            tokens = prompt_tokens + response_tokens
            for t, hit in enumerate(fired):
                trace.append({
                    "prompt_id": str(row + 1), "group": group, "read": "gate",
                    "frame": "prompt" if t < len(prompt_tokens) else "response", "token_index": t, "token": tokens[t],
                    "layer": GATE_LAYER, "trait": TRAITS[0], "method": "probe", "site": "residual",
                    "projection": gate_value(row, t), "fired": hit, "steered": hit,
                })
    write_table(pd.DataFrame(responses), InterventionResponses, folder / "responses.jsonl")
    write_table(pd.DataFrame(trace), InterventionTrace, folder / "trace.parquet")
    gate = GateRecord(TRAITS[0], GATE_LAYER, "probe", "residual", GATE_THRESHOLD, "value", "above", "token", True)
    write_record(folder / "intervention.json", InterventionRecord(
        name=INTERVENTION, kind="gated", trait=TRAITS[0], model=MODEL, method="probe", site="residual", positions="all",
        layers=(GATE_LAYER,), coefficient=10.0, gate=gate, caps=(), low_from=None, high_from=None, prompt_set=PROMPT_SET,
        label="note", trigger="harmful", non_trigger="benign"))
