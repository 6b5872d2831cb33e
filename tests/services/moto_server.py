"""moto's standalone server (``moto_server``) with real request signing.

By default moto accepts any credentials. With ``INITIAL_NO_AUTH_ACTION_COUNT``
set, moto authenticates every request after the first N: the bootstrap uses
exactly those N requests to create an IAM user, its policy and its access
key, so from then on a wrong secret really gets 403.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request
from pathlib import Path

from tests.services.process import ServerProcess, ServiceError, free_port
from tests.services.s3client import S3Endpoint

_BOOTSTRAP_ACTIONS = 3  # create_user, put_user_policy, create_access_key
_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


def moto_server_binary() -> str | None:
    beside_python = Path(sys.executable).with_name("moto_server")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("moto_server")


class MotoServer:
    def __init__(self, workdir: Path):
        binary = moto_server_binary()
        if binary is None:
            raise ServiceError("moto_server not installed (pip install 'moto[server]')")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = ServerProcess(
            [binary, "-H", "127.0.0.1", "-p", str(self.port)],
            workdir / "moto.log",
            env={"INITIAL_NO_AUTH_ACTION_COUNT": str(_BOOTSTRAP_ACTIONS)},
        )
        self.process.wait_ready(self._listening, "moto_server")
        self.endpoint = self._bootstrap_user()

    def _listening(self) -> bool:
        # moto answers its own dashboard route without counting an action.
        with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2) as resp:
            return bool(resp.status == 200)

    def _bootstrap_user(self) -> S3Endpoint:
        anon = S3Endpoint("moto", self.url, "bootstrap", "bootstrap").client("iam")
        anon.create_user(UserName="replicator-test")
        anon.put_user_policy(
            UserName="replicator-test", PolicyName="s3-all", PolicyDocument=json.dumps(_POLICY)
        )
        key = anon.create_access_key(UserName="replicator-test")["AccessKey"]
        return S3Endpoint("moto", self.url, key["AccessKeyId"], key["SecretAccessKey"])

    def stop(self) -> None:
        self.process.stop()
