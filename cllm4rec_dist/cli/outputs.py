"""Where a command may write: a directory it creates, or one it wrote before; never one that
holds anything else.

Every output directory gets a marker, ``.cllm4rec-output.json`` (the command that wrote it, the
package version). A command refuses an existing directory unless it is empty, or its marker names
this command, or (written before markers existed) it has the layout this command leaves,
``legacy``. A directory written as a whole (an export, predictions) is built in a temporary
sibling and renamed into place; the earlier one (the command's own) is removed only after the
rename. Files outside a command's own directories are never deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from cllm4rec_dist import __version__
from cllm4rec_dist.cli.errors import UserError

MARKER = ".cllm4rec-output.json"
Legacy = Callable[[Path], bool] | None


class OutputError(UserError):
    """An output path the command may not write (it holds what another command or the user put
    there)."""

    traceback_hint = False


def writer_of(path: Path) -> str | None:
    """The command named by ``path``'s marker (None: no readable marker)."""
    try:
        return json.loads((Path(path) / MARKER).read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        return None


def _listing(path: Path) -> str:
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def check_output_dir(path: str | Path, command: str, legacy: Legacy = None) -> None:
    """OutputError unless ``path`` is absent, an empty directory, or ``command``'s own earlier
    output (its marker, or ``legacy(path)`` for a directory without one). Reads only."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise OutputError(f"{path} exists and is not a directory; {command} writes a directory")
    if not any(path.iterdir()):
        return
    writer = writer_of(path)
    if writer == command or (writer is None and legacy is not None and legacy(path)):
        return
    held = f"was written by {writer}" if writer else f"holds files {command} did not write"
    raise OutputError(
        f"{path} {held} ({_listing(path)}); {command} only replaces its own earlier output: "
        "give a new or empty directory"
    )


def mark(path: str | Path, command: str) -> None:
    """Write ``path``'s marker (atomically: a reader sees the old marker or the new one)."""
    tmp = Path(path) / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"command": command, "created_by": f"cllm4rec_dist {__version__}"}))
    os.replace(tmp, Path(path) / MARKER)


def claim_output_dir(path: str | Path, command: str, legacy: Legacy = None) -> Path:
    """``check_output_dir``, then create ``path`` (and its parents) and mark it ``command``'s."""
    check_output_dir(path, command, legacy)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mark(path, command)
    return path


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{suffix}")


def staging_path(path: str | Path) -> Path:
    """The temporary sibling ``begin_staged`` writes ``path``'s new output into (the same name
    on every rank of a launch)."""
    return _sibling(Path(path), "tmp")


def _remove_own(path: Path, command: str, legacy: Legacy) -> None:
    """Remove ``path`` (a leftover of an interrupted write) after checking it is ours."""
    if path.exists():
        check_output_dir(path, command, legacy)
        shutil.rmtree(path)


def begin_staged(path: str | Path, command: str, legacy: Legacy = None) -> Path:
    """An empty, marked temporary sibling of ``path`` to write the new output into (``path``
    itself checked first: absent, empty or ``command``'s). Finish with ``publish``."""
    path = Path(path)
    check_output_dir(path, command, legacy)
    tmp = staging_path(path)
    _remove_own(tmp, command, legacy)
    tmp.mkdir(parents=True)
    mark(tmp, command)
    return tmp


def publish(tmp: Path, path: str | Path, command: str, legacy: Legacy = None) -> Path:
    """Rename the finished ``tmp`` to ``path``; the earlier ``path`` (checked again: ours) is
    moved aside first and removed after, so ``path`` is always either whole output or absent."""
    path = Path(path)
    check_output_dir(path, command, legacy)
    old = _sibling(path, "old")
    _remove_own(old, command, legacy)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(old)
    return path


@contextlib.contextmanager
def staged_dir(path: str | Path, command: str, legacy: Legacy = None) -> Iterator[Path]:
    """``begin_staged`` ... ``publish`` around the block (one process); on an error the
    temporary directory is removed and ``path`` is left as it was."""
    tmp = begin_staged(path, command, legacy)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, path, command, legacy)


def check_output_file(path: str | Path, command: str, own: Callable[[Path], bool]) -> None:
    """OutputError unless the file ``path`` is absent or ``own(path)`` (this command wrote it)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a directory; {command} writes a file there")
    if path.exists() and not own(path):
        raise OutputError(f"{path} exists and was not written by {command}; give a new file name")


def write_output_file(
    path: str | Path, text: str, command: str, own: Callable[[Path], bool]
) -> Path:
    """Write ``text`` to the file ``path`` through a temporary sibling and a rename. An existing
    ``path`` is replaced only when ``own(path)`` says this command wrote it."""
    check_output_file(path, command, own)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
