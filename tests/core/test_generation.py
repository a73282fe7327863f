"""Greedy generation: batched (left-padded) equals one prompt at a time; exact ids, EOS kept."""

from __future__ import annotations

import torch

from tests.conftest import tiny_model
from trait_interp.core.generation import generate_greedy, trim_response


def test_batched_generation_equals_one_at_a_time():
    model = tiny_model("llama")
    model.generation_config.pad_token_id = 0
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    batched = generate_greedy(model, prompts, max_new_tokens=6, pad_id=0, eos_ids=[95], batch_size=3)
    alone = [generate_greedy(model, [p], max_new_tokens=6, pad_id=0, eos_ids=[95])[0] for p in prompts]
    assert batched == alone
    # the ids are the model's argmax continuation, checked with plain forward passes
    for prompt, response in zip(prompts, alone):
        ids = list(prompt)
        for token in response:
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, -1]
            assert int(logits.argmax()) == token
            ids.append(token)


def test_trim_keeps_first_eos_and_drops_the_rest():
    assert trim_response([4, 5, 2, 0, 0], eos_ids=[2]) == [4, 5, 2]
    assert trim_response([4, 5, 6], eos_ids=[2]) == [4, 5, 6]


def test_zero_new_tokens_generates_nothing():
    model = tiny_model("llama")
    assert generate_greedy(model, [[1, 2, 3]], max_new_tokens=0, pad_id=0, eos_ids=[2]) == [[]]
