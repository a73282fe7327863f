"""Analysis tables (trait_interp.analyses): one model per output table.

Statistics that can be undefined (a group with < 2 values, a constant series) are NaN, so those
columns are nullable.
"""

from typing import Optional

import pandera.pandas as pa
from pandera.typing import Series

_UNIT = dict(ge=0, le=1)


def _layer_columns(a: str, b: str, optional: bool):  # type: ignore[no-untyped-def]
    """A check that a two-trait table says where each side was read the one way or the other.

    Either one ``layer`` column (both traits at that layer) or both ``a`` and ``b`` (each trait's
    own layer), never a mix; with ``optional`` a table may have neither (the library's per-layer result).
    """

    @pa.dataframe_check(error=f"layer columns: either 'layer' or both '{a}' and '{b}'")
    @classmethod
    def check(cls, df):  # type: ignore[no-untyped-def]
        has = {c for c in ("layer", a, b) if c in df.columns}
        return has in ({"layer"}, {a, b}) or (optional and not has)

    return check


class ResponseMeans(pa.DataFrameModel):
    """Mean projection over one frame's tokens, per prompt and vector."""

    prompt_id: Series[str]
    trait: Series[str]
    method: Series[str]
    site: Series[str]
    layer: Series[int] = pa.Field(ge=0)
    mean_projection: Series[float]
    n_tokens: Series[int] = pa.Field(ge=1)

    class Config:
        strict = True
        coerce = True
        unique = ["prompt_id", "trait", "method", "site", "layer"]


class GroupComparison(pa.DataFrameModel):
    """Group a vs group b of per-response means; d is signed, a minus b."""

    trait: Series[str]
    method: Series[str]
    site: Series[str]
    layer: Series[int] = pa.Field(ge=0)
    group_a: Series[str]
    group_b: Series[str]
    n_a: Series[int] = pa.Field(ge=0)
    n_b: Series[int] = pa.Field(ge=0)
    mean_a: Series[float] = pa.Field(nullable=True)
    mean_b: Series[float] = pa.Field(nullable=True)
    cohens_d: Series[float] = pa.Field(nullable=True)
    ci_low: Series[float] = pa.Field(nullable=True)
    ci_high: Series[float] = pa.Field(nullable=True)
    p_value: Series[float] = pa.Field(nullable=True, **_UNIT)

    class Config:
        strict = True
        coerce = True
        unique = ["trait", "method", "site", "layer", "group_a", "group_b"]


class TraitCorrelation(pa.DataFrameModel):
    """Pearson r between traits of per-response means (all ordered pairs, diagonal included)."""

    trait_a: Series[str]
    trait_b: Series[str]
    r: Series[float] = pa.Field(nullable=True, ge=-1, le=1)
    n: Series[int] = pa.Field(ge=0)

    # where it was measured (added by the stage; absent in the library's per-layer result):
    # ``layer`` when every pair is at a shared layer, else ``layer_a`` and ``layer_b`` on every row
    method: Optional[Series[str]]
    site: Optional[Series[str]]
    layer: Optional[Series[int]]
    layer_a: Optional[Series[int]]
    layer_b: Optional[Series[int]]

    class Config:
        strict = True
        coerce = True
        unique = ["trait_a", "trait_b", "method", "site", "layer", "layer_a", "layer_b"]

    _layers = _layer_columns("layer_a", "layer_b", optional=True)


class LaggedCorrelation(pa.DataFrameModel):
    """Pearson r of trait_a at token t with trait_b at token t + lag, pooled within responses."""

    trait_a: Series[str]
    trait_b: Series[str]
    lag: Series[int]
    r: Series[float] = pa.Field(nullable=True, ge=-1, le=1)
    n: Series[int] = pa.Field(ge=0)

    # where it was measured (added by the stage; absent in the library's per-layer result):
    # ``layer`` when every pair is at a shared layer, else ``layer_a`` and ``layer_b`` on every row
    method: Optional[Series[str]]
    site: Optional[Series[str]]
    layer: Optional[Series[int]]
    layer_a: Optional[Series[int]]
    layer_b: Optional[Series[int]]

    class Config:
        strict = True
        coerce = True
        unique = ["trait_a", "trait_b", "lag", "method", "site", "layer", "layer_a", "layer_b"]

    _layers = _layer_columns("layer_a", "layer_b", optional=True)


class Quadrants(pa.DataFrameModel):
    """Share of responses per high/low quadrant of two traits.

    ``layer`` when both traits are read at the same layer; ``layer_x`` and ``layer_y`` instead when
    the traits were projected at different layers (each read at its own).
    """

    trait_x: Series[str]
    trait_y: Series[str]
    layer: Optional[Series[int]] = pa.Field(ge=0)
    layer_x: Optional[Series[int]] = pa.Field(ge=0)
    layer_y: Optional[Series[int]] = pa.Field(ge=0)
    method: Series[str]
    site: Series[str]
    threshold_x: Series[float]
    threshold_y: Series[float]
    quadrant: Series[str] = pa.Field(isin=["high_x/high_y", "high_x/low_y", "low_x/high_y", "low_x/low_y"])
    count: Series[int] = pa.Field(ge=0)
    share: Series[float] = pa.Field(**_UNIT)

    class Config:
        strict = True
        coerce = True
        unique = ["trait_x", "trait_y", "layer", "layer_x", "layer_y", "method", "site", "quadrant"]

    _layers = _layer_columns("layer_x", "layer_y", optional=False)


class ModelDiff(pa.DataFrameModel):
    """Variant B vs variant A on the same tokens, per vector; diffs are B minus A."""

    trait: Series[str]
    method: Series[str]
    site: Series[str]
    layer: Series[int] = pa.Field(ge=0)
    n_prompts: Series[int] = pa.Field(ge=1)
    mean_a: Series[float]
    mean_b: Series[float]
    std_a: Series[float] = pa.Field(nullable=True, ge=0)
    std_b: Series[float] = pa.Field(nullable=True, ge=0)
    mean_diff: Series[float]
    paired_d: Series[float] = pa.Field(nullable=True)
    cohens_d: Series[float] = pa.Field(nullable=True)
    p_value: Series[float] = pa.Field(nullable=True, **_UNIT)

    class Config:
        strict = True
        coerce = True
        unique = ["trait", "method", "site", "layer"]


class DiffCosine(pa.DataFrameModel):
    """Cosine of the mean activation shift (B - A) with each trait's vector, per layer.

    method and site are optional: ``diff_vector_cosines`` returns trait, layer, cosine; a stage
    that runs it for several (method, site) adds them.
    """

    trait: Series[str]
    method: Optional[Series[str]]
    site: Optional[Series[str]]
    layer: Series[int] = pa.Field(ge=0)
    cosine: Series[float] = pa.Field(nullable=True, ge=-1.000001, le=1.000001)

    class Config:
        strict = True
        coerce = True


class ClauseDiff(pa.DataFrameModel):
    """Ranked clauses of each response by mean per-token delta (B - A); start/end within the response."""

    prompt_id: Series[str]
    trait: Series[str]
    method: Series[str]
    site: Series[str]
    layer: Series[int] = pa.Field(ge=0)
    clause_rank: Series[int] = pa.Field(ge=1)
    text: Series[str]
    start: Series[int] = pa.Field(ge=0)
    end: Series[int] = pa.Field(ge=1)
    n_tokens: Series[int] = pa.Field(ge=1)
    mean_delta: Series[float]
    max_delta: Series[float]

    @pa.dataframe_check(error="end must equal start + n_tokens")
    @classmethod
    def span(cls, df):  # type: ignore[no-untyped-def]
        return df["end"] == df["start"] + df["n_tokens"]

    class Config:
        strict = True
        coerce = True
        unique = ["prompt_id", "trait", "method", "site", "layer", "clause_rank"]


class CrossEvaluation(pa.DataFrameModel):
    """Each source trait's vector scored on each target trait's held-out activations."""

    source_trait: Series[str]
    target_trait: Series[str]
    layer: Series[int] = pa.Field(ge=0)
    threshold_from: Series[str] = pa.Field(isin=["source", "target"])
    threshold: Series[float]
    accuracy: Series[float] = pa.Field(**_UNIT)
    cohens_d: Series[float] = pa.Field(nullable=True)
    n_positive: Series[int] = pa.Field(ge=1)
    n_negative: Series[int] = pa.Field(ge=1)

    method: Optional[Series[str]]  # added by the stage (one library call per method)
    site: Optional[Series[str]]

    class Config:
        strict = True
        coerce = True
        unique = ["source_trait", "target_trait", "layer", "threshold_from", "method", "site"]
