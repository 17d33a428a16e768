"""Per-user private state: directories only this user may change, files opened without following links.

The project keeps state between runs that another user of the machine must not control: the numba
JIT cache (numba unpickles its index files, so a planted file runs code) and the session logs (a
redirected log leaks tracebacks and can overwrite a file of the attacker's choosing). Both live in
a directory given by `private_dir()`, and every file in them is opened with `open_private()`.

Contract of `private_dir(path)`:

- A missing directory is created (parents as needed), the last component with mode 0700.
- The directory is then refused (UnsafePathError, a one-line message naming it and the fix) unless:
  the path itself is not a symbolic link; it is a directory; its owner is this process's effective
  user; its mode gives group and others nothing (0700 or stricter). Every directory above it (after
  resolving links) must be owned by this user or root and be writable by no one else unless it has
  the sticky bit (as `/tmp` has), so no other user can swap it for another after the check.
- It returns the resolved absolute path: callers build file paths from that, never from the
  path they were given.

`open_private(path)` opens (creating, mode 0600) a regular file owned by this user in such a
directory, never following a symbolic link at its name (O_NOFOLLOW): a link there is refused.

`cache_home()` and `state_home()` are the usual per-user homes (XDG base directories):
`$XDG_CACHE_HOME/mood-labeler` else `~/.cache/mood-labeler`, and `$XDG_STATE_HOME/mood-labeler` else
`~/.local/state/mood-labeler`; a relative XDG value is ignored, as the XDG specification says. A
process without a home directory uses `<tmp>/mood-labeler-<uid>` instead of `~`: a predictable name,
so it is safe only because private_dir() refuses it when someone else made it first.
"""

from __future__ import annotations

import os
import pwd
import stat
import tempfile

APP = "mood-labeler"


class UnsafePathError(OSError):
    """A directory or file that another user could control; str() is one line naming it and the fix."""


def _home(var: str, fallback: tuple[str, ...]) -> str:
    value = os.environ.get(var, "")
    if os.path.isabs(value):
        return os.path.join(value, APP)
    home = os.path.expanduser("~")
    if not os.path.isabs(home):  # no home directory at all: a per-user folder in the temporary directory
        home = os.path.join(tempfile.gettempdir(), f"{APP}-{os.geteuid()}")
    return os.path.join(home, *fallback, APP)


def cache_home() -> str:
    """`$XDG_CACHE_HOME/mood-labeler`, else `~/.cache/mood-labeler` (not created here)."""
    return _home("XDG_CACHE_HOME", (".cache",))


def state_home() -> str:
    """`$XDG_STATE_HOME/mood-labeler`, else `~/.local/state/mood-labeler` (not created here)."""
    return _home("XDG_STATE_HOME", (".local", "state"))


def _who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:  # a uid without a name
        return f"uid {uid}"


def _refuse(path: str, reason: str, what: str, hint: str) -> UnsafePathError:
    return UnsafePathError(f"refusing {what} {path}: {reason}; {hint}")


def private_dir(path: str | os.PathLike, what: str = "private directory",
                hint: str = "use a directory only you can write (mode 0700)") -> str:
    """Create if missing and check `path` as the module docstring says; return its resolved absolute path.

    `what` names the directory in the error ("log directory"), `hint` says how to fix it.
    Raises UnsafePathError when the checks fail, and the OSError of mkdir when it cannot be created.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    uid = os.geteuid()
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, "it is a symbolic link", what, hint)
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "it is not a directory", what, hint)
    if st.st_uid != uid:
        raise _refuse(path, f"it belongs to {_who(st.st_uid)}, not to you ({_who(uid)})", what, hint)
    if st.st_mode & 0o077:
        raise _refuse(path, f"other users have access to it (mode {stat.S_IMODE(st.st_mode):04o}, "
                            f"needs 0700: chmod 700 it)", what, hint)
    real = os.path.realpath(path)
    parent = os.path.dirname(real)
    while True:
        pst = os.stat(parent)
        if pst.st_uid not in (uid, 0):
            raise _refuse(path, f"{parent} above it belongs to {_who(pst.st_uid)}", what, hint)
        if pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX:
            raise _refuse(path, f"other users may write to {parent} above it "
                                f"(mode {stat.S_IMODE(pst.st_mode):04o}, no sticky bit)", what, hint)
        above = os.path.dirname(parent)
        if above == parent:
            return real
        parent = above


def open_private(path: str | os.PathLike, flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """A descriptor for `path` (created with mode 0600), opened without following a symbolic link.

    `path` must be in a directory checked by private_dir(). A link, a non-regular file or a file of
    another user at that name is refused (UnsafePathError); the caller owns the descriptor.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafePathError(f"refusing {path}: it is a symbolic link (not followed; remove it)") from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafePathError(f"refusing {path}: not a regular file of yours (remove it)")
    return fd
