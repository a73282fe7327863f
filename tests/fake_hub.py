"""An offline fake of the Hugging Face hub: tiny random-weight models under the real hub ids.

Real-model code paths (hub ids, ``from_pretrained``, chat templates, ``generation_config``, LoRA
adapters, revision pinning) are tested against this instead of the network. Every repo has the
real architecture and real-looking files, written by ``save_pretrained`` into the hub cache layout
that ``huggingface_hub`` reads::

    <cache_dir>/models--org--name/
        blobs/<hash>                        file contents, content-addressed
        refs/main                           the commit sha that ``main`` points at (no newline)
        snapshots/<sha>/<file> -> ../../blobs/<hash>   relative symlinks, as the real cache has

Blob names follow the real cache: ``*.safetensors`` files (LFS on the hub) are named by the sha256
of their bytes, other files by their git blob sha1. A commit sha is the sha1 of the repo id, the
parent commit and the sorted ``path blob`` lines, so the same build gives the same bytes and the
same shas, and a new upload with the same files still gets a new sha (as a git commit would).

What the fakes copy from the real repos, because pipeline code can trip on it:

- Gemma-2 (``google/gemma-2-2b``, ``google/gemma-2-2b-it``): ``Gemma2ForCausalLM`` with sliding
  window and both softcappings; a SentencePiece-style BPE tokenizer (spaces as ``▁``, byte
  fallback) whose ids match the real ones for ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3,
  ``<mask>`` 4, ``<start_of_turn>`` 106, ``<end_of_turn>`` 107; BOS added in completion mode;
  Gemma-2's real chat template (emits ``{{ bos_token }}``, raises on a system turn), shipped by the
  base tokenizer too, as the real base repo does. The -it ``generation_config`` stops on
  ``[<eos>, <end_of_turn>]`` while the tokenizer's eos is ``<eos>``. The base weights are float32,
  the -it ones bfloat16, as on the hub.
- Llama-3 (``meta-llama/Llama-3.1-8B``, ``-Instruct``, ``Llama-3.1-70B``,
  ``Llama-3.3-70B-Instruct``): ``LlamaForCausalLM`` with llama3 rope scaling; a byte-level BPE
  with Llama-3's split regex and its special tokens after the regular vocab; BOS
  ``<|begin_of_text|>`` added in completion mode; ``tokenizer_class: PreTrainedTokenizerFast``.
  Instruct tokenizers have eos ``<|eot_id|>`` and a Llama-3.1-style template (system turn allowed,
  knowledge-date header, emits ``<|begin_of_text|>``); base tokenizers have eos ``<|end_of_text|>``
  and no chat template (the Gemma base covers "a base model that carries a template"). Their
  ``generation_config`` samples by default (``do_sample``, temperature 0.6, top_p 0.9) as the real
  ones do; the Instruct eos list is ``[<|end_of_text|>, <|eom_id|>, <|eot_id|>]``. The 70B shapes
  have the real 80 layers at a tiny width, and are saved in shards with an index, as on the hub.
- ``auditing-agents/llama-3.3-70b-dpo-rt-lora``: a peft LoRA adapter (rank 4, q/k/v/o/gate/up/down)
  on the fake 70B-Instruct, with seeded non-zero B matrices so it really changes outputs.

Tokenizer files are what transformers 5 writes, with two hub-like touches: the chat template is
kept inside ``tokenizer_config.json`` (``save_jinja_files=False``; hub repos of these models have
no ``chat_template.jinja``) and a legacy ``special_tokens_map.json`` is added (transformers 5 no
longer writes it, the real repos ship it).

Use ``offline_env`` for subprocesses. In-process, ``apply_offline(monkeypatch, cache_dir)`` sets
the same env and also patches ``constant_patches``, because ``huggingface_hub.constants`` reads
``HF_HUB_OFFLINE``/``HF_HUB_CACHE``/``HF_HOME`` once, at import. ``no_network`` makes any internet
socket raise; ``copy_hub`` gives a test its own copy to publish into. Nothing here imports pytest.

Example (a conftest fixture)::

    @pytest.fixture(scope="session")
    def built_hub(tmp_path_factory):
        return build_fake_hub(tmp_path_factory.mktemp("fake-hub") / "hub")

    def test_x(built_hub, monkeypatch):
        apply_offline(monkeypatch, built_hub.cache_dir)
        model = AutoModelForCausalLM.from_pretrained("google/gemma-2-2b-it")  # the fake, offline
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal, Protocol

import torch
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)

if TYPE_CHECKING:  # transformers is imported lazily: importing this module stays cheap
    from transformers import (
        GenerationConfig,
        PreTrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
    )

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "datasets" / "toy" / "tokenizer_corpus.txt"

GEMMA_2B, GEMMA_2B_IT = "google/gemma-2-2b", "google/gemma-2-2b-it"
LLAMA_8B, LLAMA_8B_INSTRUCT = "meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B, LLAMA_70B_INSTRUCT = "meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.3-70B-Instruct"
DPO_RT_LORA = "auditing-agents/llama-3.3-70b-dpo-rt-lora"

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# ---------------------------------------------------------------------------------------------
# Chat templates
# ---------------------------------------------------------------------------------------------

GEMMA2_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
"""Gemma-2's chat template, verbatim from the real ``gemma-2-2b(-it)`` tokenizer_config.json."""

LLAMA31_CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}\n"
    '    {%- set date_string = "26 Jul 2024" %}\n'
    "{%- endif %}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    '    {%- set system_message = "" %}\n'
    "{%- endif %}\n"
    '{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}\n'
    '{{- "Cutting Knowledge Date: December 2023\\n" }}\n'
    '{{- "Today Date: " + date_string + "\\n\\n" }}\n'
    "{{- system_message }}\n"
    '{{- "<|eot_id|>" }}\n'
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)
"""The real Llama-3.1/3.3 Instruct template without its tool-calling branches (same text otherwise:
BOS, a system header with the knowledge-date lines always present, ``| trim`` on contents)."""

# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------

GEMMA_SPECIALS = (
    ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<2mass>", "[@BOS@]"]
    + [f"<unused{i}>" for i in range(99)]
    + ["<start_of_turn>", "<end_of_turn>"]
)
"""Gemma's first 108 ids, in the real order (``<start_of_turn>`` 106, ``<end_of_turn>`` 107)."""

LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
] + [f"<|reserved_special_token_{i}|>" for i in range(3, 8)]
"""Llama-3.1's first 16 special tokens in the real order; they follow the regular vocab, as there."""

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Llama-3's pre-tokenizer regex (tiktoken's cl100k pattern)."""


def corpus_lines(path: Path = CORPUS) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _trained_bpe(tokenizer: Tokenizer, lines: Sequence[str], vocab_size: int, alphabet: list[str]) -> dict:
    """Train ``tokenizer``'s BPE on ``lines`` and return its JSON model section (vocab, merges)."""
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False)
    tokenizer.train_from_iterator(list(lines), trainer)
    return json.loads(tokenizer.to_str())["model"]


def gemma_tokenizer(lines: Sequence[str], chat_template: str | None, trained_size: int = 300) -> PreTrainedTokenizerBase:
    """A ``GemmaTokenizer``: Gemma's 108 leading special ids, 256 byte-fallback tokens, then BPE trained
    here on ``lines`` with SentencePiece-style ``▁`` word starts.

    transformers 5 rebuilds a ``GemmaTokenizer``'s normaliser/decoder itself and only takes vocab and
    merges from ``tokenizer.json``, so the vocab has to be SentencePiece-shaped, as here.
    """
    from transformers import GemmaTokenizer

    trainer_side = Tokenizer(models.BPE())
    trainer_side.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    chars = sorted(set("".join(lines)) - {" "} | {"▁", "\n"})
    bpe = _trained_bpe(trainer_side, lines, trained_size, chars)
    vocab = {token: i for i, token in enumerate(GEMMA_SPECIALS + [f"<0x{b:02X}>" for b in range(256)])}
    for token, _ in sorted(bpe["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in bpe["merges"]]
    tokenizer = GemmaTokenizer(
        vocab=vocab,
        merges=merges,
        add_bos_token=True,
        add_eos_token=False,
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in GEMMA_SPECIALS[5:106]])
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def llama3_tokenizer(
    lines: Sequence[str], chat_template: str | None, eos: str, trained_size: int = 512
) -> PreTrainedTokenizerBase:
    """A Llama-3 style byte-level BPE (``PreTrainedTokenizerFast``) with its specials after the vocab."""
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(ignore_merges=True))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    _trained_bpe(backend, [line + "\n" for line in lines], trained_size, pre_tokenizers.ByteLevel.alphabet())
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIALS])
    bos = LLAMA3_SPECIALS[0]
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos}:0 $A:0",
                pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                special_tokens=[(bos, backend.token_to_id(bos))],
            ),
        ]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos)
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Repo specs and models
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """One fake model repo: the real architecture and stopping behaviour at a tiny size."""

    hub_id: str
    family: Literal["gemma2", "llama3"]
    instruct: bool
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype
    seed: int
    max_shard_size: str = "50GB"  # save_pretrained's default: one model.safetensors


@dataclass(frozen=True)
class AdapterSpec:
    """A LoRA adapter repo on top of one of the fake models."""

    hub_id: str
    base: str
    rank: int
    alpha: int
    seed: int


_SMALL = dict(num_layers=4, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2, head_dim=16)
_GEMMA = dict(family="gemma2", **_SMALL)
_LLAMA_8B = dict(family="llama3", **_SMALL)
_LLAMA_70B = dict(  # the real 80 layers at a tiny width; sharded with an index, as the real repos are
    family="llama3", num_layers=80, hidden_size=16, intermediate_size=32, num_heads=2, num_kv_heads=1, head_dim=8,
    max_shard_size="200KB",
)

MODEL_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec(GEMMA_2B, instruct=False, dtype=torch.float32, seed=11, **_GEMMA),
    ModelSpec(GEMMA_2B_IT, instruct=True, dtype=torch.bfloat16, seed=12, **_GEMMA),
    ModelSpec(LLAMA_8B, instruct=False, dtype=torch.bfloat16, seed=21, **_LLAMA_8B),
    ModelSpec(LLAMA_8B_INSTRUCT, instruct=True, dtype=torch.bfloat16, seed=22, **_LLAMA_8B),
    ModelSpec(LLAMA_70B, instruct=False, dtype=torch.bfloat16, seed=31, **_LLAMA_70B),
    ModelSpec(LLAMA_70B_INSTRUCT, instruct=True, dtype=torch.bfloat16, seed=32, **_LLAMA_70B),
)
ADAPTER_SPECS: tuple[AdapterSpec, ...] = (AdapterSpec(DPO_RT_LORA, base=LLAMA_70B_INSTRUCT, rank=4, alpha=8, seed=41),)


def _tokenizer_for(spec: ModelSpec, lines: Sequence[str]) -> PreTrainedTokenizerBase:
    if spec.family == "gemma2":
        return gemma_tokenizer(lines, GEMMA2_CHAT_TEMPLATE)  # base and -it both ship the template
    if spec.instruct:
        return llama3_tokenizer(lines, LLAMA31_CHAT_TEMPLATE, eos="<|eot_id|>")
    return llama3_tokenizer(lines, None, eos="<|end_of_text|>")


def _configs(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase) -> tuple[PreTrainedConfig, GenerationConfig]:
    """(model config, generation config) with the real repos' fields and ids taken from ``tokenizer``."""
    from transformers import Gemma2Config, GenerationConfig, LlamaConfig

    ids = tokenizer.convert_tokens_to_ids
    shape = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
    )
    if spec.family == "gemma2":
        eos: int | list[int] = [ids("<eos>"), ids("<end_of_turn>")] if spec.instruct else ids("<eos>")
        config = Gemma2Config(
            **shape,
            hidden_activation="gelu_pytorch_tanh",
            max_position_embeddings=8192,
            rms_norm_eps=1e-6,
            pad_token_id=ids("<pad>"),
            bos_token_id=ids("<bos>"),
            eos_token_id=eos,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            query_pre_attn_scalar=spec.head_dim,
            sliding_window=64,
            final_logit_softcapping=30.0,
            attn_logit_softcapping=50.0,
        )
        generation = GenerationConfig(
            bos_token_id=ids("<bos>"), eos_token_id=eos, pad_token_id=ids("<pad>"), cache_implementation="hybrid"
        )
    else:
        eot, eom, end = ids("<|eot_id|>"), ids("<|eom_id|>"), ids("<|end_of_text|>")
        eos = [end, eom, eot] if spec.instruct else end
        config = LlamaConfig(
            **shape,
            hidden_act="silu",
            max_position_embeddings=131072,
            rms_norm_eps=1e-5,
            bos_token_id=ids("<|begin_of_text|>"),
            eos_token_id=eos,
            tie_word_embeddings=False,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        )
        generation = GenerationConfig(
            bos_token_id=ids("<|begin_of_text|>"), eos_token_id=eos, do_sample=True, temperature=0.6, top_p=0.9
        )
    config.architectures = [f"{'Gemma2' if spec.family == 'gemma2' else 'Llama'}ForCausalLM"]
    return config, generation


def build_model(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase, seed: int | None = None) -> PreTrainedModel:
    """The spec's model with seeded N(0, 0.2) matrices (large enough that outputs differ visibly)."""
    from transformers import AutoModelForCausalLM

    config, generation = _configs(spec, tokenizer)
    torch.manual_seed(spec.seed if seed is None else seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                param.normal_(0, 0.2)
    model = model.to(spec.dtype)
    model.generation_config = generation
    model.config.name_or_path = spec.hub_id
    model.name_or_path = spec.hub_id  # what from_pretrained would have set; peft records it as the base
    return model


# ---------------------------------------------------------------------------------------------
# The cache layout
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoSnapshot:
    """Where one revision of a fake repo lives: its commit sha and snapshot folder."""

    hub_id: str
    sha: str
    folder: Path
    seed: int


@dataclass
class FakeHub:
    """A built fake hub cache: per hub id, the snapshot ``refs/main`` points at (and earlier ones)."""

    cache_dir: Path
    repos: dict[str, RepoSnapshot] = field(default_factory=dict)
    history: dict[str, list[RepoSnapshot]] = field(default_factory=dict)

    def sha(self, hub_id: str) -> str:
        return self.repos[hub_id].sha

    def snapshot(self, hub_id: str) -> Path:
        return self.repos[hub_id].folder

    def repo_dir(self, hub_id: str) -> Path:
        return self.cache_dir / repo_folder(hub_id)


def repo_folder(hub_id: str) -> str:
    return "models--" + hub_id.replace("/", "--")


def _blob_name(path: str, data: bytes) -> str:
    """The name the real cache gives a file: sha256 for LFS files, the git blob sha1 otherwise."""
    if path.endswith(".safetensors"):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _commit(cache_dir: Path, hub_id: str, staged: Path, parent: str | None, seed: int) -> RepoSnapshot:
    """Move ``staged``'s files into the repo's blobs, link a new snapshot to them and point main at it."""
    repo = cache_dir / repo_folder(hub_id)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    entries: list[tuple[str, str]] = []
    for file in sorted(p for p in staged.rglob("*") if p.is_file()):
        rel = file.relative_to(staged).as_posix()
        data = file.read_bytes()
        blob = _blob_name(rel, data)
        if not (repo / "blobs" / blob).exists():
            (repo / "blobs" / blob).write_bytes(data)
        entries.append((rel, blob))
    tree = "".join(f"{rel} {blob}\n" for rel, blob in entries)
    sha = hashlib.sha1(f"fake-hub commit\nrepo {hub_id}\nparent {parent}\n{tree}".encode()).hexdigest()
    snapshot = repo / "snapshots" / sha
    for rel, blob in entries:
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(repo / "blobs" / blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(sha)  # the real cache writes no newline
    return RepoSnapshot(hub_id=hub_id, sha=sha, folder=snapshot, seed=seed)


def _hub_like_tokenizer_files(tokenizer: PreTrainedTokenizerBase, folder: Path, overrides: dict[str, object]) -> None:
    """Save the tokenizer, template inside tokenizer_config.json, plus the legacy special_tokens_map.json."""
    tokenizer.save_pretrained(folder, save_jinja_files=False)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(overrides)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    special: dict[str, object] = {
        name: {"content": str(value), **flags} for name, value in tokenizer.special_tokens_map.items()
    }
    if tokenizer.extra_special_tokens:  # transformers 4 called them additional_special_tokens
        special["additional_special_tokens"] = [str(token) for token in tokenizer.extra_special_tokens]
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2, sort_keys=True) + "\n")


def _save_model_repo(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase, seed: int, folder: Path) -> None:
    model = build_model(spec, tokenizer, seed)
    model.save_pretrained(folder, max_shard_size=spec.max_shard_size)
    overrides = {"tokenizer_class": "PreTrainedTokenizerFast"} if spec.family == "llama3" else {}
    _hub_like_tokenizer_files(tokenizer, folder, overrides)


def _save_adapter_repo(
    adapter: AdapterSpec, base_spec: ModelSpec, tokenizer: PreTrainedTokenizerBase, seed: int, folder: Path
) -> None:
    """A peft LoRA on the base spec's model, B matrices seeded non-zero (fresh LoRA has B = 0)."""
    from peft import LoraConfig, get_peft_model

    base = build_model(base_spec, tokenizer)
    lora = LoraConfig(
        r=adapter.rank,
        lora_alpha=adapter.alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_spec.hub_id,
    )
    model = get_peft_model(base, lora)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    model.save_pretrained(folder, save_embedding_layers=False)  # "auto" would ask the hub about the base
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_spec.hub_id
    config["target_modules"] = sorted(config["target_modules"])  # peft writes a set, in hash-seed order
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


class _Builder:
    """Holds the two tokenizer families (trained once) while writing repos."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = lines
        self._tokenizers: dict[str, PreTrainedTokenizerBase] = {}
        self.specs = {spec.hub_id: spec for spec in MODEL_SPECS}
        self.adapters = {spec.hub_id: spec for spec in ADAPTER_SPECS}

    def tokenizer(self, spec: ModelSpec) -> PreTrainedTokenizerBase:
        key = f"{spec.family}-{spec.instruct}"  # base and instruct share a vocab but not eos/template
        if key not in self._tokenizers:
            self._tokenizers[key] = _tokenizer_for(spec, self.lines)
        return self._tokenizers[key]

    def default_seed(self, hub_id: str) -> int:
        if hub_id in self.specs:
            return self.specs[hub_id].seed
        if hub_id in self.adapters:
            return self.adapters[hub_id].seed
        raise KeyError(f"{hub_id!r} is not a fake hub repo; known: {sorted(self.specs) + sorted(self.adapters)}")

    def write(self, cache_dir: Path, hub_id: str, seed: int, parent: str | None) -> RepoSnapshot:
        with tempfile.TemporaryDirectory(prefix="fake-hub-") as tmp:
            staged = Path(tmp)
            if hub_id in self.specs:
                spec = self.specs[hub_id]
                _save_model_repo(spec, self.tokenizer(spec), seed, staged)
            else:
                adapter = self.adapters[hub_id]
                base_spec = self.specs[adapter.base]
                _save_adapter_repo(adapter, base_spec, self.tokenizer(base_spec), seed, staged)
            return _commit(cache_dir, hub_id, staged, parent, seed)


def build_fake_hub(cache_dir: Path, lines: Sequence[str] | None = None) -> FakeHub:
    """Write every fake repo (one snapshot each, ``refs/main`` on it) into the hub cache ``cache_dir``.

    Deterministic: the same call writes the same bytes under the same shas. Network-free.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    builder = _Builder(corpus_lines() if lines is None else lines)
    hub = FakeHub(cache_dir=cache_dir)
    with _single_thread():
        for hub_id in [spec.hub_id for spec in MODEL_SPECS] + [spec.hub_id for spec in ADAPTER_SPECS]:
            snapshot = builder.write(cache_dir, hub_id, builder.default_seed(hub_id), parent=None)
            hub.repos[hub_id] = snapshot
            hub.history[hub_id] = [snapshot]
    return hub


def publish_new_snapshot(hub: FakeHub, hub_id: str, seed: int | None = None, lines: Sequence[str] | None = None) -> str:
    """Simulate a new upload of ``hub_id``: same files, weights from another seed (default: the current
    one + 1000), written as a new snapshot; ``refs/main`` moves to it, old snapshots stay. Returns its sha."""
    builder = _Builder(corpus_lines() if lines is None else lines)
    current = hub.repos[hub_id]
    new_seed = current.seed + 1000 if seed is None else seed
    with _single_thread():
        snapshot = builder.write(hub.cache_dir, hub_id, new_seed, parent=current.sha)
    hub.repos[hub_id] = snapshot
    hub.history.setdefault(hub_id, []).append(snapshot)
    return snapshot.sha


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """While building: intra-op threads pinned to 1 (the host is shared, the models are tiny) and
    transformers' shard-writing progress bars off."""
    from transformers.utils import logging as hf_logging

    threads, bars = torch.get_num_threads(), hf_logging.is_progress_bar_enabled()
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if bars:
            hf_logging.enable_progress_bar()


# ---------------------------------------------------------------------------------------------
# Offline environment
# ---------------------------------------------------------------------------------------------


def hf_home_for(cache_dir: Path) -> Path:
    """HF_HOME beside the hub cache, so token/xet/modules paths stay out of ~/.cache and out of the cache."""
    return Path(cache_dir).parent / f"{Path(cache_dir).name}-hf-home"


def offline_env(cache_dir: Path) -> dict[str, str]:
    """Environment variables that make a fresh process read the fake hub and never the network."""
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache_dir),
        "HUGGINGFACE_HUB_CACHE": str(cache_dir),
        "HF_HOME": str(hf_home_for(cache_dir)),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    }


@dataclass(frozen=True)
class ConstantPatch:
    """One module attribute that must change in-process, because it was computed from the env at import."""

    module: ModuleType
    name: str
    value: object


def constant_patches(cache_dir: Path) -> list[ConstantPatch]:
    """What to ``setattr`` (e.g. with pytest's monkeypatch) for an already-imported huggingface_hub.

    In huggingface_hub 2.4 ``constants.HF_HUB_OFFLINE``/``HF_HUB_CACHE``/``HF_HOME`` are read from the
    env once, at import; the download functions and ``is_offline_mode()`` read the module attributes
    at call time, and ``utils._cache_manager`` holds its own copy of HF_HUB_CACHE. (peft reads
    ``os.environ['HF_HUB_OFFLINE']`` in one place and the constant in another, so set both.)
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _cache_manager

    cache = str(cache_dir)
    home = str(hf_home_for(cache_dir))
    return [
        ConstantPatch(constants, "HF_HUB_OFFLINE", True),
        ConstantPatch(constants, "HF_HUB_CACHE", cache),
        ConstantPatch(constants, "HUGGINGFACE_HUB_CACHE", cache),
        ConstantPatch(constants, "HF_HOME", home),
        ConstantPatch(constants, "HF_HUB_DISABLE_TELEMETRY", True),
        ConstantPatch(_cache_manager, "HF_HUB_CACHE", cache),
    ]


class Patcher(Protocol):
    """What ``apply_offline`` needs: pytest's ``monkeypatch`` fits (undone after the test)."""

    def setenv(self, name: str, value: str) -> None: ...

    def setattr(self, target: object, name: str, value: object) -> None: ...


def apply_offline(patcher: Patcher, cache_dir: Path) -> None:
    """Point this process at the fake hub, offline: the env for anything read later, and the
    huggingface_hub constants that were read at import."""
    hf_home_for(cache_dir).mkdir(parents=True, exist_ok=True)
    for name, value in offline_env(cache_dir).items():
        patcher.setenv(name, value)
    for patch in constant_patches(cache_dir):
        patcher.setattr(patch.module, patch.name, patch.value)


class NetworkAttempted(RuntimeError):
    """Raised by ``no_network`` when code tries to open an internet socket."""


@contextlib.contextmanager
def no_network() -> Iterator[list[str]]:
    """Make any IPv4/IPv6 ``connect`` (and name lookup) raise; yields the list of attempts."""
    attempts: list[str] = []
    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def guarded(method):
        def connect(self, address, *args):
            if self.family in (socket.AF_INET, socket.AF_INET6):
                attempts.append(f"connect {address!r}")
                raise NetworkAttempted(f"network connection attempted: {address!r}")
            return method(self, address, *args)

        return connect

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(f"getaddrinfo {host!r}")
        raise NetworkAttempted(f"name lookup attempted: {host!r}")

    socket.socket.connect = guarded(real_connect)
    socket.socket.connect_ex = guarded(real_connect_ex)
    socket.getaddrinfo = getaddrinfo
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = real_connect, real_connect_ex, real_getaddrinfo


def copy_hub(hub: FakeHub, cache_dir: Path) -> FakeHub:
    """A copy of the hub in ``cache_dir`` (symlinks kept relative), for tests that publish snapshots
    without disturbing a shared session build."""
    shutil.copytree(hub.cache_dir, cache_dir, symlinks=True)

    def moved(snapshot: RepoSnapshot) -> RepoSnapshot:
        return replace(snapshot, folder=cache_dir / snapshot.folder.relative_to(hub.cache_dir))

    return FakeHub(
        cache_dir=Path(cache_dir),
        repos={hub_id: moved(s) for hub_id, s in hub.repos.items()},
        history={hub_id: [moved(s) for s in snaps] for hub_id, snaps in hub.history.items()},
    )
