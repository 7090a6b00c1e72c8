"""Size of what a device call sends: the files git would see (tracked, and untracked but not
ignored) plus the carried folders named on the command line. Run from the repository root.

    python bench/gpu/travel_size.py .whl .gpu_data
"""

from __future__ import annotations

import os
import subprocess
import sys

MIB = 2**20
LIMIT_MIB = 64


def tree_bytes() -> int:
    cmd = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    names = subprocess.run(cmd, capture_output=True, check=True).stdout.decode().split("\0")
    return sum(os.path.getsize(n) for n in names if n and os.path.isfile(n))


def folder_bytes(top: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(top) for f in fs)


if __name__ == "__main__":
    tree = tree_bytes()
    carried = {top: folder_bytes(top) for top in sys.argv[1:]}
    total = tree + sum(carried.values())
    parts = " + ".join(f"{top} {n / MIB:.1f}" for top, n in carried.items())
    print(
        f"travels: tree {tree / MIB:.1f} + {parts} = {total / MIB:.1f} MiB (limit {LIMIT_MIB} MiB)"
    )
    sys.exit(0 if total < LIMIT_MIB * MIB else 1)
