"""The DVC pipeline itself: declared params/deps match the code, and repro re-runs only what is stale."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.toy_project import TRAITS, copy_project, run, stages_run

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())


def module_file(name: str) -> Path:
    """``trait_interp.judge.cache`` -> its .py file (a package -> its __init__.py)."""
    base = REPO / name.replace(".", "/")
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def trait_interp_imports(path: Path, seen: set[str] | None = None) -> set[str]:
    """trait_interp modules imported (transitively, relative imports too) by a module file."""
    seen = set() if seen is None else seen
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # `if TYPE_CHECKING:` imports never run
            continue
        names = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [base] + [f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}").is_file()]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name.startswith("trait_interp.") and name not in seen and module_file(name).is_file():
                seen.add(name)
                trait_interp_imports(module_file(name), seen)
    return seen


@pytest.mark.parametrize("stage", sorted(DVC_YAML["stages"]))
def test_stage_declares_exactly_what_its_code_reads(stage):
    import importlib

    from stages.stage_inputs import PARAMS as RECORDED
    from stages.stage_inputs import PER_TRAIT_CODE
    from stages.stage_inputs import covered as param_covered

    module = importlib.import_module(f"stages.{stage}")
    definition = DVC_YAML["stages"][stage]
    definition = definition.get("do", definition)  # foreach stages keep their body under `do`
    declared = [re.sub(r"\$\{(?:item\.)?(\w+)\}", r"{\1}", p) for p in definition.get("params", [])]
    deps = set(definition["deps"])
    if stage in PER_TRAIT_CODE:  # its params and code reach DVC through its stage_inputs record, nothing else
        from stages.for_each_trait import PARAMS as RUNNER_PARAMS

        # a phase over every trait: the runner reads `traits` and is its one code dep
        assert f"experiments/${{experiment}}/stage_inputs/{stage}.json" in deps and declared == list(RUNNER_PARAMS)
        assert all(param_covered(key, RECORDED) for key in module.PARAMS), f"stage_inputs' PARAMS miss {stage}'s"
        code = [d for d in deps if d.startswith(("stages", "trait_interp"))]
        assert code == ["stages/for_each_trait.py"], f"{stage}: code deps in dvc.yaml: {code}"
        assert definition["cmd"].startswith(f"python -m stages for-each-trait {stage.replace('_', '-')} ")
        deps |= {f"stages/{stage}.py", *PER_TRAIT_CODE[stage]}
    else:
        assert declared == list(module.PARAMS), f"dvc.yaml params of {stage} differ from stages/{stage}.py PARAMS"

    def covered(module_path: str) -> bool:  # listed itself, or a folder (e.g. trait_interp/judge) holding it
        return any(module_path == dep or module_path.startswith(dep.rstrip("/") + "/") for dep in deps)

    assert covered(f"stages/{stage}.py")
    needed = {module_file(n).relative_to(REPO).as_posix() for n in trait_interp_imports(REPO / f"stages/{stage}.py")}

    missing = sorted(d for d in needed if not covered(d))
    # modules every stage imports only for plumbing (errors, io, config, tables) need not re-run stages
    plumbing = {f"trait_interp/core/{m}.py" for m in ("errors", "io", "config", "tables")}
    assert not set(missing) - plumbing, f"{stage}: add these library modules to its deps: {missing}"


def _run(args: list[str], cwd: Path) -> str:
    return run(args, cwd)


_stages_run = stages_run


@pytest.fixture(scope="module")
def project(reproduced_toy, tmp_path_factory) -> Path:
    """A copy of the reduced toy project (tests/toy_project.py), reproduced once per session."""
    source, first = reproduced_toy
    assert _stages_run(first) == {*VALIDATE, *STAGE_INPUTS, *TOY_WORLD, *ONCE, *PROJECTION_AND_AFTER} | {
        f"{stage}@{trait}" for stage in PER_TRAIT for trait in TRAITS}
    return copy_project(source, tmp_path_factory.mktemp("pipeline") / "project")


PER_TRAIT = ("generate_responses", "vet_responses", "capture_activations", "extract_vectors", "evaluate_vectors",
             "steering_sweep", "steering_eval")
# the toy world's own stages (they exist only there: pipeline.toy_world) and the records of its models
TOY_WORLD = {"build_toy_models@toy", "build_toy_lora@toy", "resolve_toy_models@toy"}
ONCE = {"generate_inference@toy-instruct-mixed_requests", "calibrate_massive_dims@toy-instruct",
        "label_responses@refused"}
# validate runs whenever params or datasets change (its marker never does, so it re-runs nothing)
VALIDATE = {"validate"}
# the per-trait stages' params and code records: re-run when one of those params (or the code) changes
STAGE_INPUTS = {"stage_inputs"}
# everything that reads the vectors of all traits, i.e. re-runs after any trait changes
PROJECTION_AND_AFTER = {"monitor_layers", "project@toy-instruct-mixed_requests", "compare_groups@harmful_vs_benign",
                        "compare_judged_groups@refused_vs_complied", "trait_correlation@mixed_requests",
                        "decompose@refusal_x_optimism", "model_diff", "cross_evaluate", "steering_predictors",
                        "report", "intervention_eval@refusal_gate"}
INTERVENTIONS = ("refusal_gate",)


def test_second_repro_runs_nothing(project):
    again = _run(["dvc", "repro"], project)
    assert _stages_run(again) == set()
    assert "is cached" not in again  # nothing restored either: all up to date


def test_editing_one_trait_and_adding_another_reruns_only_those_traits(project):
    """One repro after two changes (each a repro of minutes on its own): one trait's dataset edited and
    a new trait added. Exactly those two traits' stages run, plus the stages that read every trait;
    the third, untouched trait runs nothing."""
    positive = project / "datasets/traits/tone/formality/positive.txt"
    params_file = project / "params.yaml"
    original = params_file.read_text()
    try:
        positive.write_text(positive.read_text().replace("\n", " Indeed.\n", 1))
        params = yaml.safe_load(original)
        params["traits"].append("emotion/optimism")
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        ran = _run(["dvc", "repro"], project)
        changed = ("tone/formality", "emotion/optimism")
        assert _stages_run(ran) == VALIDATE | {f"{s}@{t}" for s in PER_TRAIT for t in changed} | PROJECTION_AND_AFTER
        assert not {s for s in _stages_run(ran) if s.endswith("@behavior/refusal")}
    finally:
        _run(["git", "checkout", "--", "."], project)
        for stale in [*project.glob("experiments/toy/*/*/emotion"), *project.glob("experiments/toy/*/*/*/emotion")]:
            shutil.rmtree(stale)  # outputs of the trait that was added (inside each phase's folders)
        _run(["dvc", "checkout", "--force"], project)
    assert _stages_run(_run(["dvc", "repro"], project)) <= VALIDATE  # back to the committed state


HEADLINE = ("vector", "layer", "val_acc", "steered", "delta", "coherence", "coherent")
INTERVENTION_HEADLINE = ("delta", "coherence", "false_fire", "off_kl")


def test_metrics_show_is_one_row_per_trait_and_intervention_with_the_headline(project):
    import json

    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], project))
    files = {path: data["data"] for path, data in shown[""]["data"].items()}
    traits = {f"experiments/toy/metrics/summary/traits/{trait}.json" for trait in TRAITS}
    interventions = {f"experiments/toy/metrics/summary/{name}.json" for name in INTERVENTIONS}
    assert set(files) == traits | interventions
    for path, data in files.items():
        assert tuple(data) == (HEADLINE if path in traits else INTERVENTION_HEADLINE), path
    table = _run(["dvc", "metrics", "show"], project)
    assert len(table.splitlines()) == 1 + len(files) and max(map(len, table.splitlines())) < 170  # one screen
    # every other metrics file is still there to read by name
    detail = _run(["dvc", "metrics", "show", "experiments/toy/metrics/toy_training.json"], project)
    assert "final_loss" in detail


def test_training_loss_curve_is_a_dvc_plot(project, tmp_path):
    shown = _run(["dvc", "plots", "show", "--json", "--split"], project)
    assert "plots/toy_training/base.csv" in shown and "plots/toy_training/chat.csv" in shown


def _metrics(project: Path, trait: str) -> dict:
    import json

    return json.loads((project / f"experiments/toy/metrics/steering/{trait}.json").read_text())


def test_exp_run_with_another_layer_reruns_steering_and_projection_only(project):

    before = _metrics(project, "behavior/refusal")
    ran = _run(["dvc", "exp", "run", "-S", "layer=1"], project)
    # steering and what reads its results; monitoring keeps its own layer (monitoring.layer), so the
    # monitoring layer record is unchanged and nothing is projected, extracted or generated again
    assert _stages_run(ran) == VALIDATE | STAGE_INPUTS | {"steering_eval@behavior/refusal", "steering_eval@tone/formality",
                                           "monitor_layers", "intervention_eval@refusal_gate", "report"}
    after = _metrics(project, "behavior/refusal")
    assert before["layers"] == "2" and after["layers"] == "1"
    # the unsteered baseline answers are the same: their judge scores (trait, coherence) come from the cache
    assert after["judge"]["cache_hits"] >= 3 * 2 and after["baseline_trait"] == before["baseline_trait"]
    text = _run(["dvc", "exp", "show", "--json"], project)
    for column in HEADLINE + INTERVENTION_HEADLINE:
        assert column in text
    assert "metrics/summary/refusal_gate.json" in text  # the intervention's headline is an experiment column too
    _run(["git", "checkout", "--", "."], project)  # back to layer 2 for the other tests
    _run(["dvc", "checkout", "--force"], project)


def test_a_sweep_split_over_two_queued_experiments_runs_through_the_dvc_queue(project):
    """A sweep larger than one GPU: split by layers into queued experiments, run by `dvc queue start --jobs 2`."""
    import json
    import time

    for layer in (1, 2):
        _run(["dvc", "exp", "run", "--queue", "-S", f"sweep.layers=[{layer}]", "-S", "sweep.windows=[]",
              "-n", f"sweep-l{layer}"], project)
    _run(["dvc", "queue", "start", "--jobs", "2"], project)
    deadline = time.monotonic() + 1500
    status = _run(["dvc", "queue", "status"], project)
    while "Queued" in status or "Running" in status:
        assert time.monotonic() < deadline, status
        time.sleep(5)
        status = _run(["dvc", "queue", "status"], project)
    try:
        assert status.count("Success") == 2, status
        refs = _run(["git", "for-each-ref", "refs/exps", "--format", "%(refname:lstrip=-1) %(objectname)"], project)
        commits = dict(line.split() for line in refs.splitlines() if line.strip())
        for layer in (1, 2):
            name = f"sweep-l{layer}"
            ran = _stages_run(_run(["dvc", "queue", "logs", name], project))
            # only the sweeps and what reads them (steering_eval too, had a best layer changed)
            assert {f"steering_sweep@{t}" for t in TRAITS} <= ran
            assert ran <= VALIDATE | STAGE_INPUTS | {f"steering_{s}@{t}" for s in ("sweep", "eval") for t in TRAITS} | {
                "steering_predictors", "monitor_layers", "report"}, ran
            for trait in TRAITS:  # each experiment's commit holds its share of the grid
                shown = json.loads(_run(["git", "show", f"{commits[name]}:experiments/toy/metrics/sweep/{trait}.json"],
                                        project))
                assert shown["layers"] == [layer] and shown["n_configs"] == 2 * 2  # methods x ratios
        listed = _run(["dvc", "exp", "show", "--csv"], project)
        assert "sweep-l1" in listed and "sweep-l2" in listed
    finally:
        _run(["dvc", "exp", "remove", "sweep-l1", "sweep-l2"], project)


def test_stage_inputs_change_exactly_for_the_stages_that_read_what_changed(tmp_path):
    """A per-trait stage's record (stages/stage_inputs.py) changes when one of its params or its code does,
    and for no other change: the same stages re-run as with params and code folders as direct deps."""
    import copy
    import json

    from stages.stage_inputs import PER_TRAIT_CODE, stage_record

    original = yaml.safe_load((REPO / "params.yaml").read_text())
    shutil.copytree(REPO / "stages", tmp_path / "root/stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "trait_interp", tmp_path / "root/trait_interp", ignore=shutil.ignore_patterns("__pycache__"))

    def records(params: dict, root: Path = tmp_path / "root") -> dict[str, str]:
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        return {s: json.dumps(stage_record(s, path, root), sort_keys=True) for s in PER_TRAIT_CODE}

    before = records(original)
    cases = {
        ("layer",): {"steering_eval"},
        ("vectors", "methods"): {"extract_vectors"},
        ("extraction", "position"): {"generate_responses", "capture_activations"},
        ("extraction", "paired"): {"generate_responses", "vet_responses", "capture_activations"},
        ("extraction", "store_dtype"): {"capture_activations"},
        ("judge", "batch_size"): {"vet_responses", "steering_eval", "steering_sweep"},
        ("sweep", "subset"): {"steering_sweep"},
        ("steering", "min_coherence"): {"steering_eval", "steering_sweep"},
        ("vetting", "min_pairs"): {"vet_responses"},
        ("monitoring", "layer"): set(),
        ("inference", "max_new_tokens"): set(),
    }
    for keys, expected in cases.items():
        params = copy.deepcopy(original)
        node = params
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = {"store_dtype": "float32", "paired": False, "methods": ["probe"]}.get(keys[-1], 3)
        after = records(params)
        assert {s for s in before if before[s] != after[s]} == expected, keys
    params = copy.deepcopy(original)
    params["traits"] = params["traits"][:1]  # adding or removing a trait adds or removes only its own stages
    params["vectors"] = dict(reversed(list(params["vectors"].items())))  # key order means nothing
    assert records(params) == before
    best = tmp_path / "root/trait_interp/steering/best.py"
    best.write_text(best.read_text() + "\n# a code change\n")
    after = records(original)
    assert {s for s in before if before[s] != after[s]} == {"steering_eval", "steering_sweep"}
    (tmp_path / "root/trait_interp/core/__pycache__").mkdir()
    (tmp_path / "root/trait_interp/core/__pycache__/x.pyc").write_bytes(b"cache")  # caches are never code
    assert records(original) == after
