"""Tables validated by a pandera model on write and on read; written atomically.

Formats by suffix: ``.jsonl`` (one JSON object per row; lists stay lists), ``.csv``, ``.parquet``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from trait_interp.core.errors import UserInputError
from trait_interp.core.io import atomic_path, read_text


def validate(df: pd.DataFrame, schema: type[pa.DataFrameModel], where: str) -> pd.DataFrame:
    try:
        return schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases.head(3)
        summary = "; ".join(
            f"{row.column}: {row.check} (value {row.failure_case!r})" for row in cases.itertuples()
        )
        raise UserInputError(f"{where}: does not match schema {schema.__name__}: {summary}") from None


def write_table(df: pd.DataFrame, schema: type[pa.DataFrameModel], path: Path) -> pd.DataFrame:
    path = Path(path)
    df = validate(df, schema, str(path))
    with atomic_path(path) as tmp:
        if path.suffix == ".jsonl":
            with tmp.open("w", encoding="utf-8") as handle:
                for record in df.to_dict(orient="records"):
                    handle.write(json.dumps(_plain(record), ensure_ascii=False) + "\n")
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            raise ValueError(f"unsupported table format: {path.suffix}")
    return df


def read_table(path: Path, schema: type[pa.DataFrameModel]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: table not found; run the stage that writes it first")
    if path.suffix == ".jsonl":
        lines = read_text(path).splitlines()
        df = pd.DataFrame.from_records([json.loads(line) for line in lines if line.strip()])
    elif path.suffix == ".csv":
        df = pd.read_csv(path, encoding="utf-8-sig")
    elif path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        raise ValueError(f"unsupported table format: {path.suffix}")
    return validate(df, schema, str(path))


def _plain(record: dict) -> dict:
    """numpy scalars and NaN -> JSON-native values."""
    out = {}
    for key, value in record.items():
        if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
            value = value.item()
        if isinstance(value, float) and value != value:
            value = None
        out[key] = value
    return out
