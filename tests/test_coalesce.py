"""The ingress's request coalescing (`raytron.serving.coalesce`) on an event loop, its model call an async function
that records what it was sent: a lone request goes at once, a burst shares calls (never more than `calls` out, never
more than `max_texts` texts in one), every request gets its own answers in order, errors reach each request of the
call, and a call is cancelled only once every request in it has left. The deployed ingress is tested in
tests/test_serve.py (answers and deadlines under load, Serve's cancellation downstream)."""

import asyncio
import contextvars

import pytest

from raytron.serving.coalesce import CallFailed, Coalescer, Coalescing


class Model:
    """What the coalescer calls: answers `text!` per text after `delay_s`, recording each call's texts and how many
    calls were out at once; `fail` makes calls raise; `cancelled` counts calls cancelled while out."""

    def __init__(self, delay_s: float = 0.05, fail: bool = False):
        self.delay_s, self.fail = delay_s, fail
        self.calls: list[list[str]] = []
        self.out = self.most_out = self.cancelled = 0

    async def send(self, texts: list[str], timeout_s: float) -> list[str]:
        self.calls.append(texts)
        self.out += 1
        self.most_out = max(self.most_out, self.out)
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.out -= 1
        if self.fail:
            raise RuntimeError("the model failed")
        return [f"{text}!" for text in texts]


def test_a_lone_request_goes_at_once_and_a_burst_shares_calls():
    async def scenario():
        model = Model()
        coalescer = Coalescer(model.send, max_texts=6, calls=2)
        alone = await coalescer(["solo"], 5.0)
        burst = [[f"r{i}t{k}" for k in range(1 + i % 3)] for i in range(12)]  # 24 texts in 12 requests
        answers = await asyncio.gather(*(coalescer(texts, 5.0) for texts in burst))
        return model, alone, burst, answers

    model, alone, burst, answers = asyncio.run(scenario())
    assert alone == ["solo!"] and model.calls[0] == ["solo"]
    assert answers == [[f"{t}!" for t in texts] for texts in burst]  # each its own, in order
    burst_calls = model.calls[1:]
    assert sorted(t for call in burst_calls for t in call) == sorted(t for texts in burst for t in texts)
    assert len(burst_calls) < len(burst) and all(len(call) <= 6 for call in burst_calls)
    assert model.most_out <= 2


def test_a_request_larger_than_a_call_goes_alone():
    async def scenario():
        model = Model()
        coalescer = Coalescer(model.send, max_texts=2, calls=1)
        return model, await asyncio.gather(coalescer(["a", "b", "c"], 5.0), coalescer(["d"], 5.0))

    model, answers = asyncio.run(scenario())
    assert answers == [["a!", "b!", "c!"], ["d!"]] and model.calls == [["a", "b", "c"], ["d"]]


def test_an_error_reaches_every_request_of_the_call():
    async def scenario():
        coalescer = Coalescer(Model(fail=True).send, max_texts=8, calls=1)
        return await asyncio.gather(*(coalescer([f"t{i}"], 5.0) for i in range(3)), return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) and str(r) == "the model failed" for r in results)


def test_a_call_is_cancelled_only_once_every_request_in_it_left():
    async def scenario():
        model = Model(delay_s=0.5)
        coalescer = Coalescer(model.send, max_texts=8, calls=1)
        await coalescer(["warm"], 5.0)  # the loop is free: the next two go in one call
        short, long = (asyncio.create_task(coalescer([name], timeout)) for name, timeout in (("short", 0.1), ("long", 5.0)))
        with pytest.raises(TimeoutError):
            await short
        kept = (await long, model.cancelled)
        both = [asyncio.create_task(coalescer([name], 0.1)) for name in ("x", "y")]
        for task in both:
            with pytest.raises(TimeoutError):
                await task
        await asyncio.sleep(0.05)  # the cancellation reaches the call
        return model, kept

    model, (long_answer, cancelled_while_one_stayed) = asyncio.run(scenario())
    assert model.calls[1] == ["short", "long"] and model.calls[2] == ["x", "y"]
    assert long_answer == ["long!"] and cancelled_while_one_stayed == 0
    assert model.cancelled == 1


def test_the_ingress_user_config_refuses_unknown_keys_and_bad_values():
    assert Coalescing.model_validate({"calls_in_flight": 4}).max_texts_per_call == 128
    for bad in ({"max_batch_size": 32}, {"calls_in_flight": 0}, {"max_texts_per_call": -1}):
        with pytest.raises(ValueError):
            Coalescing.model_validate(bad)


def test_a_call_cancelled_from_outside_fails_its_requests_at_once():
    """Serve cancels a call whose replica went away: its requests fail now (a 503 from the ingress), not at their
    deadline, and the next request is served."""
    async def scenario():
        cancel = [False, True]  # popped from the end: the first call is cancelled

        async def send(texts, timeout_s):
            await asyncio.sleep(0.01)
            if cancel.pop():
                raise asyncio.CancelledError  # as a cancelled DeploymentResponse raises it
            return texts

        coalescer = Coalescer(send, max_texts=8, calls=1)
        start = asyncio.get_running_loop().time()
        failed = await asyncio.gather(coalescer(["a"], 30.0), coalescer(["b"], 30.0), return_exceptions=True)
        return failed, asyncio.get_running_loop().time() - start, await coalescer(["c"], 30.0)

    failed, seconds, served = asyncio.run(scenario())
    assert all(isinstance(f, CallFailed) and "cancelled" in str(f) for f in failed) and seconds < 5
    assert served == ["c"]


def test_a_loop_that_fails_fails_its_requests_and_keeps_serving():
    async def scenario():
        answers = [["too", "many", "answers"], ["fine"]]

        async def send(texts, timeout_s):
            return answers.pop(0)

        coalescer = Coalescer(send, max_texts=8, calls=1)
        failed = await asyncio.gather(coalescer(["a"], 30.0), return_exceptions=True)
        return failed, await coalescer(["b"], 30.0)

    (failed,), served = asyncio.run(scenario())
    assert isinstance(failed, CallFailed) and "3 answers for 1 texts" in str(failed) and served == ["fine"]


def test_calls_do_not_run_in_the_context_of_the_request_that_started_the_loops():
    """Serve keeps a request's identity in contextvars and cancels the calls made in it when that request is
    cancelled: the loops must not carry the first request's context into everyone's calls."""
    request_id = contextvars.ContextVar("request_id", default=None)

    async def scenario():
        seen = []

        async def send(texts, timeout_s):
            seen.append(request_id.get())
            return texts

        coalescer = Coalescer(send, max_texts=8, calls=1)

        async def request(name):
            request_id.set(name)
            return await coalescer([name], 5.0)

        await asyncio.gather(asyncio.create_task(request("first")), asyncio.create_task(request("second")))
        return seen

    assert asyncio.run(scenario()) == [None]
