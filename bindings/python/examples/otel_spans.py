"""An OpenTelemetry span per casyncify call, child of the caller's span, with the
time the call waited in the queue as an attribute.

    pip install opentelemetry-api opentelemetry-sdk    # the SDK only to see the spans here
    python bindings/python/examples/otel_spans.py

How it works, with nothing but OpenTelemetry's API:

* OpenTelemetry keeps the current span in a ``contextvars.ContextVar``, and casyncify
  copies the caller's whole context into each call. A span opened inside the call
  (on the worker) therefore has the caller's span as its parent, with no context
  passed by hand, under asyncio, trio and AnyIO alike.
* ``casyncify.queue_wait()`` inside a call on a pool that records latency
  (``Pool(record_latency=True)``) is the time the call waited from its submit (its
  wait for a limiter included) to its start, as the library measured it (its
  ``on_task_start`` hook); it becomes the span attribute ``casyncify.queue_wait_ms``.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, Callable

try:
    import casyncify
except ImportError:  # run from a checkout: the package is next to this directory
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import casyncify
from opentelemetry import trace

#: The attribute that carries a call's queue wait, in milliseconds.
QUEUE_WAIT_ATTRIBUTE = "casyncify.queue_wait_ms"


def traced(
    fn: Callable[..., Any], *, tracer: trace.Tracer | None = None, **options: Any
) -> Callable[..., Awaitable[Any]]:
    """``casyncify.asyncify(fn, **options)``, each call in a span of its own, opened on
    the worker: a child of the caller's current span, with the call's queue wait."""
    tracer = tracer or trace.get_tracer("casyncify.example")
    name = f"casyncify {getattr(fn, '__qualname__', repr(fn))}"

    @functools.wraps(fn)
    def in_span(*args: Any, **kwargs: Any) -> Any:
        with tracer.start_as_current_span(name) as span:  # parent: the caller's span, copied with the call
            wait = casyncify.queue_wait()  # None on a pool that does not record latency
            if wait is not None:
                span.set_attribute(QUEUE_WAIT_ATTRIBUTE, wait * 1e3)
            return fn(*args, **kwargs)

    return casyncify.asyncify(in_span, **options)


async def handle_request(
    ask: Callable[[str], Awaitable[str]], questions: Sequence[str], tracer: trace.Tracer
) -> list[str]:
    """One request of a service: a span of its own, and a call per question, at once."""
    with tracer.start_as_current_span("request"):
        return list(await asyncio.gather(*(ask(q) for q in questions)))


def answer(question: str) -> str:
    """Blocking work: a model call, say."""
    time.sleep(0.02)
    return f"answer to {question}"


def main() -> None:
    exporter = _record_spans()
    tracer = trace.get_tracer("casyncify.example")
    with casyncify.Pool(2, record_latency=True) as pool:
        ask = traced(answer, tracer=tracer, pool=pool)
        answers = asyncio.run(handle_request(ask, [f"q{i}" for i in range(6)], tracer))
        queue_wait = pool.stats().queue_wait
        assert queue_wait is not None  # the pool records latency
        print(f"{len(answers)} answers; the pool's queue wait: p50 {queue_wait.p50 * 1e3:.1f} ms")
    if exporter is None:
        return
    spans = exporter.get_finished_spans()
    names = {s.context.span_id: s.name for s in spans if s.context is not None}
    for s in sorted(spans, key=lambda s: s.start_time or 0):
        parent = names.get(s.parent.span_id, "?") if s.parent else "-"
        wait = (s.attributes or {}).get(QUEUE_WAIT_ATTRIBUTE)
        waited = f", waited {wait:5.1f} ms" if isinstance(wait, float) else ""
        trace_id = s.context.trace_id if s.context is not None else 0
        print(f"  span {s.name!r:20} trace {trace_id:032x}, parent {parent!r}{waited}")


def _record_spans() -> Any:
    """An in-memory exporter behind the global tracer provider, to print the spans here
    (None without opentelemetry-sdk: the API alone makes spans that record nothing)."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        print("opentelemetry-sdk is not installed: the spans are made (through the API) but not recorded")
        return None
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


if __name__ == "__main__":
    main()
