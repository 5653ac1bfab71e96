"""ONNX Runtime threads and spinning of model nodes: the rule, what a real session gets, bad values."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from avstream.engine.errors import ConfigError
from avstream.engine.inference.threads import available_cpus, check_threads, plan_threads
from avstream.engine.node import NodeContext
from avstream.engine.runtime.config import Overrides, load_pipeline
from avstream.plugins.encoders import OnnxEncoderNode, OnnxEncoderParams
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[2]


def test_auto_threads_share_the_cores() -> None:
    # 2 cores, one source and one model: one thread each, nothing to spin
    plan = plan_threads(consumers=2, available=2.0)
    assert (plan.intra, plan.inter, plan.spin) == (1, 1, False)
    # 16 cores, 1 source + 4 models: 3 threads each, and those fit the node's share: they may spin
    plan = plan_threads(consumers=5, available=16.0)
    assert (plan.intra, plan.spin) == (3, True)
    assert "16 cores / 5 sources and model nodes" in plan.reason
    # more consumers than cores: still one thread, never spinning
    assert plan_threads(consumers=5, available=2.0).intra == 1
    # a cgroup-style fractional budget rounds down
    assert plan_threads(cpus=2.5, consumers=9, available=8.0).intra == 2


def test_explicit_values_override_the_rule() -> None:
    over = plan_threads(4, consumers=2, available=2.0)  # more threads than the share: no spinning
    assert (over.intra, over.spin) == (4, False)
    assert plan_threads(4, True, consumers=2, available=2.0).spin is True
    assert plan_threads("auto", False, consumers=1, available=16.0).spin is False
    assert plan_threads(2, cpus=4.0, consumers=9, available=8.0).spin is True


@pytest.mark.parametrize("bad", [0, -2, True, "two", 1.5, None])
def test_bad_thread_counts_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="threads must be 'auto' or a whole number of threads >= 1"):
        check_threads(bad)


def test_bad_threads_in_a_pipeline_name_the_key() -> None:
    for value in ("0", "-1", "lots"):
        with pytest.raises(ConfigError) as err:
            load_pipeline("highlight", Overrides(sets=[f"nodes.score.params.threads={value}"]))
        text = str(err.value)
        assert "nodes.score.params.threads" in text and "'auto' or a whole number" in text, text
    with pytest.raises(ConfigError, match="nodes.score.params.spin"):
        load_pipeline("highlight", Overrides(sets=["nodes.score.params.spin=sometimes"]))


def test_the_compiled_graph_counts_sources_and_model_nodes() -> None:
    assert load_pipeline("highlight").cpu_consumers == 2
    assert load_pipeline("monitor", Overrides(input_uri="sample://demo")).cpu_consumers == 5
    spec = load_pipeline("highlight")
    assert type(spec).from_json(spec.to_json()).cpu_consumers == 2  # what the workers read


pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
from avstream.exporters.testing import tiny_model  # noqa: E402


def started(model: Path, consumers: int, **params: object) -> OnnxEncoderNode:
    ctx = NodeContext(node_id="enc", streams=("a",), base_dir=model.parent, stop_event=threading.Event(),
                      logger=logging.getLogger("test"), cpu_consumers=consumers)
    node = OnnxEncoderNode(ctx, OnnxEncoderParams(model=model.name, providers=["cpu"], **params))
    node.on_start()
    return node


def session_options(node: OnnxEncoderNode) -> tuple[int, str, str]:
    assert node.runner is not None and node.runner.session is not None
    opts = node.runner.session.get_session_options()
    return (opts.intra_op_num_threads, opts.get_session_config_entry("session.intra_op.allow_spinning"),
            opts.get_session_config_entry("session.inter_op.allow_spinning"))


def test_the_node_builds_its_session_with_the_plan(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "tiny.onnx")
    auto = max(1, int(available_cpus() // 2))  # this machine's cores shared by one source and this node
    intra, intra_spin, inter_spin = session_options(started(model, consumers=2))
    assert intra == auto
    assert (intra_spin, inter_spin) == (("1", "1") if auto > 1 else ("0", "0"))
    assert session_options(started(model, consumers=2, threads=3, spin=False)) == (3, "0", "0")
    assert session_options(started(model, consumers=2, threads=2, spin=True)) == (2, "1", "1")


POOL_THREADS = """
import os, sys
from avstream.engine.inference.runners import create_session
before = len(os.listdir("/proc/self/task"))
session = create_session(sys.argv[1], providers=["cpu"], threads=int(sys.argv[2]))
print(len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc")
def test_intra_op_threads_are_os_threads(tmp_path: Path) -> None:
    """ORT runs on the calling thread plus intra-op - 1 pool threads: counted in a fresh process."""
    model = tiny_model(tmp_path / "tiny.onnx")
    added = {n: int(subprocess.run([sys.executable, "-c", POOL_THREADS, str(model), str(n)], cwd=REPO, check=True,
                                   capture_output=True, text=True).stdout.strip()) for n in (1, 3)}
    assert added[3] - added[1] == 2, added


def test_a_run_logs_the_choice() -> None:
    res = run_cli("run", "highlight", "--input", "sample://short", "--duration", "2", "--publish", "tcp://127.0.0.1:0",
                  timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    cores = available_cpus()
    auto = max(1, int(cores // 2))
    want = f"intra-op threads {auto} ({cores:g} cores / 2 sources and model nodes), spinning {'on' if auto > 1 else 'off'}"
    assert want in res.stdout + res.stderr, (res.stdout + res.stderr)[-2000:]


def test_graph_shows_the_plan() -> None:
    res = run_cli("graph", "highlight", "--set", "nodes.score.params.threads=3", cwd=REPO)
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if x.strip().startswith("score"))
    assert "intra-op threads 3" in line and "spinning" in line, line
