"""Deterministic WebDataset tar bytes (webdataset's TarWriter with fixed member metadata) and the
member encodings our shards use."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable

import numpy as np
from webdataset.writer import TarWriter


def npy_bytes(array: np.ndarray) -> bytes:
    """The ``.npy`` encoding of ``array`` (what webdataset's default decoder reads back)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def json_bytes(value: object) -> bytes:
    """Compact UTF-8 JSON of ``value``."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def tar_bytes(samples: Iterable[tuple[str, list[tuple[str, bytes]]]]) -> bytes:
    """A tar archive of samples: (key, [(extension, data), ...]) -> ``key.extension`` members,
    written by webdataset's TarWriter (USTAR; a sample's members in extension order).

    mtime, uid/gid, user/group names and mode are fixed, so equal samples give equal bytes.
    """
    buf = io.BytesIO()
    with TarWriter(buf, user="", group="", mode=0o644, mtime=0, encoder=False) as sink:
        for key, members in samples:
            sink.write({"__key__": key, **dict(members)})
    return buf.getvalue()
