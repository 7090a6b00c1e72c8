"""Row-partitioned ID tables, their row-wise optimizer and checkpoints, item-parallel losses and
the exact top-K merge. Every object takes an optional process group and also runs without one
(world size 1). See docs/distributed.md. The per-shard kernel of the merge is the one masked
top-K, ``cllm4rec_dist.ops.topk.masked_topk`` (no collectives)."""

from cllm4rec_dist.distributed.item_parallel import ItemParallelScorer
from cllm4rec_dist.distributed.partitioned_table import PartitionedTable, row_ranges
from cllm4rec_dist.distributed.rowwise_optim import RowWiseAdagrad
from cllm4rec_dist.distributed.table_checkpoint import load_tables, save_tables, table_blocks

__all__ = [
    "ItemParallelScorer",
    "PartitionedTable",
    "RowWiseAdagrad",
    "load_tables",
    "row_ranges",
    "save_tables",
    "table_blocks",
]
