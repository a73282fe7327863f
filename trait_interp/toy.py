"""Tiny, seeded toy models for the embedded offline experiment.

A byte-level BPE tokenizer is trained locally with ``tokenizers``; the base model uses it in
completion mode (its post-processor prepends BOS, like Llama's), and the instruct model gets a
chat template that emits its own BOS (like Gemma's), so the double-BOS trap is exercised for real.
Both are Llama-architecture models built from a config and saved with ``save_pretrained``, so they
load through the same ``from_pretrained`` path as hub models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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
class ToyModelSettings:
    seed: int = 0
    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_positions: int = 512
    instruct_noise: float = 0.5  # instruct = base + noise * (per-tensor std), seeded


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


def perturbed_copy(model: LlamaForCausalLM, noise: float, seed: int) -> LlamaForCausalLM:
    """A stand-in for fine-tuning: same architecture, weights moved by seeded relative noise."""
    copy = LlamaForCausalLM(model.config).eval()
    copy.load_state_dict(model.state_dict())
    copy.generation_config = model.generation_config
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in copy.parameters():
            if param.ndim >= 2:
                param.add_(torch.randn(param.shape, generator=generator) * noise * param.std())
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
