"""Requests coalesced into shared model calls in the ingress: a model replica then takes in one Serve request per
call instead of one per HTTP request (docs/gpu-fast-path.md, eighteenth session, has the profile that asked for it).

Written here rather than with `@serve.batch`: Serve's batcher forms the next batch as soon as a request arrives, then
queues it behind its concurrency limit, so with no batch wait a burst still goes out one request per call; here a
call is formed only when a loop is free to make it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("ray.serve")


class Coalescing(BaseModel):
    """The ingress deployment's `user_config`: how it coalesces sentiment and topic requests."""

    model_config = ConfigDict(extra="forbid")
    coalesce: bool = Field(True, description="false: every request makes its own model call")
    max_texts_per_call: int = Field(128, ge=1, description="texts of the requests one call takes, at most (a "
                                    "request with more goes alone)")
    calls_in_flight: int = Field(2, ge=1, description="calls an ingress replica has out to one model at once")


class CallFailed(Exception):
    """A coalesced call ended without answers its requests could use: cancelled by something other than all of them
    leaving (Serve cancels a call when its replica goes away), or the loop making it failed."""


@dataclass(eq=False)
class CoalescedRequest:
    """One request's texts, its deadline (event-loop time) and the future its answers arrive on (cancelled when the
    request leaves: its deadline passed or its client went away)."""

    texts: list[str]
    deadline: float
    answer: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Coalescer:
    """Queued requests' texts to one model method in shared calls. Each of `calls` loops, when free, takes the requests
    queued (up to `max_texts` texts, at least one request), makes one `send(texts, timeout_s)` and hands each request
    its slice of the answers, in order. Nothing waits for a call to fill: a lone request goes at once, and requests
    that arrive while every loop's call is out go together in the next. A request that leaves is skipped while
    queued; a call whose requests have all left is cancelled (Serve then cancels the model's work). A call cancelled
    otherwise, an error of the call, or a failure of the loop reaches each of its requests at once (`CallFailed`)."""

    def __init__(self, send: Callable[[list[str], float], Awaitable[list]], max_texts: int, calls: int):
        self.send = send
        self.waiting: deque[CoalescedRequest] = deque()
        self.arrived = asyncio.Event()
        self.loops: dict[int, asyncio.Task] = {}  # slot -> its loop
        self.configure(max_texts, calls)

    def configure(self, max_texts: int, calls: int) -> None:
        """New limits, for the next calls; loops past `calls` end once their call is answered."""
        self.max_texts, self.calls = max_texts, calls

    async def __call__(self, texts: list[str], timeout_s: float) -> list:
        """`texts`' answers within `timeout_s` (TimeoutError past it)."""
        for slot in range(self.calls):  # on the replica's event loop, from its first request on
            if slot not in self.loops or self.loops[slot].done():
                # a fresh context: not this request's, whose cancellation Serve passes on to the calls made in it
                self.loops[slot] = asyncio.create_task(self.run(slot), context=contextvars.Context())
        request = CoalescedRequest(texts, asyncio.get_running_loop().time() + timeout_s)
        self.waiting.append(request)
        self.arrived.set()
        return await asyncio.wait_for(request.answer, timeout_s)

    def take(self) -> list[CoalescedRequest]:
        """The queue's first requests that are still waited for, up to `max_texts` texts (at least one request)."""
        taken, count = [], 0
        while self.waiting:
            if self.waiting[0].answer.done():  # left while queued
                self.waiting.popleft()
            elif taken and count + len(self.waiting[0].texts) > self.max_texts:
                break
            else:
                taken.append(self.waiting.popleft())
                count += len(taken[-1].texts)
        return taken

    async def run(self, slot: int) -> None:
        """Calls, one at a time, while `slot` is within `calls`; a failure fails its call's requests, not the loop."""
        while slot < self.calls:
            if not self.waiting:
                self.arrived.clear()
                await self.arrived.wait()
                continue
            requests = self.take()
            try:
                await self.answer(requests)
            except Exception as exc:  # a bug here must not leave its requests waiting for their deadline
                log.exception("coalesced call of %d requests failed", len(requests))
                fail(requests, CallFailed(f"{type(exc).__name__}: {exc}"))

    async def answer(self, requests: list[CoalescedRequest]) -> None:
        """One call for `requests` (cancelled once they have all left); each gets its slice of the answers."""
        if not requests:
            return
        timeout_s = max(max(r.deadline for r in requests) - asyncio.get_running_loop().time(), 1e-3)
        texts = [text for r in requests for text in r.texts]
        call = asyncio.ensure_future(self.send(texts, timeout_s))

        def left(_) -> None:
            if all(r.answer.cancelled() for r in requests):
                call.cancel()

        for request in requests:
            request.answer.add_done_callback(left)
        await asyncio.wait([call])
        if call.cancelled():
            fail(requests, CallFailed("the model call was cancelled"))  # a no-op when they all left
        elif call.exception() is not None:
            fail(requests, call.exception())
        else:
            answers, start = call.result(), 0
            if len(answers) != len(texts):
                raise ValueError(f"{len(answers)} answers for {len(texts)} texts")
            for request in requests:
                if not request.answer.done():
                    request.answer.set_result(answers[start:start + len(request.texts)])
                start += len(request.texts)


def fail(requests: list[CoalescedRequest], error: BaseException) -> None:
    for request in requests:
        if not request.answer.done():
            request.answer.set_exception(error)
