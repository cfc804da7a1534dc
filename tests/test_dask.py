"""`mrnet preprocess --backend dask` on a loopback LocalCluster: same cache as local runs."""

from __future__ import annotations

import os

import pytest
from helpers import args, cache_content, kill_mid_run
from typer.testing import CliRunner

from cli import app

distributed = pytest.importorskip("dask.distributed")
runner = CliRunner()


@pytest.fixture(scope="module")
def scheduler():
    saved = dict(os.environ)  # LocalCluster sets OMP_NUM_THREADS=1 here for later tests
    try:
        with distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster:
            yield cluster.scheduler_address
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_dask_backend_builds_the_same_cache(cache, synth, scheduler, tmp_path):
    out = tmp_path / "dask"
    r = runner.invoke(
        app, args(synth, out, "--shard-size", "8", "--backend", "dask", "--scheduler", scheduler)
    )
    assert r.exit_code == 0, r.output
    assert cache_content(out) == cache_content(cache)


def test_killed_local_run_resumes_on_the_cluster(cache, synth, scheduler, tmp_path):
    out = tmp_path / "resumed"
    kill_mid_run(synth, out, min_shards=2)
    n_done = len(list((out / "shards").glob("*.h5")))
    assert 2 <= n_done < len(list((cache / "shards").glob("*.h5"))), "kill missed the run"
    r = runner.invoke(
        app, args(synth, out, "--shard-size", "8", "--backend", "dask", "--scheduler", scheduler)
    )
    assert r.exit_code == 0, r.output
    assert "resuming" in r.output
    assert cache_content(out) == cache_content(cache)


def test_dask_without_scheduler_is_bad_input(synth, tmp_path):
    r = runner.invoke(app, args(synth, tmp_path / "x", "--backend", "dask"))
    assert r.exit_code == 2 and "--scheduler" in r.output


def test_unreachable_scheduler_is_bad_input(synth, tmp_path):
    r = runner.invoke(
        app, args(synth, tmp_path / "x", "--backend", "dask", "--scheduler", "tcp://127.0.0.1:9")
    )
    assert r.exit_code == 2 and "dask scheduler" in r.output, r.output
