"""A real S3-compatible server for tests: moto's server in a thread on 127.0.0.1, port 0.

with S3Peer() as s3:
    settings = {"storage": "s3", "s3": s3.settings("bucket")}
    s3.create_bucket("bucket")
    s3.keys("bucket")  # what is stored
"""

from __future__ import annotations

import urllib.request
from types import TracebackType
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"
REGION = "eu-north-1"


class S3Peer:
    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.url = ""

    def __enter__(self) -> S3Peer:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # moto keeps its buckets per process, not per server: the next peer starts empty.
        reset = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(reset, timeout=10):
            pass
        self._server.stop()

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def settings(self, bucket: str) -> dict[str, Any]:
        return {
            "bucket": bucket,
            "endpoint_url": self.url,
            "region": REGION,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "prefix": "files/",
        }

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
        )

    def keys(self, bucket: str) -> list[str]:
        answer = self.client().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in answer.get("Contents", []))

    def get(self, bucket: str, key: str) -> tuple[bytes, str]:
        answer = self.client().get_object(Bucket=bucket, Key=key)
        return answer["Body"].read(), answer["ContentType"]
