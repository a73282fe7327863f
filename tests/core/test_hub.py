"""The offline fake hub (tests/fake_hub.py) and ``trait_interp.core.hub.resolve_revision`` against it.

The hub is built once per session into a tmp dir. In-process tests point huggingface_hub at it with
``apply_offline`` (env vars plus the constants huggingface_hub read at import) and run under
``no_network``, so any socket connection fails the test; one test loads in a fresh subprocess that
gets only ``offline_env``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
import torch

from tests.fake_hub import (
    ADAPTER_SPECS,
    DPO_RT_LORA,
    GEMMA_2B,
    GEMMA_2B_IT,
    LLAMA_8B_INSTRUCT,
    LLAMA_70B,
    LLAMA_70B_INSTRUCT,
    LORA_TARGETS,
    MODEL_SPECS,
    ModelSpec,
    NetworkAttempted,
    apply_offline,
    copy_hub,
    no_network,
    offline_env,
    publish_new_snapshot,
)
from trait_interp.core.hub import resolve_revision

REPO = Path(__file__).resolve().parents[2]
SPECS = {spec.hub_id: spec for spec in MODEL_SPECS}
INSTRUCT = [spec.hub_id for spec in MODEL_SPECS if spec.instruct]
LLAMA_INSTRUCT = [spec.hub_id for spec in MODEL_SPECS if spec.instruct and spec.family == "llama3"]
CHAT = [{"role": "user", "content": "Could you pass me the salt, please?"}]
SYSTEM_CHAT = [{"role": "system", "content": "You answer in one short sentence."}, *CHAT]


@pytest.fixture
def hub(built_hub, monkeypatch):
    """The session hub, this process pointed at it offline, any internet socket an error."""
    apply_offline(monkeypatch, built_hub.cache_dir)
    with no_network() as attempts:
        yield built_hub
    assert attempts == []  # also when some library caught the guard's error and carried on


@pytest.fixture
def fresh_hub(built_hub, tmp_path, monkeypatch):
    """A private copy of the hub (for publishing new snapshots), offline, no network."""
    copy = copy_hub(built_hub, tmp_path / "hub")
    apply_offline(monkeypatch, copy.cache_dir)
    with no_network() as attempts:
        yield copy
    assert attempts == []


def _logits(model, tokenizer, text: str = "Good morning! Did you sleep well?") -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits.float()


def _has_weights_of(model, snapshot: Path) -> bool:
    """Whether ``model`` holds exactly the tensors stored in ``snapshot``'s safetensors files."""
    from safetensors.torch import load_file

    state = model.state_dict()
    stored = [load_file(path) for path in sorted(snapshot.glob("*.safetensors"))]
    return bool(stored) and all(torch.equal(state[name], tensor) for part in stored for name, tensor in part.items())


def _expected_eos(spec: ModelSpec, tokenizer) -> int | list[int]:
    """The real repos' generation eos, by token name: instruct models stop on more than the eos token."""
    ids = tokenizer.convert_tokens_to_ids
    if spec.family == "gemma2":
        return [ids("<eos>"), ids("<end_of_turn>")] if spec.instruct else ids("<eos>")
    return [ids("<|end_of_text|>"), ids("<|eom_id|>"), ids("<|eot_id|>")] if spec.instruct else ids("<|end_of_text|>")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hub_id", sorted(SPECS))
def test_every_fake_model_loads_offline_by_hub_id(hub, hub_id):
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Gemma2ForCausalLM,
        GenerationConfig,
        LlamaForCausalLM,
    )

    spec = SPECS[hub_id]
    tokenizer = AutoTokenizer.from_pretrained(hub_id)
    model = AutoModelForCausalLM.from_pretrained(hub_id)
    assert isinstance(model, {"gemma2": Gemma2ForCausalLM, "llama3": LlamaForCausalLM}[spec.family])
    layers = 80 if "70B" in hub_id else spec.num_layers
    assert model.config.num_hidden_layers == layers and len(model.model.layers) == layers
    assert model.dtype == spec.dtype  # dtype "auto": what the repo stores, as with the real ones
    assert _has_weights_of(model, hub.snapshot(hub_id))  # the snapshot refs/main names
    assert model.config.vocab_size == len(tokenizer)
    generation = GenerationConfig.from_pretrained(hub_id)
    assert generation.eos_token_id == _expected_eos(spec, tokenizer) == model.generation_config.eos_token_id
    assert torch.isfinite(_logits(model, tokenizer)).all()


def test_gemma_it_generation_stops_on_more_than_the_tokenizers_eos(hub):
    from transformers import AutoTokenizer, GenerationConfig

    eos = GenerationConfig.from_pretrained(GEMMA_2B_IT).eos_token_id
    tokenizer = AutoTokenizer.from_pretrained(GEMMA_2B_IT)
    assert isinstance(eos, list) and len(eos) == 2
    assert eos == [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")]
    assert eos != tokenizer.eos_token_id and tokenizer.eos_token == "<eos>"
    assert GenerationConfig.from_pretrained(GEMMA_2B).eos_token_id == tokenizer.eos_token_id


@pytest.mark.parametrize("hub_id", sorted(SPECS))
def test_completion_mode_adds_one_bos(hub, hub_id):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hub_id)
    ids = tokenizer("The next one leaves at 7:45.")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == "The next one leaves at 7:45."


def test_gemma_tokenizers_use_gemmas_ids_and_word_starts(hub):
    from transformers import AutoTokenizer

    for hub_id in (GEMMA_2B, GEMMA_2B_IT):
        tokenizer = AutoTokenizer.from_pretrained(hub_id)
        names = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]
        assert [tokenizer.convert_tokens_to_ids(n) for n in names] == [0, 1, 2, 106, 107]
        assert tokenizer.pad_token == "<pad>"
        pieces = tokenizer.tokenize("We need milk")
        assert any(p.startswith("▁") for p in pieces) and "".join(pieces).replace("▁", " ") == "We need milk"


# ---------------------------------------------------------------------------------------------
# Chat templates
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hub_id", [GEMMA_2B, GEMMA_2B_IT])
def test_gemma_template_rejects_a_system_turn(hub, hub_id):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hub_id)
    with pytest.raises(jinja2.exceptions.TemplateError, match="System role not supported"):
        tokenizer.apply_chat_template(SYSTEM_CHAT, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("hub_id", [GEMMA_2B, GEMMA_2B_IT])
def test_gemma_template_emits_its_own_bos(hub, hub_id):
    """Both gemma repos carry the template, the base one included: prompt mode must be explicit."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hub_id)
    text = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<start_of_turn>model\n")
    bos = tokenizer.bos_token_id
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == bos and ids.count(bos) == 1
    assert ids.count(tokenizer.convert_tokens_to_ids("<start_of_turn>")) == 2  # one special id each
    doubled = tokenizer(text)["input_ids"]  # the double-BOS trap is real
    assert doubled[:2] == [bos, bos]


@pytest.mark.parametrize("hub_id", LLAMA_INSTRUCT)
def test_llama_instruct_template_takes_a_system_turn(hub, hub_id):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hub_id)
    text = tokenizer.apply_chat_template(SYSTEM_CHAT, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
    assert SYSTEM_CHAT[0]["content"] in text and text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert ids.count(tokenizer.convert_tokens_to_ids("<|eot_id|>")) == 2  # system, user
    assert tokenizer.eos_token == "<|eot_id|>"


def test_llama_base_tokenizers_have_no_template(hub):
    from transformers import AutoTokenizer

    for spec in MODEL_SPECS:
        if spec.family == "llama3" and not spec.instruct:
            tokenizer = AutoTokenizer.from_pretrained(spec.hub_id)
            assert tokenizer.chat_template is None and tokenizer.eos_token == "<|end_of_text|>"


# ---------------------------------------------------------------------------------------------
# The LoRA adapter
# ---------------------------------------------------------------------------------------------


def test_lora_adapter_loads_by_hub_id_and_changes_logits(hub):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(LLAMA_70B_INSTRUCT)
    base = AutoModelForCausalLM.from_pretrained(LLAMA_70B_INSTRUCT, dtype=torch.float32)
    before = _logits(base, tokenizer)
    model = PeftModel.from_pretrained(base, DPO_RT_LORA)
    config = model.peft_config["default"]
    assert config.peft_type.value == "LORA" and config.base_model_name_or_path == LLAMA_70B_INSTRUCT
    assert set(config.target_modules) == set(LORA_TARGETS)
    assert config.r == ADAPTER_SPECS[0].rank
    after = _logits(model, tokenizer)
    assert (after - before).abs().max() > 1e-2
    raw = json.loads((hub.snapshot(DPO_RT_LORA) / "adapter_config.json").read_text())
    assert raw["peft_type"] == "LORA" and raw["base_model_name_or_path"] == LLAMA_70B_INSTRUCT


# ---------------------------------------------------------------------------------------------
# Cache layout and determinism
# ---------------------------------------------------------------------------------------------


def test_cache_layout_is_the_real_one(hub):
    from huggingface_hub import scan_cache_dir

    scanned = {repo.repo_id: repo for repo in scan_cache_dir(hub.cache_dir).repos}
    assert set(scanned) == set(hub.repos)
    for hub_id, snapshot in hub.repos.items():
        repo_dir = hub.repo_dir(hub_id)
        assert (repo_dir / "refs" / "main").read_bytes() == snapshot.sha.encode()  # no newline
        assert {rev.commit_hash for rev in scanned[hub_id].revisions} == {snapshot.sha}
        assert scanned[hub_id].refs["main"].commit_hash == snapshot.sha
        for link in snapshot.folder.iterdir():
            assert link.is_symlink() and not os.path.isabs(os.readlink(link))
            target = link.resolve()
            assert target.parent == (repo_dir / "blobs").resolve()
            data = target.read_bytes()
            name = (
                hashlib.sha256(data).hexdigest()
                if link.name.endswith(".safetensors")
                else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            )
            assert target.name == name
    shards = sorted(p.name for p in hub.snapshot(LLAMA_70B).iterdir() if p.name.endswith(".safetensors"))
    assert len(shards) > 1 and (hub.snapshot(LLAMA_70B) / "model.safetensors.index.json").exists()
    assert (hub.snapshot(GEMMA_2B_IT) / "model.safetensors").exists()


def test_build_is_deterministic(built_hub, tmp_path):
    """Another process (another string-hash seed) builds the same bytes under the same shas."""
    script = f"""
import json
from pathlib import Path
from tests.fake_hub import build_fake_hub, no_network
with no_network():
    hub = build_fake_hub(Path({str(tmp_path / "hub")!r}))
print(json.dumps({{hub_id: snapshot.sha for hub_id, snapshot in hub.repos.items()}}))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {k: v.sha for k, v in built_hub.repos.items()}
    for hub_id in built_hub.repos:
        first = sorted(p.name for p in (built_hub.repo_dir(hub_id) / "blobs").iterdir())
        assert first == sorted(p.name for p in (tmp_path / "hub" / built_hub.repo_dir(hub_id).name / "blobs").iterdir())


# ---------------------------------------------------------------------------------------------
# resolve_revision and new uploads
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hub_id", [GEMMA_2B_IT, LLAMA_70B, DPO_RT_LORA])
def test_resolve_revision_reads_refs_main(hub, hub_id):
    on_disk = (hub.repo_dir(hub_id) / "refs" / "main").read_text()
    assert re.fullmatch(r"[0-9a-f]{40}", on_disk)
    assert resolve_revision(hub_id, None) == on_disk == resolve_revision(hub_id, "main")


def test_publish_new_snapshot_moves_main_and_keeps_the_old_one(fresh_hub):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    old = fresh_hub.sha(LLAMA_8B_INSTRUCT)
    tokenizer = AutoTokenizer.from_pretrained(LLAMA_8B_INSTRUCT)
    old_logits = _logits(AutoModelForCausalLM.from_pretrained(LLAMA_8B_INSTRUCT), tokenizer)

    new = publish_new_snapshot(fresh_hub, LLAMA_8B_INSTRUCT)
    assert new != old and re.fullmatch(r"[0-9a-f]{40}", new)
    assert resolve_revision(LLAMA_8B_INSTRUCT, None) == new == fresh_hub.sha(LLAMA_8B_INSTRUCT)
    assert resolve_revision(LLAMA_8B_INSTRUCT, old) == old  # the old snapshot is still there
    assert [s.sha for s in fresh_hub.history[LLAMA_8B_INSTRUCT]] == [old, new]

    latest = AutoModelForCausalLM.from_pretrained(LLAMA_8B_INSTRUCT)
    assert _has_weights_of(latest, fresh_hub.snapshot(LLAMA_8B_INSTRUCT))
    assert not torch.allclose(_logits(latest, tokenizer), old_logits)
    pinned = AutoModelForCausalLM.from_pretrained(LLAMA_8B_INSTRUCT, revision=old)
    assert torch.equal(_logits(pinned, tokenizer), old_logits)
    old_files, new_files = (fresh_hub.repo_dir(LLAMA_8B_INSTRUCT) / "snapshots" / sha for sha in (old, new))
    assert (old_files / "tokenizer.json").resolve() == (new_files / "tokenizer.json").resolve()  # unchanged: one blob
    assert (old_files / "model.safetensors").resolve() != (new_files / "model.safetensors").resolve()


def test_publish_new_adapter_snapshot(fresh_hub):
    old = fresh_hub.sha(DPO_RT_LORA)
    new = publish_new_snapshot(fresh_hub, DPO_RT_LORA, seed=7)
    assert new != old and resolve_revision(DPO_RT_LORA, None) == new


def test_unknown_hub_id_offline_is_a_clear_error(hub):
    with pytest.raises(ValueError, match=r"nobody/no-such-model.*'main'.*HF_HUB_OFFLINE"):
        resolve_revision("nobody/no-such-model", None)


def test_unknown_branch_offline_is_a_clear_error(hub):
    with pytest.raises(ValueError, match=r"google/gemma-2-2b.*'v9'"):
        resolve_revision(GEMMA_2B, "v9")


def test_full_sha_resolves_to_itself_only_when_cached(hub):
    sha = hub.sha(GEMMA_2B)
    assert resolve_revision(GEMMA_2B, sha) == sha
    missing = hashlib.sha1(b"never uploaded").hexdigest()
    with pytest.raises(ValueError, match=rf"google/gemma-2-2b.*{missing}.*not in the local cache"):
        resolve_revision(GEMMA_2B, missing)
    with pytest.raises(ValueError, match="google/gemma-2-2b-it"):  # a sha of another repo is not this repo's
        resolve_revision(GEMMA_2B_IT, sha)


def test_malformed_hub_id_and_local_folder_are_clear_errors(hub, tmp_path):
    with pytest.raises(ValueError, match=r"a/b/c.*not a valid hub id"):
        resolve_revision("a/b/c", None)
    with pytest.raises(ValueError, match="local folder"):
        resolve_revision(str(tmp_path), None)


class _FakeHubApi:
    """Stands in for the Hub's answers to ``HfApi.repo_info``/``model_info`` (the online branch)."""

    def __init__(self, shas: dict[tuple[str, str], str]) -> None:
        self.shas = shas
        self.calls: list[tuple[str, str | None]] = []

    def info(self, repo_id: str, revision: str | None = None, **kwargs) -> SimpleNamespace:
        from huggingface_hub.errors import (
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
        from huggingface_hub.utils import httpx

        self.calls.append((repo_id, revision))
        response = httpx.Response(404, request=httpx.Request("GET", f"https://huggingface.co/api/models/{repo_id}"))
        if not any(repo == repo_id for repo, _ in self.shas):
            raise RepositoryNotFoundError("Repository Not Found", response=response)
        if (repo_id, revision or "main") not in self.shas:
            raise RevisionNotFoundError("Revision Not Found", response=response)
        return SimpleNamespace(sha=self.shas[(repo_id, revision or "main")])


@pytest.fixture
def online(fresh_hub, monkeypatch):
    """Online mode with the Hub's answers faked (the guard still refuses real sockets)."""
    from huggingface_hub import HfApi, constants

    uploaded = hashlib.sha1(b"uploaded since the cache was filled").hexdigest()
    hub_api = _FakeHubApi({(GEMMA_2B, "main"): uploaded, (GEMMA_2B, uploaded): uploaded})
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "repo_info", lambda api, *args, **kwargs: hub_api.info(*args, **kwargs))
    monkeypatch.setattr(HfApi, "model_info", lambda api, *args, **kwargs: hub_api.info(*args, **kwargs))
    return fresh_hub, hub_api, uploaded


def test_online_main_resolves_through_the_hub(online):
    hub, hub_api, uploaded = online
    assert hub.sha(GEMMA_2B) != uploaded
    assert resolve_revision(GEMMA_2B, None) == uploaded  # the Hub's answer, not the cached ref
    assert hub_api.calls == [(GEMMA_2B, "main")]
    assert (hub.repo_dir(GEMMA_2B) / "refs" / "main").read_text() == uploaded  # huggingface_hub caches it


def test_online_full_sha_is_checked_on_the_hub_unless_cached(online):
    hub, hub_api, uploaded = online
    assert resolve_revision(GEMMA_2B, hub.sha(GEMMA_2B)) == hub.sha(GEMMA_2B) and hub_api.calls == []
    assert resolve_revision(GEMMA_2B, uploaded) == uploaded and hub_api.calls == [(GEMMA_2B, uploaded)]
    gone = hashlib.sha1(b"force-pushed away").hexdigest()
    with pytest.raises(ValueError, match=rf"google/gemma-2-2b.*{gone}.*no such branch, tag or commit"):
        resolve_revision(GEMMA_2B, gone)


def test_online_unknown_repo_is_a_clear_error(online):
    with pytest.raises(ValueError, match=r"nobody/no-such-model.*'main'.*no such repo"):
        resolve_revision("nobody/no-such-model", None)


# ---------------------------------------------------------------------------------------------
# No network
# ---------------------------------------------------------------------------------------------


def test_no_network_guard_really_blocks():
    with no_network() as attempts:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(NetworkAttempted):
            sock.connect(("127.0.0.1", 9))
        with pytest.raises(NetworkAttempted):
            socket.getaddrinfo("huggingface.co", 443)
    assert len(attempts) == 2
    assert socket.socket.connect is not None and socket.getaddrinfo.__module__ == "socket"  # restored


def test_fresh_process_with_offline_env_only(built_hub):
    """A subprocess gets nothing but ``offline_env``: loads, the adapter and resolve_revision work,
    with every internet socket refused inside it too."""
    script = f"""
import json, torch
from tests.fake_hub import no_network
with no_network() as attempts:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trait_interp.core.hub import resolve_revision
    tok = AutoTokenizer.from_pretrained({GEMMA_2B_IT!r})
    model = AutoModelForCausalLM.from_pretrained({GEMMA_2B_IT!r})
    base = AutoModelForCausalLM.from_pretrained({LLAMA_70B_INSTRUCT!r})
    PeftModel.from_pretrained(base, {DPO_RT_LORA!r})
    print(json.dumps({{"sha": resolve_revision({GEMMA_2B_IT!r}, None), "eos": model.generation_config.eos_token_id,
                       "layers": base.config.num_hidden_layers, "attempts": attempts}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(offline_env(built_hub.cache_dir), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    eos = json.loads((built_hub.snapshot(GEMMA_2B_IT) / "generation_config.json").read_text())["eos_token_id"]
    assert result == {"sha": built_hub.sha(GEMMA_2B_IT), "eos": eos, "layers": 80, "attempts": []}
