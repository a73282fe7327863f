"""Tests for trait_interp.core.config: strict params -> dataclasses, and the real params.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from trait_interp.core.config import from_mapping, load_yaml, read_params
from trait_interp.core.errors import UserInputError
from trait_interp.core.layers import parse_layers

REPO = Path(__file__).resolve().parents[2]
WHERE = "params.yaml:section"


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5
    name: str = "inner"


@dataclass(frozen=True)
class Section:
    count: int
    mode: Literal["fast", "slow"] = "fast"
    items: tuple[int, ...] = ()
    words: tuple[str, ...] = ("a",)
    inner: Inner = field(default_factory=Inner)
    label: str | None = None
    tokens: int | Literal["auto"] = "auto"
    flag: bool = False


# --------------------------------------------------------------------------- from_mapping


def test_defaults_fill_in() -> None:
    assert from_mapping(Section, {"count": 2}, WHERE) == Section(count=2)
    assert from_mapping(Inner, None, WHERE) == Inner()  # an empty YAML section
    assert from_mapping(Inner, {}, WHERE) == Inner()


def test_full_mapping() -> None:
    data = {
        "count": 3,
        "mode": "slow",
        "items": [1, 2, 3],
        "words": ["x", "y"],
        "inner": {"rate": 2, "name": "deep"},
        "label": "hello",
        "tokens": 7,
        "flag": True,
    }
    got = from_mapping(Section, data, WHERE)
    assert got == Section(
        count=3,
        mode="slow",
        items=(1, 2, 3),
        words=("x", "y"),
        inner=Inner(rate=2.0, name="deep"),
        label="hello",
        tokens=7,
        flag=True,
    )
    assert type(got.items) is tuple and type(got.words) is tuple  # lists become tuples
    assert type(got.inner) is Inner
    assert type(got.inner.rate) is float  # an int is accepted for a float and converted
    hash(got)  # frozen and hashable: no list slipped through


def test_unknown_key_names_key_and_section() -> None:
    with pytest.raises(UserInputError) as err:
        from_mapping(Section, {"count": 1, "cuont": 2}, WHERE)
    assert "cuont" in str(err.value)
    assert WHERE in str(err.value)


def test_unknown_nested_key_names_nested_section() -> None:
    with pytest.raises(UserInputError) as err:
        from_mapping(Section, {"count": 1, "inner": {"rat": 1.0}}, WHERE)
    assert "rat" in str(err.value)
    assert f"{WHERE}.inner" in str(err.value)


def test_missing_required_key() -> None:
    with pytest.raises(UserInputError) as err:
        from_mapping(Section, {"mode": "fast"}, WHERE)
    assert "count" in str(err.value)
    assert WHERE in str(err.value)


def test_not_a_mapping() -> None:
    with pytest.raises(UserInputError, match=WHERE):
        from_mapping(Section, [1, 2], WHERE)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("count", "3"),  # str for int
        ("count", True),  # bool for int
        ("count", 3.0),  # float for int
        ("items", 5),  # non-list for tuple
        ("items", "12"),  # a string is not a list
        ("items", {"a": 1}),
        ("items", [1, "2"]),  # wrong element type
        ("words", [1]),
        ("flag", 1),  # int for bool
        ("flag", "yes"),
        ("label", 3),
        ("mode", "medium"),  # Literal enforced
        ("mode", None),
        ("tokens", "x"),
        ("tokens", True),
        ("tokens", None),
        ("inner", 3),  # nested dataclass wants a mapping
        ("inner", {"rate": "fast"}),
        ("inner", {"rate": False}),
    ],
)
def test_wrong_types_rejected(key: str, value: object) -> None:
    with pytest.raises(UserInputError) as err:
        from_mapping(Section, {"count": 1, key: value}, WHERE)
    assert f"{WHERE}.{key}" in str(err.value)


@pytest.mark.parametrize("tokens", [3, 0, "auto"])
def test_int_or_literal_accepts_both(tokens: int | str) -> None:
    assert from_mapping(Section, {"count": 1, "tokens": tokens}, WHERE).tokens == tokens


def test_optional_accepts_none_and_value() -> None:
    assert from_mapping(Section, {"count": 1, "label": None}, WHERE).label is None
    assert from_mapping(Section, {"count": 1, "label": "x"}, WHERE).label == "x"


def test_literal_accepts_each_choice() -> None:
    for mode in ("fast", "slow"):
        assert from_mapping(Section, {"count": 1, "mode": mode}, WHERE).mode == mode


# --------------------------------------------------------------------------- read_params


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


PARAMS_TEXT = """\
experiment: toy
generation:
  batch_size: 8
  max_new_tokens: auto
extraction:
  position: response[:5]
  layers: [1, 2]
  nested:
    deep: 0.25
other: 1
"""


def test_read_params_returns_exactly_the_keys(tmp_path: Path) -> None:
    path = _write(tmp_path / "params.yaml", PARAMS_TEXT)
    keys = ["experiment", "generation.batch_size", "extraction.layers", "extraction.nested.deep", "extraction"]
    got = read_params(path, keys)
    assert got == {
        "experiment": "toy",
        "generation.batch_size": 8,
        "extraction.layers": [1, 2],
        "extraction.nested.deep": 0.25,
        "extraction": {"position": "response[:5]", "layers": [1, 2], "nested": {"deep": 0.25}},
    }
    assert list(got) == keys
    assert read_params(path, []) == {}


@pytest.mark.parametrize("key", ["generation.temperature", "missing", "extraction.nested.deep.deeper", "experiment.x"])
def test_read_params_missing_key(tmp_path: Path, key: str) -> None:
    path = _write(tmp_path / "params.yaml", PARAMS_TEXT)
    with pytest.raises(UserInputError) as err:
        read_params(path, ["experiment", key])
    assert key in str(err.value)
    assert str(path) in str(err.value)


def test_read_params_invalid_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path / "params.yaml", "a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(yaml.YAMLError):  # the file really is invalid
        yaml.safe_load(path.read_text())
    with pytest.raises(UserInputError) as err:
        read_params(path, ["a"])
    assert str(path) in str(err.value)


def test_read_params_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(UserInputError, match="nope.yaml"):
        read_params(path, ["a"])


def test_read_params_top_level_not_a_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path / "params.yaml", "- a\n- b\n")
    with pytest.raises(UserInputError) as err:
        read_params(path, ["a"])
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------- the real params.yaml


@pytest.fixture(scope="module")
def real_params() -> dict:
    path = REPO / "params.yaml"
    data = load_yaml(path)
    assert data == yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def test_real_params_sections_parse(real_params: dict) -> None:
    from trait_interp.core.generation import GenerationSettings
    from trait_interp.core.positions import parse_position, resolve_max_new_tokens
    from trait_interp.extraction.capture import ExtractionSettings
    from trait_interp.extraction.extract import VectorSettings
    from trait_interp.extraction.methods import MethodSettings
    from trait_interp.toy.models import ToyModelSettings, ToyTrainingSettings

    raw = real_params["extraction"]
    extraction = from_mapping(ExtractionSettings, raw, "params.yaml:extraction")
    assert extraction.sites == tuple(raw["sites"])
    assert extraction.position == raw["position"]
    assert extraction.layers == (tuple(raw["layers"]) if isinstance(raw["layers"], list) else raw["layers"])
    assert extraction.paired is raw["paired"]
    assert extraction.val_fraction == raw["val_fraction"]
    parse_layers(extraction.layers, real_params["toy_models"]["num_layers"])  # the spec itself is valid

    generation = from_mapping(GenerationSettings, real_params["generation"], "params.yaml:generation")
    assert generation.max_new_tokens == real_params["generation"]["max_new_tokens"]
    assert generation.batch_size == real_params["generation"]["batch_size"]
    requested = None if generation.max_new_tokens == "auto" else generation.max_new_tokens
    resolve_max_new_tokens(parse_position(extraction.position), requested)  # the pair is consistent

    vectors = from_mapping(VectorSettings, real_params["vectors"], "params.yaml:vectors")
    assert vectors.methods == tuple(real_params["vectors"]["methods"])
    assert vectors.settings == MethodSettings(**real_params["vectors"]["settings"])

    raw_toy = real_params["toy_models"]
    toy = from_mapping(ToyModelSettings, raw_toy, "params.yaml:toy_models")
    phases = {phase: ToyTrainingSettings(**raw_toy[phase]) for phase in ("base", "chat")}
    assert toy == ToyModelSettings(**{**raw_toy, **phases})


def test_real_params_models_parse(real_params: dict) -> None:
    from trait_interp.core.models import ModelSpec

    models = real_params["models"]
    assert models, "params.yaml defines no model"
    for key, entry in models.items():
        spec = from_mapping(ModelSpec, entry, f"params.yaml:models.{key}")
        assert spec == ModelSpec(**entry)
        assert (spec.path is None) != (spec.hub_id is None), key
    assert real_params["extraction_model"] in models
    assert real_params["application_model"] in models


def test_vector_settings_unknown_method_lists_available() -> None:
    from trait_interp.extraction.extract import VectorSettings
    from trait_interp.extraction.methods import METHODS

    with pytest.raises(UserInputError) as err:
        from_mapping(VectorSettings, {"methods": ["probe", "nope"]}, "params.yaml:vectors")
    message = str(err.value)
    assert "nope" in message
    assert "vectors.methods" in message
    for name in ("probe", "mean_diff", "gradient", "pca", "random_baseline"):
        assert name in METHODS
        assert name in message
