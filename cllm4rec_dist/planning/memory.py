"""Per-rank memory of a CLLM4Rec training run, term by term (pure functions, no torch).

Every term is in bytes and names the allocation it stands for, so the planner's output can be
checked against the code that makes it. ``W`` is the world size (data parallel: every rank runs
the backbone on its own batch; ID tables and the item head are row-partitioned ``W`` ways), ``b``
the bytes of the backbone dtype (fp32 4, bf16 2), ``P`` the backbone's parameters and ``T`` its
trainable ones (0 frozen, the adapters for LoRA, ``P`` full).

Backbone under DeepSpeed (only when ``T > 0``; a frozen backbone is a plain replicated module):

    stage | weights | gradients held     | fp32 master     | Adam m, v | reduce bucket
    0     | b P     | b T (+4 T, bf16)   | 4 T (bf16 only) | 8 T       | -
    1, 2  | b P     | b T / W            | 4 T / W         | 8 T / W   | b x bucket
    3     | b P / W | b T / W            | 4 T / W         | 8 T / W   | b x bucket

DeepSpeed keeps the fp32 master partition at stages 1-3 even for an fp32 model, and a stage-0
bf16 engine (BF16_Optimizer) keeps fp32 masters and an fp32 gradient accumulator; under ZeRO the
gradient partitions and buckets are in the model dtype (DeepSpeed's default ``grad_accum_dtype``).
The reduce bucket is ``reduce_bucket_size`` elements (DeepSpeed default 5e8): a GPU allocates it
whole, a CPU process only touches the pages it fills, at most ``T`` elements. During backward, autograd's
gradients of the parameters not yet reduced also live (up to a bucket's worth); at stage 3 the
gathered full parameters stay resident up to ``stage3_max_live_parameters`` (default 1e9).
The optimizer step of a stage-0 engine needs one fp32 temporary per trainable parameter
(torch's foreach AdamW).

ID tables (fp32, row-partitioned): four tables (user/item x collaborative/content), each rank
holding ceil(rows / W) rows of each, plus one fp32 row-wise Adagrad accumulator per row. The item
head is tied to the collaborative item table and its gradient is dense over the local shard; with
the sum autograd forms with the sparse lookup gradient and the update's temporaries, three
shard-sized fp32 tensors live during the table step.

Item-parallel scorer: the hidden rows of all ranks are gathered (``W * rows`` of them) and scored
against the local item shard in blocks of ``chunk_items`` columns; a block and its exponential
are live at once, fp32.

Activations (saved for backward even with a frozen backbone: the ID embeddings need gradients
through it): per token and layer about ``10 h + 4 i`` values of dtype ``b`` in a Llama-style
layer (norm inputs and outputs, q, k, v and their rotated copies, attention output, residual;
gate, up, activation and product of the MLP); plus the attention probabilities (``heads * T`` per
token) when attention is not a fused kernel (``math`` SDPA, which is what runs on CPU). With
activation checkpointing only each layer's input (``h`` per token) is kept, plus one layer's
activations during its recomputation. The content phase adds the word logits ``[M, V]`` in ``b``
and their fp32 copy and gradient inside the cross-entropy (``8`` bytes per logit).

Building (before DeepSpeed exists): every rank loads the whole backbone in its dtype (``b P``,
partitioned only afterwards at ZeRO-3) and draws the table rows ``INIT_DRAW_ROWS`` at a time (the
normal draw and its scaled copy).

Rank 0 exports the model at the end: it streams each table from the checkpoint's pieces into the
export file one block of ``EXPORT_BLOCK_ROWS`` rows at a time (the block and its bytes) and, at
ZeRO-3, gathers the consolidated backbone state (``b P``). An export also carries the serving
files (every user's seen items, the raw ids; export.dataset_assets), which rank 0 builds at its
first export and keeps cached for the later ones (every validation gain exports ``best/``): their
resident size per user and per seen item id is calibrated (calibration.yaml, ``serving_files``).

On GPUs, building and exporting use host memory; in a CPU run everything is one process, whose
peak is the largest of building, training and (rank 0) exporting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from cllm4rec_dist.distributed.item_parallel import CHUNK_ITEMS as SCORER_CHUNK_ITEMS
from cllm4rec_dist.distributed.table_checkpoint import EXPORT_BLOCK_ROWS
from cllm4rec_dist.model.interfaces import INIT_DRAW_ROWS
from cllm4rec_dist.model.options import DTYPE_BYTES, Dtype
from cllm4rec_dist.model.sampling import SoftmaxKind

GiB = 2**30
FP32 = DTYPE_BYTES[Dtype.fp32]
# DeepSpeed defaults (deepspeed/runtime/zero/config.py) for the keys the estimate depends on.
DS_REDUCE_BUCKET_SIZE = 500_000_000
DS_MAX_LIVE_PARAMETERS = 1_000_000_000
NUM_TABLES_PER_ENTITY = 2  # collaborative and content copies


class Device(StrEnum):
    """``plan.device``: what a rank runs on (how buffers and attention are allocated)."""

    cuda = "cuda"
    cpu = "cpu"


@dataclass(frozen=True)
class Term:
    """One allocation of the estimate: ``bytes`` held by a rank, and what it is."""

    name: str
    bytes: float
    note: str = ""
    kept: bool = False  # an export term rank 0 keeps after its first export (CPU: same process)


@dataclass(frozen=True)
class BackboneShape:
    """What the memory of a backbone depends on (read from its HF config, no weights needed)."""

    params: int  # P: every parameter (tied embeddings once)
    trainable: int  # T: parameters that get gradients
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int


@dataclass(frozen=True)
class Phase:
    """One training phase as one rank sees it per step.

    tokens: positions in the batch (documents x their longest length); scored_rows: hidden rows
    scored against all items (0 for the content phase); word_logits: positions scored against the
    word vocabulary (content phase only).
    """

    name: str
    tokens: int
    scored_rows: int = 0
    word_logits: int = 0


@dataclass(frozen=True)
class RunShape:
    """Everything the estimate reads, in plain numbers (built from the config by planning/estimate.py)."""

    backbone: BackboneShape
    dtype: Dtype
    zero_stage: int
    world_size: int
    num_users: int
    num_items: int
    phases: tuple[Phase, ...]
    gradient_checkpointing: bool = False
    # cuda: buffers allocated whole, fused attention; cpu: touched pages, math SDPA
    device: Device = Device.cuda
    overhead_bytes: float = 0.0
    reduce_bucket_size: int = DS_REDUCE_BUCKET_SIZE
    max_live_parameters: int = DS_MAX_LIVE_PARAMETERS
    chunk_items: int = SCORER_CHUNK_ITEMS
    softmax: SoftmaxKind = SoftmaxKind.full  # resolved (model/sampling.resolve_kind)
    num_samples: int = 0  # popularity: candidates per step
    # The serving files: item ids of every user's seen items (train + val interactions), and
    # their resident bytes: fixed, per user and per seen id (calibration.yaml, serving_files).
    seen_items: int = 0
    serving_fixed_bytes: float = 0.0
    serving_bytes_per_user: float = 0.0
    serving_bytes_per_seen: float = 0.0

    @property
    def sampled(self) -> bool:
        return self.softmax != SoftmaxKind.full

    def head_items(self, scored_rows: float) -> int:
        """Items a step scores each gathered row against, over all shards: every item (full),
        the shared candidates (popularity), or the step's targets of all ranks (in_batch)."""
        if self.softmax == SoftmaxKind.popularity:
            return self.num_samples
        if self.softmax == SoftmaxKind.in_batch:
            return int(min(self.world_size * scored_rows, self.num_items))
        return self.num_items


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-rank terms: ``static`` (held all run), per-phase ``transient`` (live during that
    phase's step), ``build`` (everything live while building), ``export`` (rank 0, at the end,
    on top of the static state) and the runtime ``overhead``."""

    static: tuple[Term, ...]
    transient: dict[str, tuple[Term, ...]]
    build: tuple[Term, ...]
    export: tuple[Term, ...]
    overhead: Term
    host_separate: bool = True  # GPUs: building and exporting happen in host memory

    def static_bytes(self) -> float:
        return sum(t.bytes for t in self.static)

    def phase_bytes(self, phase: str) -> float:
        return sum(t.bytes for t in self.transient[phase])

    @property
    def peak_phase(self) -> str | None:
        """The phase whose step needs the most memory (None when no phase trains)."""
        if not self.transient:
            return None
        return max(self.transient, key=self.phase_bytes)

    def training_peak(self) -> float:
        """Overhead + static + the largest phase's transient: the device peak while training."""
        phase = self.peak_phase
        return self.overhead.bytes + self.static_bytes() + (self.phase_bytes(phase) if phase else 0)

    def build_peak(self) -> float:
        return self.overhead.bytes + sum(t.bytes for t in self.build)

    def export_peak(self) -> float:
        """Rank 0 at export: overhead + static state + the export's tensors."""
        return self.overhead.bytes + self.static_bytes() + sum(t.bytes for t in self.export)

    def process_peak(self, rank: int) -> float:
        """Peak of rank ``rank`` when everything shares one address space (CPU runs): rank 0
        trains on after its first export with the export's kept terms still resident."""
        peaks = [self.build_peak(), self.training_peak()]
        if rank == 0:
            kept = sum(t.bytes for t in self.export if t.kept)
            peaks += [self.training_peak() + kept, self.export_peak()]
        return max(peaks)


def shard(n: int, world_size: int) -> int:
    """Rows (or elements) of the largest of ``world_size`` even blocks of ``n``."""
    return math.ceil(n / world_size)


def backbone_static(
    shape: BackboneShape,
    dtype: Dtype,
    zero_stage: int,
    world_size: int,
    bucket_elements: int,
    device: Device,
) -> list[Term]:
    """Backbone weights, held gradients, optimizer states and ZeRO's reduce bucket."""
    b, p, t, w = DTYPE_BYTES[dtype], shape.params, shape.trainable, world_size
    if t == 0:
        return [Term("backbone weights", b * p, "frozen: replicated, no DeepSpeed engine")]
    if zero_stage == 3:
        terms = [Term("backbone weights (ZeRO-3 partition)", b * shard(p, w))]
    else:
        terms = [Term("backbone weights", b * p, f"replicated at ZeRO-{zero_stage}")]
    if zero_stage == 0:
        terms.append(Term("gradients", b * t))
        if dtype == Dtype.bf16:
            terms.append(Term("fp32 gradient accumulator", FP32 * t, "DeepSpeed BF16_Optimizer"))
            terms.append(Term("fp32 master weights", FP32 * t))
        terms.append(Term("Adam moments (fp32 m, v)", 2 * FP32 * t))
        return terms
    part = shard(t, w)
    terms += [
        Term("gradient partition", b * part),
        Term("fp32 master partition", FP32 * part),
        Term("Adam moments partition (fp32 m, v)", 2 * FP32 * part),
    ]
    bucket = bucket_elements if device == Device.cuda else min(bucket_elements, t)
    terms.append(
        Term(
            "ZeRO reduce bucket",
            b * bucket,
            f"{bucket_elements:.2g} elements"
            + ("" if device == Device.cuda else ", pages touched on CPU"),
        )
    )
    return terms


def backbone_transient(
    shape: BackboneShape, dtype: Dtype, zero_stage: int, bucket_elements: int, max_live: int
) -> list[Term]:
    """Backbone memory live during one step beyond the static state."""
    b, p, t = DTYPE_BYTES[dtype], shape.params, shape.trainable
    if t == 0:
        return []
    if zero_stage == 0:
        return [Term("optimizer step temporaries", FP32 * t, "foreach AdamW, fp32")]
    terms = [
        Term(
            "gradients awaiting reduction",
            b * min(t, bucket_elements),
            "autograd grads, up to one reduce bucket",
        )
    ]
    if zero_stage == 3:
        terms.append(
            Term("gathered parameters (ZeRO-3)", b * min(p, max_live), "stage3_max_live_parameters")
        )
    return terms


def table_static(num_users: int, num_items: int, dim: int, world_size: int) -> list[Term]:
    """The four fp32 ID tables' local rows and their row-wise Adagrad accumulators."""
    u, i = shard(num_users, world_size), shard(num_items, world_size)
    rows = NUM_TABLES_PER_ENTITY * (u + i)
    return [
        Term(
            "ID tables (4 x fp32 rows / W)",
            FP32 * rows * dim,
            f"{u:,} user + {i:,} item rows per table",
        ),
        Term("row-wise Adagrad state", FP32 * rows, "one fp32 per row"),
    ]


def table_transient(
    num_items: int, dim: int, world_size: int, touched_rows: int | None = None
) -> list[Term]:
    """The item head's gradient over the local shard, its sum with the lookup's sparse gradient
    and the Adagrad update's temporary: three shard-sized fp32 tensors with the full softmax;
    with a sampled one, three of the rows it touched (``touched_rows``: its candidates and the
    targets on this shard, repeats included)."""
    rows, note = shard(num_items, world_size), "dense: the item head is tied to the table"
    if touched_rows is not None:
        rows, note = min(rows, touched_rows), "sparse: the sampled head's candidates and targets"
    return [Term("item table gradient + update temporaries", 3 * FP32 * rows * dim, note)]


def scorer_transient(
    scored_rows: int,
    num_items: int,
    hidden: int,
    world_size: int,
    chunk_items: int,
    sampled: bool = False,
) -> list[Term]:
    """Item-parallel scorer: gathered hidden rows and its logits. The full softmax walks its
    shard in blocks of every row x ``chunk_items`` items, a block and its exponential at a time;
    a sampled one keeps the exponentials of every row against its share of the ``num_items``
    candidates from forward to backward (computed in place, in the scorer's reused buffer)."""
    if scored_rows == 0:
        return []
    rows = world_size * scored_rows
    cols = shard(num_items, world_size)
    gathered = Term(
        "scorer gathered hidden rows", FP32 * rows * hidden, f"{rows:,} rows from all ranks"
    )
    if sampled:
        kept = Term("scorer kept exponentials", FP32 * rows * cols, f"[{rows:,}, {cols:,}] fp32")
        return [gathered, kept]
    cols = min(chunk_items, cols)
    return [
        gathered,
        Term("scorer logits block (x2)", 2 * FP32 * rows * cols, f"[{rows:,}, {cols:,}] fp32"),
    ]


def activation_bytes(
    tokens: int,
    shape: BackboneShape,
    dtype: Dtype,
    checkpointing: bool,
    attention_scores: bool,
    seq_len: int,
) -> float:
    """Activations saved for backward by ``tokens`` positions of sequences of ``seq_len``."""
    b = DTYPE_BYTES[dtype]
    per_layer = 10 * shape.hidden + 4 * shape.intermediate
    if attention_scores:
        per_layer += shape.heads * seq_len
    if checkpointing:
        return b * tokens * (shape.layers * shape.hidden + per_layer)
    return b * tokens * shape.layers * per_layer


def phase_transient(run: RunShape, phase: Phase, seq_len: int) -> list[Term]:
    """Everything live during one step of ``phase`` beyond the static state."""
    shape, b = run.backbone, DTYPE_BYTES[run.dtype]
    terms = [
        Term(
            "activations",
            activation_bytes(
                phase.tokens,
                shape,
                run.dtype,
                run.gradient_checkpointing,
                attention_scores=run.device == Device.cpu,
                seq_len=seq_len,
            ),
            f"{phase.tokens:,} tokens" + (", checkpointed" if run.gradient_checkpointing else ""),
        )
    ]
    if phase.word_logits:
        terms.append(
            Term(
                "word logits + fp32 loss copies",
                (b + 2 * FP32) * phase.word_logits * shape.vocab,
                f"[{phase.word_logits:,}, {shape.vocab:,}]",
            )
        )
    items = run.head_items(phase.scored_rows)
    terms += scorer_transient(
        phase.scored_rows, items, shape.hidden, run.world_size, run.chunk_items, run.sampled
    )
    if phase.scored_rows:
        # Sampled: this shard's candidates, plus the distinct and the listed targets that live
        # on it (about one rank's rows' worth each).
        touched = shard(items, run.world_size) + 2 * phase.scored_rows if run.sampled else None
        terms += table_transient(run.num_items, shape.hidden, run.world_size, touched)
    terms += backbone_transient(
        shape, run.dtype, run.zero_stage, run.reduce_bucket_size, run.max_live_parameters
    )
    return terms


def build_terms(run: RunShape) -> list[Term]:
    """Live while building: the whole backbone (before any partitioning), the tables and one
    initialisation draw of rows with its scaled copy (init_rows draws INIT_DRAW_ROWS at a time)."""
    shape = run.backbone
    tables = table_static(run.num_users, run.num_items, shape.hidden, run.world_size)
    chunk = INIT_DRAW_ROWS  # drawn whole even for a smaller table
    return [
        Term(
            "whole backbone while loading",
            DTYPE_BYTES[run.dtype] * shape.params,
            "every rank, before DeepSpeed",
        ),
        tables[0],
        Term(
            "table init draw (x2)",
            2 * FP32 * chunk * shape.hidden,
            f"{chunk:,} rows drawn at a time",
        ),
    ]


def export_terms(run: RunShape) -> list[Term]:
    """Rank 0 at export: one block of table rows streamed to the file (and its bytes), the
    consolidated backbone at ZeRO-3, and the serving files (kept after the first export)."""
    shape = run.backbone
    rows = min(EXPORT_BLOCK_ROWS, max(run.num_users, run.num_items))
    terms = [
        Term(
            "table export block (x2)",
            2 * FP32 * rows * shape.hidden,
            f"{rows:,} rows streamed at a time",
        )
    ]
    if shape.trainable and run.zero_stage == 3:
        terms.append(
            Term(
                "consolidated backbone state",
                DTYPE_BYTES[run.dtype] * shape.params,
                "ZeRO-3 gathers the full state dict on rank 0",
            )
        )
    if run.serving_fixed_bytes or run.serving_bytes_per_user or run.serving_bytes_per_seen:
        terms.append(
            Term(
                "serving files (seen items, raw ids)",
                run.serving_fixed_bytes
                + run.serving_bytes_per_user * run.num_users
                + run.serving_bytes_per_seen * run.seen_items,
                f"{run.num_users:,} users, {run.seen_items:,} seen item ids; cached after the first export",
                kept=True,
            )
        )
    return terms


def estimate(run: RunShape, seq_lens: dict[str, int] | None = None) -> MemoryEstimate:
    """The per-rank estimate of ``run``. seq_lens: longest sequence per phase (attention-score
    term on CPU); defaults to each phase's tokens."""
    if run.world_size < 1:
        raise ValueError("world_size must be >= 1")
    shape = run.backbone
    static = backbone_static(
        shape, run.dtype, run.zero_stage, run.world_size, run.reduce_bucket_size, run.device
    )
    static += table_static(run.num_users, run.num_items, shape.hidden, run.world_size)
    lens = seq_lens or {}
    transient = {
        p.name: tuple(phase_transient(run, p, lens.get(p.name, p.tokens))) for p in run.phases
    }
    return MemoryEstimate(
        static=tuple(static),
        transient=transient,
        build=tuple(build_terms(run)),
        export=tuple(export_terms(run)),
        overhead=Term(
            "runtime overhead",
            run.overhead_bytes,
            "interpreter, libraries, communicator; calibrated per device",
        ),
        host_separate=run.device == Device.cuda,
    )


__all__ = [
    "BackboneShape",
    "GiB",
    "MemoryEstimate",
    "Phase",
    "RunShape",
    "Term",
    "activation_bytes",
    "backbone_static",
    "backbone_transient",
    "build_terms",
    "estimate",
    "export_terms",
    "phase_transient",
    "scorer_transient",
    "shard",
    "table_static",
    "table_transient",
]
