"""Prompt preparation: (text, system prompt, prefill, mode) -> token ids, for any tokenizer.

Chat mode renders the chat template to text and tokenises it WITHOUT special tokens, because
templates already emit their BOS (Gemma's ``<bos>``, Llama-3's ``<|begin_of_text|>``); adding
special tokens again is the double-BOS bug of the reference system. Completion mode lets the
tokenizer add BOS only where it would. Every row is checked for a double BOS, not only row 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import jinja2
import torch
from transformers import PreTrainedTokenizerBase

from trait_interp.core.errors import UserInputError

PromptMode = Literal["auto", "chat", "completion"]


@dataclass(frozen=True)
class PromptSpec:
    text: str
    system_prompt: str | None = None
    prefill: str | None = None  # the start of the assistant's answer, continued by the model


def uses_chat_template(tokenizer: PreTrainedTokenizerBase, mode: PromptMode) -> bool:
    """``auto`` = chat iff the tokenizer has a chat template."""
    if mode == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise UserInputError("prompt_mode is 'chat' but the tokenizer has no chat template; use completion")
        return True
    if mode == "completion":
        return False
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(
    tokenizer: PreTrainedTokenizerBase, spec: PromptSpec, merge_system_prompt: bool = False
) -> str:
    """The chat template's text for [system?, user] plus the generation prompt and prefill."""
    messages = [{"role": "user", "content": spec.text}]
    if spec.system_prompt is not None:
        messages.insert(0, {"role": "system", "content": spec.system_prompt})
    try:
        text = _apply_template(tokenizer, messages)
    except jinja2.TemplateError as err:
        if spec.system_prompt is None:
            raise UserInputError(f"the chat template failed: {err}") from None
        if not merge_system_prompt:
            raise UserInputError(
                f"the chat template does not take a system prompt ({err}); "
                "set merge_system_prompt: true on the model to prepend it to the user turn"
            ) from None
        merged = [{"role": "user", "content": f"{spec.system_prompt}\n\n{spec.text}"}]
        text = _apply_template(tokenizer, merged)
    return text + (spec.prefill or "")


def _apply_template(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    return str(
        tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
    )


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    spec: PromptSpec,
    chat: bool,
    merge_system_prompt: bool = False,
) -> list[int]:
    """Token ids of one prompt; never two BOS."""
    if chat:
        text = render_chat(tokenizer, spec, merge_system_prompt)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        text = spec.text
        if spec.system_prompt is not None:
            if not merge_system_prompt:
                raise UserInputError(
                    "a system prompt was given in completion mode (base model); "
                    "set merge_system_prompt: true on the model to prepend it to the text, or drop it"
                )
            text = f"{spec.system_prompt}\n\n{text}"
        text += spec.prefill or ""
        bos = tokenizer.bos_token
        already_has_bos = bool(bos) and text.startswith(bos)
        ids = tokenizer(text, add_special_tokens=not already_has_bos)["input_ids"]
    check_single_bos(tokenizer, ids)
    return list(ids)


def check_context(
    prompts: Sequence[Sequence[int]], labels: Sequence[str], max_new_tokens: int, limit: int | None, param: str
) -> None:
    """Every prompt plus ``max_new_tokens`` fits the model's context ``limit`` (None: not checked).

    ``labels`` name each prompt for the message (``file:line``, a prompt id); ``param`` is the
    setting that holds ``max_new_tokens``. Checked after tokenising, before any generation.
    """
    if limit is None:
        return
    over = [(label, len(ids)) for label, ids in zip(labels, prompts) if len(ids) + max_new_tokens > limit]
    if not over:
        return
    label, n_tokens = over[0]
    more = f" ({len(over)} prompts are too long; this is the first)" if len(over) > 1 else ""
    raise UserInputError(
        f"{label}: the prompt is {n_tokens} tokens, and with {param} = {max_new_tokens} needs "
        f"{n_tokens + max_new_tokens}: over the model's context of {limit} tokens (max_position_embeddings)"
        f"{more}; shorten the prompt or lower {param}"
    )


def check_single_bos(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> None:
    bos_id = tokenizer.bos_token_id
    if bos_id is not None and len(ids) >= 2 and ids[0] == bos_id and ids[1] == bos_id:
        raise ValueError("double BOS token at the start of a prompt: a template and the tokenizer both added one")


def left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad to ``[batch, seq]``: ``input_ids``, ``attention_mask`` and ``position_ids``.

    Position ids count real tokens only (0 at each sequence's first token), so a padded row
    sees the same positions as it would alone, whatever the position encoding.
    """
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            input_ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            attention_mask[row, width - len(seq) :] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids


def token_strings(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> list[str]:
    """Each token decoded on its own (readable text, one string per id; never re-tokenised)."""
    return [tokenizer.decode([int(token)]) for token in ids]
