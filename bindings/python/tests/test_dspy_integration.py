"""casyncify.integrations.dspy: DSPy's asyncify and streamify routed through casyncify.

What DSPy's own tests check of dspy.asyncify (the limit, in timings and in the number
of calls running at once) and of dspy.streamify for a synchronous program (status
messages, LM chunks through a StreamListener), here with casyncify installed, under
asyncio and under AnyIO's trio backend. No network: DummyLM, and a DummyLM whose
engine streams its answer in pieces. Skipped without DSPy (and trio/AnyIO), except
under `make test-python`."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import casyncify
import pytest
from conftest import require

dspy = require("dspy")
anyio = require("anyio")
require("trio")

import casyncify.integrations.dspy as casyncify_dspy  # noqa: E402
from dspy.clients.engines.dummy_engine import AsyncDummyEngine, DummyEngine  # noqa: E402
from dspy.lm15 import response_to_events  # noqa: E402
from dspy.streaming import StatusMessage, StatusMessageProvider, StreamListener, StreamResponse  # noqa: E402
from dspy.utils import DummyLM  # noqa: E402

ANYIO_BACKENDS = ["asyncio", "trio"]


@pytest.fixture
def installed():
    casyncify_dspy.install()
    yield
    casyncify_dspy.uninstall()


def run_anyio(afn, backend: str):
    async def guarded():
        with anyio.fail_after(30):  # a hang fails the test instead of the suite
            return await afn()

    return anyio.run(guarded, backend=backend)


# ---------------------------------------------------------------------------
# install / uninstall
# ---------------------------------------------------------------------------


def test_install_routes_every_binding_and_uninstall_restores_them():
    import sys

    import dspy.streaming.streamify  # noqa: F401 - the package attribute is the function: use sys.modules
    import dspy.utils.asyncify  # noqa: F401

    streamify_module = sys.modules["dspy.streaming.streamify"]
    asyncify_module = sys.modules["dspy.utils.asyncify"]

    original = asyncify_module.asyncify
    places = [(dspy, "asyncify"), (asyncify_module, "asyncify"), (streamify_module, "asyncify")]
    assert all(getattr(m, a) is original for m, a in places)
    casyncify_dspy.install()
    try:
        casyncify_dspy.install()  # idempotent
        assert casyncify_dspy.installed()
        assert all(getattr(m, a) is casyncify_dspy.asyncify for m, a in places)
    finally:
        casyncify_dspy.uninstall()
    assert not casyncify_dspy.installed()
    assert all(getattr(m, a) is original for m, a in places), "DSPy's own function is back everywhere"


def test_a_dspy_module_imported_while_installed_gets_dspys_function_back():
    import sys
    import types

    import dspy.utils.asyncify

    original = dspy.utils.asyncify.asyncify
    casyncify_dspy.install()
    try:
        late = types.ModuleType("dspy.late_importer")  # `from dspy.utils.asyncify import asyncify`, now
        late.asyncify = sys.modules["dspy.utils.asyncify"].asyncify
        sys.modules[late.__name__] = late
        assert late.asyncify is casyncify_dspy.asyncify
    finally:
        casyncify_dspy.uninstall()
        sys.modules.pop("dspy.late_importer", None)
    assert late.asyncify is original


def test_async_programs_are_refused(installed):
    class AsyncCallable:
        async def __call__(self):
            return 1

    with pytest.raises(TypeError, match="coroutine function"):
        dspy.asyncify(AsyncCallable())


def test_a_call_runs_on_a_worker_with_the_callers_dspy_context(installed):
    lm_a = DummyLM([{"answer": "from A"}] * 10)
    lm_b = DummyLM([{"answer": "from B"}] * 10)
    aqa = dspy.asyncify(dspy.Predict("question -> answer"))

    async def ask(lm):
        with dspy.context(lm=lm):
            return (await aqa(question="q")).answer

    async def main():
        return await asyncio.gather(ask(lm_a), ask(lm_b), ask(lm_a))

    before = casyncify_dspy.pool_for(8).stats().submitted
    assert asyncio.run(main()) == ["from A", "from B", "from A"]
    assert casyncify_dspy.pool_for(8).stats().submitted - before == 3, "ran on casyncify's pool for the limit 8"


# ---------------------------------------------------------------------------
# The limit: dspy.context / dspy.configure(async_max_workers=N)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "n"), [(2, 4), (4, 10), (8, 15), (8, 30)])
def test_limit_timings_as_dspys_own_test(installed, limit, n):
    wait = 0.5
    ask = dspy.asyncify(lambda: time.sleep(wait) or 42)

    async def main():
        with dspy.context(async_max_workers=limit):
            start = time.monotonic()
            results = await asyncio.gather(*[ask() for _ in range(n)])
            return time.monotonic() - start, results

    elapsed, results = asyncio.run(main())
    assert results == [42] * n
    rounds = math.ceil(n / limit)  # the tight case (2, 4): two rounds, about 1.0 s
    lower = math.floor(n / limit) * wait - 0.05
    upper = rounds * wait + 2 * wait  # generous: two noisy cores
    assert lower < elapsed < upper, f"{n} calls of {wait} s at limit {limit}: {elapsed:.2f} s"


def _concurrency_probe():
    """A blocking function that records how many of its calls run at once."""
    lock = threading.Lock()
    state = {"active": 0, "max": 0}

    def work(seconds: float = 0.2):
        with lock:
            state["active"] += 1
            state["max"] = max(state["max"], state["active"])
        time.sleep(seconds)
        with lock:
            state["active"] -= 1
        return 42

    return work, state


def test_a_scoped_limit_applies_to_its_own_calls_only(installed):
    narrow_work, narrow = _concurrency_probe()
    wide_work, wide = _concurrency_probe()
    anarrow, awide = dspy.asyncify(narrow_work), dspy.asyncify(wide_work)

    async def batch(call, limit, n):
        with dspy.context(async_max_workers=limit):
            return await asyncio.gather(*[call() for _ in range(n)])

    async def main():  # both at once: neither scope resizes the other's pool
        return await asyncio.gather(batch(anarrow, 1, 3), batch(awide, 6, 6))

    assert asyncio.run(main()) == [[42] * 3, [42] * 6]
    assert (narrow["max"], wide["max"]) == (1, 6)
    assert casyncify_dspy.pool_for(1).max_workers == 1 and casyncify_dspy.pool_for(6).max_workers == 6
    assert casyncify_dspy.pool_for(1) is not casyncify_dspy.pool_for(6)


def test_dspy_configure_sets_the_limit(installed):
    work, state = _concurrency_probe()
    awork = dspy.asyncify(work)
    previous = dspy.settings.async_max_workers
    dspy.configure(async_max_workers=3)
    try:

        async def main():
            return await asyncio.gather(*[awork(0.3) for _ in range(9)])

        assert asyncio.run(main()) == [42] * 9
    finally:
        dspy.configure(async_max_workers=previous)
    assert state["max"] == 3


def test_bad_limits_are_refused(installed):
    async def main(limit):
        with dspy.context(async_max_workers=limit):
            return await dspy.asyncify(lambda: 1)()

    with pytest.raises(ValueError):
        asyncio.run(main(0))
    with pytest.raises(TypeError):
        asyncio.run(main("8"))
    assert asyncio.run(main(math.inf)) == 1, "inf: no limit"


# ---------------------------------------------------------------------------
# dspy.streamify of a synchronous program: status messages and LM chunks
# ---------------------------------------------------------------------------


class SplittingEngine(DummyEngine):
    """DummyLM's engine, streaming its answer in pieces of 5 characters."""

    complete_legacy = None  # no legacy shortcut: DSPy streams through stream()

    def stream(self, request):
        from dspy._vendor.lm15.types import StreamDeltaEvent, TextDelta

        for event in response_to_events(self.complete(request)):
            if event.type == "delta" and isinstance(event.delta, TextDelta):
                text = event.delta.text
                for i in range(0, len(text), 5):
                    yield StreamDeltaEvent(delta=TextDelta(text=text[i : i + 5], part_index=event.delta.part_index))
            else:
                yield event


class StreamingDummyLM(DummyLM):
    def __init__(self, answers):
        super().__init__(answers)
        self._engine_spec = SplittingEngine(self)
        self._async_engine_spec = AsyncDummyEngine(self._engine_spec)


class ToolThenPredict(dspy.Module):
    """A synchronous program: a tool, then a prediction (as in DSPy's streaming tests)."""

    def __init__(self):
        super().__init__()
        self.generate_question = dspy.Tool(lambda x: f"What color is the {x}?", name="generate_question")
        self.predict = dspy.Predict("question->answer")

    def __call__(self, x: str):
        return self.predict(question=self.generate_question(x=x))


class Messages(StatusMessageProvider):
    def tool_start_status_message(self, instance, inputs):
        return "Tool starting!"

    def tool_end_status_message(self, outputs):
        return "Tool finished!"

    def module_start_status_message(self, instance, inputs):
        if isinstance(instance, dspy.Predict):
            return "Predict starting!"


@pytest.mark.parametrize("backend", ANYIO_BACKENDS)
def test_streamify_of_a_sync_program_streams_status_and_lm_chunks(installed, backend):
    lm = StreamingDummyLM([{"answer": "The sky is blue today."}])
    program = dspy.streamify(
        ToolThenPredict(),
        status_message_provider=Messages(),
        stream_listeners=[StreamListener(signature_field_name="answer")],
    )
    pool = casyncify_dspy.pool_for(8)
    before = pool.stats().submitted

    async def main():
        with dspy.context(lm=lm):
            return [value async for value in program("sky")]

    values = run_anyio(main, backend)
    statuses = [v.message for v in values if isinstance(v, StatusMessage)]
    chunks = [v for v in values if isinstance(v, StreamResponse)]
    assert statuses == ["Tool starting!", "Tool finished!", "Predict starting!"]
    assert len(chunks) > 1, "the answer came in pieces, as the LM streamed it"
    assert "".join(c.chunk for c in chunks) == "The sky is blue today."
    assert {c.signature_field_name for c in chunks} == {"answer"}
    assert isinstance(values[-1], dspy.Prediction) and values[-1].answer == "The sky is blue today."
    assert pool.stats().submitted - before == 1, "the program ran through casyncify"


def test_streamify_default_status_messages_under_trio(installed):
    lm = DummyLM([{"answer": "red"}])
    program = dspy.streamify(ToolThenPredict())

    async def main():
        with dspy.context(lm=lm):
            return [v.message async for v in program("sky") if isinstance(v, StatusMessage)]

    assert run_anyio(main, "trio") == [
        "Calling tool generate_question...",
        "Tool calling finished! Querying the LLM with tool calling results...",
    ]


def test_sync_streaming_wrapper_works_too(installed):
    lm = StreamingDummyLM([{"answer": "Sync streaming works."}])
    program = dspy.streamify(
        dspy.Predict("question->answer"),
        stream_listeners=[StreamListener(signature_field_name="answer")],
        async_streaming=False,
    )
    with dspy.context(lm=lm):
        chunks = [v.chunk for v in program(question="q") if isinstance(v, StreamResponse)]
    assert "".join(chunks) == "Sync streaming works."


def test_casyncify_overrides_flow_into_dspy_programs(installed):
    seen = []

    def program():
        seen.append((casyncify.get("tenant"), dspy.settings.lm))
        return "ok"

    lm = DummyLM([])

    async def main():
        with casyncify.context(tenant="t1"), dspy.context(lm=lm):
            return await dspy.asyncify(program)()

    assert asyncio.run(main()) == "ok"
    assert seen == [("t1", lm)]


# ---------------------------------------------------------------------------
# A limiter per LM, chosen from the caller's dspy.context
# ---------------------------------------------------------------------------


def _model_lm(model: str) -> DummyLM:
    """A DummyLM answering "from <model>" to every question, named like a real model."""
    lm = DummyLM({"question": {"answer": f"from {model}"}})
    lm.model = model
    return lm


class _PerModel:
    """A DSPy program that counts, inside each call, how many calls of its LM's model run at once."""

    def __init__(self):
        self.qa = dspy.Predict("question -> answer")
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.overlap = 0  # calls of another model running beside this one, at most

    def __call__(self, question):
        model = dspy.settings.lm.model
        with self.lock:
            self.now[model] = self.now.get(model, 0) + 1
            self.most[model] = max(self.most.get(model, 0), self.now[model])
            self.overlap = max(self.overlap, sum(self.now.values()) - self.now[model])
        try:
            time.sleep(0.05)
            return self.qa(question=question).answer
        finally:
            with self.lock:
                self.now[model] -= 1


@pytest.mark.parametrize("how", ["casyncify.asyncify", "install"])
def test_limiter_per_lm_caps_each_models_calls_without_naming_it(how):
    gpt4, mini = _model_lm("openai/gpt-4o"), _model_lm("openai/gpt-4o-mini")
    caps = {"openai/gpt-4o": 1, "openai/gpt-4o-mini": 2}
    per_lm = casyncify_dspy.limiter_per_lm(make=lambda model: casyncify.Limiter(caps[model], rate=100, name=model))
    program = _PerModel()
    if how == "install":
        casyncify_dspy.install(limiter=per_lm, start_within=30)
        aprogram = dspy.asyncify(program)
    else:
        aprogram = casyncify.asyncify(program, limiter=per_lm)

    async def ask(lm, i):
        with dspy.context(lm=lm):  # the caller names the LM, never the limiter
            return await aprogram(question=f"question {i}")

    async def main():
        return await asyncio.gather(*[ask(lm, i) for i in range(4) for lm in (gpt4, mini)])

    try:
        answers = asyncio.run(main())
    finally:
        casyncify_dspy.uninstall()
    assert answers == ["from openai/gpt-4o", "from openai/gpt-4o-mini"] * 4
    assert program.most == caps, "each model's calls stayed within its own cap"
    assert program.overlap >= 1, "the two models' calls ran beside each other"
    limiters = per_lm.limiters()
    assert sorted(limiters) == sorted(caps)
    assert all(lim.stats().admitted == 4 for lim in limiters.values())
    # Another LM object of the same model shares its limiter; no LM configured: no limiter.
    with dspy.context(lm=_model_lm("openai/gpt-4o")):
        assert per_lm() is limiters["openai/gpt-4o"]
    with dspy.context(lm=None):
        assert per_lm() is None


def test_limiter_per_lm_with_a_rate_and_a_deadline():
    lm = _model_lm("slow-model")
    per_lm = casyncify_dspy.limiter_per_lm(max_running=1, rate=1000)
    ran = []
    aprogram = casyncify_dspy.asyncify(lambda: ran.append(1) or time.sleep(0.3), limiter=per_lm, start_within=0.05)

    async def main():
        with dspy.context(lm=lm):
            return await asyncio.gather(aprogram(), aprogram(), return_exceptions=True)

    first, second = asyncio.run(main())
    assert first is None and isinstance(second, casyncify.ExpiredError), "the second could not start in time"
    assert ran == [1] and second.limiter == "slow-model"
    assert per_lm["slow-model"].rate == 1000.0 and per_lm["slow-model"].max_running == 1
    with pytest.raises(ValueError):
        casyncify_dspy.install(start_within=-1)
    assert not casyncify_dspy.installed(), "a refused install() changes nothing"
