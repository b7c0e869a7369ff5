"""Where the benchmarks' shared data is, and what to say when it is not there.

The benchmarks read real networks and properties that are *not* part of the repository: a folder (the project's
``shared/``) with ``benchmarks/acasxu``, ``benchmarks/mnist_fc``, ``benchmarks/watermark_mnist``,
``benchmarks/cifar10`` and ``datasets/mnist``.  ``PATCHLANG_SHARED`` names it; the default is ``../shared`` next to
the repository.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What each benchmark folder holds and where the public originals are, for the message when it is missing.
SOURCES = {
    "benchmarks/acasxu": "the VNN-COMP 2021 ACAS Xu benchmark (45 networks as onnx/ and nnet/, vnnlib/prop_1..10, "
                         "acasxu_instances.csv; github.com/stanleybak/vnncomp2021, benchmarks/acasxu)",
    "benchmarks/mnist_fc": "the VNN-COMP 2021 mnistfc benchmark (onnx/, vnnlib/, mnistfc_instances.csv; "
                           "github.com/stanleybak/vnncomp2021, benchmarks/mnistfc)",
    "benchmarks/watermark_mnist": "the watermarked MNIST network of the minimal-modification paper "
                                  "(mnist_wm.onnx, wm.set.npy, wm.labels.txt)",
    "benchmarks/cifar10": "the VNN-COMP 2021 oval21 benchmark's cifar_base_kw network with two of its properties "
                          "(onnx/cifar_base_kw.onnx, vnnlib/, oval21_instances.csv; github.com/stanleybak/vnncomp2021, "
                          "benchmarks/oval21)",
    "datasets/mnist": "the MNIST IDX files (gzip)",
}


def shared_root(override: str | None = None) -> Path:
    """``override``, else ``PATCHLANG_SHARED``, else ``../shared``; relative paths from the repository root."""
    raw = override or os.environ.get("PATCHLANG_SHARED", "../shared")
    return Path(raw) if os.path.isabs(raw) else (ROOT / raw).resolve()


def missing_message(sub: str, path: Path, script: str) -> str:
    """Where we looked, where the data comes from, and the command that points patchlang at it."""
    env = os.environ.get("PATCHLANG_SHARED")
    how = (f"PATCHLANG_SHARED={env}" if env else
           "PATCHLANG_SHARED is not set, so the default ../shared next to the repository was used")
    return (f"{script}: benchmark data not found: looked in {path} ({how}).\n"
            f"  It is not part of the repository: it is {SOURCES.get(sub, sub)}.\n"
            f"  Point PATCHLANG_SHARED at the folder that holds {sub}/, e.g.\n"
            f"      PATCHLANG_SHARED=/path/to/shared python bench/{script}")


def require(sub: str, script: str, override: str | None = None) -> Path:
    """``shared_root()/sub``, or exit 2 with :func:`missing_message` on stderr."""
    path = shared_root(override) / sub
    if not path.is_dir():
        print(missing_message(sub, path, script), file=sys.stderr)
        sys.exit(2)
    return path
