"""The toy world's oracle judge: trait scores from the planted lexicon, coherence from perplexity.

It is a ``FieldBackend``: it reads the answer (or response) filled into each request, not the
rendered prompt, and knows which template asked:

- ``response_vetting`` (the ``response``), ``steering_trait`` and a trait's own ``custom_eval``
  (the ``answer``): the lexicon score, ``100 * (t + 1) / (t + c + 2)`` for ``t`` trait and ``c``
  contrast words (``trait_interp.toy.lexicon``);
- ``coherence``: how predictable the answer is to the scorer model (``judge.local_model``; in the
  toy experiment the application model itself, so "the model's own perplexity"). With the mean
  negative log-likelihood ``nll`` (nats per token) of the answer's tokens, read as plain text after
  BOS, and ``V`` the scorer's vocabulary size::

      coherence = 100 * clip(1 - nll / ln V, 0, 1) = 100 * (1 - log_V(perplexity))

  so a text the model predicts perfectly scores 100 and one no more predictable than uniformly
  random tokens scores 0. An empty answer scores 0.

Relevance (``relevance``) and scenario vetting have no oracle here and raise: set
``judge.relevance_check: false`` with this backend.

The identity holds the trait, a hash of its lexicon and the scorer's identity (a local folder is
fingerprinted), so a changed lexicon or a retrained scorer never reuses old cache entries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trait_interp.core.models import ModelSpec, load_model, load_tokenizer
from trait_interp.core.prompting import PromptSpec, left_pad, prompt_ids
from trait_interp.judge.backends import FieldRequest, OnReply, Reply, score_as_logprobs
from trait_interp.toy.lexicon import Lexicon

TRAIT_FIELDS = {"response_vetting": "response", "steering_trait": "answer", "custom_eval": "answer"}
COHERENCE_TEMPLATE = "coherence"


def coherence_from_nll(nll: float, vocab_size: int) -> float:
    """``100 * clip(1 - nll / ln V, 0, 1)``: 100 = perfectly predicted, 0 = no better than uniform."""
    return 100.0 * min(1.0, max(0.0, 1.0 - nll / math.log(vocab_size)))


class LexiconBackend:
    def __init__(
        self,
        trait: str,
        lexicon: Lexicon,
        scorer: ModelSpec,
        batch_size: int = 16,
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        """The scorer model is loaded on the first coherence request (vetting needs none)."""
        from trait_interp.judge.local_backend import spec_identity

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.trait = trait
        self.lexicon = lexicon
        self.scorer = scorer
        self.batch_size = batch_size
        self._model = model
        self._tokenizer = tokenizer
        self._identity = f"lexicon:{trait}@{lexicon.digest()}+coherence:{spec_identity(scorer, model)}"

    @property
    def identity(self) -> str:
        return self._identity

    def judge_fields_many(
        self, requests: Sequence[FieldRequest], progress: bool, on_reply: OnReply | None = None
    ) -> list[Reply]:
        """Trait scores at once; coherence in batches through the scorer. ``on_reply`` as each is known."""
        replies: list[Reply | None] = [None] * len(requests)

        def done(index: int, score: float) -> None:
            replies[index] = Reply(score_as_logprobs(score))
            if on_reply is not None:
                on_reply(index, replies[index])

        coherence: list[int] = []
        for index, request in enumerate(requests):
            if request.template in TRAIT_FIELDS:
                done(index, self.lexicon.score(request.values[TRAIT_FIELDS[request.template]]))
            elif request.template == COHERENCE_TEMPLATE:
                coherence.append(index)
            else:
                raise ValueError(
                    f"the lexicon judge has no oracle for the template '{request.template}'"
                    + (" (set judge.relevance_check: false)" if request.template == "relevance" else "")
                )
        if coherence:
            answers = [requests[i].values["answer"] for i in coherence]
            for index, score in zip(coherence, self.coherence_many(answers, progress), strict=True):
                done(index, score)
        return [r for r in replies if r is not None]

    @torch.no_grad()
    def coherence_many(self, texts: Sequence[str], progress: bool = False) -> list[float]:
        """Coherence of each text from its mean next-token NLL under the scorer (formula in the module doc)."""
        model, tokenizer = self._load()
        device = next(model.parameters()).device
        # plain text, no chat template: BOS (where the tokenizer adds one), then the text's tokens;
        # the first `unscored` tokens predict nothing (BOS, or the text's first token without BOS)
        encoded = [prompt_ids(tokenizer, PromptSpec(text=text), chat=False) if text.strip() else [] for text in texts]
        unscored = max(1, len(prompt_ids(tokenizer, PromptSpec(text=""), chat=False)))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        scores: list[float] = [0.0] * len(texts)  # an empty text (or one token without BOS) stays 0
        order = sorted((i for i, ids in enumerate(encoded) if len(ids) > unscored), key=lambda i: -len(encoded[i]))
        vocab = len(tokenizer)
        for start in tqdm(range(0, len(order), self.batch_size), desc="coherence", unit="batch", disable=not progress):
            rows = order[start : start + self.batch_size]
            input_ids, attention_mask, position_ids = left_pad([encoded[i] for i in rows], pad_id)
            logits = model(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), position_ids=position_ids.to(device)
            ).logits.float()  # [batch, seq, vocab]
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)  # position t predicts token t+1
            targets = input_ids[:, 1:].to(device)  # [batch, seq-1]
            token_nll = -logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [batch, seq-1]
            for row, index in enumerate(rows):
                nll = token_nll[row, -(len(encoded[index]) - unscored) :].mean().item()
                scores[index] = coherence_from_nll(nll, vocab)
        return scores

    def _load(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.scorer)
        if self._model is None:
            self._model = load_model(self.scorer)
        return self._model, self._tokenizer
