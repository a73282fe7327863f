"""Deterministic next-token training of the tiny toy models on CPU, on the toy world's corpus.

The toy base model is trained from its seeded initialisation on plain texts, and the chat model
is the base model fine-tuned on chat turns (loss on the answer only), as real instruct models are
tuned from their base: the two share a representation, so a vector read from the base model
steers the chat model. Training stops after a fixed number of steps.

Determinism: minibatches are drawn from a seeded ``torch.Generator``, the model is float32 on the
CPU, ``torch.use_deterministic_algorithms(True)`` and a fixed intra-op thread count are set for
the duration of training (and restored afterwards): the same inputs, seed and thread count give
byte-identical weights.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from trait_interp.toy.lexicon import Lexicon
from trait_interp.toy.models import (
    CHAT_TEMPLATE,
    ToyModelSettings,
    build_model,
    copy_model,
    train_tokenizer,
)
from trait_interp.toy.world import Corpus, World, generate_corpus

Example = tuple[list[int], list[int]]
"""(input ids, labels); label -100 = no loss at that position."""


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_size: int
    lr: float
    seed: int
    threads: int = 1
    warmup: int = 20  # linear warm-up steps, then cosine decay to lr / 10


@dataclass(frozen=True)
class TrainResult:
    losses: tuple[float, ...]  # mean training loss of each step's minibatch
    seconds: float
    cpu_seconds: float  # user + sys of this process during training (threads included)


def text_example(ids: Sequence[int], max_len: int) -> Example:
    """A plain text: loss on every token after the first."""
    ids = list(ids)[:max_len]
    return ids, list(ids)


def chat_example(prompt: Sequence[int], answer: Sequence[int], max_len: int) -> Example:
    """A chat turn: the rendered prompt (no loss) then the answer (loss), cut to ``max_len``."""
    ids = (list(prompt) + list(answer))[:max_len]
    labels = ([-100] * len(prompt) + list(answer))[:max_len]
    return ids, labels


@contextmanager
def deterministic(threads: int) -> Iterator[None]:
    """Deterministic kernels and a fixed thread count inside the block; the old settings after it."""
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_deterministic)
        torch.set_num_threads(old_threads)


def _batch(examples: Sequence[Example], rows: Sequence[int], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, labels and attention mask of the chosen rows."""
    width = max(len(examples[i][0]) for i in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [batch, seq]
    labels = torch.full((len(rows), width), -100, dtype=torch.long)  # [batch, seq]
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # [batch, seq]
    for row, index in enumerate(rows):
        tokens, targets = examples[index]
        ids[row, : len(tokens)] = torch.tensor(tokens)
        labels[row, : len(targets)] = torch.tensor(targets)
        mask[row, : len(tokens)] = 1
    return ids, labels, mask


def _loss(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, with the output head applied only where there is a label.

    The same loss as ``model(..., labels=labels).loss``, but most positions of a planted text are
    unlabelled scenario, so skipping their vocabulary projection saves a good share of the compute.
    """
    hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state  # [batch, seq, hidden]
    targets = labels[:, 1:]  # [batch, seq-1]: token t+1 is predicted at position t
    keep = targets != -100
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])  # [n_labelled, vocab]
    return nn.functional.cross_entropy(logits.float(), targets[keep])


def train_causal_lm(
    model: nn.Module, examples: Sequence[Example], settings: TrainSettings, pad_id: int,
    progress: bool = False, desc: str = "train",
) -> TrainResult:
    """AdamW on random minibatches of ``examples`` for ``settings.steps`` steps; the model is left in eval mode.

    ``progress``: a bar on stderr (steps, rate, the latest loss); it reads only the loss already
    computed, so the weights are the same with it or without it."""
    if settings.steps < 1 or settings.batch_size < 1 or settings.lr <= 0 or settings.threads < 1:
        raise ValueError(f"steps, batch_size and threads must be >= 1 and lr > 0, got {settings}")
    if not examples:
        raise ValueError("no training examples")
    losses: list[float] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    with deterministic(settings.threads):
        generator = torch.Generator().manual_seed(settings.seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
        warmup = min(settings.warmup, settings.steps)

        def rate(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = (step - warmup) / max(1, settings.steps - warmup)
            return 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
        model.train()
        every = max(1, settings.steps // 100)  # the loss on the bar: about 100 updates in all
        with tqdm(total=settings.steps, desc=desc, unit="step", disable=not progress, file=sys.stderr) as bar:
            for step in range(settings.steps):
                rows = torch.randint(len(examples), (settings.batch_size,), generator=generator).tolist()
                ids, labels, mask = _batch(examples, rows, pad_id)
                optimizer.zero_grad(set_to_none=True)
                loss = _loss(model, ids, labels, mask)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                losses.append(float(loss.detach()))
                if (step + 1) % every == 0 or step + 1 == settings.steps:
                    bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
                bar.update(1)
        model.eval()
    return TrainResult(tuple(losses), time.perf_counter() - start, time.process_time() - cpu_start)


@dataclass(frozen=True)
class ToyModels:
    """The trained toy models, their tokenizers and what training recorded."""

    base: nn.Module
    instruct: nn.Module
    tokenizer: PreTrainedTokenizerFast  # completion mode (base)
    chat_tokenizer: PreTrainedTokenizerFast  # the same vocabulary plus the chat template (instruct)
    base_training: TrainResult
    chat_training: TrainResult
    corpus: Corpus


def corpus_examples(corpus: Corpus, tokenizer: PreTrainedTokenizerFast, max_len: int) -> list[Example]:
    """Base-model examples: a planted text is its scenario (no loss) then the continuation; filler is all loss.

    The scenario is tokenised alone, as a prompt is in the pipeline, and the continuation after it
    with a leading space, as a generated continuation would be; both end with EOS.
    """
    eos = tokenizer.eos_token_id
    examples = []
    for prefix, text in corpus.texts:
        if prefix:
            prompt = tokenizer(prefix)["input_ids"]
            examples.append(chat_example(prompt, tokenizer(" " + text, add_special_tokens=False)["input_ids"] + [eos], max_len))
        else:
            examples.append(text_example(tokenizer(text)["input_ids"] + [eos], max_len))
    return examples


def chat_examples(corpus: Corpus, tokenizer: PreTrainedTokenizerFast, max_len: int) -> list[Example]:
    """Chat-model examples: the rendered user turn (no loss), then ``" " + answer`` and EOS (loss).

    Each answer also appears as plain text after BOS (all loss), so the chat model is a language
    model of its own answers: the lexicon judge reads its perplexity of an answer as coherence.
    """
    eos = tokenizer.eos_token_id
    examples = []
    for question, answer in corpus.chats:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                 add_generation_prompt=True)
        prompt = tokenizer(rendered, add_special_tokens=False)["input_ids"]  # the template emits BOS itself
        reply = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [eos]
        examples.append(chat_example(prompt, reply, max_len))
        examples.append(text_example(tokenizer(" " + answer)["input_ids"] + [eos], max_len))
    return examples


def train_toy_models(
    settings: ToyModelSettings, world: World, lexicons: Mapping[str, Lexicon], filler: Sequence[str],
    progress: bool = False,
) -> ToyModels:
    """Write the corpus, train the tokenizer on it, train the base model, then tune the chat model from it.

    Deterministic in ``settings.seed`` (corpus, initialisation and minibatches) for a fixed
    ``settings.threads``. ``progress``: a line per phase and a bar per training run, on stderr.
    """

    def say(text: str) -> None:
        if progress:
            print(f"toy models: {text}", file=sys.stderr, flush=True)

    corpus = generate_corpus(world, lexicons, filler, settings.examples_per_side, settings.seed)
    say(f"corpus of {len(corpus.texts)} texts and {len(corpus.chats)} chat turns; training the tokenizer")
    lines = [f"{prefix} {text}".strip() for prefix, text in corpus.texts] + [f"{q} {a}" for q, a in corpus.chats]
    tokenizer = train_tokenizer(lines, settings.vocab_size, chat=False)
    base = build_model(settings, tokenizer)
    pad = tokenizer.pad_token_id
    say(f"base model: {settings.base.steps} steps")
    base_result = train_causal_lm(
        base, corpus_examples(corpus, tokenizer, settings.max_length),
        TrainSettings(settings.base.steps, settings.base.batch_size, settings.base.lr, settings.seed, settings.threads),
        pad, progress, "train base",
    )
    chat_tokenizer = copy.deepcopy(tokenizer)
    chat_tokenizer.chat_template = CHAT_TEMPLATE
    instruct = copy_model(base)
    say(f"chat model, tuned from the base: {settings.chat.steps} steps")
    chat_result = train_causal_lm(
        instruct, chat_examples(corpus, chat_tokenizer, settings.max_length),
        TrainSettings(settings.chat.steps, settings.chat.batch_size, settings.chat.lr, settings.seed + 1, settings.threads),
        pad, progress, "train chat",
    )
    return ToyModels(base, instruct, tokenizer, chat_tokenizer, base_result, chat_result, corpus)
