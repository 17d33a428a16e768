"""Expected failures as one line that says what to do.

A person who mistypes a path, forgets AWS credentials or names an AWS profile that does not exist,
points at a tampered bundle, keeps logs in a directory another user controls or starts a second run on
a busy output should read one line and know what to change, never a traceback (those are for
bugs; `--debug` prints them anyway). `explain(exc)` returns that line for an expected failure and
None for anything else, so the CLI can tell a user error (exit 2) from a bug (exit 1).

Failures often arrive wrapped: Ray re-raises a task's exception as a RayTaskError (whose text is a
remote traceback), Tune wraps a trial's, and a library raises its own error `from` the cause. The
first expected exception along that chain is the one explained.
"""

from __future__ import annotations

from collections.abc import Iterator

CREDENTIALS_HINT = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and AWS_ENDPOINT_URL for "
                    "an S3-compatible store")
_ACCESS_CODES = {"AccessDenied", "Forbidden", "403", "AllAccessDisabled", "AccountProblem"}
_REFUSED_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"}
_MISSING_CODES = {"NoSuchBucket", "NoSuchKey", "404", "NotFound"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else ""
    return line or type(exc).__name__


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """exc, then what it wraps: Ray's `cause`, then __cause__/__context__ (each once)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        inner = getattr(exc, "cause", None)
        exc = inner if isinstance(inner, BaseException) else exc.__cause__ or exc.__context__


def _botocore(exc: BaseException) -> str | None:
    try:
        from botocore import exceptions as bex  # noqa: PLC0415
    except ImportError:  # pragma: no cover - botocore comes with s3fs
        return None
    if isinstance(exc, bex.ProfileNotFound):
        return (f"AWS profile {exc.kwargs.get('profile', '?')!r} not found: set AWS_PROFILE to a profile of "
                f"your AWS config (`aws configure list-profiles`), or unset it")
    if isinstance(exc, (bex.ConfigNotFound, bex.ConfigParseError, bex.InvalidConfigError)):
        return f"unusable AWS configuration ({_first_line(exc)}): check AWS_CONFIG_FILE and ~/.aws/config"
    if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError, bex.CredentialRetrievalError)):
        return f"no usable AWS credentials ({_first_line(exc)}): {CREDENTIALS_HINT}"
    if isinstance(exc, bex.EndpointConnectionError):
        return f"cannot reach the S3 endpoint ({_first_line(exc)}): check AWS_ENDPOINT_URL and the network"
    if isinstance(exc, bex.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _REFUSED_CODES:
            return f"the S3 store refused the AWS credentials ({code}): {CREDENTIALS_HINT}"
        if code in _ACCESS_CODES:
            return f"access denied by S3 ({_first_line(exc)}): use credentials that may read and write these URIs"
        if code in _MISSING_CODES:
            return f"not found on S3 ({_first_line(exc)}): check the bucket and the path"
    return None


def _one(exc: BaseException) -> str | None:
    from labeler.io.lease import LeaseHeldError  # noqa: PLC0415
    from labeler.runtime.private_dir import UnsafePathError  # noqa: PLC0415

    message = _botocore(exc)
    if message:
        return message
    if isinstance(exc, UnsafePathError):  # already one line naming the path and the fix
        return _first_line(exc)
    if isinstance(exc, LeaseHeldError):
        return f"{_first_line(exc)} (wait for that run, or label into another --output)"
    if isinstance(exc, FileNotFoundError):
        line = _first_line(exc)
        path = exc.filename or (line if " " not in line else None)
        if path and (line == str(path) or line.startswith("[Errno")):
            return f"not found: {path} (check the path)"
        return line if "not found" in line.lower() else f"not found: {line}"
    if isinstance(exc, PermissionError):
        line = _first_line(exc)
        if exc.filename:
            line = f"{exc.filename}: {exc.strerror or line}"
        return (f"permission denied: {line} (check that you may read the input and write the output; "
                f"on S3, the credentials' rights)")
    if isinstance(exc, (IsADirectoryError, NotADirectoryError)):
        return f"{_first_line(exc)} (a file was expected where there is a folder, or the other way round)"
    if isinstance(exc, ValueError):  # SchemaError, BundleError, ArrowInvalid, bad arguments
        return _first_line(exc)
    return None


def explain(exc: BaseException) -> str | None:
    """One line for an expected failure (anywhere in exc's chain), None for a bug."""
    for inner in _chain(exc):
        message = _one(inner)
        if message:
            return message
    return None
