"""Judge backend on a local Hugging Face causal LM, scored like the API: first-token top-20 logprobs.

The messages are rendered with the model's chat template when it has one (a system turn the
template rejects is merged into the user turn, so the rubric always reaches the model), else as
plain text ``System: ...\\nUser: ...\\nAssistant:``; either way through ``trait_interp.core.prompting``,
so there is never a double BOS. Requests are left-padded in batches with explicit position ids.

The score reads the FIRST token only, so every integer 0..100 must be one token of the
tokenizer; this is checked at construction.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trait_interp.core.errors import UserInputError
from trait_interp.core.models import ModelSpec, load_model, load_tokenizer
from trait_interp.core.prompting import (
    PromptSpec,
    left_pad,
    prompt_ids,
    uses_chat_template,
)
from trait_interp.judge.backends import TOP_LOGPROBS, OnReply, Reply, merge_top_logprobs
from trait_interp.judge.templates import Messages


class LocalBackend:
    def __init__(
        self,
        spec: ModelSpec,
        batch_size: int = 16,
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        """Load (or take) the model; the tokenizer is checked before the model is loaded."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.spec = spec
        self.batch_size = batch_size
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(spec)
        check_single_token_numbers(self.tokenizer, spec.source)
        self.chat = uses_chat_template(self.tokenizer, spec.prompt_mode)
        self.model = model if model is not None else load_model(spec)
        self._identity = spec_identity(spec, self.model)

    @property
    def identity(self) -> str:
        return self._identity

    def prompt_ids(self, messages: Messages) -> list[int]:
        """The exact token ids the model is asked to continue."""
        system, user = _split(messages)
        if self.chat:
            prompt = PromptSpec(text=user, system_prompt=system)
            return prompt_ids(self.tokenizer, prompt, chat=True, merge_system_prompt=True)
        text = (f"System: {system}\n" if system is not None else "") + f"User: {user}\nAssistant:"
        return prompt_ids(self.tokenizer, PromptSpec(text=text), chat=False)

    @torch.no_grad()
    def top_logprobs_many(
        self, messages: Sequence[Messages], progress: bool, on_reply: OnReply | None = None
    ) -> list[Reply]:
        """Batches of similar length (longest first, so memory trouble shows at once)."""
        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id
        prompts = [self.prompt_ids(m) for m in messages]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        keep_last = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(self.model.forward).parameters else {}
        replies: list[Reply | None] = [None] * len(prompts)
        for start in tqdm(range(0, len(order), self.batch_size), desc="judge", unit="batch", disable=not progress):
            rows = order[start : start + self.batch_size]
            input_ids, attention_mask, position_ids = left_pad([prompts[i] for i in rows], pad_id)
            logits = self.model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                position_ids=position_ids.to(device),
                **keep_last,
            ).logits  # [batch, seq or 1, vocab]
            logprobs = torch.log_softmax(logits[:, -1, :].float(), dim=-1)  # [batch, vocab]
            values, indices = logprobs.topk(TOP_LOGPROBS, dim=-1)  # [batch, 20]
            for row, index in enumerate(rows):
                pairs = [
                    (self.tokenizer.decode([token]), value)
                    for token, value in zip(indices[row].tolist(), values[row].tolist(), strict=True)
                ]
                reply = Reply(merge_top_logprobs(pairs), None, prompt_tokens=len(prompts[index]), completion_tokens=0)
                replies[index] = reply
                if on_reply is not None:
                    on_reply(index, reply)
        return [r for r in replies if r is not None]


def check_single_token_numbers(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    """Every integer 0..100 must encode as one token: the score reads only the first token."""
    split = [i for i in range(101) if len(tokenizer.encode(str(i), add_special_tokens=False)) != 1]
    if split:
        shown = ", ".join(map(str, split[:5])) + (", ..." if len(split) > 5 else "")
        raise UserInputError(
            f"judge.local_model '{name}': its tokenizer splits {len(split)} of the integers 0..100 into "
            f"several tokens ({shown}), but the judge score reads only the first answer token; "
            "use a judge model whose tokenizer keeps up to 3 digits in one token (e.g. Llama-3; "
            "check with tokenizer.encode('100')), or set judge.backend: openai"
        )


def _split(messages: Messages) -> tuple[str | None, str]:
    roles = [m["role"] for m in messages]
    if roles == ["user"]:
        return None, messages[0]["content"]
    if roles == ["system", "user"]:
        return messages[0]["content"], messages[1]["content"]
    raise ValueError(f"the local judge takes [system?, user] messages, got roles {roles}")


def spec_identity(spec: ModelSpec, model: PreTrainedModel | None = None) -> str:
    """``local:<source>@<revision>:<dtype>``; a local folder's revision is a fingerprint of its files.

    A hub model without a pinned revision uses the snapshot commit it was loaded from, when known
    (``model`` given), else ``unpinned``.
    """
    if spec.path is not None:
        if not Path(spec.path).is_dir():
            raise UserInputError(f"{spec.path}: judge model folder not found; build it or fix judge.local_model.path")
        revision = spec.revision or f"files-{folder_fingerprint(Path(spec.path))}"
    else:
        commit = getattr(model.config, "_commit_hash", None) if model is not None else None
        revision = spec.revision or commit or "unpinned"
    identity = f"local:{spec.source}@{revision}:{spec.dtype}"
    if spec.quantization != "none":
        identity += f":{spec.quantization}"
    if spec.adapter is not None:  # a judge with an adapter is another judge
        adapter_revision = spec.adapter_revision
        if adapter_revision is None and Path(spec.adapter).is_dir():
            adapter_revision = f"files-{folder_fingerprint(Path(spec.adapter))}"
        identity += f"+adapter:{spec.adapter}@{adapter_revision or 'unpinned'}"
    return identity


def folder_fingerprint(folder: Path, edge_bytes: int = 1 << 20) -> str:
    """A cheap content fingerprint: names, sizes, and the first and last MiB of every file.

    Enough to tell a rebuilt (re-initialised or re-trained) model from the old one without
    hashing gigabytes of weights.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(folder).as_posix()}\0{size}\0".encode())
        with file.open("rb") as handle:
            digest.update(handle.read(edge_bytes))
            if size > 2 * edge_bytes:
                handle.seek(size - edge_bytes)
                digest.update(handle.read(edge_bytes))
            elif size > edge_bytes:
                digest.update(handle.read())
    return digest.hexdigest()[:16]
