"""The cheap check before any (GPU) pod starts: is the dataset there, with classes and images?

It lists S3 and nothing more, with the job's own credentials: the keys of the Secret named in
`storage.credentialsSecret`, read through the API, or the operator's environment when the job
names none. boto3 blocks, so the listing runs in a thread. The credentials live only in the
client built here; they are never logged or put in an error message.
"""

from __future__ import annotations

import asyncio
import base64


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


async def check_dataset(
    api: KubeApi, namespace: str, spec: TrainingJobSpec
) -> datasets.PreflightReport:
    """Raises DatasetError (permanent), StorageError or CredentialsError (worth retrying)."""
    secret = spec.storage.credentials_secret
    credentials = await read_credentials(api, namespace, secret) if secret else None

    def check() -> datasets.PreflightReport:
        return datasets.preflight(spec, storage.make_client(spec.storage, credentials=credentials))

    return await asyncio.to_thread(check)
