"""Per-rank time of one training step, term by term (pure functions, no torch).

The step is modelled as the sum of its matrix products, its element-wise passes over the item
scorer's logits and its collectives, each at a rate of the machine (``Hardware``). Terms:

- backbone: ``2 (4 h^2 + 3 h i)`` FLOPs per token and layer for the projections and the MLP,
  ``4 s h`` per token and layer for attention over a row of ``s`` tokens; forward + backward is 3x
  that when the whole backbone trains and 2x when it is frozen (the backward still computes the
  activations' gradients, for the ID embeddings, but no weight gradients); LoRA adds the weight
  gradients of its trainable share only (``2 + T / P``: 2.003x for SmolLM2's q/v adapters).
- item head: every rank scores the ``W * rows`` gathered hidden rows against its ``ceil(I / W)``
  items (``I``: every item with the full softmax; the step's candidates with a sampled one,
  ``memory.RunShape.head_items``). The full item-parallel softmax
  (``distributed/item_parallel.py``) makes four products of that size: the forward's logits,
  the backward's recomputed logits (not kept, to bound memory), the hidden rows' gradient and
  the item shard's gradient: ``8 W rows ceil(I/W) h``. The sampled head keeps its forward's
  exponentials for the backward (a few hundred MB at most on CPU scales): three products.
- item head element-wise: about six passes per logit for the full softmax (forward: shift,
  exp, row sum; backward: shift, exp, scale by the upstream gradient), four for the sampled
  one (the backward only scales what the forward kept). At a small width ``h`` these cost as
  much as the products: a logit needs ``2 h`` FLOPs per product but each pass reads and
  writes it.
- table update: the item shard's gradient is dense (the head is tied to the table); the
  row-wise Adagrad step reads and writes it a few times (``4`` passes over ``ceil(I/W) h``).
- collectives: the hidden rows gathered (forward) and the upstream gradient gathered and the
  hidden gradient reduce-scattered (backward), ``3 (W-1) rows h`` fp32 values; the ID lookups'
  all-to-all, rows there and gradients back, for the two copies of the tables that the
  regularizer reads, ``2 x 2 x tokens h (W-1)/W`` fp32 values; a trained backbone's gradient
  all-reduce, ``2 b T (W-1)/W`` bytes (ring), or at ZeRO-3 the parameters gathered for the
  forward and again for the backward plus the gradients' reduce-scatter, ``(2 b P + b T)
  (W-1)/W``.

- fixed cost per step: operator dispatch and Python (a step runs about a thousand operators),
  the backbone's element-wise layers (norms, RoPE, activation, attention's soft-max) and
  collective latency, as one constant per step (``Hardware.step_overhead_s``). Without it the
  model predicted 0.54x the measured CPU time per step at 100k users x 10k items
  (docs/scale-out.md §10), where these costs are half the step; at 1 M x 100k the item head
  dominates and the constant is noise. Not modelled: the loader (a separate worker process).
"""

from __future__ import annotations

from dataclasses import dataclass

from cllm4rec_dist.model.options import DTYPE_BYTES, Dtype
from cllm4rec_dist.planning.memory import FP32, BackboneShape, Term, shard

# (full softmax, sampled): forward logits, [recomputed logits,] grad hidden, grad item shard
HEAD_PRODUCTS = {False: 4, True: 3}
HEAD_ELEMENTWISE_PASSES = {False: 6, True: 4}
TABLE_UPDATE_PASSES = 4
LOOKUP_TABLE_COPIES = 2  # collaborative + content copy (the lambda_v regularizer reads both)


@dataclass(frozen=True)
class Hardware:
    """Sustained per-rank rates: matrix products (FLOP/s), one element-wise op over tensors
    far larger than cache (elements/s), collective bandwidth (bytes/s), and the fixed cost of
    a step (seconds)."""

    matmul_flops_per_s: float
    elementwise_per_s: float
    network_bytes_per_s: float
    step_overhead_s: float = 0.0


@dataclass(frozen=True)
class StepPhase:
    """One rank's average step of a phase: documents, tokens (non-padding), the longest row
    ``seq`` (attention), hidden rows scored against all items, and steps in one epoch (0 when
    the corpus size is not known)."""

    name: str
    documents: int
    tokens: float
    seq: int
    scored_rows: float
    steps_per_epoch: int = 0


@dataclass(frozen=True)
class StepEstimate:
    phase: str
    terms: tuple[Term, ...]  # Term.bytes holds seconds here
    head_items: int = 0  # items the head scores each row against, over all shards

    @property
    def seconds(self) -> float:
        return sum(t.bytes for t in self.terms)


def backbone_flops(shape: BackboneShape, tokens: float, seq: int) -> float:
    """Forward + backward FLOPs of the backbone's matrix products over ``tokens`` positions."""
    h, i, layers = shape.hidden, shape.intermediate, shape.layers
    forward = (2 * (4 * h * h + 3 * h * i) + 4 * seq * h) * tokens * layers
    return forward * (2 + shape.trainable / shape.params)


def step_time(
    phase: StepPhase,
    shape: BackboneShape,
    dtype: Dtype,
    world_size: int,
    num_items: int,
    hw: Hardware,
    zero_stage: int = 0,
    sampled: bool = False,
) -> StepEstimate:
    """The modelled seconds of one step of ``phase`` on one rank (see the module docstring);
    ``num_items``: the items the head scores each row against (all, or the candidates of a
    ``sampled`` head)."""
    w, h = world_size, shape.hidden
    logits = w * phase.scored_rows * shard(num_items, w) if phase.scored_rows else 0.0
    products, passes = HEAD_PRODUCTS[sampled], HEAD_ELEMENTWISE_PASSES[sampled]
    head_flops = products * 2 * logits * h
    comm = FP32 * (3 * (w - 1) * phase.scored_rows * h)
    comm += FP32 * 2 * LOOKUP_TABLE_COPIES * phase.tokens * h * (w - 1) / w
    if shape.trainable:
        b = DTYPE_BYTES[dtype]
        moved = (
            2 * b * shape.params + b * shape.trainable
            if zero_stage == 3
            else 2 * b * shape.trainable
        )
        comm += moved * (w - 1) / w
    update = TABLE_UPDATE_PASSES * shard(num_items, w) * h if phase.scored_rows else 0.0
    terms = (
        Term(
            "backbone matmuls",
            backbone_flops(shape, phase.tokens, phase.seq) / hw.matmul_flops_per_s,
            f"{phase.tokens:,.0f} tokens, rows of {phase.seq}",
        ),
        Term(
            "item head matmuls",
            head_flops / hw.matmul_flops_per_s,
            f"{products} x [{w * phase.scored_rows:,.0f}, {h}] x [{h}, {shard(num_items, w):,}]",
        ),
        Term(
            "item head element-wise",
            passes * logits / hw.elementwise_per_s,
            f"{passes} passes over {logits:,.0f} logits",
        ),
        Term(
            "item table update",
            update / hw.elementwise_per_s,
            f"{TABLE_UPDATE_PASSES} passes over the shard rows the head writes",
        ),
        Term("collectives", comm / hw.network_bytes_per_s, f"{comm / 2**20:,.1f} MiB per rank"),
        Term("fixed cost per step", hw.step_overhead_s, "dispatch, element-wise layers, latency"),
    )
    return StepEstimate(phase.name, terms, num_items if phase.scored_rows else 0)


__all__ = ["Hardware", "StepEstimate", "StepPhase", "backbone_flops", "step_time"]
