"""S3 helpers against a real SeaweedFS server: listing, transfers and errors that name the URI."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from botocore.stub import Stubber

from aimass import storage
from aimass.storage import StorageError


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/a/b.png", ("bucket", "a/b.png")),
        ("s3://bucket/prefix/", ("bucket", "prefix/")),
        ("s3://bucket", ("bucket", "")),
    ],
)
def test_an_s3_uri_splits_into_bucket_and_key(uri: str, expected: tuple[str, str]) -> None:
    assert storage.parse_s3_uri(uri) == expected


@pytest.mark.parametrize("uri", ["http://bucket/key", "bucket/key", "s3:///key"])
def test_a_uri_that_is_not_s3_is_rejected_by_name(uri: str) -> None:
    with pytest.raises(StorageError, match="URI") as caught:
        storage.parse_s3_uri(uri)
    assert caught.value.uri == uri


def test_join_uri_puts_exactly_one_slash_between_parts() -> None:
    assert storage.join_uri("s3://b/out/", "/checkpoints/", "epoch-1") == (
        "s3://b/out/checkpoints/epoch-1"
    )


def test_an_uploaded_folder_is_listed_in_full_with_sizes_and_etags(
    client: object, bucket: str, tmp_path: Path
) -> None:
    for folder in ["a", "b", "c"]:
        (tmp_path / folder / "deep").mkdir(parents=True)
        (tmp_path / folder / "one.bin").write_bytes(b"1")
        (tmp_path / folder / "deep" / "two.bin").write_bytes(b"22")
    (tmp_path / "top.txt").write_bytes(b"top")

    count = storage.upload_dir(client, tmp_path, f"s3://{bucket}/data")
    listed = storage.list_objects(client, f"s3://{bucket}/data")

    assert count == 7
    assert [info.key for info in listed] == sorted(
        ["data/top.txt"]
        + [f"data/{f}/one.bin" for f in "abc"]
        + [f"data/{f}/deep/two.bin" for f in "abc"]
    )
    assert {info.size for info in listed if info.key.endswith("two.bin")} == {2}
    assert all(info.etag and '"' not in info.etag for info in listed)


def test_listings_longer_than_one_page_are_followed_to_the_end(
    client: object, bucket: str
) -> None:
    keys = [f"ds/{folder}/{n}.png" for folder in ("a", "b") for n in range(5)] + ["ds/x.txt"]
    for key in keys:
        storage.upload_bytes(client, b"x", f"s3://{bucket}/{key}")
    requests: list[str] = []
    client.meta.events.register(
        "before-call.s3.ListObjectsV2", lambda **_: requests.append("list")
    )

    listed = storage.list_objects(client, f"s3://{bucket}/ds", page_size=2)

    assert [info.key for info in listed] == sorted(keys)
    # Two pages for the top level (a/, b/, x.txt), three for each folder of five.
    assert len(requests) == 8


def test_listing_a_prefix_does_not_match_its_longer_siblings(client: object, bucket: str) -> None:
    storage.upload_bytes(client, b"x", f"s3://{bucket}/train/a/1.png")
    storage.upload_bytes(client, b"x", f"s3://{bucket}/train-extra/a/1.png")

    listed = storage.list_objects(client, f"s3://{bucket}/train")

    assert [info.key for info in listed] == ["train/a/1.png"]


def test_bytes_written_are_read_back_and_a_missing_key_reads_as_none(
    client: object, bucket: str
) -> None:
    storage.upload_bytes(client, b"hello", f"s3://{bucket}/x/labels.json")

    assert storage.read_bytes(client, f"s3://{bucket}/x/labels.json") == b"hello"
    assert storage.read_bytes(client, f"s3://{bucket}/x/absent.json") is None


def test_a_download_leaves_the_whole_file_and_no_partial_one(
    client: object, bucket: str, tmp_path: Path
) -> None:
    storage.upload_bytes(client, b"z" * 1000, f"s3://{bucket}/blob")

    path = storage.download_file(client, f"s3://{bucket}/blob", tmp_path / "sub" / "blob")

    assert path.read_bytes() == b"z" * 1000
    assert [p.name for p in path.parent.iterdir()] == ["blob"]


def test_many_downloads_run_together_and_all_arrive(
    client: object, bucket: str, tmp_path: Path
) -> None:
    pairs = []
    for number in range(20):
        storage.upload_bytes(client, str(number).encode(), f"s3://{bucket}/n/{number}")
        pairs.append((f"s3://{bucket}/n/{number}", tmp_path / f"{number}.txt"))

    storage.download_many(client, pairs, workers=8)

    assert [int(path.read_text()) for _, path in pairs] == list(range(20))


def test_ensure_bucket_creates_once_and_then_leaves_it(client: object, bucket: str) -> None:
    name = f"{bucket}-new"

    storage.ensure_bucket(client, name)
    storage.upload_bytes(client, b"kept", f"s3://{name}/k")
    storage.ensure_bucket(client, name)

    assert storage.read_bytes(client, f"s3://{name}/k") == b"kept"


def test_delete_prefix_removes_only_what_is_under_it(client: object, bucket: str) -> None:
    for key in ["ck/1", "ck/2", "keep/1"]:
        storage.upload_bytes(client, b"x", f"s3://{bucket}/{key}")

    deleted = storage.delete_prefix(client, f"s3://{bucket}/ck")

    assert deleted == 2
    assert [info.key for info in storage.list_objects(client, f"s3://{bucket}")] == ["keep/1"]


def test_a_missing_bucket_is_named_with_what_to_do(client: object) -> None:
    uri = "s3://no-such-bucket-anywhere/train"

    with pytest.raises(StorageError, match="no-such-bucket-anywhere") as caught:
        storage.list_objects(client, uri)

    assert caught.value.reason == "NoSuchBucket"
    assert "create the bucket" in str(caught.value)


def test_an_unreachable_endpoint_names_the_uri_and_the_endpoint_setting(
    monkeypatch: pytest.MonkeyPatch, s3_env: dict[str, str]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    client = storage.make_client()

    with pytest.raises(StorageError, match="s3://data/train") as caught:
        storage.list_objects(client, "s3://data/train")

    assert caught.value.reason == "Unreachable"
    assert "AWS_ENDPOINT_URL" in str(caught.value)


@pytest.mark.parametrize(
    ("call", "uri"),
    [
        (lambda client: storage.ensure_bucket(client, "models"), "s3://models"),
        (lambda client: storage.read_bytes(client, "s3://models/x.json"), "s3://models/x.json"),
    ],
    ids=["ensure_bucket", "read_bytes"],
)
def test_calls_that_inspect_s3_errors_still_report_an_unreachable_endpoint(
    monkeypatch: pytest.MonkeyPatch, s3_env: dict[str, str], call: object, uri: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    client = storage.make_client()

    with pytest.raises(StorageError, match=uri) as caught:
        call(client)  # type: ignore[operator]

    assert caught.value.reason == "Unreachable"


def test_refused_credentials_say_which_variables_to_check(client: object) -> None:
    # NB: the embedded SeaweedFS accepts any key pair, so the refusal is stubbed.
    with Stubber(client) as stub:
        stub.add_client_error(
            "list_objects_v2", service_error_code="AccessDenied", http_status_code=403
        )
        with pytest.raises(StorageError, match="AWS_ACCESS_KEY_ID") as caught:
            storage.list_objects(client, "s3://secret-data/train")

    assert caught.value.reason == "AccessDenied"
    assert caught.value.uri == "s3://secret-data/train"


def test_an_endpoint_in_the_spec_wins_over_the_environment(s3_env: dict[str, str]) -> None:
    from aimass.spec import Storage

    client = storage.make_client(Storage(endpoint="http://objects.example:9000"))

    assert client.meta.endpoint_url == "http://objects.example:9000"
