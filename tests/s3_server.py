"""A real S3-compatible server on 127.0.0.1: moto's standalone server (`moto[server]`), in a subprocess.

Not a mock of our code: pyarrow's S3 filesystem talks HTTP to it. Any credentials are accepted; the
standard AWS variables are set while it runs, so that `s3://...` URIs work as they would on a cluster.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import requests

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """`with MotoServer(log_dir) as s3:` a running server; `s3.store_uri()` a fresh prefix in its bucket."""

    bucket = "raytron"

    def __init__(self, log_dir: Path):
        self.log_path = Path(log_dir) / "moto.log"
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"

    def __enter__(self) -> MotoServer:
        self.saved = {key: os.environ.get(key) for key in CREDENTIALS}
        os.environ.update(CREDENTIALS)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120  # its first answer is slow (moto loads its backends)
        while True:
            try:
                requests.get(f"http://{self.endpoint}/", timeout=30)
                break
            except requests.RequestException:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"moto_server did not start; its log: {self.log_path.read_text()[-2000:]}") from None
                time.sleep(0.2)
        self.filesystem().create_dir(self.bucket)
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def filesystem(self) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http", access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                 secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], allow_bucket_creation=True)

    def store_uri(self, bucket: str | None = None) -> str:
        """An `s3://` URI of a new, empty prefix, with this server as the endpoint."""
        return f"s3://{bucket or self.bucket}/{uuid.uuid4().hex[:12]}?endpoint_override={self.endpoint}&scheme=http"
