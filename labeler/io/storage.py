"""One way to open a URI: a local path, file://, s3:// or memory://.

This is the only module that knows about s3fs. Everything else asks for a filesystem and a path,
or for bytes, Parquet tables and file objects by URI. S3 honours AWS_ENDPOINT_URL (for an S3-API
server such as MinIO or the tests' moto server) and the usual AWS credential chain (environment,
profile, instance profile); credentials are never logged or written anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

_S3_PREFIXES = ("s3://", "s3a://")
# Libraries whose debug logs print request headers, signed URLs or credentials (botocore logs the
# access key id and session token at DEBUG): capped at WARNING even under `labeler -v`.
CREDENTIAL_LOGGERS = ("botocore", "boto3", "aiobotocore", "s3fs", "fsspec", "urllib3", "s3transfer")


class StorageError(ValueError):
    """A URI this project refuses to open (the message never repeats a credential)."""


def quiet_credential_loggers(level: int = logging.WARNING) -> None:
    """Cap the loggers that can print credentials, whatever the root logger's level."""
    for name in CREDENTIAL_LOGGERS:
        logging.getLogger(name).setLevel(level)


def check_uri(uri: str) -> str:
    """`uri` unless it carries userinfo (`s3://key:secret@bucket/...`): credentials come from the AWS
    chain (environment, profile, instance role), never from a URI that ends up in logs and records."""
    if _has_userinfo(uri):
        raise StorageError(f"refusing {describe(uri)}: a URI must not carry credentials (user:secret@); "
                           "use the AWS credential chain (AWS_PROFILE, environment, instance role)")
    return uri


def _has_userinfo(uri: str) -> bool:
    """user@host, or user:secret@host where the secret may hold '/' (AWS secret keys do); an '@' in a
    plain path ("s3://bucket/artist@live.mp3") is no credential."""
    if "://" not in uri:
        return False
    userinfo, at, _ = uri.split("://", 1)[1].partition("@")
    return bool(at) and ("/" not in userinfo or ":" in userinfo)


def safe_join(root: Path, relative: str) -> Path:
    """`root / relative` for a relative POSIX name with no '', '.', '..' or absolute parts, inside `root`."""
    parts = relative.split("/")
    if not relative or relative.startswith("/") or "\\" in relative or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"unsafe relative path {relative[:80]!r}")
    target = root.joinpath(*parts)
    if os.path.commonpath([os.path.abspath(root), os.path.abspath(target)]) != os.path.abspath(root):
        raise StorageError(f"unsafe relative path {relative[:80]!r}")
    return target


def is_s3(uri: str) -> bool:
    return uri.startswith(_S3_PREFIXES)


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def strip_scheme(uri: str) -> str:
    """The path part of a URI as its filesystem wants it ('bucket/key' for S3, an absolute path locally)."""
    for prefix in (*_S3_PREFIXES, "memory://"):
        if uri.startswith(prefix):
            return uri[len(prefix):] if prefix != "memory://" else "/" + uri[len(prefix):].lstrip("/")
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return os.path.abspath(os.path.expanduser(uri))


def absolute_uri(uri: str) -> str:
    """Local paths become absolute (Ray workers do not share the driver's working directory);
    a URI with credentials in it is refused here, where every job's URIs first arrive."""
    check_uri(uri)
    if is_remote(uri):
        return uri
    return strip_scheme(uri)


def join(uri: str, *parts: str) -> str:
    if is_remote(uri):
        return uri.rstrip("/") + "/" + posixpath.join(*parts)
    return os.path.join(uri, *parts)


def _s3_options() -> dict:
    """s3fs options from the environment; keys themselves stay with botocore's credential chain."""
    options: dict = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["client_kwargs"] = {"region_name": region}
    return options


def fsspec_filesystem(uri: str) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem that serves `uri` (s3fs for s3://, local otherwise); refuses userinfo."""
    check_uri(uri)
    if is_s3(uri):
        import s3fs  # noqa: PLC0415 - only this module touches s3fs

        return s3fs.S3FileSystem(**_s3_options())
    if uri.startswith("memory://"):
        return fsspec.filesystem("memory")
    return fsspec.filesystem("file")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, for pyarrow and Ray Data readers and writers."""
    fs = fsspec_filesystem(uri)
    if isinstance(fs, fsspec.implementations.local.LocalFileSystem):
        return pafs.LocalFileSystem(), strip_scheme(uri)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), strip_scheme(uri)


def open_file(uri: str, mode: str = "rb") -> IO[bytes]:
    """A seekable file object (soundfile seeks inside it to decode only the chorus window)."""
    fs = fsspec_filesystem(uri)
    return fs.open(strip_scheme(uri), mode)


def exists(uri: str) -> bool:
    return fsspec_filesystem(uri).exists(strip_scheme(uri))


def size(uri: str) -> int:
    return int(fsspec_filesystem(uri).size(strip_scheme(uri)))


def tree_size(uri: str) -> int:
    """Bytes of every file under `uri` (a folder) or of `uri` itself (a file); 0 when it does not exist."""
    fs = fsspec_filesystem(uri)
    path = strip_scheme(uri)
    return int(fs.du(path, total=True)) if fs.exists(path) else 0


def modified(uri: str) -> datetime:
    """The modification time of a file, in UTC (lease files that cannot be read expire by it)."""
    value = fsspec_filesystem(uri).modified(strip_scheme(uri))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def read_bytes(uri: str) -> bytes:
    with open_file(uri, "rb") as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    makedirs(parent(uri))
    with open_file(uri, "wb") as f:
        f.write(data)


def create_exclusive(uri: str, data: bytes) -> bool:
    """Write a new file only if none exists at `uri`, atomically; False when one already does.

    Locally with O_CREAT|O_EXCL (fsspec's local "create" mode checks, then writes: not atomic); on S3
    with a conditional PutObject (If-None-Match: *), which S3 and its test server refuse with 412 when
    the key exists; in memory:// with an exclusive open. Used for leases that must have one winner.
    """
    makedirs(parent(uri))
    if is_remote(uri):
        try:
            fsspec_filesystem(uri).pipe_file(strip_scheme(uri), data, mode="create")
        except FileExistsError:
            return False
        return True
    try:
        fd = os.open(strip_scheme(uri), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def read_text(uri: str, encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def parent(uri: str) -> str:
    if is_remote(uri):
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://{posixpath.dirname(rest.rstrip('/'))}"
    return os.path.dirname(strip_scheme(uri))


def makedirs(uri: str) -> None:
    """Create a directory (a no-op on S3, which has no directories)."""
    if not uri or is_s3(uri):
        return
    fsspec_filesystem(uri).makedirs(strip_scheme(uri), exist_ok=True)


def listdir(uri: str) -> list[str]:
    """Full URIs of the entries directly under `uri` (empty when it does not exist)."""
    fs = fsspec_filesystem(uri)
    path = strip_scheme(uri)
    if not fs.exists(path):
        return []
    names = fs.ls(path, detail=False)
    return [_to_uri(uri, name) for name in sorted(names)]


def _to_uri(base_uri: str, fs_path: str) -> str:
    if is_s3(base_uri):
        return "s3://" + fs_path.lstrip("/")
    if base_uri.startswith("memory://"):
        return "memory://" + fs_path.lstrip("/")
    if base_uri.startswith("file://"):
        return "file://" + fs_path
    return fs_path


def remove(uri: str, recursive: bool = False) -> None:
    """Delete a file (or a directory, with recursive); a no-op when it does not exist.

    Local directories go through shutil, not fsspec: fsspec's local rm calls os.getcwd(), which raises
    once the job's working directory is gone (Ray may remove a `--working-dir` job's copy).
    """
    if not is_remote(uri):
        path = strip_scheme(uri)
        if os.path.isdir(path) and not os.path.islink(path):
            if not recursive:
                raise IsADirectoryError(f"{path} is a directory; pass recursive=True")
            shutil.rmtree(path, ignore_errors=False, onerror=_gone_is_fine)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        return
    fs = fsspec_filesystem(uri)
    path = strip_scheme(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def _gone_is_fine(function, path, exc_info) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):  # removed meanwhile by someone else: the goal is met
        raise exc_info[1]


def move(src: str, dst: str) -> None:
    """Rename within one filesystem (atomic locally; copy+delete on S3)."""
    fs = fsspec_filesystem(src)
    fs.mv(strip_scheme(src), strip_scheme(dst), recursive=True)


def read_parquet(uri: str, columns: Iterable[str] | None = None, filters: list | None = None) -> pa.Table:
    """A Parquet file or a directory of Parquet files, as one table (rows kept by pyarrow's `filters`, if any)."""
    fs, path = filesystem(uri)
    return pq.read_table(path, filesystem=fs, columns=list(columns) if columns is not None else None, filters=filters)


def read_parquet_schema(uri: str) -> pa.Schema:
    """The schema without reading the data, for validation before any work starts."""
    fs, path = filesystem(uri)
    return pq.ParquetDataset(path, filesystem=fs).schema


def write_parquet(table: pa.Table, uri: str) -> None:
    makedirs(parent(uri))
    fs, path = filesystem(uri)
    pq.write_table(table, path, filesystem=fs)


def describe(uri: str) -> str:
    """A URI fit for logs: never holds credentials (URIs with user:password@ are masked)."""
    if _has_userinfo(uri):
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.partition('@')[2]}"
    return uri
