"""The local judge backend on a tiny toy model: oracle = the model's own last-position log-softmax."""

from __future__ import annotations

import pytest
import torch

from trait_interp.core.errors import UserInputError
from trait_interp.core.models import ModelSpec
from trait_interp.judge.cache import JudgeCache
from trait_interp.judge.judge import Judge, JudgeRequest
from trait_interp.judge.local_backend import LocalBackend
from trait_interp.judge.scoring import TRAIT_MIN_MASS, aggregate_logprob_score
from trait_interp.judge.settings import JudgeSettings, make_backend
from trait_interp.judge.templates import COHERENCE, STEERING_TRAIT
from trait_interp.toy.models import ToyModelSettings, build_model, train_tokenizer

SMALL = ToyModelSettings(vocab_size=400, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2)

MESSAGES = [
    STEERING_TRAIT.render(
        {"trait_name": "optimism", "definition": "Hope {x}", "question": f"Question {i}?", "answer": "word " * (3 * i)}
    )
    for i in range(4)
] + [COHERENCE.render({"answer": "A short, tidy answer."})]


def save_judge(folder, corpus_lines, chat: bool, numbers: bool, seed: int = 0):
    tokenizer = train_tokenizer(corpus_lines, 400, chat=chat)
    if numbers:
        tokenizer.add_tokens([str(i) for i in range(101)])
    model = build_model(ToyModelSettings(**{**SMALL.__dict__, "seed": seed}), tokenizer)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return model, tokenizer


@pytest.fixture(scope="module")
def chat_judge(tmp_path_factory, corpus_lines):
    folder = tmp_path_factory.mktemp("chat_judge")
    save_judge(folder, corpus_lines, chat=True, numbers=True)
    return LocalBackend(ModelSpec(path=str(folder), dtype="float32"), batch_size=3)


def test_a_tokenizer_without_single_token_numbers_is_refused_before_loading_the_model(tmp_path, corpus_lines):
    tokenizer = train_tokenizer(corpus_lines, 400, chat=True)
    tokenizer.save_pretrained(tmp_path)  # no weights in the folder: the check must come first
    with pytest.raises(UserInputError, match=r"judge.local_model '.*': its tokenizer splits \d+ of the integers 0\.\.100"):
        LocalBackend(ModelSpec(path=str(tmp_path), dtype="float32"))


def oracle(model, tokenizer, messages) -> dict[str, float]:
    """Top-20 of log_softmax(last logits), computed here without the backend's code."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]  # [vocab]
    values, indices = torch.log_softmax(logits.float(), dim=-1).topk(20)
    out: dict[str, float] = {}
    for token, value in zip(indices.tolist(), values.tolist()):
        text = tokenizer.decode([token])
        out[text] = float(torch.logaddexp(torch.tensor(out[text]), torch.tensor(value))) if text in out else value
    return out


def test_top_logprobs_equal_the_models_log_softmax(chat_judge):
    replies = chat_judge.top_logprobs_many(MESSAGES, progress=False)
    for messages, reply in zip(MESSAGES, replies):
        want = oracle(chat_judge.model, chat_judge.tokenizer, messages)
        assert reply.error is None and reply.top_logprobs is not None
        assert set(reply.top_logprobs) == set(want)
        for token, value in want.items():
            assert reply.top_logprobs[token] == pytest.approx(value, abs=1e-4)
        assert reply.prompt_tokens == len(chat_judge.prompt_ids(messages))


def test_batched_equals_one_at_a_time(chat_judge):
    batched = chat_judge.top_logprobs_many(MESSAGES, progress=False)
    single = LocalBackend(chat_judge.spec, batch_size=1, model=chat_judge.model, tokenizer=chat_judge.tokenizer)
    alone = single.top_logprobs_many(MESSAGES, progress=False)
    lengths = {len(chat_judge.prompt_ids(m)) for m in MESSAGES}
    assert len(lengths) > 1  # the batches really are padded
    for a, b in zip(batched, alone):
        assert set(a.top_logprobs) == set(b.top_logprobs)
        for token in a.top_logprobs:
            assert a.top_logprobs[token] == pytest.approx(b.top_logprobs[token], abs=1e-4)


def test_on_reply_reports_every_reply_with_its_request_index(chat_judge):
    seen = {}
    replies = chat_judge.top_logprobs_many(MESSAGES, progress=False, on_reply=lambda i, r: seen.setdefault(i, r))
    assert seen == dict(enumerate(replies))
    assert all(r.prompt_tokens == len(chat_judge.prompt_ids(m)) for m, r in zip(MESSAGES, replies))


def test_judge_on_the_local_backend_scores_from_numeric_tokens_and_caches(chat_judge):
    """A copy of the model whose head favours "37" and "38": the score lands between them."""
    model, tokenizer = chat_judge.model, chat_judge.tokenizer
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        for number in ("37", "38"):
            (token,) = tokenizer.encode(number, add_special_tokens=False)
            head.bias[token] = 30.0
    biased = build_model(SMALL, tokenizer)
    biased.load_state_dict(model.state_dict())
    biased.lm_head = head
    backend = LocalBackend(chat_judge.spec, batch_size=2, model=biased, tokenizer=tokenizer)
    requests = [JudgeRequest(f"t{i}", 1, m, TRAIT_MIN_MASS) for i, m in enumerate(MESSAGES)]
    cache = JudgeCache.in_memory()
    judge = Judge(backend, cache)
    scores = judge.score_many(requests, progress=False)
    replies = backend.top_logprobs_many(MESSAGES, progress=False)
    assert [s.score for s in scores] == pytest.approx(
        [aggregate_logprob_score(r.top_logprobs, TRAIT_MIN_MASS) for r in replies], abs=5e-4)  # rounded to 3 decimals
    assert all(s.score is not None and 37.0 < s.score < 38.0 for s in scores)
    assert len(cache) == len(MESSAGES) and judge.stats.calls == len(MESSAGES)
    assert all(s.cached for s in Judge(backend, cache).score_many(requests, progress=False))


def test_plain_text_prompt_without_a_chat_template(tmp_path, corpus_lines):
    save_judge(tmp_path, corpus_lines, chat=False, numbers=True)
    backend = LocalBackend(ModelSpec(path=str(tmp_path), dtype="float32"))
    ids = backend.prompt_ids(MESSAGES[0])
    assert ids[0] == backend.tokenizer.bos_token_id and ids[1] != backend.tokenizer.bos_token_id
    text = backend.tokenizer.decode(ids, skip_special_tokens=True)
    assert text.startswith("System: Rate how strongly") and text.endswith('Score:\nAssistant:')
    (reply,) = backend.top_logprobs_many(MESSAGES[:1], progress=False)
    assert reply.top_logprobs is not None and len(reply.top_logprobs) <= 20


def test_identity_names_the_model_and_changes_with_its_weights(tmp_path, corpus_lines):
    a, b = tmp_path / "a", tmp_path / "b"
    save_judge(a, corpus_lines, chat=True, numbers=True, seed=0)
    save_judge(b, corpus_lines, chat=True, numbers=True, seed=1)
    backend_a = make_backend(
        JudgeSettings(backend="local", local_model=ModelSpec(path=str(a), dtype="float32"), batch_size=2)
    )
    backend_b = LocalBackend(ModelSpec(path=str(b), dtype="float32"))
    assert backend_a.identity.startswith(f"local:{a}@") and backend_a.identity.endswith(":float32")
    assert backend_a.identity != backend_b.identity
    assert LocalBackend(ModelSpec(path=str(a), dtype="float32", revision="v1")).identity == f"local:{a}@v1:float32"
