"""`run --executor`: the spec's tasks on a Dask cluster started here, on loopback only; results equal the serial
run's.  Skipped with a message when `distributed` is not installed (it is in the `test` extra)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from conftest import report_figures
from patchlang.cli import main



@pytest.fixture()
def examples(examples_copy: Path) -> Path:
    return examples_copy


_figures = report_figures


def _run(spec: Path, *extra: str) -> tuple[int, dict]:
    path = spec.parent / "r.json"
    code = main(["run", str(spec), "--json", str(path), "-q", *extra])
    return code, json.loads(path.read_text())


def test_a_dask_cluster_gives_the_serial_results(examples: Path) -> None:
    distributed = pytest.importorskip("distributed", reason="distributed (Dask) is not installed: pip install "
                                                            "'patchlang[cluster]' to test --executor")
    spec = examples / "exact" / "exact.patch"
    serial = _run(spec)
    saved = spec.parent / "out" / "digits_exact.onnx"
    saved.unlink()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        on_cluster = _run(spec, "--executor", "dask://" + address[len("tcp://"):])
    assert on_cluster[0] == serial[0] and _figures(on_cluster[1]) == _figures(serial[1])
    assert saved.exists()  # written by a worker, at the spec's path
    local = _run(examples / "verify" / "verify.patch", "--executor", "local", "--jobs", "2")
    assert _figures(local[1]) == _figures(_run(examples / "verify" / "verify.patch")[1])


def test_executor_usage_errors(examples: Path, capsys) -> None:
    assert main(["run", str(examples / "toy" / "toy.patch"), "--executor", "ray://x"]) == 2
    assert "--executor must be `local` or `dask://HOST:PORT`" in capsys.readouterr().err


def test_local_workers_keep_glibc_malloc_and_run_no_profiler(monkeypatch) -> None:
    """The local cluster's workers without Dask's MALLOC_TRIM_THRESHOLD_ (which switches off glibc's dynamic mmap
    threshold: ACAS Xu tasks took 40 times the page faults and twice the CPU) and without the stack profiler;
    Dask's thread caps stay."""
    pytest.importorskip("distributed", reason="distributed (Dask) is not installed")
    import os

    import dask

    from patchlang.run.cluster import _client

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    client, cluster = _client("local", 1)
    try:
        [trim] = client.run(os.getenv, "MALLOC_TRIM_THRESHOLD_").values()
        [blas] = client.run(os.getenv, "OPENBLAS_NUM_THREADS").values()
        [profiler] = client.run(dask.config.get, "distributed.worker.profile.enabled").values()
        [tick] = client.run(dask.config.get, "distributed.admin.tick.interval").values()
    finally:
        client.close()
        cluster.close()
    assert trim is None and profiler is False and blas == "1" and tick == "1s"
    assert dask.config.get("distributed.worker.profile.enabled") is True  # the caller's config is left as it was
