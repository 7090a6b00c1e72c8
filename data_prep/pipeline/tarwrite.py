"""Deterministic WebDataset tar bytes: fixed member metadata, members in the given order."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable

import numpy as np


def npy_bytes(array: np.ndarray) -> bytes:
    """The ``.npy`` encoding of ``array`` (what webdataset's default decoder reads back)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def json_bytes(value: object) -> bytes:
    """Compact UTF-8 JSON of ``value``."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def tar_bytes(samples: Iterable[tuple[str, list[tuple[str, bytes]]]]) -> bytes:
    """A tar archive of samples: (key, [(extension, data), ...]) -> ``key.extension`` members.

    mtime, uid/gid, user/group names and mode are fixed, so equal samples give equal bytes.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for extension, data in members:
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                info.mtime = 0
                info.mode = 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
