"""Raw per-token activations equal output_hidden_states, row by row, whatever the padding."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from tests.conftest import tiny_model
from trait_interp.core.forward import TokenSequence
from trait_interp.monitoring.raw_capture import capture_tokens, save_token_activations


def test_every_token_of_every_sequence_equals_hidden_states(tmp_path):
    model = tiny_model("gemma2")
    sequences = [TokenSequence((3, 4, 5), (6, 7)), TokenSequence((8,), (9,)), TokenSequence((1, 2, 3, 4, 5, 6), ())]
    acts = capture_tokens(model, sequences, "residual", [0, 1], pad_id=0, batch_size=2)
    for seq, got in zip(sequences, acts):
        with torch.no_grad():
            hidden = model(torch.tensor([seq.ids]), output_hidden_states=True).hidden_states
        assert got.shape == (len(seq.ids), 2, model.config.hidden_size)
        for column, layer in enumerate((0, 1)):
            torch.testing.assert_close(got[:, column], hidden[layer + 1][0], rtol=1e-4, atol=1e-5)
    save_token_activations(tmp_path, ["p0", "p1", "p2"], acts, [0, 1])
    stored = load_file(str(tmp_path / "p1.safetensors"))
    assert torch.equal(stored["activations"], acts[1]) and stored["layers"].tolist() == [0, 1]
