"""ASGI middleware for Serve's HTTP proxy: a request whose ingress replica died is sent once more, else 503.

Serve's proxy answers nothing for a request whose replica died while it held the request (a
`RayActorError`: it only writes 408, 429 and 503 itself), so uvicorn would send a bare
`500 Internal Server Error`. Serve loads this middleware into its proxy when the environment of the
Ray cluster says `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=raytron.serving.proxy:middlewares`
(serve/README.md): such a request is sent again, once, with the body it had read (every raytron call is
idempotent; Serve's router has marked the dead replica, so the retry goes to a live one or waits for
the replacement); if that also ends without an answer, the client gets a 503 `{error, detail}` with
Retry-After. A client that hung up is never retried.
"""

import json
import logging

from starlette.middleware import Middleware

log = logging.getLogger("ray.serve")

RETRY_AFTER_S = 5
"""Retry-After of the 503 sent when the retry ended without an answer too."""
REPLAY_BYTES = 4_000_000
"""The most body bytes kept for the retry (above every configured max_body_bytes); a larger body is not retried."""


class RetryLostRequests:
    """Records the request's body while the proxy reads it; when the proxy ends without starting a response
    (and the client is still there), replays it through the proxy once more, then answers 503."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        recorded: list[dict] = []
        state = {"bytes": 0, "started": False, "gone": False}

        async def recording_receive():
            message = await receive()
            if message["type"] == "http.disconnect":
                state["gone"] = True
            elif state["bytes"] <= REPLAY_BYTES:
                state["bytes"] += len(message.get("body", b""))
                recorded.append(message)
            return message

        async def watching_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, recording_receive, watching_send)
        if state["started"] or state["gone"]:
            return
        if state["bytes"] <= REPLAY_BYTES:
            log.warning("%s %s: no answer from the replica holding it (it died); sending it once more",
                        scope["method"], scope["path"])
            replay = list(recorded)

            async def replaying_receive():
                return replay.pop(0) if replay else await recording_receive()

            await self.app(scope, replaying_receive, watching_send)
            if state["started"] or state["gone"]:
                return
        body = json.dumps({"error": "the API replica handling this request went away before answering; retry after "
                                    f"{RETRY_AFTER_S} s", "detail": {"retry_after_s": RETRY_AFTER_S}}).encode()
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER_S).encode())]})
        await send({"type": "http.response.body", "body": body})


def middlewares() -> list[Middleware]:
    """What `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=raytron.serving.proxy:middlewares` gives Serve's proxy."""
    return [Middleware(RetryLostRequests)]
