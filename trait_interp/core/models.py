"""Model registry entries (from params) and loading through ``from_pretrained``.

A local path and a hub id go through the same code path; weights (and LoRA adapters) load only
from safetensors and ``trust_remote_code`` stays off unless an entry turns it on.

A registry entry (``ModelSpec``) may ask for:

- ``quantization``: ``none``; ``int8`` / ``int4`` (bitsandbytes, CUDA only; int4 is NF4 with the
  entry's ``dtype`` as compute dtype); ``fp8`` (only where the checkpoint itself ships FP8 weights,
  i.e. its ``config.json`` has an FP8 ``quantization_config``; CUDA only).
- ``device_map``: handed to accelerate (``auto`` spreads a large model over the GPUs of one machine;
  also ``balanced``, ``balanced_low_0``, ``sequential``, ``cpu``, ``cuda``, ``cuda:N``). When it is
  set, ``device`` is not used: each layer computes where accelerate put it, and callers send inputs
  to ``input_device(model)``.
- ``adapter``: a LoRA adapter (peft), a hub id (``org/name``, optional ``adapter_revision``) or a
  local folder, kept separate (a ``PeftModel`` wrapper; the activation sites resolve through it) or
  merged into the weights (``merge_adapter: true``, faster; the same activations up to rounding).

Everything that can be checked without loading weights is checked first, with one-line
``UserInputError`` messages naming the param to change: ``model_spec`` checks the entry on its own
(local folders, CUDA, adapter folder and its declared base model), and ``load_model`` repeats those
checks, fetches a hub adapter's two small files, and compares the adapter's tensor shapes with the
base model's modules (built on the meta device from its config) before any weight is read.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from trait_interp.core.config import from_mapping
from trait_interp.core.errors import UserInputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUANTIZATIONS = ("none", "int8", "int4", "fp8")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential", "cpu", "cuda")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass(frozen=True)
class ModelSpec:
    """One entry of ``models:`` in params.yaml. Exactly one of ``path`` / ``hub_id``."""

    path: str | None = None
    hub_id: str | None = None
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    device: str = "cpu"
    prompt_mode: Literal["auto", "chat", "completion"] = "auto"
    merge_system_prompt: bool = False
    quantization: Literal["none", "int8", "int4", "fp8"] = "none"
    device_map: str | None = None  # e.g. "auto"; when set, `device` is not used
    adapter: str | None = None  # LoRA adapter: hub id (org/name) or local folder
    adapter_revision: str | None = None  # hub adapters only
    merge_adapter: bool = False  # merge the adapter into the weights (faster) instead of wrapping
    trust_remote_code: bool = False

    @property
    def source(self) -> str:
        return self.path if self.path is not None else str(self.hub_id)


def model_spec(models: Mapping[str, Any], key: str, where: str = "params.yaml") -> ModelSpec:
    """Pick and validate the registry entry ``key``; checks the local paths exist (nothing is loaded)."""
    if key not in models:
        raise UserInputError(f"{where}: unknown model '{key}'; models defined: {', '.join(models) or 'none'}")
    spec = from_mapping(ModelSpec, models[key], f"{where}:models.{key}")
    return check_spec(spec, f"{where}:models.{key}")


def check_spec(spec: ModelSpec, where: str) -> ModelSpec:
    """Every check that needs no download and no weights; ``where`` names the entry in messages.

    Also usable for model entries outside ``models:`` (e.g. the judge's ``local_model``).
    """
    if (spec.path is None) == (spec.hub_id is None):
        raise UserInputError(f"{where}: set exactly one of 'path' or 'hub_id'")
    if spec.path is not None and not Path(spec.path).is_dir():
        raise UserInputError(
            f"{where}.path: model folder '{spec.path}' does not exist; "
            "build it first (dvc repro) or fix the path"
        )
    if spec.quantization not in QUANTIZATIONS:  # ModelSpec built in code, not through from_mapping
        raise UserInputError(f"{where}.quantization: unknown '{spec.quantization}'; use one of {', '.join(QUANTIZATIONS)}")
    if spec.dtype not in DTYPES:
        raise UserInputError(f"{where}.dtype: unknown '{spec.dtype}'; use one of {', '.join(DTYPES)}")
    cuda = torch.cuda.is_available()
    if spec.quantization in ("int8", "int4", "fp8"):
        if not cuda:
            raise UserInputError(
                f"{where}.quantization: {spec.quantization} needs a CUDA GPU and none is available; "
                "set quantization: none on this machine"
            )
        if spec.device_map in (None, "cpu") and not (spec.device_map is None and spec.device.startswith("cuda")):
            raise UserInputError(
                f"{where}.quantization: {spec.quantization} weights must live on a GPU; set device: cuda or device_map: auto"
            )
        if spec.quantization in ("int8", "int4") and importlib.util.find_spec("bitsandbytes") is None:
            raise UserInputError(
                f"{where}.quantization: {spec.quantization} needs the bitsandbytes package "
                "(pip install bitsandbytes); or set quantization: none"
            )
    if spec.device_map is None and spec.device.startswith("cuda") and not cuda:
        raise UserInputError(f"{where}.device is '{spec.device}' but no CUDA device is available; set device: cpu")
    if spec.device_map is not None:
        if spec.device_map not in DEVICE_MAPS and not re.fullmatch(r"cuda:\d+", spec.device_map):
            raise UserInputError(
                f"{where}.device_map: unknown '{spec.device_map}'; use one of {', '.join(DEVICE_MAPS)}, cuda:N or null"
            )
        if spec.device_map != "cpu" and not cuda:
            raise UserInputError(
                f"{where}.device_map is '{spec.device_map}' but no CUDA device is available; set device_map: null (or cpu)"
            )
    if spec.path is not None:
        _check_checkpoint_quantization(_read_json(Path(spec.path) / "config.json"), spec, where)
    if spec.adapter is None:
        if spec.adapter_revision is not None or spec.merge_adapter:
            raise UserInputError(f"{where}: adapter_revision / merge_adapter are set but no adapter; set adapter or remove them")
        return spec
    if is_local_reference(spec.adapter):
        folder = Path(spec.adapter).expanduser()
        if not folder.is_dir():
            raise UserInputError(
                f"{where}.adapter: adapter folder '{spec.adapter}' does not exist; "
                "build it first (dvc repro) or fix the path (a hub adapter is written org/name)"
            )
        if spec.adapter_revision is not None:
            raise UserInputError(f"{where}.adapter_revision: only hub adapters have revisions; remove it for a local folder")
        check_adapter_files(folder, spec, where)
    return spec


def is_local_reference(reference: str) -> bool:
    """A local folder unless it looks like a hub id (``org/name``) and no such folder exists."""
    if Path(reference).expanduser().exists():
        return True
    if reference.startswith(("/", ".", "~")) or "\\" in reference:
        return True
    return reference.count("/") != 1


def check_adapter_files(folder: Path, spec: ModelSpec, where: str) -> dict[str, Any]:
    """The adapter folder holds a LoRA config and safetensors weights made for this entry's model."""
    config_file, weights_file = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not config_file.is_file():
        raise UserInputError(f"{where}.adapter: '{spec.adapter}' has no {ADAPTER_CONFIG}; point adapter at a peft adapter folder")
    if not weights_file.is_file():
        raise UserInputError(
            f"{where}.adapter: '{spec.adapter}' has no {ADAPTER_WEIGHTS} (only safetensors adapters are loaded); "
            "convert it or pick another adapter"
        )
    config = _read_json(config_file)
    if config is None:
        raise UserInputError(f"{where}.adapter: {config_file} is not valid JSON; fix or rebuild the adapter")
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise UserInputError(
            f"{where}.adapter: '{spec.adapter}' is a {config.get('peft_type')} adapter; only LoRA adapters are supported"
        )
    declared = config.get("base_model_name_or_path")
    if declared and not same_base_model(str(declared), spec):
        raise UserInputError(
            f"{where}.adapter: '{spec.adapter}' was trained on '{declared}' but this entry loads '{spec.source}'; "
            "use the adapter's base model (path/hub_id) or another adapter"
        )
    return config


def same_base_model(declared: str, spec: ModelSpec) -> bool:
    """Does an adapter's ``base_model_name_or_path`` name this entry's model?

    The same folder, or the same model name (last path component, case-insensitive; a hub cache
    folder ``models--org--name/snapshots/<hash>`` counts as ``name``), so a mirror (another org)
    or a local copy kept under the hub name both match, while ``-it`` vs base or ``instruct`` vs
    ``base`` do not.
    """
    if spec.path is not None:
        try:
            if Path(declared).expanduser().resolve() == Path(spec.path).resolve():
                return True
        except OSError:
            pass
    return _model_name(declared) == _model_name(spec.source)


def _model_name(reference: str) -> str:
    parts = [p for p in reference.replace("\\", "/").split("/") if p]
    for part in parts:
        if part.startswith("models--"):  # hub cache layout
            return part.split("--")[-1].lower()
    return parts[-1].lower() if parts else ""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def checkpoint_quantization(config: Mapping[str, Any] | None) -> str | None:
    """The quantization a checkpoint ships with (from its config.json): int8, int4, fp8, another method's name, or None."""
    quant = (config or {}).get("quantization_config")
    if not isinstance(quant, Mapping):
        return None
    method = str(quant.get("quant_method", "")).lower()
    if method == "bitsandbytes":
        return "int4" if quant.get("load_in_4bit") else "int8"
    if method in ("fp8", "fbgemm_fp8"):
        return "fp8"
    if method == "compressed-tensors":
        text = json.dumps(quant)
        if '"type": "float"' in text and '"num_bits": 8' in text:
            return "fp8"
    return method or None


def _check_checkpoint_quantization(config: Mapping[str, Any] | None, spec: ModelSpec, where: str) -> None:
    shipped = checkpoint_quantization(config)
    if spec.quantization == "fp8" and shipped != "fp8":
        raise UserInputError(
            f"{where}.quantization: fp8 loads FP8 weights the checkpoint provides, and '{spec.source}' has none; "
            "use an FP8 checkpoint or set quantization: none"
        )
    if shipped in ("int8", "int4", "fp8") and spec.quantization != shipped:
        raise UserInputError(
            f"{where}.quantization: '{spec.source}' is already quantized ({shipped}); set quantization: {shipped}"
        )
    if shipped is not None and shipped not in QUANTIZATIONS and spec.quantization != "none":
        raise UserInputError(
            f"{where}.quantization: '{spec.source}' is already quantized with {shipped}; set quantization: none"
        )


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_limit(spec: ModelSpec, where: str | None = None) -> int | None:
    """The most tokens (prompt + generated) the model takes, from its config.json (no weights); None if unstated."""
    config = _base_config(spec, where or f"model '{spec.source}'")
    config = getattr(config, "text_config", None) or config
    for key in CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(spec.source, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: ModelSpec, where: str | None = None) -> nn.Module:
    """Load the entry's model (and adapter), in eval mode; every cheap check runs before any weight loads.

    Returns a ``PreTrainedModel``, or a ``peft.PeftModel`` wrapping one when an adapter is kept
    separate. ``where`` names the entry in error messages (default: its source).
    """
    where = where or f"model '{spec.source}'"
    check_spec(spec, where)
    config = _base_config(spec, where)
    _check_checkpoint_quantization(config.to_dict(), spec, where)
    adapter_dir = None
    if spec.adapter is not None:
        adapter_dir = resolve_adapter(spec, where)
        check_adapter_files(adapter_dir, spec, where)
        check_adapter_shapes(config, adapter_dir, spec, where)

    kwargs: dict[str, Any] = {}
    device_map: Any = spec.device_map
    if spec.quantization in ("int8", "int4"):
        kwargs["quantization_config"] = _bitsandbytes_config(spec, where)
    if spec.quantization != "none" and device_map is None:
        device_map = {"": spec.device}  # quantized weights are placed while loading, never moved afterwards
    if device_map is not None:
        kwargs["device_map"] = device_map
    with _corrupt_weights_named(spec.source, where):
        model = AutoModelForCausalLM.from_pretrained(
            spec.source,
            revision=spec.revision,
            config=config,
            dtype=DTYPES[spec.dtype],
            use_safetensors=True,
            trust_remote_code=spec.trust_remote_code,
            **kwargs,
        )
    if device_map is None:
        model = model.to(spec.device)
    if adapter_dir is not None:
        from peft import PeftModel  # only when an adapter is asked for

        # A local folder checked to hold adapter_model.safetensors: peft reads only that file.
        with _corrupt_weights_named(str(adapter_dir), f"{where}.adapter"):
            model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False, low_cpu_mem_usage=True)
        if spec.merge_adapter:
            model = model.merge_and_unload()
    return model.eval()


@contextmanager
def _corrupt_weights_named(source: str, where: str) -> Iterator[None]:
    """A truncated or corrupt weights file becomes one line naming the model folder and the fix."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(
            f"{where}: a safetensors weights file of '{source}' is corrupt or truncated ({reason}); restore it with "
            f"`dvc checkout {source}` (a model the pipeline builds) or re-run the stage that builds it, or delete it "
            "from the Hugging Face cache to download it again"
        ) from None


def _base_config(spec: ModelSpec, where: str):
    """The base model's config (config.json only: no weights)."""
    try:
        return AutoConfig.from_pretrained(spec.source, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as err:
        field = "path" if spec.path is not None else "hub_id"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"{where}.{field}: cannot read the config of '{spec.source}' ({reason}); fix {field}/revision") from None


def resolve_adapter(spec: ModelSpec, where: str) -> Path:
    """A local folder holding the adapter: the entry's folder, or the hub adapter's two files (config + safetensors)."""
    assert spec.adapter is not None
    if is_local_reference(spec.adapter):
        return Path(spec.adapter).expanduser()
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            spec.adapter, revision=spec.adapter_revision, allow_patterns=[ADAPTER_CONFIG, ADAPTER_WEIGHTS]
        )
    except Exception as err:  # noqa: BLE001 - any hub failure (not found, offline, auth) is one message
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(
            f"{where}.adapter: cannot fetch hub adapter '{spec.adapter}' (revision {spec.adapter_revision or 'main'}): "
            f"{reason}; fix adapter/adapter_revision or log in (huggingface-cli login)"
        ) from None
    return Path(folder)


_LORA_KEY = re.compile(
    r"(?:base_model\.model\.)?(?P<name>.+?)\.(?P<part>lora_embedding_A|lora_embedding_B|lora_A|lora_B)(?:\..*)?"
)


def check_adapter_shapes(config: Any, adapter_dir: Path, spec: ModelSpec, where: str) -> None:
    """Every LoRA tensor fits the base model's module of the same name (model built on the meta device)."""
    from safetensors import safe_open

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=spec.trust_remote_code)
    modules = dict(skeleton.named_modules())
    found, missing = 0, []
    with _corrupt_weights_named(str(adapter_dir), f"{where}.adapter"), \
            safe_open(str(adapter_dir / ADAPTER_WEIGHTS), framework="pt") as weights:
        for key in weights.keys():
            match = _LORA_KEY.fullmatch(key)
            if match is None:  # e.g. a DoRA magnitude or a modules_to_save copy: peft checks those
                continue
            name, part = match.group("name"), match.group("part")
            module = modules.get(name)
            if module is None:
                missing.append(name)
                continue
            found += 1
            shape = tuple(weights.get_slice(key).get_shape())
            problem = _shape_problem(module, part, shape)
            if problem:
                raise UserInputError(
                    f"{where}.adapter: '{spec.adapter}' does not fit '{spec.source}': {name} {problem}; "
                    "use the adapter's base model or another adapter"
                )
    if missing and not found:
        raise UserInputError(
            f"{where}.adapter: none of the modules '{spec.adapter}' adapts exist in '{spec.source}' "
            f"(e.g. {missing[0]}); use the adapter's base model or another adapter"
        )


def _shape_problem(module: nn.Module, part: str, shape: tuple[int, ...]) -> str | None:
    if isinstance(module, nn.Linear):
        if part == "lora_A" and (len(shape) != 2 or shape[1] != module.in_features):
            return f"takes {module.in_features} inputs, the adapter's lora_A is {list(shape)}"
        if part == "lora_B" and (len(shape) != 2 or shape[0] != module.out_features):
            return f"has {module.out_features} outputs, the adapter's lora_B is {list(shape)}"
    if isinstance(module, nn.Embedding):
        if part == "lora_embedding_A" and (len(shape) != 2 or shape[1] != module.num_embeddings):
            return f"has {module.num_embeddings} embeddings, the adapter's lora_embedding_A is {list(shape)}"
        if part == "lora_embedding_B" and (len(shape) != 2 or shape[0] != module.embedding_dim):
            return f"has width {module.embedding_dim}, the adapter's lora_embedding_B is {list(shape)}"
    return None


def _bitsandbytes_config(spec: ModelSpec, where: str):
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserInputError(
            f"{where}.quantization: {spec.quantization} needs the bitsandbytes package (pip install bitsandbytes); "
            "or set quantization: none"
        )
    from transformers import BitsAndBytesConfig

    if spec.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=DTYPES[spec.dtype],
        bnb_4bit_use_double_quant=True,
    )
