"""The export: the directory a trained model leaves behind, and the one module that writes,
reads and validates it. A later stage (``stage.init_from``), ``predict``, the inference of new
rows and the serving API (``cllm4rec_dist/api``) load it.

``<export>/``::

    meta.json            ExportMeta: format version, sizes, backbone config, source dataset and
                         its fingerprint, what was inferred into it
    tables/<name>.safetensors   one tensor ``weight`` [rows, dim] fp32 per ID table
    backbone/state.safetensors  the Backbone module's state dict (all modes; ZeRO-3
                         consolidated), when ``backbone_state`` (format 1: ``state.pt``)
    backbone/hf/         a Hugging Face directory of the trained LM (LoRA merged into the base
                         weights), when the backbone is not partitioned by ZeRO-3
    tokenizer/           the word tokenizer (Hugging Face files: tokenizer.json, its config)
    id_maps/{users,items}.parquet   column ``raw_id`` (string), row i = index i
    serving.json         the prompt templates, the document start token, max_items
    seen.safetensors     per user (CSR over the user index): ``history`` = the train items in
                         stored order (the recommendation prompt's input), ``val`` = the
                         validation items; ``unranked`` = items that have no trained row
    README.md            the model card: dataset fingerprint, metrics, how to load

The files from ``tokenizer/`` down (format 2, ``ServingAssets``) are what scoring needs besides
the weights, so an export copied alone loads with ``Recommender.from_pretrained`` and no
dataset directory.

An export is written into a temporary sibling and renamed into place whole (``ExportWriter``,
through ``cli/outputs.py``: marked as the writing command's, and it only ever replaces that
command's own earlier output), so a reader never sees half of one. ``meta.json["dataset"]`` is the fingerprint of the dataset the
model was trained on (``Manifest.fingerprint``): ``load_export`` refuses an export whose counts
do not match the tables it fills, or whose fingerprint is not the current dataset's, unless
``allow_other_dataset`` (then only the counts must match). Nothing here unpickles or runs code
from the directory: tables, seen items and the backbone are safetensors, the rest JSON and
Parquet, the tokenizer a plain ``PreTrainedTokenizerFast``; a format-1 ``state.pt`` loads with
``weights_only=True``. A truncated, corrupt or foreign file is an ``ExportFileError`` naming it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import shutil
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from cllm4rec_dist.cli.outputs import MARKER, Legacy, begin_staged, publish
from cllm4rec_dist.distributed.table_checkpoint import safetensors_problem

if TYPE_CHECKING:
    from cllm4rec_dist.data.manifest import Manifest

log = logging.getLogger(__name__)

# 1: tables, backbone/state.pt, meta.json (meta.json without the field: the same layout).
# 2: backbone/state.safetensors and the serving files (ServingAssets).
FORMAT_VERSION = 2
SERVING_FORMAT = 2  # the first version with the serving files
META = "meta.json"
TABLES = "tables"
TABLE_KEY = "weight"
BACKBONE_STATE = "backbone/state.safetensors"
BACKBONE_STATE_V1 = "backbone/state.pt"
BACKBONE_HF = "backbone/hf"
TOKENIZER = "tokenizer"
ID_MAPS = "id_maps"
SERVING = "serving.json"
SEEN = "seen.safetensors"
SEEN_KEYS = ("history_offsets", "history_items", "val_offsets", "val_items", "unranked")
CARD = "README.md"


class ExportError(ValueError):
    """An export directory that cannot be read: no meta.json, bad JSON, a missing field, or a
    newer format than this code reads. The message names the file."""


class ExportMismatchError(ExportError):
    """The export belongs to another dataset (or backbone) than what it would initialise."""


class ExportFileError(ExportError):
    """A file of the export is truncated, corrupt or not what its name says."""


@dataclass
class ExportMeta:
    """``meta.json``. Keys this code does not know are kept in ``extra`` and written back, so a
    rewrite (``infer``) never drops what a newer writer added."""

    num_users: int | None = None  # None only in an export written by hand (tests)
    num_items: int | None = None
    hidden_size: int | None = None
    vocab_size: int | None = None
    model: dict[str, Any] = field(default_factory=dict)  # the training config's model section
    data_dir: str | None = None
    dataset: dict[str, Any] | None = None  # Manifest.fingerprint of the training dataset
    backbone_state: bool = False
    checkpoint: str | None = None  # the training checkpoint the export was made from
    inferred: list[dict[str, Any]] = field(default_factory=list)  # infer/: rows added later
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        extra = fields.pop("extra")
        if not fields["inferred"]:
            del fields["inferred"]
        return json.dumps({**extra, **fields}, indent=2)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], path: Path) -> ExportMeta:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        raw = {"format_version": 1, **raw}  # written before the field existed: format 1
        meta = cls(
            **{k: v for k, v in raw.items() if k in names},
            extra={k: v for k, v in raw.items() if k not in names},
        )
        if not isinstance(meta.format_version, int) or meta.format_version > FORMAT_VERSION:
            raise ExportError(
                f"{path}: format_version {meta.format_version!r}; this code reads exports up to "
                f"version {FORMAT_VERSION} (made by a newer cllm4rec_dist?)"
            )
        return meta


def read_meta(export_dir: str | Path) -> ExportMeta:
    """The validated ``meta.json`` of ``export_dir`` (ExportError naming the file otherwise)."""
    path = Path(export_dir) / META
    if not path.is_file():
        raise ExportError(f"{path} not found: an export directory holds meta.json")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ExportError(f"{path}: not a JSON object")
    return ExportMeta.from_dict(raw, path)


def is_training_export(path: Path) -> bool:
    """An export a training stage wrote before exports were marked (``cli/outputs.py``): a
    meta.json without the record of inferred rows that infer/ adds."""
    try:
        return "inferred" not in json.loads((Path(path) / META).read_text())
    except (OSError, ValueError, TypeError):
        return False


def table_path(export_dir: str | Path, name: str) -> Path:
    return Path(export_dir) / TABLES / f"{name}.safetensors"


def _opened(path: Path) -> Any:
    """``safe_open`` of an exported table, ExportFileError naming it when it is not whole."""
    problem = safetensors_problem(path)
    if problem:
        raise ExportFileError(problem)
    try:
        return safe_open(str(path), framework="pt")
    except Exception as err:  # safetensors raises its own SafetensorError for a bad header
        raise ExportFileError(f"{path}: unreadable safetensors file ({err})") from None


def table_rows(export_dir: str | Path, name: str) -> int | None:
    """Rows of exported table ``name`` (None when the export has no such file)."""
    path = table_path(export_dir, name)
    if not path.exists():
        return None
    with _opened(path) as f:
        try:
            return f.get_slice(TABLE_KEY).get_shape()[0]
        except Exception as err:  # no tensor "weight": not a table this project exported
            raise ExportFileError(f"{path}: no table `{TABLE_KEY}` ({err})") from None


def read_exported_rows(export_dir: str | Path, name: str, lo: int, hi: int) -> Tensor:
    """Rows [lo, hi) of exported table ``name``, read without loading the rest of it."""
    path = table_path(export_dir, name)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (exported table {name!r})")
    with _opened(path) as f:
        return f.get_slice(TABLE_KEY)[lo:hi]


def read_backbone_state(
    export_dir: str | Path, meta: ExportMeta | None = None
) -> dict[str, Tensor] | None:
    """The exported Backbone state dict (tensors only), or None when the export has none;
    ExportFileError naming the file when it is truncated, corrupt or refused."""
    meta = read_meta(export_dir) if meta is None else meta
    path, old = Path(export_dir) / BACKBONE_STATE, Path(export_dir) / BACKBONE_STATE_V1
    if not meta.backbone_state or not (path.exists() or old.exists()):
        return None
    if path.exists():
        with _opened(path) as f:
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (no __iter__)
    try:
        return torch.load(old, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, refused pickle, ...: torch raises several types
        first = str(err).splitlines()[0] if str(err) else ""
        raise ExportFileError(
            f"{old}: truncated, corrupt or refused backbone state ({type(err).__name__}: {first})"
        ) from None


# --- the serving files (format 2) ------------------------------------------------------------
@dataclass
class ServingAssets:
    """What scoring needs besides the weights: ``PromptBuilder``'s inputs, the raw ids, and per
    user the items of the recommendation prompt and those masked (as ``predict`` masks them:
    history + val, and ``unranked``)."""

    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    templates: dict[str, str]  # PromptBuilder templates ({user} / {item} slots)
    bos_id: int | None
    max_items: int  # the recommendation prompt's item budget (Collator.max_items)
    user_ids: pa.Array  # raw ids, element i = index i
    item_ids: pa.Array
    history: tuple[Tensor, Tensor]  # CSR (offsets [U+1], items) of train items, stored order
    val: tuple[Tensor, Tensor]  # CSR of validation items
    unranked: Tensor  # [n] item indices never recommended (no trained row)


class _CsrRows:
    """Rows of item ids arriving in any user order -> CSR in user order (users without a row
    are empty), holding one flat array per chunk of rows rather than an array per user. A
    list of per-user arrays (views that kept every decoded chunk of the corpus alive, then a
    concatenation) peaked 1.7 GiB above the process's base at 1 M users and 40 M interactions,
    on rank 0 only, which writes the exports (docs/benchmarks.md, "End to end at 1 M users")."""

    CHUNK = 65_536

    def __init__(self, num_users: int):
        self.num_users = num_users
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # users, lengths, flat
        self._users: list[int] = []
        self._rows: list[np.ndarray] = []

    def add(self, user: int, items: np.ndarray) -> None:
        self._users.append(user)
        self._rows.append(items)
        if len(self._rows) >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            lengths = np.fromiter(map(len, self._rows), np.int64, len(self._rows))
            flat = np.concatenate(self._rows).astype(np.int64, copy=False)
            self._chunks.append((np.asarray(self._users, np.int64), lengths, flat))
        self._users, self._rows = [], []

    def build(self) -> tuple[Tensor, Tensor]:
        self._flush()
        counts = np.zeros(self.num_users, np.int64)
        seen = np.zeros(self.num_users, bool)
        for users, lengths, _ in self._chunks:
            if seen[users].any() or np.unique(users).size != users.size:
                raise ValueError("a user has two rows in the recommendation corpus and cold users")
            seen[users] = True
            counts[users] = lengths
        offsets = np.zeros(self.num_users + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        out = np.empty(int(offsets[-1]), np.int64)
        while self._chunks:  # each chunk's rows to their place, freeing the chunk
            users, lengths, flat = self._chunks.pop()
            source = np.cumsum(lengths) - lengths
            out[np.repeat(offsets[users] - source, lengths) + np.arange(flat.size)] = flat
        return torch.from_numpy(offsets), torch.from_numpy(out)


def dataset_assets(
    manifest: Manifest, tokenizer: Any, bos_id: int | None, max_items: int, items_inferred: bool
) -> ServingAssets:
    """The serving files of a prepared dataset (one pass over its recommendation corpus; the
    cold users' histories from ``cold/users``, as ``predict.users=cold`` reads them). Cold items
    are ``unranked`` unless their rows were inferred (``items_inferred``). Cached per dataset:
    every validation gain exports ``best/``."""
    key = (str(manifest.data_dir), manifest.sha256, max_items, items_inferred)
    if key not in _ASSETS:
        from cllm4rec_dist.data.cold import cold_user_rows, dataset_cold_mask
        from cllm4rec_dist.data.format import prompt_builder_templates
        from cllm4rec_dist.data.id_maps import raw_ids_by_index
        from cllm4rec_dist.data.shards import iter_rows

        empty = np.zeros(0, np.int64)
        history, val = _CsrRows(manifest.num_users), _CsrRows(manifest.num_users)
        rows = iter_rows(manifest.data_dir, "recommendation", shuffle=False)
        for row in itertools.chain(rows, cold_user_rows(manifest.data_dir)):
            user = int(row["user"])
            history.add(user, np.asarray(row["train"]))
            val.add(user, np.asarray(row["val"]))
        cold = np.flatnonzero(dataset_cold_mask(manifest, "items"))
        _ASSETS.clear()  # one dataset per process
        _ASSETS[key] = ServingAssets(
            tokenizer, prompt_builder_templates(manifest.prompts), bos_id, max_items,
            raw_ids_by_index(manifest.data_dir, "users"), raw_ids_by_index(manifest.data_dir, "items"),
            history.build(), val.build(), torch.from_numpy(empty if items_inferred else cold),
        )  # fmt: skip
    return _ASSETS[key]


_ASSETS: dict[tuple, ServingAssets] = {}


def model_card(meta: ExportMeta, metrics: Mapping[str, Any] | None) -> str:
    """README.md of an export: what it was trained on, how well it did, how to load it."""
    fingerprint = meta.dataset or {}
    lines = [
        "# CLLM4Rec model (cllm4rec_dist export)",
        "",
        f"- format version: {FORMAT_VERSION}",
        f"- users: {meta.num_users}, items: {meta.num_items}, hidden size: {meta.hidden_size}",
        f"- backbone: {meta.model.get('source')} ({meta.model.get('mode')})",
        f"- dataset: {meta.data_dir} (manifest sha256 {fingerprint.get('manifest_sha256')}, "
        f"schema {fingerprint.get('schema_version')})",
    ]
    if meta.inferred:
        lines.append(f"- inferred rows: {json.dumps(meta.inferred)}")
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, int | float)]
    lines += [
        "", "## Use", "", "```python", "from cllm4rec_dist import Recommender", "",
        'rec = Recommender.from_pretrained("<this directory>")',
        'items, scores = rec.recommend(users=["<raw user id>"], k=20)[0]', "```", "",
        "Serve it over HTTP: `python launchers/serve.py init_from=<this directory>`.",
        "Loading runs no code from these files (safetensors, JSON, Parquet).", "",
    ]  # fmt: skip
    return "\n".join(lines)


def _check_csr(path: Path, offsets: Tensor, values: Tensor, rows: int, bound: int, what: str):
    ok = offsets.shape == (rows + 1,) and int(offsets[0]) == 0 and int(offsets[-1]) == len(values)
    ok = ok and bool((offsets[1:] >= offsets[:-1]).all())
    if not ok or (len(values) and (int(values.min()) < 0 or int(values.max()) >= bound)):
        raise ExportFileError(f"{path}: `{what}` is not a CSR of {rows} rows over [0, {bound})")


def read_assets(export_dir: str | Path, meta: ExportMeta | None = None) -> ServingAssets:
    """The serving files of ``export_dir``, checked against its meta.json (ExportError naming
    the file when one is missing, truncated or foreign; an export older than format 2 has none)."""
    from transformers import PreTrainedTokenizerFast

    d = Path(export_dir)
    meta = read_meta(d) if meta is None else meta
    if meta.format_version < SERVING_FORMAT:
        raise ExportError(
            f"{d / META}: format_version {meta.format_version} has no serving files (tokenizer, "
            "id maps, seen items); export it again with this version (training or infer)"
        )
    users, items = int(meta.num_users or 0), int(meta.num_items or 0)
    if not (d / TOKENIZER / "tokenizer.json").is_file():
        raise ExportError(f"{d / TOKENIZER / 'tokenizer.json'} not found")
    try:  # a plain fast tokenizer from its JSON files: no class named in them is imported
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(d / TOKENIZER))
    except Exception as err:  # tokenizers raises its own Exception types on a bad file
        raise ExportFileError(f"{d / TOKENIZER}: unreadable tokenizer ({err})") from None
    ids = {}
    for kind, n in (("users", users), ("items", items)):
        path = d / ID_MAPS / f"{kind}.parquet"
        try:
            column = pq.read_table(path, columns=["raw_id"]).column("raw_id").combine_chunks()
        except (OSError, pa.ArrowException, KeyError) as err:
            raise ExportFileError(f"{path}: not an id map of this export ({err})") from None
        if len(column) != n:
            raise ExportFileError(f"{path}: {len(column)} ids, meta.json says {n} {kind}")
        ids[kind] = column
    path = d / SERVING
    try:
        serving = json.loads(path.read_text())
        templates, bos_id, max_items = (
            dict(serving["templates"]),
            serving["bos_id"],
            int(serving["max_items"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ExportFileError(f"{path}: not this export's serving settings ({err!r})") from None
    path = d / SEEN
    with _opened(path) as f:
        try:
            seen = {k: f.get_tensor(k) for k in SEEN_KEYS}
        except Exception as err:  # a key this layout lacks
            raise ExportFileError(f"{path}: not this export's seen items ({err})") from None
    for what in ("history", "val"):
        _check_csr(path, seen[f"{what}_offsets"], seen[f"{what}_items"], users, items, what)
    _check_csr(
        path, torch.tensor([0, len(seen["unranked"])]), seen["unranked"], 1, items, "unranked"
    )
    return ServingAssets(
        tokenizer, templates, bos_id, max_items, ids["users"], ids["items"],
        (seen["history_offsets"], seen["history_items"]), (seen["val_offsets"], seen["val_items"]),
        seen["unranked"],
    )  # fmt: skip


# --- writing ---------------------------------------------------------------------------------
class ExportWriter:
    """Writes an export into a marked temporary sibling of ``out_dir`` (``cli/outputs.py``:
    ``out_dir`` must be absent, empty or ``command``'s own earlier output, ``legacy`` telling one
    written before markers); ``commit(meta)`` renames it into place. As a context manager, an
    error inside the block removes the temporary directory and leaves ``out_dir`` as it was.

    ``base``: an export whose files (backbone, anything beside the tables) the new one starts
    from, its tables left out: the inference of new rows rewrites the tables and keeps the rest.
    """

    def __init__(
        self,
        out_dir: str | Path,
        command: str,
        legacy: Legacy = None,
        base: str | Path | None = None,
    ):
        self.out_dir, self.command, self.legacy = Path(out_dir), command, legacy
        self.directory = begin_staged(self.out_dir, command, legacy)
        if base is not None:
            root = Path(base)

            # Only the tables at the top (and the writer's marker) are left to the new export.
            def ignore(folder: str, names: list[str]) -> list[str]:
                return [n for n in names if Path(folder) == root and n in (TABLES, MARKER)]

            shutil.copytree(root, self.directory, ignore=ignore, dirs_exist_ok=True)
        (self.directory / TABLES).mkdir(exist_ok=True)

    def __enter__(self) -> ExportWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if kind is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def write_table(self, name: str, weight: Tensor) -> None:
        """Table ``name`` from a whole tensor [rows, dim]."""
        tensor = weight.detach().to("cpu", torch.float32).contiguous()
        save_file({TABLE_KEY: tensor}, str(table_path(self.directory, name)))

    def write_table_blocks(self, name: str, shape: tuple[int, int], blocks: Iterable[Tensor]):
        """Table ``name`` of ``shape`` from its row ``blocks`` in order, never holding it whole:
        the safetensors layout (an 8-byte little-endian header length, a JSON header padded with
        spaces to 8 bytes, the raw row-major bytes) written by hand, since safetensors itself
        only saves whole tensors; its reader checks the result (tests)."""
        path = table_path(self.directory, name)
        nbytes = shape[0] * shape[1] * 4
        header = json.dumps(
            {TABLE_KEY: {"dtype": "F32", "shape": list(shape), "data_offsets": [0, nbytes]}},
            separators=(",", ":"),
        ).encode()
        header += b" " * (-len(header) % 8)
        written = 0
        with open(path, "wb") as fh:
            fh.write(struct.pack("<Q", len(header)))
            fh.write(header)
            for block in blocks:
                data = block.to(torch.float32).contiguous().numpy().tobytes()
                fh.write(data)
                written += len(data)
        if written != nbytes:
            path.unlink()
            raise ValueError(f"{path}: {written} bytes of rows for a {shape} fp32 tensor")

    def write_backbone(self, state: dict[str, Tensor], hf_model: Any = None) -> None:
        """The Backbone's state dict and, given ``hf_model`` (a PreTrainedModel or PEFT-injected
        one), its Hugging Face directory."""
        path = self.directory / BACKBONE_STATE
        path.parent.mkdir(parents=True, exist_ok=True)
        (self.directory / BACKBONE_STATE_V1).unlink(missing_ok=True)  # a format-1 base's
        # Cloned: safetensors refuses tensors that share memory (tied embeddings).
        save_file({k: v.detach().cpu().clone().contiguous() for k, v in state.items()}, str(path))
        if hf_model is not None:
            # Without transformers' "Writing model shards" bar: every validation gain exports.
            from transformers.utils import logging as hf_logging

            from cllm4rec_dist.model.loading import plain_hf_state

            shown = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:  # LoRA merged in: a plain HF model that loads as the trained LM
                hf_model.save_pretrained(
                    self.directory / BACKBONE_HF, state_dict=plain_hf_state(hf_model)
                )
            finally:
                if shown:
                    hf_logging.enable_progress_bar()

    def write_assets(
        self, assets: ServingAssets, meta: ExportMeta, metrics: Mapping[str, Any] | None = None
    ) -> None:
        """The serving files (``ServingAssets``) and the model card (README.md) of ``meta``,
        which now describes a format-2 export (a format-1 base's ``state.pt`` still reads)."""
        meta.format_version = FORMAT_VERSION
        d = self.directory
        assets.tokenizer.save_pretrained(d / TOKENIZER)
        (d / ID_MAPS).mkdir(exist_ok=True)
        for kind, ids in (("users", assets.user_ids), ("items", assets.item_ids)):
            pq.write_table(
                pa.table({"raw_id": ids.cast(pa.string())}), d / ID_MAPS / f"{kind}.parquet"
            )
        serving = {
            "templates": assets.templates,
            "bos_id": assets.bos_id,
            "max_items": assets.max_items,
        }
        (d / SERVING).write_text(json.dumps(serving, indent=2))
        tensors = {
            "history_offsets": assets.history[0], "history_items": assets.history[1],
            "val_offsets": assets.val[0], "val_items": assets.val[1], "unranked": assets.unranked,
        }  # fmt: skip
        save_file({k: v.to(torch.int64).contiguous() for k, v in tensors.items()}, str(d / SEEN))
        (d / CARD).write_text(model_card(meta, metrics))

    def commit(self, meta: ExportMeta) -> Path:
        """Write meta.json last and move the export into place (the command's earlier one is
        removed only after the rename)."""
        (self.directory / META).write_text(meta.to_json())
        return publish(self.directory, self.out_dir, self.command, self.legacy)


# --- validating and loading ------------------------------------------------------------------
def _table_count(tables: Mapping[str, nn.Module], kind: str) -> int | None:
    rows = {t.num_rows for name, t in tables.items() if name.startswith(kind + "_")}
    return rows.pop() if len(rows) == 1 else None


def check_export_dataset(
    export_dir: Path,
    meta: ExportMeta,
    tables: Mapping[str, nn.Module],
    manifest: Manifest | None = None,
    allow_other_dataset: bool = False,
) -> None:
    """Raise ExportMismatchError (one line) when the export's users/items (from meta.json and
    from the exported table files themselves) differ from ``tables``, or its dataset fingerprint
    differs from ``manifest.fingerprint`` (skipped with ``allow_other_dataset``)."""
    for name, table in tables.items():
        rows = table_rows(export_dir, name)
        if rows is not None and rows != table.num_rows:
            raise ExportMismatchError(
                f"{table_path(export_dir, name)}: {rows} rows, but this dataset has "
                f"{table.num_rows} for table {name} (the export was made from another dataset; "
                "sizes must match)"
            )
    theirs = {"num_users": meta.num_users, "num_items": meta.num_items}
    for key, kind in (("num_users", "user"), ("num_items", "item")):
        ours = _table_count(tables, kind)
        if ours is not None and theirs[key] is not None and theirs[key] != ours:
            raise ExportMismatchError(
                f"{export_dir / META}: {key}={theirs[key]} (dataset {meta.data_dir}) but this "
                f"dataset has {key}={ours}; an export only loads into a dataset of the same size"
            )
    their_sha = (meta.dataset or {}).get("manifest_sha256")
    our_sha = None if manifest is None else manifest.fingerprint["manifest_sha256"]
    if their_sha and our_sha and their_sha != our_sha:
        message = (
            f"{export_dir / META}: made from dataset {meta.data_dir} (fingerprint "
            f"{their_sha[:12]}), not from {manifest.data_dir} ({our_sha[:12]})"
        )
        if not allow_other_dataset:
            raise ExportMismatchError(
                message + "; allow it explicitly (allow_other_dataset) to load it anyway"
            )
        log.warning("%s; loading it anyway (allow_other_dataset)", message)


def _grown_prefix(
    export_dir: Path, meta: ExportMeta, tables: Mapping[str, nn.Module], manifest: Manifest | None
) -> dict[str, int] | None:
    """{"user": U_old, "item": I_old} when this dataset grew from the export's (its manifest's
    ``grown_from`` names the export's dataset fingerprint), else None (sizes must then match)."""
    grown = getattr(manifest, "grown_from", None)
    theirs = (meta.dataset or {}).get("manifest_sha256")
    if grown is None or not theirs or theirs != grown.manifest_sha256:
        return None
    prefix = {"user": grown.num_users, "item": grown.num_items}
    for name in tables:
        rows = table_rows(export_dir, name)
        if rows is not None and rows != prefix[name.split("_")[0]]:
            raise ExportMismatchError(
                f"{table_path(export_dir, name)}: {rows} rows, but {manifest.data_dir} grew from "
                f"a dataset with {prefix[name.split('_')[0]]} (manifest grown_from)"
            )
    log.info(
        "export %s: this dataset grew from its dataset (users %d -> %d, items %d -> %d); new "
        "rows keep their init",
        export_dir, grown.num_users, manifest.num_users, grown.num_items, manifest.num_items,
    )  # fmt: skip
    return prefix


def load_export(
    export_dir: str | Path,
    backbone: nn.Module,
    tables: Mapping[str, nn.Module],
    *,
    allow_other_dataset: bool = False,
    manifest: Manifest | None = None,
) -> ExportMeta:
    """Initialise ``tables`` (each rank reads only its row range) and, when the export has one,
    the backbone's state from ``export_dir``; returns its meta. Call before the backbone is
    handed to DeepSpeed.

    The export must match the tables' sizes (num_users / num_items); given the current dataset's
    ``manifest`` it must also carry its fingerprint, unless ``allow_other_dataset``
    (ExportMismatchError otherwise, naming the file). A dataset prepared with
    ``id_maps_from`` the export's dataset (a grown catalog) loads the export into its first
    rows instead.
    """
    export_dir = Path(export_dir)
    meta = read_meta(export_dir)
    prefix = _grown_prefix(export_dir, meta, tables, manifest)
    if prefix is None:
        check_export_dataset(export_dir, meta, tables, manifest, allow_other_dataset)
    for name, table in tables.items():
        lo, hi = table.row_range
        # A grown catalog: the export's rows are the first ones; the new ids keep their init.
        end = hi if prefix is None else min(hi, prefix[name.split("_")[0]])
        if end <= lo:
            continue
        rows = read_exported_rows(export_dir, name, lo, end)
        want = (end - lo, table.weight.shape[1])
        if tuple(rows.shape) != want:
            raise ExportMismatchError(
                f"{table_path(export_dir, name)}: rows [{lo}, {end}) have shape "
                f"{tuple(rows.shape)}, expected {want}"
            )
        with torch.no_grad():
            table.weight[: end - lo].copy_(rows)
    state = read_backbone_state(export_dir, meta)
    if state is not None:
        try:
            missing, unexpected = backbone.load_state_dict(state, strict=False)
        except RuntimeError as err:  # a tensor of another shape: another backbone size
            raise ExportMismatchError(
                f"{export_dir / BACKBONE_STATE} does not match this backbone "
                f"({str(err).splitlines()[-1].strip()}) (model.* must match the export's "
                "meta.json)"
            ) from None
        if unexpected or [m for m in missing if "lora_" not in m]:
            raise ExportMismatchError(
                f"{export_dir / BACKBONE_STATE} does not match this backbone: "
                f"missing={missing[:5]} unexpected={unexpected[:5]} (model.source/mode must "
                "match the export)"
            )
    return meta


__all__ = [
    "FORMAT_VERSION",
    "ExportError",
    "ExportFileError",
    "ExportMeta",
    "ExportMismatchError",
    "ExportWriter",
    "ServingAssets",
    "dataset_assets",
    "model_card",
    "read_assets",
    "check_export_dataset",
    "is_training_export",
    "load_export",
    "read_backbone_state",
    "read_exported_rows",
    "read_meta",
    "table_path",
    "table_rows",
]
