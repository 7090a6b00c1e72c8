"""Dense ID tables: the single-process implementation and the reference for partitioned ones."""

from __future__ import annotations

from torch import Tensor, nn

from cllm4rec_dist.model.interfaces import init_rows


class DenseTable(nn.Module):
    """A whole user or item table on one process: rows [0, num_rows), fp32."""

    def __init__(self, num_rows: int, dim: int, seed: int = 0, std: float = 0.02):
        super().__init__()
        self.num_rows, self.dim = num_rows, dim
        self.row_range = (0, num_rows)
        self.weight = nn.Parameter(init_rows(0, num_rows, dim, seed, std))

    def forward(self, ids: Tensor) -> Tensor:
        return nn.functional.embedding(ids, self.weight)

    def extra_repr(self) -> str:
        return f"num_rows={self.num_rows}, dim={self.dim}"


def check_ids(ids: Tensor, num_rows: int, what: str) -> None:
    """Fail with a clear message on out-of-range ids (instead of an index error deep in a kernel)."""
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_rows):
        raise IndexError(
            f"{what} ids out of range [0, {num_rows}): min={int(ids.min())}, max={int(ids.max())}"
        )


__all__ = ["DenseTable", "check_ids"]
