"""Real models by params alone: each preset through `dvc repro` on the offline fake hub, dvc.yaml untouched.

The fake hub (tests/fake_hub.py) serves tiny random-weight models under the real hub ids, with the
real architectures, chat templates and generation configs (Gemma-2 with ``<end_of_turn>`` in its EOS
list and a template that refuses a system turn; Llama-3 with ``<|eot_id|>``; 80-layer Llama-70B
shapes; the RM-sycophancy LoRA), read with ``HF_HUB_OFFLINE=1``. The judge is the local
OpenAI-compatible stub. A project applies a preset with ``trait-interp preset``, then the few
overrides a CPU box needs (documented in docs/models.md), and reproduces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.fake_hub import copy_hub, offline_env, publish_new_snapshot
from tests.openai_stub import serve_stub
from tests.toy_project import copy_sources, run, stages_run

TRAITS = ["behavior/refusal", "tone/formality"]
TOY_STAGES = ("build_toy_models", "build_toy_lora", "resolve_toy_models")
EXTRACTION = ("generate_responses", "vet_responses", "capture_activations", "extract_vectors", "evaluate_vectors")


@pytest.fixture(scope="module")
def judge():
    with serve_stub() as stub:
        yield stub


def cpu_overrides(params: dict, judge_url: str, cpu_models: bool) -> None:
    """What this CPU box changes after a preset: small runs, the stub judge, no GPU device map."""
    params["traits"] = list(TRAITS)
    params["prompt_sets"] = ["mixed_requests"]
    params["massive_dims"]["prompt_set"] = "mixed_requests"
    params["vetting"].update(pos_threshold=0, neg_threshold=100, min_pairs=3)
    params["vectors"]["methods"] = ["probe", "mean_diff"]
    params["steering"].update(subset=2, search_steps=1, sweep_ratios=None, max_new_tokens=4)
    params["sweep"].update(layers=[1, 2], windows=[], methods=["probe"], ratios=[1.0], subset=2, max_new_tokens=4,
                           side_effect_prompts=2)  # the fake models have 4 layers
    params["inference"]["max_new_tokens"] = 6
    params["judge"]["base_url"] = judge_url
    params["analyses"].update(group_comparisons={}, judge_labels={}, judged_comparisons={}, decompositions={},
                              n_boot=50, model_diff_prompt_set="mixed_requests")
    params["analyses"]["cross_evaluation"]["traits"] = list(TRAITS)
    if cpu_models:
        for entry in params["models"].values():
            entry.update(device_map=None, device="cpu")


def real_project(root: Path, hub_dir: Path, preset: str, judge_url: str, cpu_models: bool = False) -> dict[str, str]:
    """A fresh repo with the preset applied (and the CPU overrides), committed; returns its environment."""
    root.mkdir(parents=True)
    copy_sources(REPO, root)
    env = {**offline_env(hub_dir), "OPENAI_API_KEY": "sk-test-dummy"}
    run([sys.executable, "-m", "stages", "preset", preset], root, env=env)
    params = yaml.safe_load((root / "params.yaml").read_text())
    cpu_overrides(params, judge_url, cpu_models)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "preset"]):
        run(args, root)
    return env


def dvc_yaml_unchanged(root: Path) -> bool:
    return subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "dvc.yaml"], cwd=root).returncode == 0


def record(root: Path, experiment: str, key: str) -> dict:
    return json.loads((root / f"experiments/{experiment}/models/resolved/{key}.json").read_text())


def stages_using(root: Path, key: str) -> set[str]:
    """Every stage of the lock whose dependencies hold the record of model ``key``."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {name for name, stage in lock.items()
            if any(dep["path"].endswith(f"models/resolved/{key}.json") for dep in stage.get("deps", []))}


def test_gemma_2_2b_by_params_alone(built_hub, judge, tmp_path):
    hub = copy_hub(built_hub, tmp_path / "hub")  # this test publishes a new upload into its own copy
    root = tmp_path / "gemma"
    env = real_project(root, hub.cache_dir, "gemma-2-2b", judge.base_url)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["layer"] = 2  # the fake Gemma has 4 layers (the real one 26: the preset's 12)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "commit", "-qam", "a layer of the fake model"], root)

    ran = stages_run(run(["dvc", "repro"], root, env=env))
    assert dvc_yaml_unchanged(root)
    assert not [s for s in ran if s.startswith(TOY_STAGES)]
    assert {"resolve_models@hub", "report"} <= ran and {f"steering_eval@{t}" for t in TRAITS} <= ran
    experiment = "gemma-2-2b"
    it = record(root, experiment, "gemma-2-2b-it")
    assert it["sha"] == hub.sha("google/gemma-2-2b-it") and it["architecture"] == "gemma2"
    assert it["eos_token_ids"] == [1, 107]  # the tokenizer's <eos> and generation_config's <end_of_turn>
    base_sha = hub.sha("google/gemma-2-2b")
    for trait in TRAITS:
        sidecar = json.loads((root / f"experiments/{experiment}/extraction/gemma-2-2b/vectors/{trait}/residual/probe.json")
                             .read_text())
        assert sidecar["revision"] == base_sha and sidecar["model"] == "google/gemma-2-2b" and sidecar["adapter"] is None
        meta = json.loads((root / f"experiments/{experiment}/extraction/gemma-2-2b/activations/{trait}/meta.json")
                          .read_text())
        assert meta["revision"] == base_sha
    # the base model extracted in completion mode although its tokenizer ships a chat template
    first = json.loads((root / f"experiments/{experiment}/extraction/gemma-2-2b/responses/{TRAITS[0]}.jsonl")
                       .read_text().splitlines()[0])
    assert first["chat"] is False

    # an unchanged resolution re-runs nothing but the (cheap) resolution itself
    assert stages_run(run(["dvc", "repro"], root, env=env)) == {"resolve_models@hub"}
    # a new upload of the chat model: its record changes, then exactly its stages are stale and re-run
    new_sha = publish_new_snapshot(hub, "google/gemma-2-2b-it")
    run(["dvc", "repro", "--single-item", "resolve_models@hub"], root, env=env)
    assert record(root, experiment, "gemma-2-2b-it")["sha"] == new_sha
    assert record(root, experiment, "gemma-2-2b")["sha"] == base_sha
    status = _status(root, env)
    using = stages_using(root, "gemma-2-2b-it")
    assert using and not using & set(EXTRACTION)  # the extraction phases read the base model only
    assert set(status) - {"resolve_models@hub"} == using
    # (the repro that would follow re-runs those stages and the model-free readers of their outputs:
    # minutes on this CPU for what `dvc status` has shown, so it is left out of the suite)


def _status(root: Path, env: dict[str, str]) -> dict:
    """``dvc status --json``: stage -> what changed."""
    done = subprocess.run(["dvc", "status", "--json"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                               "DVC_NO_ANALYTICS": "1", **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "{}")


def test_llama_70b_rm_sycophancy_by_params_alone(built_hub, judge, tmp_path):
    root = tmp_path / "llama70b"
    env = real_project(root, built_hub.cache_dir, "llama-3.3-70b-rm-sycophancy", judge.base_url, cpu_models=True)
    ran = stages_run(run(["dvc", "repro"], root, env=env))
    assert dvc_yaml_unchanged(root)
    assert not [s for s in ran if s.startswith(TOY_STAGES)]
    experiment = "llama-3.3-70b-rm-sycophancy"
    base = record(root, experiment, "llama-3.1-70b")
    assert (base["num_layers"], base["sha"]) == (80, built_hub.sha("meta-llama/Llama-3.1-70B"))
    lora = record(root, experiment, "rm-sycophant")
    assert lora["adapter_sha"] == built_hub.sha("auditing-agents/llama-3.3-70b-dpo-rt-lora")
    assert lora["sha"] == built_hub.sha("meta-llama/Llama-3.3-70B-Instruct")
    assert len(record(root, experiment, "llama-3.3-70b-instruct")["eos_token_ids"]) == 3  # eot, eom, end_of_text
    # the LoRA variant was monitored beside the instruct model and diffed against it
    assert {"project@rm-sycophant-mixed_requests", "model_diff"} <= ran
    diff = root / f"experiments/{experiment}/analyses/model_diff/rm-sycophant_vs_llama-3.3-70b-instruct/paired.csv"
    assert diff.is_file()
    sidecar = json.loads((root / f"experiments/{experiment}/extraction/llama-3.1-70b/vectors/{TRAITS[0]}/residual/"
                                 "probe.json").read_text())
    assert sidecar["revision"] == base["sha"] and len(sidecar["layers"]) == 80

    # another steering layer re-runs steering and what reads its results; nothing is extracted or generated
    ran = stages_run(run(["dvc", "exp", "run", "-S", "layer=26"], root, env=env))
    assert {f"steering_eval@{t}" for t in TRAITS} <= ran
    assert not ran & ({f"{s}@{t}" for s in EXTRACTION for t in TRAITS}
                      | {s for s in ran if s.startswith(("generate_inference", "calibrate_massive_dims"))})
    best = json.loads((root / f"experiments/{experiment}/steering/llama-3.3-70b-instruct/best/{TRAITS[0]}.json")
                      .read_text())
    assert best["layers"] == [26]
