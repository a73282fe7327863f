"""What a model entry resolves to: a small record that the stages using the model depend on.

A registry entry (``ModelSpec``) names a hub id and a revision (default ``main``), or a local
folder, plus how to load it. The record (``ResolvedModel``) adds what that means right now: the
commit sha the revision resolves to (a new upload under the same id moves ``main`` and changes the
record), or a content hash of a local folder; the same for a LoRA adapter; the architecture, layer
count and hidden size read from ``config.json``; the end-of-turn ids generation must stop at (the
tokenizer's EOS and every id of the model's ``generation_config``: Gemma's ``<end_of_turn>``,
Llama-3's ``<|eot_id|>``); and the device ``auto`` stood for. Nothing here loads weights.

Stages load models from the record (``pinned``): the hub revision is the resolved sha, so the
weights used are exactly the ones recorded, and ``dvc repro`` re-runs a model's stages only when
its record changed. Records are validated on write and on read like the tables.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from trait_interp.core.errors import UserInputError
from trait_interp.core.hub import resolve_revision
from trait_interp.core.models import ModelSpec, check_spec, is_local_reference
from trait_interp.core.records import read_record, write_record


@dataclass(frozen=True)
class ResolvedModel:
    """One registry entry as resolved now (field order = the file's)."""

    key: str  # the entry's name in params (models.<key>)
    spec: ModelSpec  # the entry as written in params
    source: str  # hub id or local folder
    sha: str | None  # hub: the commit sha spec.revision resolved to
    content: str | None  # local folder: sha256 over its files (names and bytes)
    adapter_sha: str | None  # hub adapter: the commit sha of spec.adapter_revision
    adapter_content: str | None  # local adapter folder: sha256 over its files
    device: str  # where the model runs: spec.device with auto resolved (cpu | cuda | cuda:N)
    architecture: str  # config model_type (text config of a multimodal shell)
    num_layers: int
    hidden_size: int
    eos_token_ids: tuple[int, ...]  # generation stops at any of these

    @property
    def revision_label(self) -> str | None:
        """What the vectors' sidecars record as the revision: the sha, or the local folder's hash."""
        return self.sha if self.sha is not None else (f"sha256:{self.content}" if self.content else None)

    @property
    def adapter_label(self) -> str | None:
        """``adapter@sha`` (hub) or ``adapter@sha256:<hash>`` (local folder); None without an adapter."""
        if self.spec.adapter is None:
            return None
        at = self.adapter_sha if self.adapter_sha is not None else f"sha256:{self.adapter_content}"
        return f"{self.spec.adapter}@{at}"


def resolved_device(device: str) -> str:
    """``auto`` = ``cuda`` when a GPU is there, else ``cpu``; anything else as written."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def folder_hash(folder: Path) -> str:
    """sha256 over every file of a folder (relative names and bytes, sorted; hidden entries skipped)."""
    digest = hashlib.sha256()
    folder = Path(folder)
    files = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def resolve_model(key: str, spec: ModelSpec, where: str) -> ResolvedModel:
    """Resolve a registry entry (``where`` names it in errors, e.g. ``params.yaml:models.gemma-2-2b-it``)."""
    check_spec(replace(spec, device=resolved_device(spec.device)), where)
    sha = content = adapter_sha = adapter_content = None
    if spec.hub_id is not None:
        sha = _hub_sha(spec.hub_id, spec.revision, f"{where}.hub_id")
    else:
        content = folder_hash(Path(spec.path))  # type: ignore[arg-type]
    if spec.adapter is not None:
        if is_local_reference(spec.adapter):
            adapter_content = folder_hash(Path(spec.adapter).expanduser())
        else:
            adapter_sha = _hub_sha(spec.adapter, spec.adapter_revision, f"{where}.adapter")
    pinned_spec = replace(spec, revision=sha if sha is not None else spec.revision)
    config, eos = _config_and_eos(pinned_spec, f"{where}.{'hub_id' if spec.hub_id else 'path'}")
    text = getattr(config, "text_config", None) or config
    return ResolvedModel(
        key=key,
        spec=spec,
        source=spec.source,
        sha=sha,
        content=content,
        adapter_sha=adapter_sha,
        adapter_content=adapter_content,
        device=resolved_device(spec.device),
        architecture=str(text.model_type),
        num_layers=int(text.num_hidden_layers),
        hidden_size=int(text.hidden_size),
        eos_token_ids=eos,
    )


def pinned(record: ResolvedModel) -> ModelSpec:
    """The entry to load: revisions pinned to the recorded shas, the device resolved."""
    spec = record.spec
    return replace(
        spec,
        revision=record.sha if record.sha is not None else spec.revision,
        adapter_revision=record.adapter_sha if record.adapter_sha is not None else spec.adapter_revision,
        device=record.device,
    )


def write_model_record(path: Path, record: ResolvedModel) -> None:
    write_record(path, record)


def read_model_record(path: Path) -> ResolvedModel:
    return read_record(ResolvedModel, path, "no resolved model record; resolve the models first (dvc repro)",
                       "resolve the models again (dvc repro)")


def _hub_sha(hub_id: str, revision: str | None, where: str) -> str:
    try:
        return resolve_revision(hub_id, revision)
    except ValueError as err:
        raise UserInputError(f"{where}: {err}") from None


def _config_and_eos(spec: ModelSpec, where: str):
    """The model's config (config.json only) and its end-of-generation ids (tokenizer + generation_config)."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    try:
        config = AutoConfig.from_pretrained(spec.source, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(
            spec.source, revision=spec.revision, trust_remote_code=spec.trust_remote_code
        )
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"{where}: cannot read the config or tokenizer of '{spec.source}' ({reason})") from None
    try:
        generation = GenerationConfig.from_pretrained(spec.source, revision=spec.revision)
        configured = generation.eos_token_id
    except OSError:  # no generation_config.json: the tokenizer's EOS alone
        configured = None
    return config, eos_token_ids(tokenizer.eos_token_id, configured)


def eos_token_ids(tokenizer_eos: int | None, configured: int | list[int] | None) -> tuple[int, ...]:
    """The tokenizer's EOS first, then every id of the generation config's ``eos_token_id`` (once each)."""
    ids: list[int] = []
    for token in [tokenizer_eos, *(configured if isinstance(configured, (list, tuple)) else [configured])]:
        if token is not None and int(token) not in ids:
            ids.append(int(token))
    if not ids:
        raise UserInputError("the model has no end-of-sequence token (tokenizer eos_token or generation_config)")
    return tuple(ids)

