"""examples/otel_spans.py: a span per call, child of the caller's span through the
propagated context, with the call's queue wait as an attribute. Checked with
opentelemetry-sdk's in-memory exporter (its own provider: no global state)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import pytest
from conftest import PACKAGE_ROOT, require, run

require("opentelemetry.trace")
sdk_trace = require("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

EXAMPLE = PACKAGE_ROOT / "examples" / "otel_spans.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("otel_spans_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tracing():
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def slow(question):
    time.sleep(0.02)
    return f"answer to {question}"


def check_spans(example, exporter, pool, n):
    spans = exporter.get_finished_spans()
    (parent,) = [s for s in spans if s.name == "request"]
    children = [s for s in spans if s is not parent]
    assert len(children) == n and all(s.name == "casyncify slow" for s in children)
    for s in children:
        assert s.parent is not None and s.parent.span_id == parent.context.span_id, "the caller's span is the parent"
        assert s.context.trace_id == parent.context.trace_id
        assert s.context.span_id != parent.context.span_id
    waits = sorted(s.attributes[example.QUEUE_WAIT_ATTRIBUTE] for s in children)
    # One worker, calls of 20 ms: they waited about 0, 20, 40, ... ms, as the pool recorded.
    assert waits[0] < 15 and waits[-1] >= (n - 1) * 18, waits
    assert abs(waits[-1] - pool.stats().queue_wait.max * 1e3) < 1e-3
    return waits


def test_each_call_is_a_child_span_with_its_queue_wait(example, tracing, make_pool):
    tracer, exporter = tracing
    pool = make_pool(1, record_latency=True)
    ask = example.traced(slow, tracer=tracer, pool=pool)
    questions = [f"q{i}" for i in range(4)]
    assert run(example.handle_request(ask, questions, tracer)) == [f"answer to q{i}" for i in range(4)]
    check_spans(example, exporter, pool, 4)


def test_the_same_under_trio(example, tracing, make_pool):
    trio = require("trio")
    tracer, exporter = tracing
    pool = make_pool(1, record_latency=True)
    ask = example.traced(slow, tracer=tracer, pool=pool)

    async def main():
        with tracer.start_as_current_span("request"):
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(ask, f"q{i}")

    trio.run(main)
    check_spans(example, exporter, pool, 3)


def test_no_attribute_on_a_pool_that_does_not_record(example, tracing, make_pool):
    tracer, exporter = tracing
    ask = example.traced(slow, tracer=tracer, pool=make_pool(1))
    run(example.handle_request(ask, ["q"], tracer))
    child = next(s for s in exporter.get_finished_spans() if s.name != "request")
    assert example.QUEUE_WAIT_ATTRIBUTE not in child.attributes
    assert child.parent.span_id == next(s for s in exporter.get_finished_spans() if s.name == "request").context.span_id


def test_the_example_runs_as_a_script():
    env = dict(os.environ)
    if not os.environ.get("CASYNCIFY_TEST_INSTALLED"):  # this checkout's package, not an installed one
        env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, str(EXAMPLE)], check=False, capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("6 answers; the pool's queue wait: p50")
    assert sum("parent 'request', waited" in line for line in lines) == 6, out.stdout
