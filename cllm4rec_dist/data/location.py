"""Where a prepared dataset lives, and opening its files: a local directory, an ``http(s)://``
URL, or a webdataset ``pipe:`` command.

Files are read as streams through webdataset's I/O (``webdataset.gopen``): a ``pipe:`` command by
``gopen`` itself, an ``http(s)://`` URL by ``curl`` under gopen's ``Pipe``, with the bounds its
own curl command lacks (it retries 30 times and never times out a stalled transfer): a connect
timeout, a stall timeout and a few retries (``HttpOptions``), so a server that is down or slow
ends in one ``RemoteReadError`` line naming the URL and curl's reason, never in a hang. Local
files are plain ``open``.

A ``pipe:`` location is a shell command with ``{}`` where a file's path inside the dataset goes,
e.g. ``pipe:aws s3 cp s3://bucket/catalog/{} -``; it runs in the user's shell (the user's command,
so it is the user's to bound), and a non-zero exit is a ``RemoteReadError`` too.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from webdataset.gopen import Pipe, gopen

HTTP_PREFIXES = ("http://", "https://")
PIPE_PREFIX = "pipe:"
PIPE_SLOT = "{}"
_BUFFER = 1 << 20
# curl's status when we stop reading early (SIGPIPE, "failed writing body"): not an error.
_EARLY_CLOSE = [141, 23]


class RemoteReadError(OSError):
    """A remote file could not be read (server down, slow, an HTTP error, a failed command)."""


@dataclass(frozen=True)
class HttpOptions:
    """Bounds on one http(s) read: curl gives up on a connection after ``connect_timeout_s``
    and on a transfer that moves no byte for ``stall_timeout_s``, and retries transient
    failures (refused or timed-out connections, HTTP 408/429/5xx) ``retries`` times,
    ``retry_delay_s`` apart. Worst case before the error: about
    (retries + 1) x (connect + stall) + retries x delay seconds."""

    connect_timeout_s: float = 10.0
    stall_timeout_s: float = 60.0
    retries: int = 3
    retry_delay_s: float = 1.0

    def curl(self, url: str) -> list[str]:
        return [
            "curl", "--fail", "--silent", "--show-error", "--location",
            "--connect-timeout", f"{self.connect_timeout_s:g}",
            "--speed-limit", "1", "--speed-time", f"{max(1, round(self.stall_timeout_s))}",
            "--retry", str(self.retries), "--retry-delay", f"{max(0, round(self.retry_delay_s))}",
            "--retry-connrefused", url,
        ]  # fmt: skip

    @property
    def bound_s(self) -> float:
        """Longest a read can take to fail: the wait for curl's exit is bounded by it."""
        per_try = self.connect_timeout_s + self.stall_timeout_s + self.retry_delay_s
        return (self.retries + 1) * per_try + 10


DEFAULT_HTTP = HttpOptions()


def is_remote(location: str | Path) -> bool:
    """True for an http(s) URL or a pipe: command."""
    return str(location).startswith((*HTTP_PREFIXES, PIPE_PREFIX))


def normalize(location: str | Path) -> str:
    """The canonical form of a dataset location: an absolute local path, a URL without its
    trailing slash, or a pipe: command (which must hold ``{}``)."""
    text = str(location)
    if text.startswith(PIPE_PREFIX):
        if PIPE_SLOT not in text:
            raise ValueError(
                f"{text}: a pipe: dataset location needs {PIPE_SLOT} where a file's path inside "
                "the dataset goes, e.g. 'pipe:aws s3 cp s3://bucket/catalog/{} -'"
            )
        return text
    if text.startswith(HTTP_PREFIXES):
        return text.rstrip("/")
    return str(Path(text).expanduser().resolve())


def join(location: str | Path, relative: str) -> str:
    """The address of ``relative`` (a path inside the dataset) at ``location``."""
    base = normalize(location)
    if base.startswith(PIPE_PREFIX):
        return base.replace(PIPE_SLOT, relative)
    if base.startswith(HTTP_PREFIXES):
        return f"{base}/{relative}"
    return str(Path(base) / relative)


def local_dir(location: str | Path, needs: str) -> Path:
    """``location`` as a local directory, for what only works on local files (``needs`` says
    what); a ValueError saying so for a URL or a pipe: command."""
    if is_remote(location):
        raise ValueError(f"{location}: {needs} needs a local dataset directory, not a URL or pipe:")
    return Path(normalize(location))


@contextmanager
def open_stream(address: str, http: HttpOptions = DEFAULT_HTTP) -> Iterator[BinaryIO]:
    """A readable binary stream of one file (a local path, an http(s) URL or a pipe: command,
    as ``join`` gives it). On leaving the block the command's exit status is checked: a failed
    read raises RemoteReadError, also when the reader stopped on the truncated data it got (the
    network's reason comes first). A missing local file is FileNotFoundError."""
    if not is_remote(address):
        with open(address, "rb") as f:
            yield f
        return
    if address.startswith(PIPE_PREFIX):
        pipe = gopen(address, "rb", bufsize=_BUFFER)
    else:
        pipe = Pipe(
            http.curl(address),
            mode="rb",
            bufsize=_BUFFER,
            ignore_status=_EARLY_CLOSE,
            stderr=subprocess.PIPE,
        )
    try:
        yield _Checked(pipe, address)
    except BaseException as err:
        _finish(pipe, address, http, cause=err)
        raise
    _finish(pipe, address, http)


def read_bytes(address: str, http: HttpOptions = DEFAULT_HTTP) -> bytes:
    """All bytes of one file (see ``open_stream``)."""
    with open_stream(address, http) as stream:
        return stream.read()


class _Checked:
    """The pipe's stream, with its status errors turned into RemoteReadError."""

    def __init__(self, pipe: Pipe, address: str):
        self.pipe, self.address = pipe, address

    def read(self, size: int = -1) -> bytes:
        try:
            return self.pipe.read(size)
        except OSError as err:
            raise _error(self.pipe, self.address) from err


def _finish(pipe: Pipe, address: str, http: HttpOptions, cause: BaseException | None = None):
    """Close the stream and check how the command ended. After a failure of ours (``cause``)
    the command's outcome matters only if it explains that failure: one still running is
    stopped."""
    pipe.stream.close()
    try:
        status = pipe.proc.wait(timeout=2 if cause is not None else http.bound_s)
    except subprocess.TimeoutExpired:
        pipe.proc.kill()
        pipe.proc.wait()
        if cause is not None:
            return
        raise _error(pipe, address, f"no exit after {http.bound_s:.0f} s") from None
    if status in pipe.ignore_status or isinstance(cause, RemoteReadError):
        return
    raise _error(pipe, address) from cause


def _error(pipe: Pipe, address: str, reason: str | None = None) -> RemoteReadError:
    """One line: the address and what curl (or the command) said."""
    if reason is None:
        status = pipe.proc.wait()
        said = pipe.proc.stderr.read().decode(errors="replace") if pipe.proc.stderr else ""
        lines = [line.strip() for line in said.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {status}"
    shown = f"'{address}'" if address.startswith(PIPE_PREFIX) else address
    return RemoteReadError(f"{shown}: cannot read: {reason}")
