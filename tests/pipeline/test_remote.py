"""The DVC remote (Cloudflare R2 through dvc-s3) against a local S3 server: moto over https on 127.0.0.1.

The reduced toy project (reproduced once per session, tests/toy_project.py) is copied with the committed
`.dvc/config` untouched, which also shows that `dvc repro` never needs the remote. Each test then points
the committed `r2` remote at the local server with `dvc remote modify --local` (endpoint, `ssl_verify
false`, a URL prefix of its own) and passes credentials in the environment, exactly as a user would; the
committed `configpath` (the R2 checksum settings) stays in force. moto does not reproduce R2's rejection
of aws-chunked uploads, so the requests dvc sends are recorded (aiobotocore's `AioEndpoint._send`,
wrapped in the dvc process) and their headers checked.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytest.importorskip("moto.server")
from tests.s3_stub import S3Stub, free_port  # noqa: E402
from tests.toy_project import TRAITS, copy_project, stages_run  # noqa: E402

REMOTE = "r2"  # the default remote named in the committed .dvc/config
LARGE = "synthetic/large_activations.bin"  # a `dvc add`ed file over s3fs's 100 MiB single-PUT limit
LARGE_MIB = 105
DVC = str(Path(sys.executable).parent / "dvc")

# Runs dvc's own CLI entry point with aiobotocore's send wrapped: one JSON line per HTTP request.
HOOK = r"""
import json, os, sys
import aiobotocore.endpoint as endpoint
_log = open(os.environ["S3_REQUEST_LOG"], "a")
_send = endpoint.AioEndpoint._send
async def _logged_send(self, request):
    headers = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in request.headers.items()}
    _log.write(json.dumps({"method": request.method, "url": request.url, "headers": headers}) + "\n")
    _log.flush()
    return await _send(self, request)
endpoint.AioEndpoint._send = _logged_send
from dvc.cli import main
sys.exit(main(sys.argv[1:]))
"""


# --- helpers ---------------------------------------------------------------------------------------

def _env(**extra: str) -> dict[str, str]:
    """The test's environment without any AWS_* setting of the machine, plus the given variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env.update(extra)
    return env


def run(args: list[str], cwd: Path, *, check: bool = True, timeout: float = 600, env: dict | None = None,
        request_log: Path | None = None) -> subprocess.CompletedProcess:
    """Run a command (``dvc ...`` is the venv's dvc); with request_log, dvc runs with its S3 requests logged."""
    if args[0] == "dvc":
        args = [sys.executable, "-c", HOOK, *args[1:]] if request_log else [DVC, *args[1:]]
    env = dict(env or _env())
    if request_log:
        env["S3_REQUEST_LOG"] = str(request_log)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


def output(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr


def credentials(s3: S3Stub) -> dict[str, str]:
    return _env(AWS_ACCESS_KEY_ID=s3.valid_key, AWS_SECRET_ACCESS_KEY=s3.valid_secret)


def point_at(repo: Path, s3: S3Stub, prefix: str) -> None:
    """What a user does once per machine: the committed r2 remote, redirected in .dvc/config.local."""
    local = repo / ".dvc" / "config.local"
    current = local.read_text() if local.exists() else ""
    for key, value in (("endpointurl", s3.endpoint), ("ssl_verify", "false"), ("url", f"s3://{s3.bucket}/{prefix}")):
        if f"{key} = {value}\n" not in current:  # each dvc call costs a second
            run(["dvc", "remote", "modify", "--local", REMOTE, key, value], repo)


def repo_with_committed_remote(repo: Path) -> Path:
    """An empty git + DVC repo carrying this project's committed remote settings (.dvc/config and its AWS config)."""
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    for name in ("config", "aws-r2.config"):
        shutil.copy2(REPO / ".dvc" / name, repo / ".dvc" / name)
    return repo


def clone(source: Path, dest: Path) -> Path:
    run(["git", "clone", "-q", str(source), str(dest)], dest.parent)
    return dest


def requests_logged(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def trailer_headers(request: dict) -> dict[str, str]:
    """The headers of an upload that R2 rejects: aws-chunked bodies with trailing (or any) flexible checksums."""
    bad = {}
    for name, value in request["headers"].items():
        lname = name.lower()
        if (lname == "content-encoding" and "aws-chunked" in value.lower()) or lname == "x-amz-trailer" \
                or lname.startswith(("x-amz-checksum-", "x-amz-sdk-checksum")) \
                or (lname == "x-amz-content-sha256" and value.upper().startswith("STREAMING-")) \
                or lname == "x-amz-decoded-content-length":
            bad[name] = value
    return bad


def cache_snapshot(repo: Path) -> dict[str, tuple[int, int]]:
    """Every file of the local DVC cache with (size, mtime_ns)."""
    root = repo / ".dvc" / "cache"
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def cache_hashes(repo: Path) -> set[str]:
    """md5s of the objects in the local DVC cache (``files/md5/ab/cdef...`` -> ``abcdef...``)."""
    root = repo / ".dvc" / "cache" / "files" / "md5"
    return {p.parent.name + p.name for p in root.glob("*/*")} if root.exists() else set()


def outs_by_stage(repo: Path) -> dict[str, list[tuple[str, bool, bool]]]:
    """stage -> [(out path, cached, pushed)] for every stage of dvc.yaml and every .dvc file."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return {stage_name(stage, repo): [(Path(o.fs_path).relative_to(repo).as_posix(), o.use_cache, o.can_push)
                                          for o in stage.outs]
                for stage in dvc_repo.index.stages}


def stage_name(stage, repo: Path) -> str:
    """`name@item` for dvc.yaml stages, the .dvc file for added data (stage.addressing is cwd-relative)."""
    from dvc.stage import PipelineStage

    return stage.name if isinstance(stage, PipelineStage) else Path(stage.path).relative_to(repo).as_posix()


def upstream_stages(repo: Path, target: str) -> set[str]:
    """The stage and every stage it depends on, directly or not."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        graph = dvc_repo.index.graph  # edges point from a stage to the stages it depends on
        node = next(s for s in graph if stage_name(s, repo) == target)
        return {target} | {stage_name(s, repo) for s in nx.descendants(graph, node)}


def pushed_outs(repo: Path) -> list[str]:
    return sorted(path for outs in outs_by_stage(repo).values() for path, cached, push in outs if cached and push)


def local_only_outs(repo: Path) -> list[str]:
    """Cached outputs marked ``push: false`` (none in dvc.yaml today): they never reach the remote."""
    return sorted(path for outs in outs_by_stage(repo).values() for path, cached, push in outs if cached and not push)


def object_hashes(repo: Path, stage: str) -> set[str]:
    """md5s of the cache objects of a stage's cached outputs: files, directory manifests and their files."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    cached = {path for path, use_cache, _ in outs_by_stage(repo)[stage] if use_cache}
    found = set()
    for out in lock["stages"][stage]["outs"]:
        if out["path"] in cached:
            found.add(out["md5"])
            if out["md5"].endswith(".dir"):
                manifest = repo / ".dvc/cache/files/md5" / out["md5"][:2] / out["md5"][2:]
                found |= {entry["md5"] for entry in json.loads(manifest.read_text())}
    return found


def same_tree(a: Path, b: Path) -> None:
    """a and b hold the same files with the same bytes (a file or a directory)."""
    if a.is_file():
        assert b.is_file() and filecmp.cmp(a, b, shallow=False), f"{b} differs from {a}"
        return
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert files_a == files_b, f"{b}: files differ from {a}"
    for rel in files_a:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), f"{b / rel} differs from {a / rel}"


def status_outside(repo: Path, allowed: list[str]) -> dict:
    """`dvc status` entries other than "not in cache" of the given (local-only) outputs."""
    status = json.loads(run(["dvc", "status", "--json"], repo).stdout or "{}")
    rest = {}
    for stage, changes in status.items():
        for change in changes:
            entries = change if isinstance(change, dict) else {"": change}
            for kind, paths in entries.items():
                if kind == "changed outs" and isinstance(paths, dict):
                    paths = {p: s for p, s in paths.items() if not (p in allowed and s == "not in cache")}
                if paths:
                    rest.setdefault(stage, []).append({kind: paths})
    return rest


def large_key(repo: Path, prefix: str) -> str:
    md5 = yaml.safe_load((repo / f"{LARGE}.dvc").read_text())["outs"][0]["md5"]
    return f"{prefix}/files/md5/{md5[:2]}/{md5[2:]}"


# --- fixtures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Stub(tmp_path_factory.mktemp("moto")) as server:
        yield server


RAW_STAGE = "capture_raw@toy-instruct-mixed_requests"  # raw per-token activations: push: false


@pytest.fixture(scope="module")
def project(reproduced_toy, tmp_path_factory) -> Path:
    """A copy of the reproduced toy project (the committed .dvc/config untouched, so repro never needed the
    remote), with raw activations turned on for one prompt set and a synthetic 105 MiB `dvc add`ed file."""
    root = copy_project(reproduced_toy[0], tmp_path_factory.mktemp("remote") / "project")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["raw_activations"].update(models=["toy-instruct"], prompt_sets=["mixed_requests"], layers=[0, 2])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert stages_run(output(run(["dvc", "repro"], root))) == {"validate", RAW_STAGE}
    large = root / LARGE
    large.parent.mkdir()
    with open(large, "wb") as f:
        for _ in range(LARGE_MIB):
            f.write(os.urandom(1 << 20))
    run(["dvc", "add", LARGE], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "raw activations and a large file"], root)
    return root


@pytest.fixture(scope="module")
def pushed(project, s3, tmp_path_factory) -> dict:
    """`dvc push` of everything to prefix `main`, with the requests dvc sent."""
    log = tmp_path_factory.mktemp("requests") / "push.jsonl"
    point_at(project, s3, "main")
    done = run(["dvc", "push"], project, env=credentials(s3), request_log=log)
    return {"prefix": "main", "output": output(done), "requests": requests_logged(log)}


@pytest.fixture(scope="module")
def pulled(project, pushed, s3, tmp_path_factory) -> dict:
    """A fresh clone after `dvc pull` from prefix `main`, with the requests dvc sent."""
    base = tmp_path_factory.mktemp("pulled")
    repo = clone(project, base / "clone")
    point_at(repo, s3, pushed["prefix"])
    local_only = local_only_outs(project)
    assert local_only, "the project should hold a push: false output"
    done = run(["dvc", "pull"], repo, check=False, env=credentials(s3), request_log=base / "pull.jsonl")
    # a push: false output is in no remote: the pull restores everything else and names exactly that output
    assert done.returncode == 1, output(done)
    failed = output(done).split("Checkout failed for following targets:")[1].split("Is your cache")[0]
    assert sorted(failed.split()) == local_only, output(done)
    return {"repo": repo, "output": output(done), "requests": requests_logged(base / "pull.jsonl"),
            "local_only": local_only}


# --- the committed configuration -------------------------------------------------------------------

def test_committed_config_names_r2_with_its_checksum_settings_and_no_secrets():
    from botocore.configloader import load_config
    from configobj import ConfigObj

    conf = ConfigObj(str(REPO / ".dvc" / "config"))
    assert conf["core"]["remote"] == REMOTE
    assert conf["core"].get("analytics") == "false"
    assert conf["core"].get("autopush", "false") == "false"  # repro and exp run never push by themselves
    remote = conf[f'remote "{REMOTE}"']
    assert re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[\w./-]+", remote["url"])
    assert re.fullmatch(r"https://[^/]+\.r2\.cloudflarestorage\.com/?", remote["endpointurl"])
    assert remote["region"] == "auto"
    secret_keys = {"access_key_id", "secret_access_key", "session_token", "profile", "credentialpath", "password"}
    assert not secret_keys & set(remote), "credentials belong in the environment or .dvc/config.local"
    unsupported = {"acl", "sse", "sse_kms_key_id", "version_aware", "worktree", "grant_read", "grant_full_control"}
    assert not unsupported & set(remote), "R2 implements no ACLs, SSE-S3/KMS or bucket versioning"
    aws_config = REPO / ".dvc" / remote["configpath"]  # dvc resolves it relative to .dvc/
    assert aws_config.is_file()
    profile = load_config(str(aws_config))["profiles"]["default"]
    assert profile["request_checksum_calculation"] == "when_required"
    assert profile["response_checksum_validation"] == "when_required"
    assert profile["retry_mode"] == "standard"  # a down endpoint fails in seconds per object, not minutes


def test_unconfigured_endpoint_fails_fast_and_names_the_placeholder(tmp_path):
    endpoint = (REPO / ".dvc" / "config").read_text()
    if "<" not in endpoint:
        pytest.skip("the committed endpoint is a real account: nothing to check offline")
    repo = repo_with_committed_remote(tmp_path / "repo")
    (repo / "data.txt").write_text("data\n")
    run(["dvc", "add", "data.txt"], repo)
    start = time.monotonic()
    done = run(["dvc", "push"], repo, check=False, timeout=120,
               env=_env(AWS_ACCESS_KEY_ID="placeholder", AWS_SECRET_ACCESS_KEY="placeholder"))
    assert done.returncode != 0
    assert "Invalid endpoint" in output(done) and "<ACCOUNT_ID>" in output(done)
    assert time.monotonic() - start < 60


# --- round trip -------------------------------------------------------------------------------------

def test_round_trip_restores_every_pushed_artifact_byte_for_byte(project, pulled, s3):
    repo = pulled["repo"]
    outs = pushed_outs(project)
    assert LARGE in outs and any("/activations" in p for p in outs) and any("judge_cache" in p for p in outs)
    for rel in outs:
        same_tree(project / rel, repo / rel)
    for rel in pulled["local_only"]:  # raw per-token activations stay on the machine that made them
        assert not (repo / rel).exists(), f"{rel} is push: false but came back from the remote"
    assert status_outside(repo, pulled["local_only"]) == {}
    # nothing to re-run (a push: false output is only missing, never stale)
    assert stages_run(output(run(["dvc", "repro", "--allow-missing"], repo))) == set()
    # with raw activations off (the default) the same clone is exactly clean: status, pull and repro
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["raw_activations"].update(models=[], prompt_sets=[])
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # a params edit makes only validate stale (it reads all of params.yaml; its marker never changes)
    assert "validate:" in output(run(["dvc", "status"], repo))
    assert stages_run(output(run(["dvc", "repro"], repo))) == {"validate"}
    assert "Data and pipelines are up to date" in output(run(["dvc", "status"], repo))
    run(["dvc", "pull"], repo, env=credentials(s3))
    assert stages_run(output(run(["dvc", "repro"], repo))) == set()


def test_push_false_output_never_reaches_the_remote(project, pushed, s3):
    raw = object_hashes(project, RAW_STAGE)
    assert raw and (project / "experiments/toy/raw/toy-instruct/mixed_requests").is_dir()
    stored = {"".join(key.split("/")[-2:]) for key in s3.keys(pushed["prefix"] + "/")}
    assert stored and not raw & stored
    assert object_hashes(project, "steering_eval") <= stored


def test_large_artifact_goes_through_multipart_upload(project, pushed, s3):
    key = large_key(project, pushed["prefix"])
    stored = s3.keys(pushed["prefix"] + "/")[key]
    assert stored["size"] == LARGE_MIB << 20
    parts = int(stored["etag"].rsplit("-", 1)[1]) if "-" in stored["etag"] else 1
    assert parts >= 2, f"ETag {stored['etag']}: a single PUT, not a multipart upload"
    path = f"/{s3.bucket}/{key}"
    logged = s3.requests()
    assert ("POST", f"{path}?uploads", 200) in logged  # CreateMultipartUpload
    assert sum(1 for m, p, s in logged if m == "PUT" and p.startswith(f"{path}?partNumber=") and s == 200) == parts


def test_requests_carry_no_aws_chunked_trailer(pushed, pulled):
    uploads = [r for r in pushed["requests"] if r["method"] == "PUT"]
    assert any("partNumber=" in r["url"] for r in uploads) and any("partNumber=" not in r["url"] for r in uploads)
    offending = [(r["url"], trailer_headers(r)) for r in uploads if trailer_headers(r)]
    assert not offending, f"R2 rejects these uploads: {offending[:3]}"
    downloads = [r for r in pulled["requests"] if r["method"] == "GET" and "/files/md5/" in r["url"]]
    assert downloads
    assert not [r["url"] for r in downloads if "x-amz-checksum-mode" in {k.lower() for k in r["headers"]}]


def test_without_the_committed_aws_config_uploads_are_aws_chunked(project, s3, tmp_path):
    """The check above can fail: the same push with the checksum settings left out sends trailer checksums."""
    empty = tmp_path / "empty.config"
    empty.write_text("[default]\n")
    point_at(project, s3, "control")
    run(["dvc", "remote", "modify", "--local", REMOTE, "configpath", str(empty)], project)
    try:
        run(["dvc", "push", "steering_eval"], project, env=credentials(s3),
            request_log=tmp_path / "push.jsonl")
    finally:
        run(["dvc", "remote", "modify", "--local", REMOTE, "--unset", "configpath"], project)
    uploads = [r for r in requests_logged(tmp_path / "push.jsonl") if r["method"] == "PUT"]
    assert uploads and all(trailer_headers(r).get("Content-Encoding") == "aws-chunked" for r in uploads)


# --- partial pulls and re-runs -----------------------------------------------------------------------

def test_pulling_one_stage_or_one_trait_fetches_only_that(project, pushed, s3, tmp_path):
    repo = clone(project, tmp_path / "clone")
    point_at(repo, s3, pushed["prefix"])
    outs = outs_by_stage(project)
    cached = lambda stage: {p for p, c, _ in outs[stage] if c}  # noqa: E731
    one = "steering_eval"  # one phase: every trait's steering results, nothing else
    run(["dvc", "pull", one], repo, env=credentials(s3))
    assert cache_hashes(repo) == object_hashes(project, one)
    present = {p for stage in outs for p in cached(stage) if (repo / p).exists()}
    assert present == cached(one)
    # with the steering models: their upstream stages, pulled by name with --with-deps
    chain = upstream_stages(project, one)
    assert {"extract_vectors", "capture_activations", "build_toy_models@toy"} <= chain
    # one trait: its files inside the phases' folders, by path (DVC pulls part of a tracked folder)
    trait = TRAITS[1]
    wanted = [f"experiments/toy/extraction/toy-base/vectors/{trait}",
              f"experiments/toy/extraction/toy-base/evaluation/{trait}.csv",
              f"experiments/toy/steering/toy-instruct/best/{trait}.json"]
    other = clone(project, tmp_path / "other")
    point_at(other, s3, pushed["prefix"])
    run(["dvc", "pull", *wanted], other, env=credentials(s3))
    for rel in wanted:
        same_tree(project / rel, other / rel)
    assert not (other / f"experiments/toy/extraction/toy-base/vectors/{TRAITS[0]}").exists()
    assert not (other / f"experiments/toy/steering/toy-instruct/best/{TRAITS[0]}.json").exists()
    assert not (other / "experiments/toy/extraction/toy-base/activations").exists()
    vectors = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["extract_vectors"]["outs"][0]
    assert vectors["path"].endswith("/vectors") and vectors["md5"].endswith(".dir")
    manifest = json.loads((project / ".dvc/cache/files/md5" / vectors["md5"][:2] / vectors["md5"][2:]).read_text())
    theirs = {entry["md5"] for entry in manifest if entry["relpath"].startswith(TRAITS[0] + "/")}
    ours = {entry["md5"] for entry in manifest if entry["relpath"].startswith(trait + "/")}
    assert ours <= cache_hashes(other) and not (theirs - ours) & cache_hashes(other)


def test_repro_pull_allow_missing_reruns_only_steering_without_activations(project, pushed, s3, tmp_path):
    repo = clone(project, tmp_path / "clone")
    point_at(repo, s3, pushed["prefix"])
    # the toy models (stages depend on their records, not on the folders) and the last results + judge caches
    run(["dvc", "pull", "build_toy_models", "steering_eval"], repo, env=credentials(s3))
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["steering"]["search_steps"] = 1
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    ran = run(["dvc", "repro", "--pull", "--allow-missing", "steering_eval"], repo, env=credentials(s3))
    assert stages_run(output(ran)) == {"validate", "stage_inputs"} | {f"steering_eval@{t}" for t in TRAITS}
    activations = ["capture_activations"]
    assert not any((repo / p).exists() for s in activations for p, _, _ in outs_by_stage(project)[s])
    assert not cache_hashes(repo) & set().union(*(object_hashes(project, s) for s in activations))
    for trait in TRAITS:  # the pulled judge cache answered every judge call again
        metrics = json.loads((repo / f"experiments/toy/metrics/steering/{trait}.json").read_text())
        assert metrics["judge"]["calls"] == 0 and metrics["judge"]["cache_hits"] > 0


def test_a_sweep_rerun_after_pull_makes_no_judge_calls(project, pushed, s3, tmp_path):
    """A fresh machine pulls the sweeps (their judge caches with them) and re-runs them: every answer is cached."""
    repo = clone(project, tmp_path / "clone")
    point_at(repo, s3, pushed["prefix"])
    # the sweeps (their judge caches with them), their vectors and the toy models they steer
    run(["dvc", "pull", "build_toy_models", "extract_vectors", "steering_sweep"], repo, env=credentials(s3))
    # --force re-runs the phase; TRAIT_INTERP_RERUN_TRAITS=1 its traits too (else up to date, they are skipped)
    ran = run(["dvc", "repro", "--pull", "--allow-missing", "--force", "--single-item", "steering_sweep"], repo,
              env={**credentials(s3), "TRAIT_INTERP_RERUN_TRAITS": "1"})
    assert stages_run(output(ran)) == {f"steering_sweep@{t}" for t in TRAITS}
    for trait in TRAITS:
        metrics = json.loads((repo / f"experiments/toy/metrics/sweep/{trait}.json").read_text())
        assert metrics["judge"]["calls"] == 0 and metrics["judge"]["cache_hits"] == metrics["estimate"]["judge_requests"]
        results = f"experiments/toy/sweep/toy-instruct/results/{trait}.csv"
        same_tree(project / results, repo / results)  # the same answers, the same scores


# --- failures ----------------------------------------------------------------------------------------

def test_wrong_credentials_fail_clearly_and_keep_the_cache(project, pushed, s3, tmp_path):
    partial = clone(project, tmp_path / "clone")
    point_at(partial, s3, pushed["prefix"])
    run(["dvc", "pull", "steering_eval"], partial, env=credentials(s3))
    point_at(project, s3, "auth")
    before = {"project": cache_snapshot(project), "clone": cache_snapshot(partial)}
    status_before = run(["dvc", "status", "--json"], project).stdout
    wrong = "not" + "-the-right-secret-" + "0" * 8  # built here so the credential scan below stays quiet
    unknown = _env(AWS_ACCESS_KEY_ID="NOSUCHKEY" + "0" * 11, AWS_SECRET_ACCESS_KEY=wrong)
    wrong_secret = _env(AWS_ACCESS_KEY_ID=s3.valid_key, AWS_SECRET_ACCESS_KEY=wrong)
    s3.enforce_auth()
    try:
        for env, code in ((unknown, "InvalidAccessKeyId"), (wrong_secret, "SignatureDoesNotMatch")):
            for args, repo in ((["dvc", "push"], project), (["dvc", "pull"], partial)):
                start = time.monotonic()
                done = run(args, repo, check=False, env=env, timeout=300)
                assert done.returncode != 0
                # the S3 error code, or for a HEAD request (no body) its status: "(403) ... Forbidden"
                assert "ERROR" in output(done), output(done)
                assert code in output(done) or "(403)" in output(done) and "Forbidden" in output(done), output(done)
                assert wrong not in output(done)
                assert time.monotonic() - start < 60
        assert s3.keys("auth/") == {}
        assert {"project": cache_snapshot(project), "clone": cache_snapshot(partial)} == before
        assert run(["dvc", "status", "--json"], project).stdout == status_before
        for rel, _, _ in outs_by_stage(project)["steering_eval"]:
            same_tree(project / rel, partial / rel)
        # the same remote with the right key works
        run(["dvc", "push"], project, env=credentials(s3))
        assert "in sync" in output(run(["dvc", "status", "-c"], project, env=credentials(s3)))
    finally:
        s3.relax_auth()


def test_server_down_fails_clearly_and_keeps_the_cache(project, pushed, s3, tmp_path):
    partial = clone(project, tmp_path / "clone")
    point_at(partial, s3, pushed["prefix"])
    run(["dvc", "pull", "steering_eval"], partial, env=credentials(s3))
    before = {"project": cache_snapshot(project), "clone": cache_snapshot(partial)}
    down = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    for repo in (project, partial):
        run(["dvc", "remote", "modify", "--local", REMOTE, "endpointurl", down], repo)
    try:
        # a pull tries every missing object (each with its retries): one stage keeps this test short
        for args, repo in ((["dvc", "push"], project), (["dvc", "pull", "steering_sweep"], partial)):
            start = time.monotonic()
            done = run(args, repo, check=False, env=credentials(s3), timeout=300)
            assert done.returncode != 0
            assert "Could not connect to the endpoint URL" in output(done), output(done)
            assert time.monotonic() - start < 60
        assert {"project": cache_snapshot(project), "clone": cache_snapshot(partial)} == before
        for rel, _, _ in outs_by_stage(project)["steering_eval"]:
            same_tree(project / rel, partial / rel)
    finally:
        for repo in (project, partial):
            run(["dvc", "remote", "modify", "--local", REMOTE, "endpointurl", s3.endpoint], repo)


def test_interrupted_push_completes_when_rerun(project, s3, tmp_path):
    prefix = "interrupted"
    point_at(project, s3, prefix)
    key = large_key(project, prefix)
    seen = len(s3.requests())
    with open(tmp_path / "push.log", "wb") as log:
        push = subprocess.Popen([DVC, "push"], cwd=project, env=credentials(s3), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        part = f"/{s3.bucket}/{key}?partNumber="
        while not any(m == "PUT" and p.startswith(part) for m, p, _ in s3.requests()[seen:]):
            assert push.poll() is None, "the push ended before its large upload could be interrupted"
            assert time.monotonic() < deadline, "no part of the large upload reached the server"
            time.sleep(0.02)
        s3.pause()  # no further request completes: the upload is caught part-way
        os.killpg(push.pid, signal.SIGKILL)
        push.wait(timeout=30)
    finally:
        s3.resume()
        if push.poll() is None:
            os.killpg(push.pid, signal.SIGKILL)
            push.wait(timeout=30)
    assert key not in s3.keys(prefix + "/"), "the large upload completed before the kill"
    again = run(["dvc", "push"], project, env=credentials(s3))
    assert "pushed" in output(again)
    assert "in sync" in output(run(["dvc", "status", "-c"], project, env=credentials(s3)))
    stored = s3.keys(prefix + "/")
    assert stored[key]["size"] == LARGE_MIB << 20
    client = s3.client()
    for name in stored:  # every object is whole: its content hashes to its content-addressed name
        digest = hashlib.md5()
        for chunk in client.get_object(Bucket=s3.bucket, Key=name)["Body"].iter_chunks(1 << 20):
            digest.update(chunk)
        md5 = "".join(name.split("/")[-2:]).removesuffix(".dir")
        assert digest.hexdigest() == md5, f"{name} is corrupt"


# --- experiments ---------------------------------------------------------------------------------------

def test_exp_push_and_pull_share_an_experiment(project, pushed, s3, tmp_path):
    origin = tmp_path / "origin.git"
    run(["git", "clone", "-q", "--bare", str(project), str(origin)], tmp_path)
    run(["git", "remote", "add", "shared", str(origin)], project)
    point_at(project, s3, pushed["prefix"])
    try:
        before = {p: (project / p).read_bytes() for p in pushed_outs(project) if (project / p).is_file() and p != LARGE}
        ran = run(["dvc", "exp", "run", "-S", "analyses.max_lag=5", "-n", "lag5"], project)
        # validate re-runs on any params change (its marker never changes); the report reads analyses/
        analysed = stages_run(output(ran)) - {"validate", "report"}
        assert analysed and all(s.startswith("trait_correlation@") for s in analysed), stages_run(output(ran))
        made = {p: (project / p).read_bytes() for p in before if (project / p).read_bytes() != before[p]}
        assert made, "the experiment changed no output"
        run(["dvc", "exp", "push", "shared", "lag5"], project, env=credentials(s3))

        repo = clone(origin, tmp_path / "clone")
        point_at(repo, s3, pushed["prefix"])
        run(["dvc", "exp", "pull", "origin", "lag5"], repo, env=credentials(s3))
        assert "lag5" in run(["dvc", "exp", "list", "--name-only"], repo).stdout
        local_only = local_only_outs(project)
        applied = run(["dvc", "exp", "apply", "lag5"], repo, check=not local_only)
        if applied.returncode:  # only a push: false output (in no remote) could not be checked out
            failed = output(applied).split("Checkout failed for following targets:")[1].split("Is your cache")[0]
            assert set(failed.split()) <= set(local_only), output(applied)
        assert status_outside(repo, local_only) == {}
        assert yaml.safe_load((repo / "params.yaml").read_text())["analyses"]["max_lag"] == 5
        assert {p: (repo / p).read_bytes() for p in made} == made
    finally:
        run(["git", "remote", "remove", "shared"], project)
        run(["git", "checkout", "--", "."], project)
        run(["dvc", "checkout", "--force"], project)


# --- secrets -------------------------------------------------------------------------------------------

CREDENTIAL_PATTERNS = [
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}"),  # OpenAI keys
    # a key/secret/token setting (config, env, code) with a real-looking value: 16+ characters of a key alphabet
    re.compile(r"(?i)(?:secret_access_key|access_key_id|session_token|api_key|api_token|secret_key|password)"
               r"['\"\]]*\s*[=:]\s*['\"]?[A-Za-z0-9/+_\-]{16,}"),
]


def credential_hits(text: str) -> list[str]:
    return [m.group(0) for pattern in CREDENTIAL_PATTERNS for m in pattern.finditer(text)]


def test_credential_scan_flags_planted_secrets():
    planted = ["AKIA" + "Q7" * 8, "aws_secret_access_key = " + "a1B2" * 10, "secret_access_key: " + "f0" * 32,
               "OPENAI_API_KEY=sk-" + "x" * 30, "-----BEGIN RSA " + "PRIVATE KEY-----"]
    for text in planted:
        assert credential_hits(text), text
    harmless = ["md5: " + "0f" * 16, "dvc remote modify --local r2 secret_access_key <secret>",
                "AWS_SECRET_ACCESS_KEY=testing", "export AWS_ACCESS_KEY_ID=...", "access_key_id: ${R2_KEY}"]
    for text in harmless:
        assert not credential_hits(text), text


def test_tracked_files_hold_no_credentials_and_config_local_is_ignored():
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    hits = {}
    for rel in files:
        path = REPO / rel
        if not path.is_file() or path.stat().st_size > 5 << 20:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        found = credential_hits(data.decode("utf-8", errors="replace"))
        if found:
            hits[rel] = found
    assert hits == {}
    ignored = subprocess.run(["git", "check-ignore", "-q", ".dvc/config.local"], cwd=REPO)
    assert ignored.returncode == 0, ".dvc/config.local (credentials) must be ignored by git"


# --- opt-in: the real thing -----------------------------------------------------------------------------

@pytest.mark.skipif(not os.environ.get("R2_TEST_URL"), reason="set R2_TEST_URL=s3://<bucket>/<scratch prefix>, "
                    "R2_TEST_ENDPOINT and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY to run against Cloudflare R2")
def test_live_r2_round_trip(tmp_path):
    repo = repo_with_committed_remote(tmp_path / "repo")
    run(["dvc", "remote", "modify", "--local", REMOTE, "url", os.environ["R2_TEST_URL"]], repo)
    run(["dvc", "remote", "modify", "--local", REMOTE, "endpointurl", os.environ["R2_TEST_ENDPOINT"]], repo)
    data = repo / "data.bin"
    data.write_bytes(os.urandom((LARGE_MIB + 1) << 20))  # multipart on R2 too
    run(["dvc", "add", "data.bin"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "data"], repo)
    env = _env(AWS_ACCESS_KEY_ID=os.environ["AWS_ACCESS_KEY_ID"],
               AWS_SECRET_ACCESS_KEY=os.environ["AWS_SECRET_ACCESS_KEY"])
    run(["dvc", "push"], repo, env=env)
    other = clone(repo, tmp_path / "clone")
    shutil.copy2(repo / ".dvc" / "config.local", other / ".dvc" / "config.local")
    run(["dvc", "pull"], other, env=env)
    same_tree(data, other / "data.bin")
