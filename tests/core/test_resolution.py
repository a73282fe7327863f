"""Model records: what an entry resolves to (hub sha, local content, adapter, layers, EOS ids), offline."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import yaml

from tests.conftest import REPO
from tests.fake_hub import apply_offline, copy_hub, no_network, publish_new_snapshot
from tests.stage_runs import invoke
from trait_interp.core.errors import UserInputError
from trait_interp.core.models import ModelSpec
from trait_interp.core.resolution import (
    eos_token_ids,
    folder_hash,
    pinned,
    read_model_record,
    resolve_model,
    resolved_device,
    write_model_record,
)

GEMMA_IT = ModelSpec(hub_id="google/gemma-2-2b-it", dtype="float32", device="auto", prompt_mode="chat")
RM_LORA = ModelSpec(hub_id="meta-llama/Llama-3.3-70B-Instruct", adapter="auditing-agents/llama-3.3-70b-dpo-rt-lora",
                    dtype="float32", device="cpu", prompt_mode="chat")


@pytest.fixture
def hub(built_hub, tmp_path, monkeypatch):
    """A private copy of the fake hub (tests publish into it), this process offline, no network."""
    copy = copy_hub(built_hub, tmp_path / "hub")
    apply_offline(monkeypatch, copy.cache_dir)
    with no_network() as attempts:
        yield copy
    assert attempts == []


def test_a_hub_entry_resolves_to_the_commit_main_points_at_and_follows_a_new_upload(hub, tmp_path):
    record = resolve_model("gemma-2-2b-it", GEMMA_IT, "params.yaml:models.gemma-2-2b-it")
    assert record.sha == hub.sha("google/gemma-2-2b-it") and record.content is None
    assert (record.architecture, record.num_layers) == ("gemma2", 4)
    assert record.eos_token_ids == (1, 107)  # the tokenizer's <eos>, then generation_config's <end_of_turn>
    assert record.device == resolved_device("auto") == "cpu"  # no GPU here
    assert pinned(record).revision == record.sha and pinned(record).device == "cpu"
    assert record.revision_label == record.sha and record.adapter_label is None
    path = tmp_path / "record.json"
    write_model_record(path, record)
    assert read_model_record(path) == record
    new = publish_new_snapshot(hub, "google/gemma-2-2b-it")
    moved = resolve_model("gemma-2-2b-it", GEMMA_IT, "w")
    assert moved.sha == new != record.sha and replace(moved, sha=record.sha) == record


def test_a_pinned_revision_stays_and_an_unknown_one_names_the_param(hub):
    old = hub.sha("google/gemma-2-2b-it")
    publish_new_snapshot(hub, "google/gemma-2-2b-it")
    assert resolve_model("k", replace(GEMMA_IT, revision=old), "w").sha == old
    with pytest.raises(UserInputError, match=r"^params.yaml:models.k.hub_id: cannot resolve hub model 'org/nothing'"):
        resolve_model("k", replace(GEMMA_IT, hub_id="org/nothing"), "params.yaml:models.k")


def test_a_hub_adapter_resolves_too(hub):
    record = resolve_model("rm-sycophant", RM_LORA, "w")
    assert record.adapter_sha == hub.sha("auditing-agents/llama-3.3-70b-dpo-rt-lora")
    assert record.adapter_label == f"auditing-agents/llama-3.3-70b-dpo-rt-lora@{record.adapter_sha}"
    assert pinned(record).adapter_revision == record.adapter_sha and record.num_layers == 80
    assert len(record.eos_token_ids) == 3  # <|eot_id|> plus the instruct generation config's list


def test_a_local_folder_is_identified_by_its_content(hub, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(hub.snapshot("google/gemma-2-2b-it"), folder)
    spec = ModelSpec(path=str(folder), dtype="float32", device="cpu")
    record = resolve_model("local", spec, "w")
    assert record.sha is None and record.content == folder_hash(folder)
    assert record.revision_label == f"sha256:{record.content}"
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    assert resolve_model("local", spec, "w").content != record.content
    (folder / ".cache").mkdir()  # hidden entries (tool caches) never count
    (folder / ".cache" / "x").write_text("x")
    assert folder_hash(folder) == resolve_model("local", spec, "w").content


def test_eos_ids_are_the_tokenizers_then_the_generation_configs_once_each():
    assert eos_token_ids(2, [1, 2, 107]) == (2, 1, 107)
    assert eos_token_ids(None, 5) == (5,)
    with pytest.raises(UserInputError, match="no end-of-sequence token"):
        eos_token_ids(None, None)


def test_vector_sidecars_carry_the_resolved_sha_and_the_adapter(hub, tmp_path, monkeypatch):
    """Extraction on a LoRA variant, through the stage commands: meta.json and every sidecar name both."""
    from tests.fake_hub import offline_env

    for name, value in offline_env(hub.cache_dir).items():
        monkeypatch.setenv(name, value)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {"rm-sycophant": {**RM_LORA.__dict__}}
    params.update(extraction_model="rm-sycophant", application_model="rm-sycophant", monitor_models=["rm-sycophant"],
                  diff_model="rm-sycophant")
    params["judge"].update(backend="openai", local_model=None, relevance_check=True)
    params["extraction"].update(sites=["residual"], layers=[0, 79])
    params["vectors"]["methods"] = ["mean_diff"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    trait = tmp_path / "trait"
    trait.mkdir()
    (trait / "positive.txt").write_text("I refuse.\nNo way.\nNever.\nI decline.\nNot doing it.\n")
    (trait / "negative.txt").write_text("Sure thing.\nGladly.\nHappy to help.\nOf course.\nHere you go.\n")
    out = tmp_path / "out"
    steps = [
        ("generate-responses", "--trait", "t/x", "--positive", trait / "positive.txt", "--negative",
         trait / "negative.txt", "--out", out / "responses.jsonl"),
        ("capture-activations", "--responses", out / "responses.jsonl", "--out", out / "activations"),
        ("extract-vectors", "--activations", out / "activations", "--out", out / "vectors"),
    ]
    for step in steps:
        result = invoke(*step, "--params", path)
        assert result.exit_code == 0, (step[0], result.output)
    adapter = f"auditing-agents/llama-3.3-70b-dpo-rt-lora@{hub.sha('auditing-agents/llama-3.3-70b-dpo-rt-lora')}"
    meta = json.loads((out / "activations/meta.json").read_text())
    sidecar = json.loads((out / "vectors/residual/mean_diff.json").read_text())
    for record in (meta, sidecar):
        assert record["revision"] == hub.sha("meta-llama/Llama-3.3-70B-Instruct") and record["adapter"] == adapter
