"""Request bodies, and how one becomes a job: validation is GenerationConfig's, not a copy.

``GenerateRequest`` is built from the fields of
:class:`~musicgen_edu.generator.GenerationConfig` (``create_model`` below), so a new sampling
setting appears in the API, its OpenAPI schema and its validation without a second list of
names or ranges. JSON types are checked by pydantic in strict mode (``true`` is no number, ``1e309`` no
finite one, ``"8"`` no float); ranges by ``GenerationConfig`` itself, whose
:class:`~musicgen_edu.errors.ConfigError` text is the 422 message. Every text is bounded in
characters and checked to be valid Unicode here, and in text-encoder tokens once the model's
tokenizer is loaded (the generator checks tokens again before encoding, whatever the caller). A
request becomes a
job's ``params``::

    {"prompts": [...], "negatives": [...], "seeds": [seed, seed + 1, ...],
     "settings": {every GenerationConfig field but seed}}

``batch_key`` = hash(kind, model, settings): requests that may share a batch. ``cache_key`` =
hash(owner, kind, model, settings, prompts, negatives, seeds), only when the client chose the
seed (a server-drawn seed is never repeated, so there is nothing to reuse). The owner is part
of it: a cache shared between owners would tell one lab, by an instant answer and the first
run's timings, what another lab had asked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypedDict

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic_core import ErrorDetails

from ..errors import ConfigError, check_range
from ..generation import MAX_PROMPT_CHARS, MAX_SEED, GenerationConfig, check_text
from ..models import DEBUG_MODELS, HUB_MODELS, RANDOM_MODELS
from ..settings import Settings

if typing.TYPE_CHECKING:
    from ..generator import MusicGenerator

__all__ = ["GenerateRequest", "PromptRequest", "BatchRequest", "job_params", "Capabilities",
           "capabilities", "check_model", "explain_validation", "ErrorResponse", "error_responses",
           "file_content", "Accepted", "ACCEPTED_HEADERS", "CancelAnswer", "JobView", "JobList",
           "PromptCheck", "PromptImproved", "ModelList", "Health", "Ready", "NotReady"]

MAX_NAME_CHARS = 200                # characters of a model name


def _whole(value: Any) -> Any:
    """JSON has numbers, not integers: ``8.0`` is the integer 8 (as JSON Schema's ``integer``
    says); ``8.5``, ``true`` and ``"8"`` stay what they are, and strict mode refuses them."""
    return int(value) if type(value) is float and value.is_integer() else value


WholeNumber = Annotated[int, BeforeValidator(_whole)]
_CONFIG_TYPES = {name: WholeNumber if kind in (int, int | None) else kind
                 for name, kind in typing.get_type_hints(GenerationConfig).items()}
# name -> (type, FieldInfo): create_model's keyword arguments, types as run-time values
_CONFIG_FIELDS: dict[str, Any] = {f.name: (_CONFIG_TYPES[f.name] | None, Field(None, description=(
    f"GenerationConfig.{f.name} (default {f.default!r})"))) for f in dataclasses.fields(GenerationConfig)}


# A text for the text encoder: 1 to MAX_PROMPT_CHARS characters of valid Unicode (pydantic
# refuses a lone surrogate such as \ud800 itself, as string_unicode or json_invalid: a 422).
Text = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
# strict: no bool for a number, no string for a number; allow_inf_nan: no 1e309, no NaN
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Request(BaseModel):
    model_config = _STRICT

    prompt: Text | None = Field(None, description="One text prompt (or use prompts).")
    prompts: list[Text] | None = Field(None, max_length=64,
                                          description="Several prompts, decoded together.")
    negative_prompt: Text | None = Field(None, description="Steer away from this text.")
    model: str | None = Field(None, max_length=MAX_NAME_CHARS,
                                 description="A configured model; default: the server's.")


_GenerateRequest = create_model("GenerateRequest", __base__=_Request, **_CONFIG_FIELDS)
_GenerateRequest.__doc__ = "POST /v1/generate, /v1/continue, /v1/melody and the WebSocket stream."
# Its GenerationConfig fields exist only at run time: a type checker sees the _Request base
# (and routes may use the name as a parameter type, which FastAPI reads as the model above).
if typing.TYPE_CHECKING:
    GenerateRequest = _Request
else:
    GenerateRequest = _GenerateRequest


class PromptRequest(BaseModel):
    """POST /v1/prompts/improve and /v1/prompts/validate."""

    model_config = _STRICT
    prompt: Text
    seed: WholeNumber = Field(0, ge=0, le=2**31 - 1, description="Seed of improve's choices.")


class BatchRequest(BaseModel):
    """The JSON ``request`` field of POST /v1/batch (beside the CSV file)."""

    model_config = _STRICT
    model: str | None = Field(None, max_length=MAX_NAME_CHARS)


def explain_validation(errors: Sequence[ErrorDetails]) -> str:
    """pydantic's errors as one sentence naming each field and the value it got."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err["loc"] if p not in ("body", "query", "path")) or "body"
        got = err.get("input")
        shown = repr(got) if len(repr(got)) <= 80 else repr(got)[:77] + "..."
        if err["type"] == "json_invalid":     # loc holds a character position, not a field
            reason = (err.get("ctx") or {}).get("error", "not JSON")
            parts.append(f"the body is not valid JSON ({reason}); send a JSON object such as "
                         '{"prompt": "lo-fi piano"}')
        elif err["type"] == "extra_forbidden":
            parts.append(f"unknown field {where!r} (the request schemas are at GET /docs)")
        elif err["type"] == "missing":
            parts.append(f"{where} is missing")
        else:
            parts.append(f"{where}={shown} is not valid: {err['msg']}")
    return "invalid request: " + "; ".join(parts) + "."


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def check_model(name: str | None, settings: Settings) -> str:
    """The model a request asks for, or the default; ConfigError if it is not configured."""
    name = name or settings.default_model
    if name not in settings.models:
        raise ConfigError(f"model={name!r} is not served here; allowed: {settings.models} "
                          "(setting models).")
    return name


def _prompts(req: GenerateRequest, settings: Settings, text_required: bool) -> list[str | None]:
    """The request's texts, 1 to ``max_prompts`` of them; ``[None]`` when the audio alone
    conditions (``text_required`` False) and none came."""
    if req.prompt is not None and req.prompts is not None:
        raise ConfigError("give either prompt or prompts, not both.")
    prompts: list[str | None]
    if req.prompt is not None:
        prompts = [req.prompt]
    elif req.prompts is not None:
        prompts = list(req.prompts)
    elif text_required:
        raise ConfigError("prompt is missing; send {\"prompt\": \"lo-fi piano\"} or "
                          "{\"prompts\": [...]}.")
    else:
        prompts = [None]
    if not 1 <= len(prompts) <= settings.max_prompts:
        raise ConfigError(f"{len(prompts)} prompts in one request; allowed: 1 to "
                          f"{settings.max_prompts} (setting max_prompts).")
    return prompts


def _check_texts(req: GenerateRequest, prompts: list[str | None], tokenizer: object) -> None:
    """Every text of the request, bounded in characters and (with a tokenizer) in tokens."""
    for i, p in enumerate(prompts):
        if p is not None:
            check_text(f"prompt {i}", p, tokenizer)
    if req.negative_prompt is not None:
        check_text("negative_prompt", req.negative_prompt, tokenizer)


def job_params(req: GenerateRequest, settings: Settings, kind: str, text_required: bool = True,
               *, owner: str = "", loaded: Mapping[str, MusicGenerator] | None = None
               ) -> tuple[dict[str, Any], str, str, str]:
    """Validate a request and turn it into ``(params, model, batch_key, cache_key)``.

    Args:
        req: a :data:`GenerateRequest`.
        settings: the service settings (limits, default model).
        kind: generate, continue, melody or stream.
        text_required: False where the audio alone may condition (continue).
        owner: who asks; part of the cache key (results are never shared between owners).
        loaded: the loaded generators by model name; the model's tokenizer, if loaded, counts
            the tokens of every text (else the generator does, when the job runs).
    """
    prompts = _prompts(req, settings, text_required)
    model = check_model(req.model, settings)
    _check_texts(req, prompts, loaded[model].model.tokenizer if loaded and model in loaded
                 else None)
    given = {k: getattr(req, k) for k in _CONFIG_FIELDS if getattr(req, k) is not None}
    seed = given.pop("seed", None)
    config = GenerationConfig(**given)                 # raises ConfigError on a bad value
    check_range("duration", config.duration, 0, settings.max_duration, low_open=True,
                hint="That is this server's limit (setting max_duration).")
    chosen = seed is not None
    if chosen:
        check_range("seed", seed, 0, MAX_SEED - len(prompts))
    else:
        seed = random.randrange(2**31)
    settings_ = {k: v for k, v in dataclasses.asdict(config).items() if k != "seed"}
    params: dict[str, Any] = dict(prompts=prompts, negatives=[req.negative_prompt] * len(prompts),
                                  seeds=[seed + i for i in range(len(prompts))], settings=settings_)
    batch_key = _digest(kind, model, settings_) if kind == "generate" else ""
    # what else decides the audio: the backend, precision and device the server runs
    runtime = (settings.backend, settings.dtype, settings.device)
    cached = chosen and kind == "generate"
    cache_key = _digest(owner, kind, model, runtime, params) if cached else ""
    return params, model, batch_key, cache_key


class Capabilities(TypedDict):
    """What a model can do (``GET /v1/models``); None: unknown until the model is loaded."""

    melody: bool | None             # takes a melody (POST /v1/melody)
    channels: int | None            # C of its [B, C, T] audio
    sample_rate: int | None         # Hz of its audio (None until loaded)
    max_duration: float | None      # seconds in one decoder window


def capabilities(name: str, loaded: Mapping[str, MusicGenerator]) -> Capabilities:
    """What ``name`` can do, from the loaded model or the registry (None: unknown until loaded)."""
    if name in loaded:
        m = loaded[name].model
        return Capabilities(melody=m.is_melody, channels=m.audio_channels,
                            sample_rate=m.sample_rate, max_duration=m.max_duration)
    channels: int | None
    melody: bool | None
    if name in DEBUG_MODELS:
        channels, melody = DEBUG_MODELS[name]
    elif name in HUB_MODELS:
        channels, melody, _ = HUB_MODELS[name]
    elif name in RANDOM_MODELS:
        channels, melody = 1, False
    else:
        channels = melody = None
    return Capabilities(melody=melody, channels=channels, sample_rate=None, max_duration=30.0)


# --- answers: response models, so the OpenAPI document is the contract (STYLE rule 24) ----------
# Each route declares its 2xx model and, with error_responses(...), every error status it can
# answer; tests/test_serve_openapi.py (schemathesis) fails on an answer the document lacks.
class ErrorResponse(BaseModel):
    """Every error answer (4xx, 503): what went wrong, in one sentence, and its kind."""

    detail: str = Field(..., description="What went wrong and what to do about it.")
    type: str = Field(..., description="The library error (ConfigError, AudioError, ...) or the "
                      "HTTP status phrase (Not Found, Too Many Requests, ...).")


_RETRY_AFTER = {"Retry-After": {"description": "Whole seconds to wait before trying again.",
                                "required": True, "schema": {"type": "integer", "minimum": 1}}}
_ERRORS = {   # status -> (when, headers)
    400: ("The body could not be read (not UTF-8 JSON, a broken multipart form).", {}),
    401: (("No API key, or an unknown one: send 'X-API-Key: <key>' or 'Authorization: Bearer "
           "<key>'."), {"WWW-Authenticate": {"description": "Bearer", "required": True,
                                              "schema": {"type": "string"}}}),
    403: ("This key's role is below the one the route needs (viewer < user < admin).", {}),
    404: ("No such job for this key (jobs are visible to the key owner that made them).", {}),
    409: ("The job is in a state that does not allow this.", {}),
    410: (("The job's files were deleted after the retention time (setting "
           "result_retention_s)."), {}),
    413: (("The body, or the upload, is over the size limit (max_body_bytes, "
           "max_upload_bytes)."), {}),
    415: ("The upload's extension or content type is not accepted here.", {}),
    422: ("The request is not valid; the detail names each field and the value it got.", {}),
    429: ("Over this key's rate limit (per client address without a key).", _RETRY_AFTER),
    503: ("The queue is full (setting max_queue); try again later.", _RETRY_AFTER),
}


def error_responses(*codes: int, notes: dict[int, str] | None = None) -> dict:
    """The ``responses=`` entries of a route's error statuses: :class:`ErrorResponse` bodies,
    a description (``notes`` replaces it for one route) and the headers that come with them."""
    notes = notes or {}
    return {code: {"model": ErrorResponse, "description": notes.get(code, _ERRORS[code][0]),
                   **({"headers": _ERRORS[code][1]} if _ERRORS[code][1] else {})}
            for code in codes}


def file_content(*media_types: str, description: str) -> dict:
    """A ``responses=`` entry for a 200 whose body is a file of one of ``media_types``."""
    return {"description": description,
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in media_types}}


class Accepted(BaseModel):
    """202 of POST /v1/generate, /continue, /melody, /batch (the job is also in Location)."""

    id: str = Field(..., description="The job id: GET /v1/jobs/{id}, /events, /audio.")
    status: typing.Literal["queued", "succeeded"] = Field(
        ..., description="queued; succeeded at once when the result came from the cache.")
    cached: bool = Field(..., description="True: an earlier identical job's result, reused.")


ACCEPTED_HEADERS = {"Location": {"description": "/v1/jobs/{id}: where to follow the job.",
                                 "required": True, "schema": {"type": "string"}}}


class CancelAnswer(BaseModel):
    """DELETE /v1/jobs/{id}: cancelled (200, a queued job) or cancelling (202, a running one)."""

    id: str
    status: typing.Literal["cancelled", "cancelling"]


class Progress(BaseModel):
    step: int = Field(..., description="Decoder steps done ...")
    total: int = Field(..., description="... of this many (0: not started).")
    fraction: float = Field(..., description="step / total (0.0 before the start).")


class JobView(BaseModel):
    """A job as GET /v1/jobs/{id} shows it (``Job.public()``: no owner, no internal keys)."""

    id: str
    kind: typing.Literal["generate", "continue", "melody", "stream", "batch"]
    model: str
    status: typing.Literal["queued", "running", "succeeded", "failed", "cancelled"]
    items: int = Field(..., description="Prompts (rows, for a batch).")
    created_at: float = Field(..., description="Unix seconds.")
    started_at: float | None = None
    finished_at: float | None = None
    step: int
    total: int
    attempts: int = Field(..., description="Times a worker started it (> 1 after a restart).")
    interrupted: int = Field(..., description="Of those, runs a graceful shutdown re-queued.")
    cancel_requested: bool
    error: str | None = Field(None, description="Why it failed.")
    result: dict[str, typing.Any] | None = Field(
        None, description="Once succeeded: files, seeds, timings, sample rate, cached, ...")
    expired_at: float | None = Field(
        None, description="When retention deleted its files (None: still kept).")
    progress: Progress
    request: dict[str, typing.Any] = Field(..., description="prompts, negatives, seeds, "
                                           "settings (batch: rows).")


class JobList(BaseModel):
    """GET /v1/jobs: the caller's newest jobs first (an admin's: everyone's)."""

    jobs: list[JobView]


class PromptCheck(BaseModel):
    """POST /v1/prompts/validate: ``PromptEngineer.validate``'s report, and ``ok``."""

    prompt: str
    errors: list[str] = Field(..., description="Problems to fix before generating.")
    warnings: list[str] = Field(..., description="Things likely to hurt the result.")
    n_chars: int
    n_words: int
    n_tokens: int = Field(..., description="Text-encoder tokens, </s> included.")
    tokens_exact: bool = Field(..., description="True: counted with the model's tokenizer.")
    max_tokens: int
    dropped_tokens: int = Field(..., description="Tokens past max_tokens.")
    missing: list[str] = Field(..., description="Facets the prompt does not name.")
    ok: bool = Field(..., description="True when there are no errors.")


class PromptImproved(BaseModel):
    """POST /v1/prompts/improve."""

    prompt: str
    improved: str = Field(..., description="The prompt with the missing facets filled in.")
    negative: str = Field(..., description="A negative prompt for it.")


class ModelInfo(BaseModel):
    name: str
    loaded: bool
    melody: bool | None = Field(..., description="None: unknown until loaded.")
    channels: int | None = Field(..., description="None: unknown until loaded.")
    sample_rate: int | None = Field(..., description="None until loaded.")
    max_duration: float | None = Field(..., description="Seconds in one window.")


class ModelList(BaseModel):
    """GET /v1/models."""

    default: str
    models: list[ModelInfo]


class Health(BaseModel):
    status: typing.Literal["ok"]


class Ready(BaseModel):
    status: typing.Literal["ready"]
    model: str = Field(..., description="The default model, loaded.")


class NotReady(BaseModel):
    status: typing.Literal["loading", "failed"]
    detail: str | None = Field(..., description="Why (None while loading).")
