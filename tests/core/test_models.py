"""Model variants: LoRA adapters (kept separate or merged), quantization and device-map checks, toy LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

import trait_interp.core.models as models
from tests.conftest import tiny_model
from trait_interp.core.errors import UserInputError
from trait_interp.core.forward import TokenSequence
from trait_interp.core.hooks import output_hooks
from trait_interp.core.models import ModelSpec, load_model, load_tokenizer, model_spec
from trait_interp.core.positions import parse_position
from trait_interp.core.sites import SITES, input_device, resolve_site, site_width
from trait_interp.extraction.capture import capture_pooled
from trait_interp.toy.models import (
    CHAT_TEMPLATE,
    LORA_TARGETS,
    ToyModelSettings,
    build_model,
    build_toy_lora,
)

TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]


def save_tiny(arch: str, folder: Path, seed: int = 0) -> Path:
    tiny_model(arch, seed).save_pretrained(folder, safe_serialization=True)
    return folder


def make_adapter(model_dir: Path, out_dir: Path, seed: int = 1, rank: int = 4) -> Path:
    """A random (non-zero) LoRA adapter for the model saved in ``model_dir``."""
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS, init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def sequences(n: int = 5, vocab: int = 96, seed: int = 0) -> list[TokenSequence]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(3, vocab, (6 + i,), generator=generator).tolist()
        out.append(TokenSequence(prompt_ids=tuple(ids[:4]), response_ids=tuple(ids[4:])))
    return out


def recorder(seen: dict, key: tuple[str, int]):
    def hook(hidden: torch.Tensor) -> None:  # returns None: observes, never replaces the output
        seen[key] = hidden.shape

    return hook


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def forbid_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on any attempt to read weights fails the test: errors must come before."""

    def forbidden(*args, **kwargs):
        raise AssertionError("weights were loaded before the error")

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", forbidden)
    monkeypatch.setattr(PeftModel, "from_pretrained", forbidden)


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# --- activations through the peft wrapper ------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_unmerged_adapter_gives_the_merged_activations_and_differs_from_base(tmp_path: Path, arch: str) -> None:
    base_dir = save_tiny(arch, tmp_path / arch)
    adapter = make_adapter(base_dir, tmp_path / "adapter")
    plain = load_model(ModelSpec(path=str(base_dir), dtype="float32"))
    wrapped = load_model(ModelSpec(path=str(base_dir), dtype="float32", adapter=str(adapter)))
    merged = load_model(ModelSpec(path=str(base_dir), dtype="float32", adapter=str(adapter), merge_adapter=True))
    assert isinstance(wrapped, PeftModel) and not isinstance(merged, PeftModel) and not isinstance(plain, PeftModel)
    assert not any("lora" in name for name, _ in merged.named_modules())
    assert not wrapped.training and not merged.training

    seqs, position, layers = sequences(), parse_position("all[:]"), [0, 1, 2]
    got = {
        name: capture_pooled(model, seqs, position, SITES, layers, pad_id=0, batch_size=2).acts
        for name, model in (("plain", plain), ("wrapped", wrapped), ("merged", merged))
    }
    for site in SITES:
        torch.testing.assert_close(got["wrapped"][site], got["merged"][site], atol=1e-4, rtol=1e-4)
    for site in ("residual", "attn_out", "mlp_out", "v_proj"):
        assert not torch.allclose(got["wrapped"][site], got["plain"][site], atol=1e-3), site

    # the same through output_hidden_states (HF layer i+1 = block i), adapter vs merged vs base
    ids = torch.tensor([list(seqs[-1].ids)])
    hidden = {
        name: model(input_ids=ids, output_hidden_states=True).hidden_states
        for name, model in (("plain", plain), ("wrapped", wrapped), ("merged", merged))
    }
    for layer in layers:
        torch.testing.assert_close(hidden["wrapped"][layer + 1], hidden["merged"][layer + 1], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(hidden["wrapped"][-1], hidden["plain"][-1], atol=1e-3)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_every_site_resolves_through_the_peft_wrapper(tmp_path: Path, arch: str) -> None:
    base_dir = save_tiny(arch, tmp_path / arch)
    plain = load_model(ModelSpec(path=str(base_dir), dtype="float32"))
    wrapped = load_model(ModelSpec(path=str(base_dir), dtype="float32", adapter=str(make_adapter(base_dir, tmp_path / "a"))))
    inner = wrapped.get_base_model()
    ids = torch.tensor([list(range(3, 11))])
    seen: dict[tuple[str, int], torch.Size] = {}
    hooks, widths = [], {}
    for site in SITES:
        for layer in range(3):
            resolved = resolve_site(wrapped, site, layer)
            assert resolved.name.startswith("base_model.model.")
            assert resolved.module is resolve_site(inner, site, layer).module  # the module that really runs
            widths[(site, layer)] = site_width(wrapped, resolved.module)
            assert widths[(site, layer)] == site_width(plain, resolve_site(plain, site, layer).module)
            hooks.append((resolved.module, recorder(seen, (site, layer))))
    with output_hooks(hooks):
        wrapped(input_ids=ids)
    assert seen == {key: torch.Size([1, 8, width]) for key, width in widths.items()}
    assert input_device(wrapped) == torch.device("cpu") == input_device(plain)


# --- errors before anything heavy loads --------------------------------------------------------


def test_missing_adapter_folder_is_one_line_before_loading(tmp_path: Path, monkeypatch) -> None:
    base_dir = save_tiny("llama", tmp_path / "llama")
    forbid_weights(monkeypatch)
    entry = {"path": str(base_dir), "dtype": "float32", "adapter": str(tmp_path / "nowhere" / "lora")}
    with pytest.raises(UserInputError) as err:
        model_spec({"v": entry}, "v")
    assert "models.v.adapter" in one_line(err) and "does not exist" in str(err.value)
    with pytest.raises(UserInputError) as err:
        load_model(ModelSpec(**entry))
    assert "adapter" in one_line(err)


def test_adapter_for_another_base_model_is_refused(tmp_path: Path, monkeypatch) -> None:
    instruct = save_tiny("llama", tmp_path / "instruct", seed=0)
    base = save_tiny("llama", tmp_path / "base", seed=1)  # same shapes, another model
    adapter = make_adapter(instruct, tmp_path / "lora")
    forbid_weights(monkeypatch)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(instruct)
    model_spec({"ok": {"path": str(instruct), "adapter": str(adapter)}}, "ok")  # its own base passes
    with pytest.raises(UserInputError) as err:
        model_spec({"v": {"path": str(base), "adapter": str(adapter)}}, "v")
    message = one_line(err)
    assert "models.v.adapter" in message and "trained on" in message and str(instruct) in message
    with pytest.raises(UserInputError):
        load_model(ModelSpec(path=str(base), adapter=str(adapter)))


def test_adapter_with_other_shapes_is_refused_before_loading(tmp_path: Path, monkeypatch) -> None:
    small = save_tiny("llama", tmp_path / "a" / "model")
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "b" / "model", safe_serialization=True)
    adapter = make_adapter(small, tmp_path / "lora")
    forbid_weights(monkeypatch)
    spec = model_spec({"v": {"path": str(tmp_path / "b" / "model"), "adapter": str(adapter)}}, "v")  # same name
    with pytest.raises(UserInputError) as err:
        load_model(spec, where="params.yaml:models.v")
    message = one_line(err)
    assert "params.yaml:models.v.adapter" in message and "does not fit" in message


def test_adapter_without_safetensors_is_refused(tmp_path: Path, monkeypatch) -> None:
    base_dir = save_tiny("llama", tmp_path / "llama")
    forbid_weights(monkeypatch)
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(base_dir)}))
    (folder / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UserInputError) as err:
        model_spec({"v": {"path": str(base_dir), "adapter": str(folder)}}, "v")
    assert "safetensors" in one_line(err)


def test_unreachable_hub_adapter_is_one_line_before_loading(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("offline: cannot reach the hub\nsecond line")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    base_dir = save_tiny("llama", tmp_path / "llama")
    forbid_weights(monkeypatch)
    spec = model_spec({"v": {"path": str(base_dir), "adapter": "someone/some-lora", "adapter_revision": "v1"}}, "v")
    with pytest.raises(UserInputError) as err:
        load_model(spec)
    assert "someone/some-lora" in one_line(err) and "v1" in str(err.value)


@pytest.mark.parametrize(
    "entry, needle",
    [
        ({"quantization": "int3"}, "quantization"),
        ({"quantization": "int8"}, "quantization"),
        ({"quantization": "int4", "device": "cuda"}, "quantization"),
        ({"quantization": "fp8"}, "quantization"),
        ({"device_map": "auto"}, "device_map"),
        ({"device_map": "everywhere"}, "device_map"),
        ({"merge_adapter": True}, "no adapter"),
        ({"adapter_revision": "main"}, "no adapter"),
        ({"trust_remote_code": "yes"}, "trust_remote_code"),
    ],
)
def test_bad_variant_entries_are_one_line_errors(tmp_path: Path, monkeypatch, no_cuda, entry, needle) -> None:
    base_dir = save_tiny("llama", tmp_path / "llama")
    forbid_weights(monkeypatch)
    with pytest.raises(UserInputError) as err:
        model_spec({"v": {"path": str(base_dir), **entry}}, "v")
    message = one_line(err)
    assert "params.yaml:models.v" in message and needle in message
    if entry.get("quantization") in ("int8", "int4", "fp8"):
        assert "CUDA" in message and "quantization: none" in message


def test_cpu_device_map_is_allowed_without_cuda(tmp_path: Path, no_cuda) -> None:
    base_dir = save_tiny("llama", tmp_path / "llama")
    model = load_model(model_spec({"v": {"path": str(base_dir), "dtype": "float32", "device_map": "cpu"}}, "v"))
    assert input_device(model) == torch.device("cpu") and not model.training


def test_quantization_checks_with_cuda_present(tmp_path: Path, monkeypatch) -> None:
    """On a (pretend) CUDA machine: fp8 needs FP8 weights in the checkpoint; int8 needs a GPU placement and bitsandbytes."""
    import importlib.util

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    base_dir = save_tiny("llama", tmp_path / "llama")
    forbid_weights(monkeypatch)
    with pytest.raises(UserInputError) as err:
        model_spec({"v": {"path": str(base_dir), "quantization": "fp8", "device": "cuda"}}, "v")
    assert "FP8 checkpoint" in one_line(err)
    with pytest.raises(UserInputError) as err:
        model_spec({"v": {"path": str(base_dir), "quantization": "int8"}}, "v")  # device: cpu
    assert "device: cuda or device_map: auto" in one_line(err)
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(UserInputError) as err:
            model_spec({"v": {"path": str(base_dir), "quantization": "int4", "device_map": "auto"}}, "v")
        assert "bitsandbytes" in one_line(err)
    # a checkpoint that ships FP8 weights must be declared as such
    config = json.loads((base_dir / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    (base_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserInputError) as err:
        model_spec({"v": {"path": str(base_dir), "device": "cuda"}}, "v")
    assert "set quantization: fp8" in one_line(err)
    assert model_spec({"v": {"path": str(base_dir), "device": "cuda", "quantization": "fp8"}}, "v").quantization == "fp8"


def test_is_local_reference() -> None:
    assert models.is_local_reference("experiments/toy/models/lora")
    assert models.is_local_reference("./lora") and models.is_local_reference("/abs/lora")
    assert not models.is_local_reference("auditing-agents/llama-3.3-70b-dpo-rt-lora")


def test_same_base_model_by_name() -> None:
    hub = ModelSpec(hub_id="meta-llama/Llama-3.3-70B-Instruct")
    assert models.same_base_model("meta-llama/Llama-3.3-70B-Instruct", hub)
    assert models.same_base_model("unsloth/llama-3.3-70b-instruct", hub)  # a mirror
    assert models.same_base_model(
        "/cache/models--meta-llama--Llama-3.3-70B-Instruct/snapshots/abc123", hub
    )
    assert not models.same_base_model("meta-llama/Llama-3.1-70B-Instruct", hub)
    assert not models.same_base_model("google/gemma-2-9b", ModelSpec(hub_id="google/gemma-2-9b-it"))


# --- loading from a local folder ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("merge", [False, True])
def test_load_local_folder_with_dtype_adapter_and_merge(tmp_path: Path, dtype: str, merge: bool) -> None:
    base_dir = save_tiny("llama", tmp_path / "llama")
    adapter = make_adapter(base_dir, tmp_path / "lora")
    spec = model_spec({"v": {"path": str(base_dir), "dtype": dtype, "adapter": str(adapter), "merge_adapter": merge}}, "v")
    model = load_model(spec)
    assert isinstance(model, PeftModel) is (not merge)
    assert not model.training
    inner = model if merge else model.get_base_model()
    assert inner.model.embed_tokens.weight.dtype == models.DTYPES[dtype]
    assert any("lora_A" in name for name, _ in model.named_parameters()) is (not merge)
    assert all(not p.requires_grad for p in model.parameters()) or merge
    logits = model(input_ids=torch.tensor([[3, 4, 5]])).logits
    assert torch.isfinite(logits.float()).all()


# --- the toy LoRA variant ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_instruct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trait_interp.toy.models import train_tokenizer

    corpus = Path(__file__).resolve().parents[2] / "datasets" / "toy" / "tokenizer_corpus.txt"
    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    tokenizer = train_tokenizer(lines, 400, chat=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    model = build_model(ToyModelSettings(vocab_size=400, hidden_size=32, intermediate_size=48, num_layers=3), tokenizer)
    folder = tmp_path_factory.mktemp("toy") / "instruct"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


LORA_TEXTS = [
    line for line in (Path(__file__).resolve().parents[2] / "datasets/toy/lora_texts.txt").read_text().splitlines() if line
][:8]


def test_toy_lora_is_deterministic(toy_instruct: Path, tmp_path: Path) -> None:
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        build_toy_lora(toy_instruct, tmp_path / name, seed, LORA_TEXTS, steps=6, rank=4)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors"]
    for file in files:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    assert (tmp_path / "a" / "adapter_model.safetensors").read_bytes() != (tmp_path / "c" / "adapter_model.safetensors").read_bytes()
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(toy_instruct) and config["r"] == 4
    assert config["target_modules"] == sorted(LORA_TARGETS)


def test_toy_lora_changes_greedy_outputs(toy_instruct: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "lora"
    build_toy_lora(toy_instruct, adapter, 0, LORA_TEXTS, steps=10, rank=4, lr=0.02)
    plain_spec = model_spec({"p": {"path": str(toy_instruct), "dtype": "float32"}}, "p")
    lora_spec = model_spec({"l": {"path": str(toy_instruct), "dtype": "float32", "adapter": str(adapter)}}, "l")
    tokenizer = load_tokenizer(lora_spec)
    plain, lora = load_model(plain_spec), load_model(lora_spec)
    questions = ["Is my plan good?", "What is the weather like?", "Tell me about cats."]
    changed = 0
    for question in questions:
        text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        a = plain.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        b = lora.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        changed += not torch.equal(a, b)
    assert changed >= 1


def test_build_toy_lora_stage(toy_instruct: Path, tmp_path: Path) -> None:
    import typer

    from stages import build_toy_lora as stage

    params = tmp_path / "params.yaml"
    params.write_text("toy_lora:\n  seed: 0\n  steps: 3\n  rank: 2\n  lr: 0.01\n")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(LORA_TEXTS[:3]) + "\n")
    app = typer.Typer()
    app.command()(stage.main)
    out = tmp_path / "out" / "lora"
    args = ["--instruct", str(toy_instruct), "--texts", str(texts), "--out", str(out), "--params", str(params)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "adapter_model.safetensors").is_file()
    assert model_spec({"v": {"path": str(toy_instruct), "adapter": str(out)}}, "v").adapter == str(out)
    params.write_text("toy_lora:\n  seed: 0\n  steps: 3\n  rank: 2\n  lr: 0.01\n  alpha: 4\n")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "unknown key(s) alpha" in result.output
