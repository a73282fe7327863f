"""Side effect of an intervention: KL of the intervened vs the unsteered next-token distribution.

Teacher-forced on given (prompt, response) token ids, typically the unsteered model's own answers
to neutral prompts: at every position that predicts a response token, ``KL(P_unsteered || P_intervened)``
(nats), averaged over the sequence's response tokens: the sweeps' side-effect measure
(``steering/side_effects.py``) on the same teacher-forced layout (``side_effects.teacher_forced``). Zero when the intervention changes nothing
(a gate that never fires), whatever the answers.

The layout is the one of generation: prompts left-padded to one width, responses after them (padded
on the right), so a gate or steering block sees the prompt exactly as in a ``generate`` prefill.

The sweeps batch configurations x sequences with plain steering terms; this entry point takes a
generation context instead (a gate decides per row and position), so gated and capped rows are
measured exactly as they generate.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn

from trait_interp.core.batching import BatchSize, resolve_batch_size
from trait_interp.core.forward import TokenSequence
from trait_interp.core.generation import ChunkContext
from trait_interp.core.sites import input_device
from trait_interp.steering.side_effects import teacher_forced


def prompt_aligned(sequences: Sequence[TokenSequence], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``(input_ids, attention_mask, position_ids, prompt_width)``: prompts left-padded, responses right-padded."""
    width = max(len(s.prompt_ids) for s in sequences)
    tail = max(len(s.response_ids) for s in sequences)
    ids, mask, positions = teacher_forced(sequences, width, tail, pad_id)
    return ids, mask, positions, width


@torch.no_grad()
def next_token_kl(
    model: nn.Module,
    sequences: Sequence[TokenSequence],
    context: ChunkContext,
    pad_id: int,
    batch_size: BatchSize = 16,
) -> list[float | None]:
    """Per sequence, the mean over its response tokens of ``KL(P_unsteered || P_intervened)`` in nats.

    ``context(rows, prompt_width)`` is entered around the intervened forward pass of each batch (as
    ``generate_greedy`` enters it around a chunk). None for a sequence without response tokens.
    """
    if not sequences:
        return []
    device = input_device(model)
    size = resolve_batch_size(model, batch_size, max(len(s.ids) for s in sequences))
    out: list[float | None] = []
    for start in range(0, len(sequences), size):
        rows = list(range(start, min(start + size, len(sequences))))
        batch = [sequences[i] for i in rows]
        ids, mask, positions, width = prompt_aligned(batch, pad_id)
        tail = ids.shape[1] - width
        if tail == 0:
            out.extend(None for _ in batch)
            continue
        keep = tail + 1  # positions width-1 .. end-1; the last one predicts past the response

        def logprobs(scope) -> torch.Tensor:
            with scope:
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                               position_ids=positions.to(device), use_cache=False, logits_to_keep=keep).logits
            return torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [batch, tail, vocab]: predicts response token j

        plain = logprobs(nullcontext())
        steered = logprobs(context(rows, width))
        kl = (plain.exp() * (plain - steered)).sum(dim=-1).clamp(min=0.0)  # [batch, tail]
        lengths = torch.tensor([len(s.response_ids) for s in batch], device=kl.device)
        valid = torch.arange(tail, device=kl.device)[None, :] < lengths[:, None]
        means = (kl * valid).sum(dim=1) / lengths.clamp(min=1)
        out.extend(float(m) if n > 0 else None for m, n in zip(means.cpu().tolist(), lengths.cpu().tolist()))
    return out
