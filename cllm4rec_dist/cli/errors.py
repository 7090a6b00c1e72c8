"""One line for every mistake: a user error (a bad key or value, a missing or malformed file, an
output the command may not write) prints ``error: <what, naming the key or file>`` once and exits
2; ``CLLM4REC_DEBUG=1`` raises it instead, with its traceback."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

USER_ERROR_EXIT = 2
DEBUG_ENV = "CLLM4REC_DEBUG"
# Lines longer than this are cut: a message quoting a whole file must not flood the terminal.
MAX_CHARS = 600
# Claim files older than this are removed when the next error is reported (see _first_to_report).
_STALE_CLAIM_S = 24 * 3600


class UserError(ValueError):
    """A mistake in what the user handed the command; reported as one line (``report``).
    ``traceback_hint``: whether the line says how to see the traceback (not for a bad config
    value, whose traceback shows nothing the line does not)."""

    traceback_hint = True


def one_line(text: object, limit: int = MAX_CHARS) -> str:
    """``text`` with every run of whitespace (newlines included) as one space, cut at ``limit``."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def debugging() -> bool:
    return bool(os.environ.get(DEBUG_ENV))


def _first_to_report() -> bool:
    """Whether this process prints the launch's error line. One process: always. Ranks of one
    launch (same parent and master port): the first to get here, by an exclusive file create.
    Rank 0 alone would stay silent when only another rank fails (a corrupt shard it alone
    reads), and the launcher then ends rank 0 before it could say anything."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return True
    folder = Path(tempfile.gettempdir()) / f"cllm4rec-errors-{os.getuid()}"
    key = f"{os.getppid()}-{os.environ.get('MASTER_ADDR', '')}-{os.environ.get('MASTER_PORT', '')}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        for old in folder.iterdir():
            with contextlib.suppress(OSError):
                if time.time() - old.stat().st_mtime > _STALE_CLAIM_S:
                    old.unlink()
        os.close(os.open(folder / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    except OSError:  # no usable temp dir: rather twice than never
        return True
    return True


def report(
    message: object, *, code: int = USER_ERROR_EXIT, traceback_hint: bool = True
) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr (once per launch) and exit ``code``."""
    if _first_to_report():
        hint = f" ({DEBUG_ENV}=1 shows the traceback)" if traceback_hint else ""
        print(f"error: {one_line(message)}{hint}", file=sys.stderr, flush=True)
    sys.exit(code)


def describe(err: BaseException) -> str:
    """What a user error says: its message (OSError: its strerror and file, without errno)."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return str(err) or type(err).__name__


@contextlib.contextmanager
def reported(*errors: type[BaseException]) -> Iterator[None]:
    """Run the block; ``UserError`` or one of ``errors`` is reported as one line (exit 2)."""
    try:
        yield
    except (UserError, *errors) as err:
        if debugging():
            raise
        report(describe(err), traceback_hint=getattr(err, "traceback_hint", True))
