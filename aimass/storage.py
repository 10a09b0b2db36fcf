"""S3 helpers shared by the trainer, the CLI and the operator (boto3, no TensorFlow).

Public functions: `parse_s3_uri`, `join_uri`, `make_client`, `list_objects`, `list_prefixes`,
`upload_file`, `upload_bytes`, `upload_dir`, `read_bytes`, `download_file`, `download_many`,
`ensure_bucket`, `delete_prefix`; the record `ObjectInfo`; the error `StorageError`.

Listing pages through results and lists the subfolders of a prefix concurrently; uploads and
downloads of many files run on a thread pool (a boto3 client is thread-safe). Every failure is
turned into a `StorageError` whose message names the URI and says what to check, and whose
`reason` tells a caller whether it is the data that is missing (`NoSuchBucket`) or the service
that failed (`Unreachable`, `AccessDenied`, ...).
"""

from __future__ import annotations


import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)

if TYPE_CHECKING:
    from aimass.spec import Storage

# Threads for concurrent listing and transfers; the client's connection pool is sized to match.
DEFAULT_WORKERS = 16

# What to check for each S3 error code, appended to the message.
_ADVICE = {
    "NoSuchBucket": "create the bucket or correct the URI",
    "AccessDenied": "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and the bucket policy",
    "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID (and the Secret it comes from)",
    "SignatureDoesNotMatch": "check AWS_SECRET_ACCESS_KEY (and the Secret it comes from)",
    "NoCredentials": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    "Unreachable": "check storage.endpoint / AWS_ENDPOINT_URL and that the server is up",
}


class StorageError(RuntimeError):
    """An S3 operation failed. `uri` is the object or prefix, `reason` a short code such as
    NoSuchBucket, NoSuchKey, AccessDenied or Unreachable."""

    def __init__(self, message: str, *, uri: str, reason: str) -> None:
        super().__init__(message)
        self.uri = uri
        self.reason = reason


@dataclass(frozen=True)
class ObjectInfo:
    """One object under a prefix: its full key, size in bytes and ETag (without quotes)."""

    key: str
    size: int
    etag: str


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/some/key` into ("bucket", "some/key"); the key may be empty."""
    if not uri.startswith("s3://"):
        raise StorageError(
            f"not an s3:// URI: {uri!r} (expected s3://bucket/key)", uri=uri, reason="BadUri"
        )
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"no bucket in URI {uri!r}", uri=uri, reason="BadUri")
    return bucket, key


def join_uri(uri: str, *parts: str) -> str:
    """`join_uri("s3://b/out/", "model.keras")` -> "s3://b/out/model.keras"."""
    pieces = [uri.rstrip("/")] + [part.strip("/") for part in parts if part.strip("/")]
    return "/".join(pieces)


def _as_prefix(key: str) -> str:
    """A key prefix that only matches inside the folder: "data/train" -> "data/train/"."""
    return key if not key or key.endswith("/") else key + "/"


def make_client(
    storage: Storage | None = None,
    *,
    workers: int = DEFAULT_WORKERS,
    credentials: Mapping[str, str] | None = None,
) -> Any:
    """An S3 client for `storage.endpoint`, else AWS_ENDPOINT_URL, else AWS itself.

    Credentials come from the environment (or boto3's usual chain), never from the spec; the
    operator passes a job's Secret as `credentials` (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    optionally AWS_SESSION_TOKEN). Path-style addressing is used because MinIO and SeaweedFS
    expect it.
    """
    endpoint = (storage.endpoint if storage else None) or os.environ.get("AWS_ENDPOINT_URL")
    region = (storage.region if storage else None) or os.environ.get(
        "AWS_DEFAULT_REGION", "us-east-1"
    )
    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=max(10, workers * 2),
    )
    if credentials is None:
        return boto3.client("s3", endpoint_url=endpoint or None, region_name=region, config=config)

    session = boto3.session.Session(
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=credentials.get("AWS_SESSION_TOKEN"),
    )
    return session.client("s3", endpoint_url=endpoint or None, region_name=region, config=config)


def _reason(error: BaseException) -> str:
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", "Unknown"))
        # NB: a HEAD request has no body, so a missing object or bucket only shows as a 404.
        return {"404": "NoSuchKey", "403": "AccessDenied"}.get(code, code)
    if isinstance(error, NoCredentialsError):
        return "NoCredentials"
    if isinstance(error, EndpointConnectionError):
        return "Unreachable"
    return type(error).__name__


@contextmanager
def _translated(action: str, uri: str) -> Iterator[None]:
    """Turn boto errors raised while doing `action` on `uri` into a StorageError."""
    try:
        yield
    except (ClientError, BotoCoreError) as error:
        reason = _reason(error)
        advice = _ADVICE.get(reason)
        hint = f"; {advice}" if advice else ""
        raise StorageError(
            f"could not {action} {uri}: {reason}: {error}{hint}", uri=uri, reason=reason
        ) from error


@contextmanager
def _translated_transport(action: str, uri: str) -> Iterator[None]:
    """Like `_translated`, for calls whose ClientError the caller inspects itself: only failures
    below S3 (unreachable endpoint, no credentials) become a StorageError here."""
    try:
        yield
    except BotoCoreError as error:
        with _translated(action, uri):
            raise error


def _pages(
    client: Any, bucket: str, prefix: str, delimiter: str | None, page_size: int | None = None
) -> Iterator[dict[str, Any]]:
    """Every page of a ListObjectsV2 listing (S3 returns at most 1000 keys a page)."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    if page_size:
        kwargs["PaginationConfig"] = {"PageSize": page_size}
    yield from client.get_paginator("list_objects_v2").paginate(**kwargs)


def _objects_in(pages: Iterator[dict[str, Any]]) -> list[ObjectInfo]:
    return [
        ObjectInfo(key=item["Key"], size=int(item["Size"]), etag=item["ETag"].strip('"'))
        for page in pages
        for item in page.get("Contents", [])
    ]


def list_prefixes(
    client: Any, uri: str, *, page_size: int | None = None
) -> tuple[list[str], list[ObjectInfo]]:
    """One level under `uri`: the subfolder keys (ending in "/") and the objects directly in it."""
    bucket, key = parse_s3_uri(uri)
    prefix = _as_prefix(key)
    folders: list[str] = []
    objects: list[ObjectInfo] = []
    with _translated("list", uri):
        for page in _pages(client, bucket, prefix, "/", page_size):
            folders.extend(item["Prefix"] for item in page.get("CommonPrefixes", []))
            objects.extend(_objects_in(iter([page])))
    return folders, objects


def list_objects(
    client: Any, uri: str, *, workers: int = DEFAULT_WORKERS, page_size: int | None = None
) -> list[ObjectInfo]:
    """Every object under the folder `uri`, sorted by key.

    The subfolders one level down are listed concurrently, which is what makes a dataset with
    many class folders quick to index. `page_size` (keys per request) is for tests.
    """
    bucket, _ = parse_s3_uri(uri)
    folders, objects = list_prefixes(client, uri, page_size=page_size)

    def list_folder(folder: str) -> list[ObjectInfo]:
        with _translated("list", f"s3://{bucket}/{folder}"):
            return _objects_in(_pages(client, bucket, folder, None, page_size))

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(folders)))) as pool:
        for found in pool.map(list_folder, folders):
            objects.extend(found)
    return sorted(objects, key=lambda info: info.key)


def ensure_bucket(client: Any, bucket: str) -> None:
    """Create `bucket` unless it exists already (and is ours)."""
    uri = f"s3://{bucket}"
    try:
        with _translated_transport("check bucket", uri):
            client.head_bucket(Bucket=bucket)
        return
    except ClientError as error:
        if _reason(error) not in {"NoSuchKey", "NoSuchBucket"}:
            with _translated("check bucket", uri):
                raise
    with _translated("create bucket", uri):
        try:
            client.create_bucket(Bucket=bucket)
        except ClientError as error:
            if _reason(error) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise


def upload_file(client: Any, path: str | Path, uri: str) -> None:
    """Upload the local file `path` to the object `uri`."""
    bucket, key = parse_s3_uri(uri)
    if not Path(path).is_file():
        raise StorageError(f"cannot upload {path} to {uri}: no such file", uri=uri,
                           reason="NoSuchFile")
    with _translated("upload to", uri):
        client.upload_file(str(path), bucket, key)


def upload_bytes(client: Any, data: bytes, uri: str) -> None:
    """Write `data` to the object `uri`, replacing it."""
    bucket, key = parse_s3_uri(uri)
    with _translated("write", uri):
        client.put_object(Bucket=bucket, Key=key, Body=data)


def read_bytes(client: Any, uri: str) -> bytes | None:
    """The content of the object `uri`, or None when the object does not exist.

    A missing bucket is still an error: it means the URI is wrong, not that nothing is there yet.
    """
    bucket, key = parse_s3_uri(uri)
    try:
        with _translated_transport("read", uri):
            response = client.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if _reason(error) == "NoSuchKey":
            return None
        with _translated("read", uri):
            raise
    with _translated("read", uri):
        return response["Body"].read()


def download_file(client: Any, uri: str, path: str | Path) -> Path:
    """Download the object `uri` to `path` (parents created); written atomically."""
    bucket, key = parse_s3_uri(uri)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # NB: a partial file must never be taken for a complete one by a later run, so the download
    # goes to a temporary name and is renamed into place only when it is whole.
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    with _translated("download", uri):
        client.download_file(bucket, key, str(partial))
    partial.replace(target)
    return target


def download_many(
    client: Any, pairs: Sequence[tuple[str, Path]], *, workers: int = DEFAULT_WORKERS
) -> list[Path]:
    """Download each (uri, path) pair concurrently; the first failure is raised."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda pair: download_file(client, pair[0], pair[1]), pairs))


def upload_dir(
    client: Any, local_dir: str | Path, uri: str, *, workers: int = DEFAULT_WORKERS
) -> int:
    """Upload every file under `local_dir` to `uri`, keeping relative paths. Returns the count.

    The bucket is created if missing, so `aimass data upload` works on a fresh server.
    """
    root = Path(local_dir)
    if not root.is_dir():
        raise StorageError(f"cannot upload {root} to {uri}: not a directory", uri=uri,
                           reason="NoSuchFile")
    bucket, _ = parse_s3_uri(uri)
    ensure_bucket(client, bucket)
    files = sorted(path for path in root.rglob("*") if path.is_file())

    def upload(path: Path) -> None:
        upload_file(client, path, join_uri(uri, path.relative_to(root).as_posix()))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(upload, files))
    return len(files)


def delete_prefix(client: Any, uri: str) -> int:
    """Delete every object under the folder `uri`. Returns how many were deleted."""
    bucket, _ = parse_s3_uri(uri)
    keys = [info.key for info in list_objects(client, uri)]
    with _translated("delete under", uri):
        # S3 deletes at most 1000 keys per request.
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": key} for key in keys[start:start + 1000]]
            client.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
    return len(keys)
