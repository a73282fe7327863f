"""Toy training shows its progress on stderr (never in an output file) without changing the weights."""

from __future__ import annotations

import subprocess
import sys

import torch
import yaml
from safetensors.torch import save

from tests.conftest import CORPUS, REPO, TINY_TRAINING
from trait_interp.core.config import from_mapping
from trait_interp.toy.lexicon import load_lexicons
from trait_interp.toy.models import ToyModelSettings, build_model, train_tokenizer
from trait_interp.toy.training import (
    TrainSettings,
    text_example,
    train_causal_lm,
    train_toy_models,
)
from trait_interp.toy.world import load_world

TINY = dict(vocab_size=400, hidden_size=32, intermediate_size=48, num_layers=3, **TINY_TRAINING)


def weights(model: torch.nn.Module) -> bytes:
    return save({k: v.contiguous() for k, v in model.state_dict().items()})


def test_the_training_bar_is_on_stderr_and_the_weights_are_the_same(capfd, corpus_lines):
    tokenizer = train_tokenizer(corpus_lines, 300, chat=False)
    examples = [text_example(tokenizer(line)["input_ids"], 24) for line in corpus_lines[:64]]
    settings = TrainSettings(steps=8, batch_size=4, lr=0.003, seed=0)
    trained = {}
    for progress in (False, True):
        model = build_model(ToyModelSettings(vocab_size=300, hidden_size=32, intermediate_size=48, num_layers=2),
                            tokenizer)
        capfd.readouterr()
        train_causal_lm(model, examples, settings, tokenizer.pad_token_id, progress=progress, desc="train tiny")
        out, err = capfd.readouterr()
        trained[progress] = (weights(model), out, err)
    assert trained[True][0] == trained[False][0]  # byte-identical weights with the bar or without
    assert "train tiny" in trained[True][2] and "8/8" in trained[True][2] and "loss=" in trained[True][2]
    assert trained[True][1] == "" and trained[False][1] == "" and trained[False][2] == ""


def test_build_toy_models_shows_progress_on_stderr_only(tmp_path):
    """The stage (a tiny config): a line per phase and a bar per model on stderr, nothing of it on stdout
    or in any file it writes; its weights are the bytes the library trains without progress."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["toy_models"].update(TINY)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "stages", "build-toy-models", "--world", str(REPO / "datasets/toy/world.json"),
            "--lexicon", str(REPO / "datasets/toy/lexicon.json"), "--filler", str(CORPUS),
            "--out-base", str(out / "base"), "--out-instruct", str(out / "instruct"), "--out-judge", str(out / "judge"),
            "--loss-base", str(out / "base.csv"), "--loss-chat", str(out / "chat.csv"), "--metrics",
            str(out / "training.json"), "--params", str(tmp_path / "params.yaml")]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for text in ("toy models: corpus of", "toy models: base model: 12 steps", "train base", "12/12",
                 "toy models: chat model", "train chat", "6/6", "loss="):
        assert text in done.stderr, text
    assert "train base" not in done.stdout and "step/s" not in done.stdout
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".csv", ".json", ".txt"):
            assert "step/s" not in path.read_text(encoding="utf-8", errors="replace"), path

    settings = from_mapping(ToyModelSettings, params["toy_models"], "toy_models")
    filler = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    quiet = train_toy_models(settings, load_world(REPO / "datasets/toy/world.json"),
                             load_lexicons(REPO / "datasets/toy/lexicon.json"), filler, progress=False)
    for name, model in (("base", quiet.base), ("instruct", quiet.instruct)):
        model.save_pretrained(tmp_path / "quiet" / name, safe_serialization=True)
        assert (tmp_path / "quiet" / name / "model.safetensors").read_bytes() == \
            (out / name / "model.safetensors").read_bytes(), name
