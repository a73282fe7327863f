"""The judge's record: what the judging stages depend on, resolved like the models.

``backend``, the API ``model`` and ``base_url`` (openai), the resolved ``local_model`` (the local
backend's judge, the lexicon backend's coherence scorer) and, for the lexicon backend, the planted
vocabulary's path and sha256. A changed scorer or lexicon changes the record, so exactly the
judging stages re-run; the judge cache's keys already hold the judge's identity.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from trait_interp.core.errors import UserInputError
from trait_interp.core.records import read_record, write_record
from trait_interp.core.resolution import ResolvedModel, resolve_model
from trait_interp.judge.settings import JudgeSettings, toy_module


@dataclass(frozen=True)
class JudgeRecord:
    backend: str
    model: str | None  # API model name (openai backend)
    base_url: str | None
    local_model: ResolvedModel | None
    lexicon: str | None  # the planted vocabulary (lexicon backend)
    lexicon_sha256: str | None
    backend_code: str | None  # lexicon backend: sha256 of its modules (the oracle is code, not a model)


def resolve_judge(settings: JudgeSettings, where: str) -> JudgeRecord:
    """``where`` names the section in errors (e.g. ``params.yaml:judge``)."""
    local = None
    if settings.backend in ("local", "lexicon") and settings.local_model is not None:
        local = resolve_model("judge.local_model", settings.local_model, f"{where}.local_model")
    lexicon = digest = code = None
    if settings.backend == "lexicon":
        if settings.lexicon is None:
            raise UserInputError(f"{where}.lexicon: the lexicon backend needs the planted vocabulary; "
                                 "set it to datasets/toy/lexicon.json")
        path = Path(settings.lexicon)
        if not path.is_file():
            raise UserInputError(f"{where}.lexicon: '{path}' does not exist; fix the path")
        lexicon, digest = str(path), hashlib.sha256(path.read_bytes()).hexdigest()
        code = _module_code_hash(where, ("lexicon", "lexicon_backend"))
    return JudgeRecord(
        backend=settings.backend,
        model=settings.model if settings.backend == "openai" else None,
        base_url=settings.base_url if settings.backend == "openai" else None,
        local_model=local,
        lexicon=lexicon,
        lexicon_sha256=digest,
        backend_code=code,
    )


def _module_code_hash(where: str, names: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in names:
        module = toy_module(where, name)
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def write_judge_record(path: Path, record: JudgeRecord) -> None:
    write_record(path, record)


def read_judge_record(path: Path) -> JudgeRecord:
    return read_record(JudgeRecord, path, "no judge record; resolve the models first (dvc repro)",
                       "resolve the models again (dvc repro)")
