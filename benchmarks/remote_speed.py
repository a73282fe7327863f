"""DVC remote speed against the local S3 server (moto over https on 127.0.0.1), and `dvc status` time.

Three measurements, printed as one table:

1. push and pull of the toy artifacts: every pushed output of a reproduced workspace. The workspace is
   copied (its files, not its cache) into a temporary repo whose cache dir is the workspace's own
   cache, only read. The pull goes into a second copy with an empty cache.
2. push and pull of one synthetic activation file (default 1 GiB, float32 safetensors; multipart).
3. `dvc status` on a synthetic experiment: 8 traits x 80 layers x 5 methods. Each trait is one stage
   whose output folder holds one `[80, hidden]` safetensors file per method plus its JSON sidecar
   (80 files in all).

    .venv/bin/python benchmarks/remote_speed.py --workspace .        # a reproduced checkout (dvc status clean)
    .venv/bin/python benchmarks/remote_speed.py --build              # copy this repo and `dvc repro` it first
    .venv/bin/python benchmarks/remote_speed.py --skip-toy --large-gib 1

Times are wall-clock times of the dvc command, including its ~1 s start-up. moto is a single
Python process, so the throughput here measures the local stack (hashing, dvc, s3fs, TLS, moto),
not R2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.s3_stub import S3Stub  # noqa: E402

DVC = str(Path(sys.executable).parent / "dvc")
MiB = 1 << 20


def env(s3: S3Stub | None = None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    out.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost", GIT_COMMITTER_NAME="bench",
               GIT_COMMITTER_EMAIL="bench@localhost")
    if s3 is not None:
        out.update(AWS_ACCESS_KEY_ID=s3.valid_key, AWS_SECRET_ACCESS_KEY=s3.valid_secret)
    return out


def sh(args: list[str], cwd: Path, s3: S3Stub | None = None, check: bool = True) -> tuple[float, str]:
    """Run a command; returns (seconds, output)."""
    if args[0] == "dvc":
        args = [DVC, *args[1:]]
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env(s3), capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    if check and done.returncode:
        raise SystemExit(f"{' '.join(args)} failed in {cwd}:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout + done.stderr


def point_at(repo: Path, s3: S3Stub, prefix: str) -> None:
    sh(["dvc", "remote", "modify", "--local", "r2", "endpointurl", s3.endpoint], repo)
    sh(["dvc", "remote", "modify", "--local", "r2", "ssl_verify", "false"], repo)
    sh(["dvc", "remote", "modify", "--local", "r2", "url", f"s3://{s3.bucket}/{prefix}"], repo)


def copy_files(source: Path, dest: Path, skip_experiments: bool = False) -> None:
    """The files git would commit (tracked and untracked-not-ignored), without any DVC cache."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=source,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        if (skip_experiments and rel.startswith("experiments/")) or not (source / rel).is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, dest / rel)
    for name in ("config", "aws-r2.config"):  # this repo's remote settings, whatever the workspace's age
        shutil.copy2(REPO / ".dvc" / name, dest / ".dvc" / name)


def git_repo(path: Path) -> None:
    sh(["git", "init", "-q"], path)
    sh(["git", "add", "-A"], path)
    sh(["git", "commit", "-qm", "bench"], path)


def remote_bytes(s3: S3Stub, prefix: str) -> tuple[int, int]:
    objects = s3.keys(prefix + "/")
    return len(objects), sum(o["size"] for o in objects.values())


def has_local_only_outs(repo: Path) -> bool:
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return any(o.use_cache and not o.can_push for o in dvc_repo.index.outs)


# --- 1. toy artifacts ---------------------------------------------------------------------------------

def build_workspace(tmp: Path) -> Path:
    work = tmp / "built"
    copy_files(REPO, work, skip_experiments=True)
    git_repo(work)
    print("reproducing the toy experiment in", work, "(minutes) ...", flush=True)
    seconds, _ = sh(["dvc", "repro"], work)
    print(f"  dvc repro: {seconds:.0f} s", flush=True)
    sh(["git", "add", "-A"], work)
    sh(["git", "commit", "-qm", "reproduced"], work)
    return work


def bench_toy(workspace: Path, s3: S3Stub, tmp: Path) -> dict:
    workspace = workspace.resolve()
    cache = workspace / ".dvc" / "cache"
    local_cache = subprocess.run([DVC, "cache", "dir"], cwd=workspace, env=env(), capture_output=True,
                                 text=True).stdout.strip()
    if local_cache:
        cache = Path(local_cache)
    staged = tmp / "toy-push"
    copy_files(workspace, staged)
    git_repo(staged)
    sh(["dvc", "cache", "dir", "--local", str(cache)], staged)  # read only: push reads objects
    _, status = sh(["dvc", "status", "--json"], staged)
    point_at(staged, s3, "toy")
    allow = ["--allow-missing"] if has_local_only_outs(staged) else []
    push_s, _ = sh(["dvc", "push"], staged, s3)
    files, size = remote_bytes(s3, "toy")
    pulled = tmp / "toy-pull"
    sh(["git", "clone", "-q", str(staged), str(pulled)], tmp)
    point_at(pulled, s3, "toy")
    pull_s, _ = sh(["dvc", "pull", *allow], pulled, s3)
    return {"what": f"toy artifacts ({workspace.name})", "files": files, "bytes": size, "push_s": push_s,
            "pull_s": pull_s, "note": "" if status.strip() in ("{}", "") else "workspace not clean"}


# --- 2. one large synthetic activation file ----------------------------------------------------------------

def write_activations(path: Path, size: int, hidden: int = 8192) -> None:
    """A safetensors file with one float32 [rows, hidden] tensor of random values, written in chunks."""
    import numpy as np

    rows = max(1, size // (4 * hidden))
    nbytes = rows * hidden * 4
    header = json.dumps({"activations": {"dtype": "F32", "shape": [rows, hidden], "data_offsets": [0, nbytes]}})
    header = header.encode() + b" " * (-len(header) % 8)
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        left = rows
        while left:
            n = min(left, (64 * MiB) // (4 * hidden))
            f.write(rng.standard_normal((n, hidden), dtype=np.float32).tobytes())
            left -= n


def bench_large(s3: S3Stub, tmp: Path, gib: float) -> dict:
    repo = tmp / "large"
    repo.mkdir()
    sh(["git", "init", "-q"], repo)
    sh(["dvc", "init", "-q"], repo)
    for name in ("config", "aws-r2.config"):
        shutil.copy2(REPO / ".dvc" / name, repo / ".dvc" / name)
    target = repo / "activations.safetensors"
    write_activations(target, int(gib * (1 << 30)))
    add_s, _ = sh(["dvc", "add", target.name], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "activations"], repo)
    point_at(repo, s3, "large")
    seen = len(s3.requests())
    push_s, _ = sh(["dvc", "push"], repo, s3)
    parts = sum(1 for m, p, _ in s3.requests()[seen:] if m == "PUT" and "partNumber=" in p)
    files, size = remote_bytes(s3, "large")
    pulled = tmp / "large-pull"
    sh(["git", "clone", "-q", str(repo), str(pulled)], tmp)
    point_at(pulled, s3, "large")
    pull_s, _ = sh(["dvc", "pull"], pulled, s3)
    return {"what": f"synthetic activations {gib:g} GiB", "files": files, "bytes": size, "push_s": push_s,
            "pull_s": pull_s, "note": f"{parts} parts; dvc add {add_s:.1f} s"}


# --- 3. dvc status on 8 traits x 80 layers x 5 methods ------------------------------------------------------

GEN = '''import json, sys
from pathlib import Path
import numpy as np
from safetensors.numpy import save_file
trait, layers, hidden = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = Path("experiments/synthetic/extraction/model") / trait / "vectors" / "residual"
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(abs(hash(trait)) % 2**32)
for method in ("probe", "mean_diff", "gradient", "pca", "random_baseline"):
    save_file({"vectors": rng.standard_normal((layers, hidden), dtype=np.float32)}, str(out / f"{method}.safetensors"))
    (out / f"{method}.json").write_text(json.dumps({"method": method, "site": "residual", "layers": list(range(layers)),
                                                   "norms": [1.0] * layers, "train_accuracy": [0.9] * layers}))
'''


def bench_status(tmp: Path, traits: int, layers: int, hidden: int, repeats: int) -> dict:
    repo = tmp / "status"
    repo.mkdir()
    sh(["git", "init", "-q"], repo)
    sh(["dvc", "init", "-q"], repo)
    (repo / "gen.py").write_text(GEN)
    names = [f"category{i % 3}/trait{i}" for i in range(traits)]
    (repo / "params.yaml").write_text(json.dumps({"traits": names, "layers": layers, "hidden": hidden}))
    (repo / "dvc.yaml").write_text(
        "stages:\n"
        "  extract_vectors:\n"
        "    matrix:\n"
        "      trait: ${traits}\n"
        f"    cmd: {sys.executable} gen.py ${{item.trait}} ${{layers}} ${{hidden}}\n"
        "    deps: [gen.py]\n"
        "    params: [layers, hidden]\n"
        "    outs:\n"
        "      - experiments/synthetic/extraction/model/${item.trait}/vectors\n")
    repro_s, _ = sh(["dvc", "repro"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "vectors"], repo)
    vector_files = list((repo / "experiments").rglob("*.*"))
    size = sum(p.stat().st_size for p in vector_files)
    times = []
    for _ in range(repeats):
        seconds, text = sh(["dvc", "status"], repo)
        assert "up to date" in text, text
        times.append(seconds)
    return {"what": f"dvc status: {traits} traits x {layers} layers x 5 methods", "files": len(vector_files),
            "bytes": size, "times": times, "repro_s": repro_s}


# --- main ------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, help="a reproduced checkout whose outputs are pushed")
    parser.add_argument("--build", action="store_true", help="copy this repo to a temp dir and `dvc repro` it")
    parser.add_argument("--skip-toy", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-status", action="store_true")
    parser.add_argument("--large-gib", type=float, default=1.0)
    parser.add_argument("--traits", type=int, default=8)
    parser.add_argument("--layers", type=int, default=80)
    parser.add_argument("--hidden", type=int, default=8192, help="vector width (8192: a 70B model with 80 layers)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.skip_toy and not (args.workspace or args.build):
        parser.error("toy artifacts: give --workspace PATH (reproduced) or --build, or --skip-toy")

    rows, status = [], None
    with tempfile.TemporaryDirectory(prefix="remote-speed-") as tmp_name:
        tmp = Path(tmp_name)
        with S3Stub(tmp / "moto") as s3:
            if not args.skip_toy:
                rows.append(bench_toy(args.workspace or build_workspace(tmp), s3, tmp))
            if not args.skip_large:
                rows.append(bench_large(s3, tmp, args.large_gib))
        if not args.skip_status:
            status = bench_status(tmp, args.traits, args.layers, args.hidden, args.repeats)

    print(f"\nDVC remote speed, local moto over https ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    if rows:
        print(f"{'what':<40} {'objects':>7} {'MiB':>8} {'push s':>7} {'push MiB/s':>10} {'pull s':>7} "
              f"{'pull MiB/s':>10}  note")
        for r in rows:
            mib = r["bytes"] / MiB
            print(f"{r['what']:<40} {r['files']:>7} {mib:>8.1f} {r['push_s']:>7.1f} {mib / r['push_s']:>10.1f} "
                  f"{r['pull_s']:>7.1f} {mib / r['pull_s']:>10.1f}  {r['note']}")
    if status:
        t = status["times"]
        verdict = "OK (< 2 s)" if max(t) < 2.0 else "OVER 2 s"
        print(f"\n{status['what']}: {status['files']} files, {status['bytes'] / MiB:.0f} MiB "
              f"(dvc repro {status['repro_s']:.1f} s)")
        print(f"  dvc status x{len(t)}: first {t[0]:.2f} s, median {statistics.median(t):.2f} s, "
              f"max {max(t):.2f} s  -> {verdict}")


if __name__ == "__main__":
    main()
