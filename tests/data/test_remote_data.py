"""A prepared dataset read from a URL (``python -m http.server`` on 127.0.0.1) or a ``pipe:``
command gives what the local directory gives; its digests are still checked; a server that is
down or stalls ends in one clear error within the bounds, never a hang; what needs local files
says so."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bench.harness import serve_directory
from cllm4rec_dist.data import location
from cllm4rec_dist.data.cold import cold_item_texts, cold_user_rows
from cllm4rec_dist.data.id_maps import raw_ids_by_index
from cllm4rec_dist.data.location import HttpOptions, RemoteReadError
from cllm4rec_dist.data.manifest import ManifestError, load_manifest
from cllm4rec_dist.data.samples import ShardError, read_blocks, verify_shards
from cllm4rec_dist.data.shards import iter_rows
from data_prep.presets import TINY_CATALOG, prepare_dataset

COLD = ["split.cold_item_fraction=0.2", "split.cold_user_fraction=0.15"]


@pytest.fixture(scope="module")
def cold_dataset(tmp_path_factory) -> Path:
    """The tiny catalog with cold items and users (so cold/ parts exist)."""
    return prepare_dataset(tmp_path_factory.mktemp("remote") / "data", [*TINY_CATALOG, *COLD])


@pytest.fixture(scope="module")
def url(cold_dataset) -> str:
    with serve_directory(cold_dataset) as base:
        yield base + "/"  # a trailing slash is allowed


def _rows(data_dir, corpus: str) -> list[dict]:
    return list(iter_rows(data_dir, corpus, rank=1, world_size=2, epoch=3, seed=5))


def _same_rows(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_url_and_pipe_read_what_the_directory_holds(cold_dataset, url):
    local = load_manifest(cold_dataset)
    for remote in (url, f"pipe:cat {cold_dataset}/{{}}"):
        manifest = load_manifest(remote)
        assert manifest.sha256 == local.sha256 and manifest.corpora == local.corpora
        assert manifest.tokenizer_json() == local.tokenizer_json()
        for corpus in ("collaborative", "content", "recommendation"):
            _same_rows(_rows(remote, corpus), _rows(cold_dataset, corpus))
        for kind in ("users", "items"):
            assert raw_ids_by_index(remote, kind).equals(raw_ids_by_index(cold_dataset, kind))
    assert cold_item_texts(url).num_rows > 0
    assert cold_item_texts(url).equals(cold_item_texts(cold_dataset))
    _same_rows(cold_user_rows(url), cold_user_rows(cold_dataset))
    assert verify_shards(url, count_rows=True) == []


def test_shard_digest_is_checked_as_it_streams(cold_dataset, tmp_path):
    shard = load_manifest(cold_dataset).corpus("recommendation").shards[1]
    broken = tmp_path / "broken.tar"
    data = bytearray((cold_dataset / shard.path).read_bytes())
    data[700] ^= 0xFF  # inside a member: the tar still parses
    broken.write_bytes(bytes(data))
    with serve_directory(tmp_path) as base:
        blocks = read_blocks(location.join(base, "broken.tar"), shard.sha256)
        with pytest.raises(ShardError, match="sha256 differs from the manifest's"):
            next(blocks)  # nothing of the shard is yielded before its digest matched


def test_server_down_is_one_line_after_bounded_retries(cold_dataset):
    with serve_directory(cold_dataset) as base:
        pass  # started and stopped: nothing listens on its port now
    start = time.monotonic()
    with pytest.raises(RemoteReadError) as err:
        load_manifest(base)
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert "\n" not in message and f"{base}/manifest.json: cannot read" in message
    assert "Failed to connect" in message


@pytest.fixture
def stalled_url():
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held, stop = [], threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_stalled_server_times_out(stalled_url):
    bounds = HttpOptions(connect_timeout_s=2, stall_timeout_s=1, retries=1, retry_delay_s=0)
    start = time.monotonic()
    with pytest.raises(RemoteReadError, match=r"manifest\.json: cannot read: curl: \(28\)"):
        location.read_bytes(location.join(stalled_url, "manifest.json"), bounds)
    assert time.monotonic() - start < bounds.bound_s


def test_missing_file_and_bad_locations(url, cold_dataset):
    with pytest.raises(RemoteReadError, match="404"):
        load_manifest(url + "nowhere")
    with pytest.raises(ManifestError, match=r"needs \{\} where a file's path"):
        load_manifest(f"pipe:cat {cold_dataset}/manifest.json")
    with pytest.raises(ValueError, match="id_maps_from .* needs a local dataset directory"):
        location.local_dir(url, "id_maps_from (growing a catalog)")
