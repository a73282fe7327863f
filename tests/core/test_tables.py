"""Tables are validated by their pandera model on write and on read, in every format."""

from __future__ import annotations

import pandas as pd
import pytest

from schemas.examples import Examples
from trait_interp.core.errors import UserInputError
from trait_interp.core.tables import read_table, write_table

ROWS = pd.DataFrame({"row": [0, 1], "pair_index": [0, 0], "polarity": ["positive", "negative"],
                     "split": ["train", "val"], "n_tokens": [5, 0]})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_round_trip(tmp_path, suffix):
    path = tmp_path / f"examples{suffix}"
    write_table(ROWS, Examples, path)
    pd.testing.assert_frame_equal(read_table(path, Examples), ROWS, check_dtype=False)


def test_a_bad_table_is_never_written_and_a_bad_file_is_never_read(tmp_path):
    path = tmp_path / "examples.csv"
    with pytest.raises(UserInputError, match="does not match schema Examples"):
        write_table(ROWS.assign(polarity=["positive", "sideways"]), Examples, path)
    assert not path.exists()
    ROWS.assign(split=["train", "test"]).to_csv(path, index=False)
    with pytest.raises(UserInputError, match=r"examples\.csv: does not match schema Examples"):
        read_table(path, Examples)
    with pytest.raises(UserInputError, match="table not found"):
        read_table(tmp_path / "missing.csv", Examples)
