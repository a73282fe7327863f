"""Prompt preparation: never two BOS, on every tokenizer path and every row."""

from __future__ import annotations

import pytest
import torch

from trait_interp.core.errors import UserInputError
from trait_interp.core.prompting import (
    PromptSpec,
    check_single_bos,
    left_pad,
    prompt_ids,
    render_chat,
    uses_chat_template,
)

NO_SYSTEM_TEMPLATE = (  # like Gemma-2's: raises on a system turn
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<start_of_turn>' + m['role'] + '\n' + m['content'] + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def count_bos(tokenizer, ids):
    return sum(1 for t in ids if t == tokenizer.bos_token_id)


def test_the_trap_is_real(chat_tokenizer):
    """Tokenising rendered chat text WITH special tokens gives two BOS: what we must avoid."""
    text = render_chat(chat_tokenizer, PromptSpec("hello"))
    naive = chat_tokenizer(text)["input_ids"]
    assert naive[0] == naive[1] == chat_tokenizer.bos_token_id


@pytest.mark.parametrize("system", [None, "Be brief."])
@pytest.mark.parametrize("prefill", [None, "Sure,"])
def test_chat_mode_has_exactly_one_bos(chat_tokenizer, system, prefill):
    ids = prompt_ids(chat_tokenizer, PromptSpec("Write a short note.", system, prefill), chat=True)
    assert ids[0] == chat_tokenizer.bos_token_id and count_bos(chat_tokenizer, ids) == 1
    text = chat_tokenizer.decode(ids)
    assert text.endswith("<start_of_turn>model\n" + (prefill or ""))
    assert (system or "") in text


def test_completion_mode_adds_exactly_one_bos(base_tokenizer):
    ids = prompt_ids(base_tokenizer, PromptSpec("The weather today is"), chat=False)
    assert ids[0] == base_tokenizer.bos_token_id and count_bos(base_tokenizer, ids) == 1
    assert ids[1:] == base_tokenizer("The weather today is", add_special_tokens=False)["input_ids"]
    # a text that already starts with the BOS string gets no second one
    ids = prompt_ids(base_tokenizer, PromptSpec("<bos>The weather"), chat=False)
    assert count_bos(base_tokenizer, ids) == 1


def test_completion_mode_without_bos_tokenizer_adds_none(base_tokenizer, corpus_lines):
    from trait_interp.toy.models import train_tokenizer

    tok = train_tokenizer(corpus_lines, 300, chat=False)
    tok.backend_tokenizer.post_processor = None  # like Qwen: no BOS at all
    tok.bos_token = None
    ids = prompt_ids(tok, PromptSpec("The weather today is"), chat=False)
    assert ids == tok("The weather today is", add_special_tokens=False)["input_ids"]


def test_every_row_checked_not_only_the_first(chat_tokenizer):
    bos = chat_tokenizer.bos_token_id
    check_single_bos(chat_tokenizer, [bos, 5, 6])
    with pytest.raises(ValueError, match="double BOS"):
        check_single_bos(chat_tokenizer, [bos, bos, 5])
    rows = [prompt_ids(chat_tokenizer, PromptSpec(t), chat=True) for t in ["a", "a much longer prompt than the first"]]
    input_ids, mask, _ = left_pad(rows, chat_tokenizer.pad_token_id)
    for row in range(len(rows)):  # after left padding, each row's first real token is its only BOS
        real = input_ids[row][mask[row].bool()].tolist()
        assert real[0] == bos and count_bos(chat_tokenizer, real) == 1


def test_system_prompt_the_template_cannot_take(chat_tokenizer):
    chat_tokenizer_no_system = chat_tokenizer
    original = chat_tokenizer_no_system.chat_template
    try:
        chat_tokenizer_no_system.chat_template = NO_SYSTEM_TEMPLATE
        spec = PromptSpec("Hi there", system_prompt="You are terse.")
        with pytest.raises(UserInputError, match="merge_system_prompt"):
            prompt_ids(chat_tokenizer_no_system, spec, chat=True)
        ids = prompt_ids(chat_tokenizer_no_system, spec, chat=True, merge_system_prompt=True)
        assert "You are terse.\n\nHi there" in chat_tokenizer_no_system.decode(ids)
    finally:
        chat_tokenizer_no_system.chat_template = original


def test_system_prompt_in_completion_mode_needs_opt_in(base_tokenizer):
    spec = PromptSpec("Continue:", system_prompt="Be evil.")
    with pytest.raises(UserInputError, match="completion mode"):
        prompt_ids(base_tokenizer, spec, chat=False)
    ids = prompt_ids(base_tokenizer, spec, chat=False, merge_system_prompt=True)
    assert base_tokenizer.decode(ids, skip_special_tokens=True).startswith("Be evil.\n\nContinue:")


def test_mode_resolution(base_tokenizer, chat_tokenizer):
    assert uses_chat_template(chat_tokenizer, "auto") and not uses_chat_template(base_tokenizer, "auto")
    assert not uses_chat_template(chat_tokenizer, "completion")
    with pytest.raises(UserInputError, match="no chat template"):
        uses_chat_template(base_tokenizer, "chat")


def test_left_pad_positions_count_real_tokens():
    ids, mask, pos = left_pad([[7, 8, 9], [5]], pad_id=0)
    assert ids.tolist() == [[7, 8, 9], [0, 0, 5]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos[1, 2].item() == 0 and pos[0].tolist() == [0, 1, 2]
    assert torch.equal(pos[0], torch.arange(3))
