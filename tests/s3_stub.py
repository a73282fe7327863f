"""A local S3 server for the remote tests and the remote benchmark: moto over https on 127.0.0.1.

``moto_server -s`` runs in a subprocess with a self-signed certificate (clients use ``verify=False`` /
``dvc remote modify --local <remote> ssl_verify false``). Over https botocore takes the same code path
as against Cloudflare R2 (aws-chunked trailer checksums unless told otherwise), which plain-http
loopback would not. The server's request log (werkzeug, one line per request) is kept in a file so
tests can see which S3 operations reached it (e.g. multipart uploads).

moto accepts any key by default. ``enforce_auth()`` turns on its IAM check (unknown key ->
InvalidAccessKeyId, wrong secret -> SignatureDoesNotMatch); ``valid_key`` / ``valid_secret`` are an
IAM user allowed ``s3:*``, created when the server starts.

    with S3Stub(log_dir) as s3:
        s3.endpoint  # https://127.0.0.1:<port>
        s3.bucket    # created, empty
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import urllib3

DUMMY_KEY = "testing"  # what moto accepts while auth is not enforced
DUMMY_SECRET = "testing"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _moto_server() -> list[str]:
    script = Path(sys.executable).parent / "moto_server"
    return [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]


class S3Stub:
    def __init__(self, log_dir: Path, bucket: str = "trait-interp-test", start_timeout_s: float = 60.0):
        self.log_dir = Path(log_dir)
        self.bucket = bucket
        self.start_timeout_s = start_timeout_s
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.valid_key = ""
        self.valid_secret = ""
        self.log_path = self.log_dir / "moto.log"

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "S3Stub":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(_moto_server() + ["-s", "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}: {self.log_text()[-2000:]}")
            try:
                self.client().list_buckets()
                break
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
                time.sleep(0.2)
        else:
            self.stop()
            raise TimeoutError(f"moto_server did not answer within {self.start_timeout_s} s: {last}")
        self.client().create_bucket(Bucket=self.bucket)
        iam = self.client("iam")
        iam.create_user(UserName="dvc")
        iam.put_user_policy(UserName="dvc", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="dvc")["AccessKey"]
        self.valid_key, self.valid_secret = key["AccessKeyId"], key["SecretAccessKey"]
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> "S3Stub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- clients and controls ----------------------------------------------------------------------
    def client(self, service: str = "s3", key: str | None = None, secret: str | None = None):
        """A boto3 client; by default with the IAM key (accepted whether or not auth is enforced)."""
        import boto3
        from botocore.config import Config

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        return boto3.client(service, endpoint_url=self.endpoint, verify=False, region_name="us-east-1",
                            aws_access_key_id=key or self.valid_key or DUMMY_KEY,
                            aws_secret_access_key=secret or self.valid_secret or DUMMY_SECRET,
                            config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=60))

    def _moto_api(self, path: str, body: bytes = b"") -> None:
        http = urllib3.PoolManager(cert_reqs="CERT_NONE")
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        reply = http.request("POST", f"{self.endpoint}/moto-api/{path}", body=body, timeout=10)
        assert reply.status == 200, reply.data

    def enforce_auth(self) -> None:
        """From now on only valid_key/valid_secret are accepted."""
        self._moto_api("reset-auth", b"0")

    def relax_auth(self) -> None:
        """Back to accepting any key."""
        self._moto_api("reset-auth", b"inf")

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): requests in flight neither complete nor fail."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    # --- what reached the server ---------------------------------------------------------------------
    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path with query, status) of every request logged so far."""
        pattern = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')
        return [(m[1], m[2], int(m[3])) for m in pattern.finditer(self.log_text())]

    def keys(self, prefix: str) -> dict[str, dict]:
        """Objects under a prefix: key -> {'size', 'etag'}."""
        out: dict[str, dict] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = {"size": obj["Size"], "etag": obj["ETag"].strip('"')}
        return out
