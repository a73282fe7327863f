"""One cheap check of a whole experiment, before any model loads (``trait-interp validate``).

It reads only the params file, the trait and prompt-set files, the toy lexicon and each used model's
``config.json`` (never weights), and collects *every* problem, one line each, instead of stopping at
the first: a 176-trait experiment with five mistakes gets five lines in one run, in seconds.

Checked: the whole params file (top-level keys, repeated entries), every section against its
dataclass (unknown keys, types), model references, every listed trait (it exists; its scenario files
parse; counts match when ``extraction.paired``; enough pairs for ``vetting.min_pairs`` and the split;
``steering.json`` and ``definition.txt`` parse; the lexicon judge knows it), every prompt set, the
position (and ``generation.max_new_tokens``), sites and methods (steering and monitoring read vectors
that extraction must make), and the layers of each model (layer count from its ``config.json``).

A model folder under ``experiments/<experiment>/`` that does not exist yet is one the pipeline builds
(the toy models): its layer count comes from ``toy_models.num_layers``. A hub model's ``config.json``
comes from the Hugging Face cache, else is downloaded (a small file); when neither works its layers
are checked when it loads, and a note says so. Notes never fail the check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trait_interp.core.config import (
    PARAM_SECTIONS,
    from_mapping,
    load_yaml,
    params_file_problems,
)
from trait_interp.core.datasets import (
    PromptSet,
    list_traits,
    load_prompt_set,
    load_steering_questions,
    load_trait,
    pair_scenarios,
    read_definition,
)
from trait_interp.core.errors import UserInputError
from trait_interp.core.generation import GenerationSettings
from trait_interp.core.layers import best_offset, parse_layer_choice, parse_layers
from trait_interp.core.models import ModelSpec, check_spec, is_local_reference
from trait_interp.core.positions import parse_position, resolve_max_new_tokens
from trait_interp.core.sites import SITES, check_site
from trait_interp.extraction.capture import ExtractionSettings
from trait_interp.extraction.evaluation import MIN_VAL_PAIRS
from trait_interp.extraction.extract import VectorSettings, check_methods_fit_pairing
from trait_interp.extraction.vetting import VettingSettings
from trait_interp.judge.settings import JudgeSettings
from trait_interp.monitoring.selection import MonitoringSettings
from trait_interp.steering.evaluate import SteeringSettings
from trait_interp.steering.intervention_eval import (
    InterventionSettings,
    Percentile,
    check_settings,
    select_prompts,
)
from trait_interp.steering.sweep import SweepSettings, plan_sweep

REQUIRED_SECTIONS: tuple[str, ...] = tuple(s for s in PARAM_SECTIONS if s not in ("toy_models", "toy_lora"))
"""Top-level keys every experiment needs (dvc.yaml or a stage reads each); the toy sections are needed only
when ``pipeline.toy_world`` is on."""


@dataclass(frozen=True)
class PipelineSection:
    """``pipeline:`` in params: which optional groups of stages exist (one-item list = on, [] = off)."""

    toy_world: tuple[str, ...] = ()
    hub_models: tuple[str, ...] = ()

RAW_EXPAND_KEYS = ("models", "prompt_sets")
"""Keys of ``raw_activations`` that only expand the capture_raw stage in dvc.yaml (not read by it)."""


# --------------------------------------------------------------------------- analyses sections


@dataclass(frozen=True)
class GroupComparisonEntry:
    prompt_set: str
    label: str
    group_a: str
    group_b: str


@dataclass(frozen=True)
class JudgeLabelEntry:
    prompt_set: str
    trait: str
    threshold: float


@dataclass(frozen=True)
class JudgedComparisonEntry:
    prompt_set: str
    labels: str
    group_a: str
    group_b: str


@dataclass(frozen=True)
class DecompositionEntry:
    prompt_set: str
    trait_x: str
    trait_y: str


@dataclass(frozen=True)
class CrossEvaluationSection:
    traits: tuple[str, ...]
    methods: tuple[str, ...]
    site: str = "residual"


@dataclass(frozen=True)
class AnalysesSection:
    """``analyses:`` in params; the named maps are checked entry by entry (``ANALYSIS_ENTRIES``)."""

    n_boot: int = 2000
    seed: int = 0
    max_lag: int = 10
    group_comparisons: Any = None
    judge_labels: Any = None
    judged_comparisons: Any = None
    decompositions: Any = None
    model_diff_prompt_set: str | None = None
    cross_evaluation: CrossEvaluationSection | None = None


ANALYSIS_ENTRIES: dict[str, type] = {
    "group_comparisons": GroupComparisonEntry,
    "judge_labels": JudgeLabelEntry,
    "judged_comparisons": JudgedComparisonEntry,
    "decompositions": DecompositionEntry,
}


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ExperimentFiles:
    """Where the experiment's inputs are (the stage's CLI options)."""

    params: Path
    traits_root: Path
    prompt_sets_root: Path
    lexicon: Path | None = None  # default judge.lexicon; read only with judge.backend: lexicon


@dataclass(frozen=True)
class Validation:
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    n_traits: int
    n_prompt_sets: int

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Collector:
    """Problems and notes, in the order found; ``check()`` records a UserInputError and carries on."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @contextmanager
    def check(self, suffix: str = "") -> Iterator[None]:
        try:
            yield
        except UserInputError as err:
            self.problems.append(f"{err}{suffix}")

    def parse(self, cls: type, data: Any, where: str) -> Any:
        """``from_mapping(cls, data, where)``, or None (the problem recorded)."""
        with self.check():
            return from_mapping(cls, data, where)
        return None


@dataclass(frozen=True)
class _Model:
    name: str
    spec: ModelSpec
    n_layers: int | None  # None: unknown (a note says why)


# --------------------------------------------------------------------------- the check


def validate_experiment(files: ExperimentFiles, stage_sections: Mapping[str, type] | None = None) -> Validation:
    """Every problem of the experiment, one line each (empty when it is valid), and notes.

    ``stage_sections`` maps a params section to the settings dataclass a stage module defines
    (``massive_dims``, ``raw_activations``); the library's own sections are known here.
    """
    out = _Collector()
    source = str(files.params)
    try:
        data = load_yaml(files.params)
    except UserInputError as err:
        return Validation((str(err),), (), 0, 0)
    out.problems += params_file_problems(data, source)
    for key in REQUIRED_SECTIONS:
        if key not in data:
            out.problems.append(f"{source}: missing top-level key '{key}'; add it (see the README's params section)")

    sections = _parse_sections(data, source, dict(stage_sections or {}), out)
    _check_pipeline(data, sections.get("pipeline"), source, out)
    judge_section = sections.get("judge")
    if files.lexicon is None and judge_section is not None and judge_section.lexicon is not None:
        files = ExperimentFiles(files.params, files.traits_root, files.prompt_sets_root, Path(judge_section.lexicon))
    models = _check_models(data, source, files, out)
    traits = _string_list(data.get("traits"), f"{source}:traits", out)
    prompt_sets = _string_list(data.get("prompt_sets"), f"{source}:prompt_sets", out)
    extraction: ExtractionSettings | None = sections.get("extraction")
    vetting: VettingSettings | None = sections.get("vetting")
    vectors: VectorSettings | None = sections.get("vectors")

    _check_judge(sections.get("judge"), source, str(data.get("experiment", "")), out)
    _check_extraction(sections, source, out)
    _check_vector_users(sections, source, out)
    _check_traits(traits, files, extraction, vetting, sections.get("judge"), out)
    loaded_sets = _check_prompt_sets(prompt_sets, files.prompt_sets_root, out)
    _check_references(data, sections, source, traits, prompt_sets, loaded_sets, files.prompt_sets_root, out)
    extracted = _check_layers(data, sections, models, source, out)
    _check_interventions(data, sections, source, traits, prompt_sets, files, models, extracted, out)
    if vectors is not None and extraction is not None:
        with out.check():
            check_methods_fit_pairing(vectors.methods, extraction.paired, f"{source}:vectors.methods")
    return Validation(tuple(out.problems), tuple(out.notes), len(traits), len(prompt_sets))


def _string_list(value: Any, where: str, out: _Collector) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        out.problems.append(f"{where}: expected a list of names, got {value!r}")
        return []
    return list(dict.fromkeys(value))  # repeats are reported by params_file_problems


def _parse_sections(data: Mapping[str, Any], source: str, stage_sections: dict[str, type],
                    out: _Collector) -> dict[str, Any]:
    """Every settings section through its dataclass: unknown keys and wrong types, one line each."""
    classes: dict[str, type] = {
        "pipeline": PipelineSection, "generation": GenerationSettings, "inference": GenerationSettings,
        "extraction": ExtractionSettings, "vectors": VectorSettings, "judge": JudgeSettings, "vetting": VettingSettings,
        "steering": SteeringSettings, "sweep": SweepSettings, "monitoring": MonitoringSettings,
        "analyses": AnalysesSection,
        **_toy_sections(data), **stage_sections,
    }
    parsed: dict[str, Any] = {}
    for name, cls in classes.items():
        if name not in data:
            continue
        section = data[name]
        if name == "raw_activations" and isinstance(section, Mapping):
            section = {k: v for k, v in section.items() if k not in RAW_EXPAND_KEYS}
        value = out.parse(cls, section, f"{source}:{name}")
        if value is not None:
            parsed[name] = value
    analyses = parsed.get("analyses")
    if analyses is not None:
        for key, entry_cls in ANALYSIS_ENTRIES.items():
            entries = getattr(analyses, key)
            if entries is None:
                continue
            if not isinstance(entries, Mapping):
                out.problems.append(f"{source}:analyses.{key}: expected name -> {{...}}, got {entries!r}")
                continue
            for entry_name, entry in entries.items():
                value = out.parse(entry_cls, entry, f"{source}:analyses.{key}.{entry_name}")
                if value is not None:
                    parsed.setdefault(f"analyses.{key}", {})[str(entry_name)] = value
    generation, inference = parsed.get("generation"), parsed.get("inference")
    if inference is not None and inference.max_new_tokens == "auto":
        out.problems.append(f"{source}:inference.max_new_tokens: give a number of tokens (auto is for extraction)")
    if generation is not None and "extraction" in parsed:
        with out.check():
            position = parse_position(parsed["extraction"].position)
            requested = None if generation.max_new_tokens == "auto" else generation.max_new_tokens
            resolve_max_new_tokens(position, requested)
    return parsed


def _toy_sections(data: Mapping[str, Any]) -> dict[str, type]:
    """The toy world's sections, checked only when the toy package is there (it can be deleted)."""
    if "toy_models" not in data and "toy_lora" not in data:
        return {}
    try:
        from trait_interp.toy.models import ToyLoraSettings, ToyModelSettings
    except ModuleNotFoundError:
        return {}
    return {"toy_models": ToyModelSettings, "toy_lora": ToyLoraSettings}


def _check_pipeline(data: Mapping[str, Any], pipeline: PipelineSection | None, source: str, out: _Collector) -> None:
    """Exactly one source of models: the toy world's own builds, or hub models re-resolved each repro."""
    if pipeline is None:
        return
    where = f"{source}:pipeline"
    for name, value in (("toy_world", pipeline.toy_world), ("hub_models", pipeline.hub_models)):
        if len(value) > 1:
            out.problems.append(f"{where}.{name}: a one-item list turns the group on, [] off; got {list(value)}")
    if bool(pipeline.toy_world) == bool(pipeline.hub_models):
        out.problems.append(
            f"{where}: turn on exactly one of toy_world ([toy]: the toy world builds its models) and hub_models "
            "([hub]: models from the hub); apply a preset (trait-interp preset <name>) to switch"
        )
    if pipeline.toy_world:
        for section in ("toy_models", "toy_lora"):
            if section not in data:
                out.problems.append(f"{where}.toy_world is on but {source} has no '{section}' section; add it")


def _check_judge(judge: JudgeSettings | None, source: str, experiment: str, out: _Collector) -> None:
    """What building the backend checks first: relevance for the lexicon, the API key, the local model."""
    if judge is None:
        return
    where = f"{source}:judge"
    if judge.backend == "lexicon" and judge.relevance_check:
        out.problems.append(f"{where}.relevance_check: the lexicon judge has no oracle for relevance; set it to false")
    if judge.backend == "openai":
        from trait_interp.judge.openai_backend import read_api_key

        if read_api_key() is None:
            out.problems.append(f"{where}.backend is openai but OPENAI_API_KEY is not set; export it or put it in "
                                ".env (OPENAI_API_KEY=...), or set judge.backend: local")
        return
    spec = judge.local_model
    if spec is None:
        out.problems.append(f"{where}.local_model: the {judge.backend} backend needs a model (path or hub_id); add one")
    elif not (spec.path is not None and not Path(spec.path).is_dir() and _built_by_pipeline(spec.path, experiment)):
        with out.check():
            check_spec(spec, f"{where}.local_model")


def _check_extraction(sections: Mapping[str, Any], source: str, out: _Collector) -> None:
    extraction: ExtractionSettings | None = sections.get("extraction")
    if extraction is None:
        return
    if "generation" not in sections:  # else checked with generation.max_new_tokens above
        with out.check():
            parse_position(extraction.position)
    for site in extraction.sites:
        with out.check():
            check_site(site, f"{source}:extraction.sites")
    if not 0.0 < extraction.val_fraction < 1.0:
        out.problems.append(f"{source}:extraction.val_fraction must be in (0, 1), got {extraction.val_fraction}")


def _check_vector_users(sections: Mapping[str, Any], source: str, out: _Collector) -> None:
    """Steering, monitoring and cross-evaluation read vectors: their site and method must be extracted."""
    extraction, vectors = sections.get("extraction"), sections.get("vectors")
    sites = set(extraction.sites) if extraction is not None else None
    methods = set(vectors.methods) if vectors is not None else None
    users: list[tuple[str, str | None, Sequence[str]]] = []
    if "steering" in sections:
        users.append(("steering", sections["steering"].site, [sections["steering"].method]))
    if "monitoring" in sections:
        users.append(("monitoring", sections["monitoring"].site, [sections["monitoring"].method]))
    if "sweep" in sections:
        users.append(("sweep", sections["sweep"].site, list(sections["sweep"].methods)))
    analyses = sections.get("analyses")
    if analyses is not None and analyses.cross_evaluation is not None:
        cross = analyses.cross_evaluation
        users.append(("analyses.cross_evaluation", cross.site, list(cross.methods)))
    for name, site, wanted in users:
        if site is not None:
            with out.check():
                check_site(site, f"{source}:{name}.site")
            if sites is not None and site not in sites and site in SITES:  # an unknown site is reported once, above
                out.problems.append(
                    f"{source}:{name}.site: '{site}' is not in extraction.sites ({', '.join(sorted(sites))}), "
                    "so it has no vectors; add it to extraction.sites or pick one of those"
                )
        key = "methods" if name in ("analyses.cross_evaluation", "sweep") else "method"
        for method in wanted:
            if methods is not None and method not in methods:
                out.problems.append(
                    f"{source}:{name}.{key}: '{method}' is not in vectors.methods ({', '.join(sorted(methods))}), "
                    "so it has no vectors; add it to vectors.methods or pick one of those"
                )
    for name in ("massive_dims", "raw_activations"):
        if name in sections:
            with out.check():
                check_site(sections[name].site, f"{source}:{name}.site")
    _check_best_from(sections, source, out)


def _check_best_from(sections: Mapping[str, Any], source: str, out: _Collector) -> None:
    """``steering.best_from: sweep`` reads the sweep's best layer of steering.method at steering.site."""
    steering, sweep = sections.get("steering"), sections.get("sweep")
    if steering is None or steering.best_from != "sweep" or sweep is None:
        return
    where = f"{source}:steering.best_from"
    if steering.method not in sweep.methods:
        out.problems.append(f"{where}: sweep, but steering.method '{steering.method}' is not in sweep.methods "
                            f"({', '.join(sweep.methods)}); add it there or set steering.best_from: extraction")
    if steering.site != sweep.site:
        out.problems.append(f"{where}: sweep, but the sweep steers site '{sweep.site}' and steering.site is "
                            f"'{steering.site}'; make them the same or set steering.best_from: extraction")


def _check_traits(traits: list[str], files: ExperimentFiles, extraction: ExtractionSettings | None,
                  vetting: VettingSettings | None, judge: JudgeSettings | None, out: _Collector) -> None:
    """Each trait's files, once; the lexicon judge's vocabulary; the pair counts vetting and the split need."""
    source = str(files.params)
    known: list[str] | None = None
    paired = extraction.paired if extraction is not None else True
    lexicons = _lexicons(files, judge, traits, out)
    few_val: list[tuple[str, int]] = []
    for trait in traits:
        directory = Path(files.traits_root) / trait
        if trait.count("/") != 1 or not directory.is_dir():
            known = list_traits(files.traits_root) if known is None else known
            out.problems.append(
                f"{source}:traits: unknown trait '{trait}' (no folder {directory}); known traits under "
                f"{files.traits_root}: {', '.join(known) or 'none'}"
            )
            continue
        n_pairs = None
        with out.check():
            scenarios = load_trait(files.traits_root, trait)
            n_pairs = min(len(scenarios.positive), len(scenarios.negative))
            pair_scenarios(scenarios, paired)
        with out.check():
            questions = load_steering_questions(directory / "steering.json")
            if questions.eval_prompt is not None:
                from trait_interp.judge.templates import custom_eval_template

                try:
                    custom_eval_template(questions.eval_prompt)
                except ValueError as err:
                    raise UserInputError(f"{directory / 'steering.json'}: eval_prompt: {err}") from None
        with out.check():
            read_definition(directory / "definition.txt", trait)
        if lexicons is not None and trait not in lexicons[1]:
            _missing_lexicon(lexicons[0], trait, lexicons[1], vetting, out)
        if n_pairs is not None and extraction is not None and paired and 0.0 < extraction.val_fraction < 1.0:
            few_val += _check_pair_counts(trait, n_pairs, extraction, vetting, source, out)
    if few_val and extraction is not None:
        examples = ", ".join(f"{t}: {n}" for t, n in few_val[:3])
        out.notes.append(
            f"{len(few_val)} trait(s) will have fewer than {MIN_VAL_PAIRS} held-out pairs at extraction.val_fraction "
            f"{extraction.val_fraction} (at most; vetting keeps fewer), e.g. {examples}: their val accuracy is coarse "
            "(evaluate_vectors warns); raise extraction.val_fraction or add scenarios"
        )


def _check_pair_counts(trait: str, n_pairs: int, extraction: ExtractionSettings, vetting: VettingSettings | None,
                       source: str, out: _Collector) -> list[tuple[str, int]]:
    """Pairs before vetting bound what vetting can keep and what the split gets; return (trait, val pairs) if few."""
    if vetting is not None and vetting.enabled and n_pairs < vetting.min_pairs:
        out.problems.append(
            f"{trait}: {n_pairs} scenario pairs, fewer than vetting.min_pairs ({vetting.min_pairs}), so vetting "
            f"always fails; add scenarios, lower {source}:vetting.min_pairs or set vetting.enabled: false"
        )
        return []
    n_val = max(1, round(n_pairs * extraction.val_fraction))
    if n_pairs - n_val < 2 or n_val < 2:
        out.problems.append(
            f"{trait}: {n_pairs} scenario pairs give {n_val} held-out and {n_pairs - n_val} train pairs at "
            f"extraction.val_fraction {extraction.val_fraction}; evaluation needs at least 2 of each: add scenarios "
            "or change extraction.val_fraction"
        )
        return []
    return [(trait, n_val)] if n_val < MIN_VAL_PAIRS else []


def _lexicons(files: ExperimentFiles, judge: JudgeSettings | None, traits: list[str],
              out: _Collector) -> tuple[Path, dict[str, Any]] | None:
    if judge is None or judge.backend != "lexicon" or files.lexicon is None or not traits:
        return None
    from trait_interp.toy.lexicon import load_lexicons

    with out.check():
        return files.lexicon, load_lexicons(files.lexicon)
    return None


def _missing_lexicon(path: Path, trait: str, lexicons: Mapping[str, Any], vetting: VettingSettings | None,
                     out: _Collector) -> None:
    """With vetting on, vet_responses fails on it (a problem); with vetting off only steering needs it (a note)."""
    from trait_interp.toy.lexicon import lexicon_for

    if vetting is None or vetting.enabled:
        with out.check():
            lexicon_for(path, trait)
        return
    out.notes.append(
        f"{path}: no lexicon for trait '{trait}': vetting is off, so extraction runs; steering_eval judges with the "
        "lexicon too and will stop there: add its words, or use judge.backend: local or openai"
    )


def _check_prompt_sets(names: list[str], root: Path, out: _Collector) -> dict[str, PromptSet]:
    loaded = {}
    for name in names:
        with out.check():
            loaded[name] = load_prompt_set(Path(root) / f"{name}.json")
    return loaded


def _check_references(data: Mapping[str, Any], sections: Mapping[str, Any], source: str, traits: list[str],
                      prompt_sets: list[str], loaded_sets: Mapping[str, PromptSet], prompt_sets_root: Path,
                      out: _Collector) -> None:
    """Names used in one place must be listed in another: prompt sets, traits, judge labels, raw models."""

    def need(value: str, known: Sequence[str], where: str, listed: str) -> None:
        if value not in known:
            out.problems.append(f"{source}:{where}: '{value}' is not in {listed} ({', '.join(known) or 'none'}); "
                                f"add it there or fix the name")

    if "massive_dims" in sections:
        need(sections["massive_dims"].prompt_set, prompt_sets, "massive_dims.prompt_set", "prompt_sets")
    if "sweep" in sections:
        _check_side_effect_set(sections["sweep"], prompt_sets_root, source, out)
    raw = data.get("raw_activations")
    if isinstance(raw, Mapping):
        monitored = data.get("monitor_models") if isinstance(data.get("monitor_models"), list) else []
        for model in _string_list(raw.get("models"), f"{source}:raw_activations.models", out):
            need(model, [str(m) for m in monitored], "raw_activations.models", "monitor_models")
        for name in _string_list(raw.get("prompt_sets"), f"{source}:raw_activations.prompt_sets", out):
            need(name, prompt_sets, "raw_activations.prompt_sets", "prompt_sets")
    analyses = sections.get("analyses")
    if analyses is None:
        return
    if analyses.model_diff_prompt_set is not None:
        need(analyses.model_diff_prompt_set, prompt_sets, "analyses.model_diff_prompt_set", "prompt_sets")
    if analyses.cross_evaluation is not None:
        for trait in analyses.cross_evaluation.traits:
            need(trait, traits, "analyses.cross_evaluation.traits", "traits")
    labels = sections.get("analyses.judge_labels", {})
    for group, entries in (("group_comparisons", GroupComparisonEntry), ("judge_labels", JudgeLabelEntry),
                           ("judged_comparisons", JudgedComparisonEntry), ("decompositions", DecompositionEntry)):
        for name, entry in sections.get(f"analyses.{group}", {}).items():
            where = f"analyses.{group}.{name}"
            need(entry.prompt_set, prompt_sets, f"{where}.prompt_set", "prompt_sets")
            for attr in ("trait", "trait_x", "trait_y"):
                if hasattr(entry, attr):
                    need(getattr(entry, attr), traits, f"{where}.{attr}", "traits")
            if isinstance(entry, JudgedComparisonEntry):
                need(entry.labels, list(labels), f"{where}.labels", "analyses.judge_labels")
            if isinstance(entry, GroupComparisonEntry) and entry.prompt_set in loaded_sets:
                _check_label_field(loaded_sets[entry.prompt_set], entry, where, source, out)


def _check_side_effect_set(sweep: SweepSettings, root: Path, source: str, out: _Collector) -> None:
    """The sweep's neutral prompts: a prompt set under the prompt-sets root (not necessarily in prompt_sets)."""
    path = Path(root) / f"{sweep.side_effect_prompt_set}.json"
    if not path.is_file():
        out.problems.append(f"{source}:sweep.side_effect_prompt_set: '{sweep.side_effect_prompt_set}' has no file {path}; "
                            "name a prompt set there")
        return
    with out.check():
        prompts = load_prompt_set(path).prompts
        if len(prompts) < sweep.side_effect_prompts:
            out.problems.append(f"{source}:sweep.side_effect_prompts: {sweep.side_effect_prompts} but {path} has "
                                f"{len(prompts)} prompts; lower it or pick a larger prompt set")


def _check_label_field(prompt_set: PromptSet, entry: GroupComparisonEntry, where: str, source: str,
                       out: _Collector) -> None:
    from trait_interp.analyses.group_comparison import labels_from_field

    records = [{"id": q.id, "note": q.note, **q.extra} for q in prompt_set.prompts]
    try:
        values = set(labels_from_field(records, entry.label).values())
    except ValueError as err:
        out.problems.append(f"{source}:{where}.label: prompt set '{prompt_set.name}': {err}; give every prompt a "
                            f"'{entry.label}' or use a labels file")
        return
    for group in (entry.group_a, entry.group_b):
        if group not in values:
            out.problems.append(f"{source}:{where}: no prompt of '{prompt_set.name}' has {entry.label} = '{group}' "
                                f"(values: {', '.join(sorted(values))}); fix group_a/group_b")


# --------------------------------------------------------------------------- models and layers


def _check_models(data: Mapping[str, Any], source: str, files: ExperimentFiles,
                  out: _Collector) -> dict[str, _Model]:
    """Every registry entry parses; each referenced name exists; used models get their layer count."""
    registry = data.get("models")
    if not isinstance(registry, Mapping):
        if "models" in data:
            out.problems.append(f"{source}:models: expected a mapping of model names to entries")
        return {}
    specs: dict[str, ModelSpec] = {}
    for name, entry in registry.items():
        spec = out.parse(ModelSpec, entry, f"{source}:models.{name}")
        if spec is not None:
            specs[str(name)] = spec
    roles: dict[str, list[str]] = {}
    for key in ("extraction_model", "application_model", "diff_model"):
        value = data.get(key)
        if value is None:
            continue
        if str(value) not in registry:
            out.problems.append(f"{source}:{key}: unknown model '{value}'; models defined: {', '.join(registry) or 'none'}")
        roles.setdefault(str(value), []).append(key)
    monitored = data.get("monitor_models") if isinstance(data.get("monitor_models"), list) else []
    for value in monitored:
        if str(value) not in registry:
            out.problems.append(f"{source}:monitor_models: unknown model '{value}'; models defined: {', '.join(registry)}")
        roles.setdefault(str(value), []).append("monitor_models")
    application = data.get("application_model")
    if application is not None and monitored and application not in monitored:
        out.problems.append(f"{source}:monitor_models: must include application_model '{application}' (steering, "
                            "the analyses and the model diff read its monitored responses); add it")
    experiment = str(data.get("experiment", ""))
    toy = data.get("toy_models") if isinstance(data.get("toy_models"), Mapping) else None
    models = {}
    for name in roles:
        if name in specs:
            models[name] = _Model(name, specs[name], _layer_count(specs[name], name, experiment, toy, source, out))
    return models


def _built_by_pipeline(reference: str, experiment: str) -> bool:
    """A folder the pipeline writes (``experiments/<experiment>/...``, e.g. the toy models) before using it."""
    parts = Path(reference).parts
    return bool(experiment) and len(parts) > 2 and parts[0] == "experiments" and parts[1] == experiment


def _layer_count(spec: ModelSpec, name: str, experiment: str, toy: Mapping[str, Any] | None, source: str,
                 out: _Collector) -> int | None:
    where = f"{source}:models.{name}"
    if spec.path is not None:
        config_file = Path(spec.path) / "config.json"
        if not Path(spec.path).is_dir():
            if _built_by_pipeline(spec.path, experiment):
                layers = toy.get("num_layers") if toy is not None else None
                return layers if isinstance(layers, int) and not isinstance(layers, bool) else None
            out.problems.append(f"{where}.path: model folder '{spec.path}' does not exist; build it or fix the path")
            return None
        _check_spec_now(spec, where, experiment, out)
        return _layers_from_config(config_file, where, out)
    _check_spec_now(spec, where, experiment, out)
    cached = _hub_config(spec)
    if isinstance(cached, str):
        out.notes.append(f"{where}: {cached}; its layers are checked when it loads")
        return None
    return _layers_from_config(cached, where, out)


def _check_spec_now(spec: ModelSpec, where: str, experiment: str, out: _Collector) -> None:
    """The registry checks that need no weights, unless an adapter folder is still to be built by the pipeline."""
    if spec.adapter is not None and is_local_reference(spec.adapter) and not Path(spec.adapter).exists() \
            and _built_by_pipeline(spec.adapter, experiment):
        return
    with out.check():
        check_spec(spec, where)


def _hub_config(spec: ModelSpec) -> Path | str:
    """A hub model's config.json: from the local cache, else downloaded; a string says why not."""
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:
        return "huggingface_hub is not installed, so config.json cannot be read"
    cached = try_to_load_from_cache(str(spec.hub_id), "config.json", revision=spec.revision)
    if isinstance(cached, str):
        return Path(cached)
    try:
        return Path(hf_hub_download(str(spec.hub_id), "config.json", revision=spec.revision))
    except Exception as err:  # noqa: BLE001 - offline, not found, gated: a note, never a failure
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"config.json of '{spec.hub_id}' is not in the Hugging Face cache and cannot be fetched ({reason})"


def _layers_from_config(path: Path, where: str, out: _Collector) -> int | None:
    if not Path(path).is_file():
        out.problems.append(f"{where}: {path} not found; a model folder needs its config.json")
        return None
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        out.problems.append(f"{where}: {path} is not valid JSON ({err}); restore the model folder")
        return None
    config = config.get("text_config") or config if isinstance(config, dict) else {}
    layers = config.get("num_hidden_layers") if isinstance(config, dict) else None
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
        out.notes.append(f"{where}: {path} gives no num_hidden_layers; its layers are checked when it loads")
        return None
    return layers


def _check_layers(data: Mapping[str, Any], sections: Mapping[str, Any], models: Mapping[str, _Model], source: str,
                  out: _Collector) -> tuple[int, ...] | None:
    """extraction.layers on the extraction model; ``layer`` for steering and monitoring; raw layers.

    Returns the layers extraction makes vectors at (None: unknown)."""
    extraction = sections.get("extraction")
    extracted: tuple[int, ...] | None = None
    model = models.get(str(data.get("extraction_model")))
    if extraction is not None and model is not None and model.n_layers is not None:
        with out.check(f" (extraction_model '{model.name}')"):
            layers = extraction.layers
            extracted = parse_layers(list(layers) if isinstance(layers, tuple) else layers, model.n_layers,
                                     f"{source}:extraction.layers")
    if "layer" in data:
        value = data["layer"]
        application = models.get(str(data.get("application_model")))
        if application is not None and application.n_layers is not None:
            _check_layer(value, application, extracted, source, "steering", out,
                         lambda n: parse_layer_choice(value, n, lambda: 0, f"{source}:layer", allow_all=False))
    sweep = sections.get("sweep")
    application = models.get(str(data.get("application_model")))
    if sweep is not None and application is not None and application.n_layers is not None:
        _check_sweep_layers(sweep, application, extracted, source, out)
    monitoring = sections.get("monitoring")
    if monitoring is not None:
        choice = list(monitoring.layer) if isinstance(monitoring.layer, tuple) else monitoring.layer
        monitored = data.get("monitor_models") if isinstance(data.get("monitor_models"), list) else []
        for name in dict.fromkeys(str(m) for m in monitored):
            monitor = models.get(name)
            if monitor is not None and monitor.n_layers is not None:
                _check_layer(choice, monitor, extracted, source, "monitoring", out,
                             lambda n: parse_layer_choice(choice, n, lambda: 0, f"{source}:monitoring.layer"))
    raw = data.get("raw_activations")
    if "raw_activations" in sections and isinstance(raw, Mapping) and isinstance(raw.get("models"), list):
        spec = sections["raw_activations"].layers
        for name in dict.fromkeys(str(m) for m in raw["models"]):
            raw_model = models.get(name)
            if raw_model is not None and raw_model.n_layers is not None:
                with out.check(f" (raw_activations model '{name}')"):
                    parse_layers(list(spec) if isinstance(spec, tuple) else spec, raw_model.n_layers,
                                 f"{source}:raw_activations.layers")
    return extracted


def _check_layer(value: Any, model: _Model, extracted: tuple[int, ...] | None, source: str, use: str,
                 out: _Collector, resolve: Callable[[int], tuple[int, ...]]) -> None:
    """``layer`` on one model: in range, and (an explicit layer) one that extraction makes a vector for."""
    n_layers = model.n_layers
    assert n_layers is not None
    role = "application_model" if use == "steering" else "monitor_models"
    param = "layer" if use == "steering" else "monitoring.layer"
    offset = best_offset(value)
    with out.check(f" ({use} on {role} '{model.name}')"):
        if offset is not None:
            if abs(offset) >= n_layers:
                raise UserInputError(f"{source}:{param}: '{value}' is out of range for any best layer of a "
                                     f"{n_layers}-layer model; use best+N with |N| < {n_layers}")
            return
        chosen = resolve(n_layers)
        if extracted is not None:
            missing = [layer for layer in chosen if layer not in extracted]
            if missing:
                raise UserInputError(
                    f"{source}:{param}: {use} reads vectors at layer(s) {', '.join(map(str, missing))}, which "
                    f"extraction.layers does not extract ({', '.join(map(str, extracted))}); add them there or pick "
                    "extracted layers"
                )


def _check_sweep_layers(sweep: SweepSettings, model: _Model, extracted: tuple[int, ...] | None, source: str,
                        out: _Collector) -> None:
    """The sweep's grid on the application model: in range, and only layers extraction makes vectors for."""
    assert model.n_layers is not None
    with out.check(f" (sweep on application_model '{model.name}')"):
        plan = plan_sweep(sweep, model.n_layers, f"{source}:sweep")
        missing = [layer for layer in plan.layers if extracted is not None and layer not in extracted]
        if missing:
            raise UserInputError(
                f"{source}:sweep: the sweep steers layer(s) {', '.join(map(str, missing))}, which extraction.layers "
                f"does not extract ({', '.join(map(str, extracted or ()))}); add them there or sweep extracted layers"
            )


# --------------------------------------------------------------------------- interventions


INTERVENTION_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _check_interventions(data: Mapping[str, Any], sections: Mapping[str, Any], source: str, traits: list[str],
                         prompt_sets: list[str], files: ExperimentFiles, models: Mapping[str, _Model],
                         extracted: tuple[int, ...] | None, out: _Collector) -> None:
    """Each ``interventions.<name>``: its keys, the traits and prompt sets it names, its labels, sites, methods, layers."""
    entries = data.get("interventions")
    if entries is None:
        return
    if not isinstance(entries, Mapping):
        out.problems.append(f"{source}:interventions: expected name -> {{kind, trait, prompt_set, ...}}, got {entries!r}")
        return
    extraction, vectors = sections.get("extraction"), sections.get("vectors")
    application = models.get(str(data.get("application_model")))
    for name, entry in entries.items():
        where = f"{source}:interventions.{name}"
        if not INTERVENTION_NAME.match(str(name)):
            out.problems.append(f"{where}: a name is letters, digits, _ and - (it names files and the stage); rename it")
        settings = out.parse(InterventionSettings, entry, where)
        if settings is None:
            continue
        with out.check():
            check_settings(settings, where)

        def need(value: str, known: Sequence[str], key: str, listed: str) -> None:
            if value not in known:
                out.problems.append(f"{where}.{key}: '{value}' is not in {listed} ({', '.join(known) or 'none'}); "
                                    "add it there or fix the name")

        need(settings.trait, traits, "trait", "traits")
        gate = settings.gate
        if gate is not None:
            need(gate.trait, traits, "gate.trait", "traits")
        for key, value in (("gate.threshold", gate.threshold if gate else None), ("low", settings.low),
                           ("high", settings.high)):
            if isinstance(value, Percentile):
                need(value.prompt_set, prompt_sets, f"{key}.prompt_set", "prompt_sets (its monitored responses calibrate)")
        prompt_file = Path(files.prompt_sets_root) / f"{settings.prompt_set}.json"
        with out.check():
            select_prompts(load_prompt_set(prompt_file), settings, where)
        for key, site in (("site", settings.site), ("gate.site", gate.site if gate else None)):
            if site is None:
                continue
            with out.check():
                check_site(site, f"{where}.{key}")
            if extraction is not None and site in SITES and site not in extraction.sites:
                out.problems.append(f"{where}.{key}: '{site}' is not in extraction.sites, so it has no vectors")
        for key, method in (("method", settings.method), ("gate.method", gate.method if gate else None)):
            if method is not None and vectors is not None and method not in vectors.methods:
                out.problems.append(f"{where}.{key}: '{method}' is not in vectors.methods, so it has no vectors")
        if application is None or application.n_layers is None:
            continue
        n_layers = application.n_layers
        chosen: tuple[int, ...] | None = None
        if best_offset(settings.layers) is None:
            with out.check(f" (application_model '{application.name}')"):
                value = settings.layers
                value = list(value) if isinstance(value, tuple) else value
                chosen = parse_layers(value, n_layers, f"{where}.layers")
                missing = [layer for layer in chosen if extracted is not None and layer not in extracted]
                if missing:
                    raise UserInputError(f"{where}.layers: layer(s) {', '.join(map(str, missing))} are not extracted "
                                         "(extraction.layers); pick extracted layers")
        if gate is not None and gate.layer is not None:
            with out.check(f" (application_model '{application.name}')"):
                layer = parse_layers(gate.layer, n_layers, f"{where}.gate.layer")[0]
                if extracted is not None and layer not in extracted:
                    raise UserInputError(f"{where}.gate.layer: layer {layer} is not extracted (extraction.layers)")
                if chosen is not None and layer > min(chosen):
                    raise UserInputError(f"{where}.gate.layer: {layer} is after the first steered layer {min(chosen)}; "
                                         "a gate reads at or before every steered layer: lower it or leave it out")
