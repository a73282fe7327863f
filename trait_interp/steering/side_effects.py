"""The side effect of a steering configuration: KL of its next-token distribution from the unsteered one.

On a fixed set of neutral prompts, the unsteered model first answers each one (greedy). Every
configuration is then teacher-forced on those exact prompt + answer ids, and at each position that
predicts an answer token the divergence

    KL(p_unsteered || p_steered) = sum_t p_unsteered(t) * (log p_unsteered(t) - log p_steered(t))

is taken (nats; float32 log-softmax over the whole vocabulary). A configuration's side effect is
the mean over prompts of each prompt's mean over its answer positions. Steering is applied as in
generation (``positions``: every position, or only the answer's, ``response_only``), so the
measure sees exactly the distributions the steered model would sample from. It is 0 for an
intervention that changes nothing and grows as steering pulls the model off its own behaviour on
text that has nothing to do with the trait: where coherence says whether the answers still read
well, this says how far the model moved elsewhere.

Rows are laid out as generation lays them out: prompts left-padded to one width ``W``, answers
appended from column ``W`` (right-padded), so ``response_only``'s gate (positions >= ``W``)
steers exactly the answer tokens. Per-row batched: each row of a forward pass carries its own
configuration (``interventions.batched_steering``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trait_interp.core.batching import (
    BatchSettings,
    BatchSize,
    batch_size_for,
    resolve_batch_size,
    run_chunks,
)
from trait_interp.core.forward import TokenSequence
from trait_interp.core.sites import input_device
from trait_interp.steering.interventions import (
    SteeringPositions,
    SteeringTerm,
    batched_steering,
)


def teacher_forced(sequences: Sequence[TokenSequence], width: int, answer: int,
                    pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[rows, width + answer]`` ids, mask and position ids: prompts end at column ``width``, answers follow."""
    total = width + answer
    ids = torch.full((len(sequences), total), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), total), dtype=torch.long)
    for row, seq in enumerate(sequences):
        start = width - len(seq.prompt_ids)
        tokens = list(seq.prompt_ids) + list(seq.response_ids)
        ids[row, start : start + len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, start : start + len(tokens)] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, mask, positions


def _batch_size(model: nn.Module, batch_size: BatchSize, seq_len: int, kept: int) -> int:
    if batch_size == "auto":  # every kept position's full-vocabulary logits count, not just one
        return batch_size_for(model, seq_len, BatchSettings(batch_size="auto", logit_positions=kept))
    return resolve_batch_size(model, batch_size, seq_len)


@torch.no_grad()
def _log_probs(model: nn.Module, site: str, sequences: Sequence[TokenSequence], rows: Sequence[int],
               terms: Sequence[Sequence[SteeringTerm]] | None, width: int, answer: int, pad_id: int,
               positions: SteeringPositions) -> torch.Tensor:
    """``[len(rows), answer, vocab]`` float32 log-probs at the positions predicting answer tokens."""
    ids, mask, position_ids = teacher_forced([sequences[i] for i in rows], width, answer, pad_id)
    device = input_device(model)

    def forward() -> torch.Tensor:
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=position_ids.to(device),
                    use_cache=False, logits_to_keep=answer + 1)
        return out.logits[:, :answer].float().log_softmax(dim=-1)  # positions W-1 .. W+answer-2

    if terms is None:
        return forward()
    with batched_steering(model, site, list(terms), positions, prompt_length=width):
        return forward()


@torch.no_grad()
def next_token_kl(
    model: nn.Module,
    site: str,
    sequences: Sequence[TokenSequence],
    configs: Sequence[Sequence[SteeringTerm]],
    pad_id: int,
    positions: SteeringPositions = "all",
    batch_size: BatchSize = 16,
) -> list[float]:
    """Mean KL(unsteered || steered) per configuration over ``sequences`` (prompt + unsteered answer).

    Every configuration x sequence is one row; chunks of ``batch_size`` rows are one forward pass
    each (on CUDA, a chunk that runs out of memory runs again in halves).
    """
    if not sequences:
        raise ValueError("no neutral sequences to measure the side effect on")
    if any(not s.response_ids for s in sequences):
        raise ValueError("every neutral sequence needs its unsteered answer (max_new_tokens >= 1)")
    width = max(len(s.prompt_ids) for s in sequences)
    answer = max(len(s.response_ids) for s in sequences)
    size = _batch_size(model, batch_size, width + answer, answer + 1)
    reference: dict[int, torch.Tensor] = {}
    for chunk, logp in run_chunks(list(range(len(sequences))), size,
                                  lambda rows: _log_probs(model, site, sequences, rows, None, width, answer, pad_id,
                                                          positions), what="side effect (unsteered)"):
        for row, index in enumerate(chunk):
            reference[index] = logp[row, : len(sequences[index].response_ids)]
    n = len(sequences)
    items = [(c, s) for c in range(len(configs)) for s in range(n)]
    totals = [0.0] * len(configs)

    def run(chunk: Sequence[tuple[int, int]]) -> torch.Tensor:
        return _log_probs(model, site, sequences, [s for _, s in chunk], [configs[c] for c, _ in chunk],
                          width, answer, pad_id, positions)

    for chunk, logp in run_chunks(items, size, run, what="side effect"):
        for row, (c, s) in enumerate(chunk):
            ref = reference[s].to(logp.device)
            steered = logp[row, : ref.shape[0]]
            kl = (ref.exp() * (ref - steered)).sum(dim=-1)  # [answer positions]
            totals[c] += float(kl.mean())
    return [total / n for total in totals]
