"""The cheap check before any (GPU) pod starts: is the dataset there, with classes and images?

It lists S3 and nothing more, with the job's own credentials: the keys of the Secret named in
`storage.credentialsSecret`, read through the API, or the operator's environment when the job
names none. boto3 blocks, so the listing runs in a thread. The credentials live only in the
client built here; they are never logged or put in an error message.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import boto3
from botocore.config import Config

from aimass import datasets, storage
from aimass.spec import TrainingJobSpec
from aimass_operator.kubeapi import KubeApi, secret_path

REQUIRED_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


class CredentialsError(RuntimeError):
    """The credentials Secret is missing or lacks a key; the message names which, no values."""


async def read_credentials(api: KubeApi, namespace: str, secret: str) -> dict[str, str]:
    """The AWS_* keys of the Secret, decoded."""
    found = await api.get(secret_path(namespace, secret))
    if found is None:
        raise CredentialsError(
            f"the Secret {secret!r} named in spec.storage.credentialsSecret is not in "
            f"namespace {namespace!r}"
        )
    data = found.get("data") or {}
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise CredentialsError(f"the Secret {secret!r} has no key(s) {missing}")
    return {
        key: base64.b64decode(value).decode()
        for key, value in data.items()
        if key.startswith("AWS_")
    }


def make_s3_client(spec: TrainingJobSpec, credentials: dict[str, str] | None) -> Any:
    """An S3 client for the job's endpoint, with the Secret's keys or else the environment's."""
    if credentials is None:
        return storage.make_client(spec.storage)
    endpoint = spec.storage.endpoint or os.environ.get("AWS_ENDPOINT_URL")
    session = boto3.session.Session(
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=credentials.get("AWS_SESSION_TOKEN"),
    )
    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
    )
    return session.client(
        "s3", endpoint_url=endpoint or None, region_name=spec.storage.region, config=config
    )


async def check_dataset(
    api: KubeApi, namespace: str, spec: TrainingJobSpec
) -> datasets.PreflightReport:
    """Raises DatasetError (permanent), StorageError or CredentialsError (worth retrying)."""
    secret = spec.storage.credentials_secret
    credentials = await read_credentials(api, namespace, secret) if secret else None

    def check() -> datasets.PreflightReport:
        return datasets.preflight(spec, make_s3_client(spec, credentials))

    return await asyncio.to_thread(check)
