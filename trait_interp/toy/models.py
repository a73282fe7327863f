"""Tiny, seeded toy models for the embedded offline experiment.

A byte-level BPE tokenizer is trained locally with ``tokenizers``; the base model uses it in
completion mode (its post-processor prepends BOS, like Llama's), and the instruct model gets a
chat template that emits its own BOS (like Gemma's), so the double-BOS trap is exercised for real.
Both are Llama-architecture models built from a config and saved with ``save_pretrained``, so they
load through the same ``from_pretrained`` path as hub models. They are trained on the toy world's
corpus (``toy_world``, ``toy_training``), so the toy traits are planted in them.

``build_toy_lora`` trains a small LoRA adapter on the instruct model (a few seeded steps on a
handful of texts, so it really changes outputs), the toy stand-in for a fine-tuned model variant
such as base + an RM-sycophancy adapter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

BOS, EOS, PAD = "<bos>", "<eos>", "<pad>"
START_TURN, END_TURN = "<start_of_turn>", "<end_of_turn>"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}"
    "{{ message['content'] }}{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ToyTrainingSettings:
    """One training phase: a fixed number of AdamW steps on random minibatches."""

    steps: int = 1500
    batch_size: int = 32
    lr: float = 0.003


@dataclass(frozen=True)
class ToyModelSettings:
    """``toy_models:`` in params: the architecture, the corpus size and the two training phases."""

    seed: int = 0
    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_positions: int = 512
    examples_per_side: int = 2500  # corpus: scenarios and questions per trait and side
    max_length: int = 96  # training examples are cut to this many tokens
    threads: int = 1  # intra-op threads while training (fixed: float sums depend on it)
    base: ToyTrainingSettings = ToyTrainingSettings(steps=2500)
    chat: ToyTrainingSettings = ToyTrainingSettings(steps=800, lr=0.0015)


def train_tokenizer(lines: Iterable[str], vocab_size: int, chat: bool) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``lines``; ``chat`` adds the BOS-emitting chat template."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, START_TURN, END_TURN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(lines), trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[START_TURN, END_TURN],
        padding_side="left",
    )
    if chat:
        wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def build_model(settings: ToyModelSettings, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A randomly initialised (seeded) tiny Llama in float32."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        num_key_value_heads=settings.num_kv_heads,
        max_position_embeddings=settings.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=0.2,
    )
    torch.manual_seed(settings.seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    return model


def copy_model(model: LlamaForCausalLM) -> LlamaForCausalLM:
    """An independent copy (same config, weights and generation config), e.g. to fine-tune."""
    copy = LlamaForCausalLM(model.config).eval()
    copy.load_state_dict(model.state_dict())
    copy.generation_config = model.generation_config
    return copy


NUMBER_TOKENS = tuple(str(number) for number in range(101))


def add_number_tokens(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """Make every integer 0..100 one token, as a judge scored from its first token needs."""
    tokenizer.add_tokens([number for number in NUMBER_TOKENS if number not in tokenizer.get_vocab()])
    return tokenizer


def build_judge_model(settings: ToyModelSettings, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """The toy experiment's stand-in judge: a tiny random LM whose output head favours numbers.

    Only the rows of the number tokens 0..100 in the output head are non-zero (and large), so
    the next token after any prompt is almost surely a number: its scores are deterministic and
    well-formed (numeric mass near 1) but carry no meaning. It exercises the local judge backend
    end to end; it is not evidence about any trait.
    """
    model = build_model(ToyModelSettings(**{**settings.__dict__, "seed": settings.seed + 2}), tokenizer)
    vocab = tokenizer.get_vocab()
    number_ids = torch.tensor([vocab[number] for number in NUMBER_TOKENS])
    generator = torch.Generator().manual_seed(settings.seed + 3)
    head = torch.zeros_like(model.lm_head.weight)
    head[number_ids] = torch.randn(len(number_ids), head.shape[1], generator=generator) * 0.5
    with torch.no_grad():
        model.lm_head.weight.copy_(head)
    return model


LORA_TARGETS = ("q_proj", "v_proj", "o_proj", "down_proj")


@dataclass(frozen=True)
class ToyLoraSettings:
    """``toy_lora:`` in params: the toy LoRA adapter's training."""

    seed: int = 0
    steps: int = 40
    rank: int = 8
    lr: float = 0.01


def _lora_example(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """(ids, labels) of one training text; ``user<TAB>reply`` is a chat turn (loss on the reply only)."""
    if "\t" not in text:
        ids = tokenizer(text)["input_ids"]
        return list(ids), list(ids)
    user, reply = (part.strip() for part in text.split("\t", 1))
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    prompt = list(tokenizer(rendered, add_special_tokens=False)["input_ids"])  # the template emits BOS itself
    answer = tokenizer(reply + END_TURN, add_special_tokens=False)["input_ids"]
    return prompt + list(answer), [-100] * len(prompt) + list(answer)


def build_toy_lora(
    instruct_dir: Path,
    out_dir: Path,
    seed: int,
    texts: Sequence[str],
    steps: int,
    rank: int,
    lr: float = 0.01,
) -> None:
    """Train a seeded LoRA adapter on the model in ``instruct_dir`` and save it (safetensors) to ``out_dir``.

    Adapted modules: ``LORA_TARGETS`` of every block, ``lora_alpha = 2 * rank``, no dropout. Each
    text is ``user<TAB>reply`` (rendered with the chat template; the loss is on the reply) or plain
    text. Full-batch Adam for ``steps`` steps, in float32 on the CPU: the same seed and inputs give
    byte-identical files. The adapter's ``base_model_name_or_path`` is ``instruct_dir`` as given.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trait_interp.core.io import atomic_dir

    if not texts:
        raise ValueError("build_toy_lora needs at least one training text")
    if steps < 1 or rank < 1:
        raise ValueError(f"steps and rank must be >= 1, got steps={steps}, rank={rank}")
    tokenizer = AutoTokenizer.from_pretrained(str(instruct_dir))
    model = AutoModelForCausalLM.from_pretrained(str(instruct_dir), dtype=torch.float32, use_safetensors=True)
    examples = [_lora_example(tokenizer, text) for text in texts]
    width = max(len(ids) for ids, _ in examples)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in examples])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in examples])
    attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in examples])

    torch.manual_seed(seed)  # the LoRA A matrices' initialisation
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
    peft_model.train()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = peft_model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        optimizer.step()
    peft_model.eval()
    with atomic_dir(Path(out_dir)) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "README.md").unlink(missing_ok=True)  # peft's model card: not needed, and not ours
        config_file = tmp / "adapter_config.json"
        saved = json.loads(config_file.read_text(encoding="utf-8"))
        if isinstance(saved.get("target_modules"), list):  # saved from a set: order depends on the hash seed
            saved["target_modules"] = sorted(saved["target_modules"])
        config_file.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n", encoding="utf-8")
