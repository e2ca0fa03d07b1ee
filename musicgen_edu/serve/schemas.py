"""Request bodies, and how one becomes a job: validation is GenerationConfig's, not a copy.

``GenerateRequest`` is built from the fields of
:class:`~musicgen_edu.generator.GenerationConfig` (``create_model`` below), so a new sampling
setting appears in the API, its OpenAPI schema and its validation without a second list of
names or ranges. JSON types are checked by pydantic; ranges by ``GenerationConfig`` itself,
whose :class:`~musicgen_edu.errors.ConfigError` text is the 422 message. A request becomes a
job's ``params``::

    {"prompts": [...], "negatives": [...], "seeds": [seed, seed + 1, ...],
     "settings": {every GenerationConfig field but seed}}

``batch_key`` = hash(kind, model, settings): requests that may share a batch. ``cache_key`` =
hash(kind, model, settings, prompts, negatives, seeds), only when the client chose the seed
(a server-drawn seed is never repeated, so there is nothing to reuse).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import typing
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..errors import ConfigError, check_range
from ..generator import MAX_SEED, GenerationConfig
from ..models import DEBUG_MODELS, HUB_MODELS, RANDOM_MODELS

__all__ = ["GenerateRequest", "PromptRequest", "BatchRequest", "job_params", "capabilities",
           "check_model", "explain_validation", "MAX_PROMPT_CHARS"]

MAX_PROMPT_CHARS = 2000             # characters per prompt (T5 reads far fewer tokens anyway)
_CONFIG_TYPES = typing.get_type_hints(GenerationConfig)
_CONFIG_FIELDS = {f.name: (Optional[_CONFIG_TYPES[f.name]], Field(None, description=(
    f"GenerationConfig.{f.name} (default {f.default!r})"))) for f in dataclasses.fields(GenerationConfig)}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Optional[str] = Field(None, description="One text prompt (or use prompts).")
    prompts: Optional[list[str]] = Field(None, description="Several prompts, decoded together.")
    negative_prompt: Optional[str] = Field(None, description="Steer away from this text.")
    model: Optional[str] = Field(None, description="A configured model; default: the server's.")


GenerateRequest = create_model("GenerateRequest", __base__=_Request, **_CONFIG_FIELDS)
GenerateRequest.__doc__ = "POST /v1/generate, /v1/continue, /v1/melody and the WebSocket stream."


class PromptRequest(BaseModel):
    """POST /v1/prompts/improve and /v1/prompts/validate."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(..., max_length=MAX_PROMPT_CHARS)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of improve's choices.")


class BatchRequest(BaseModel):
    """The JSON ``request`` field of POST /v1/batch (beside the CSV file)."""

    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = None


def explain_validation(errors: list[dict]) -> str:
    """pydantic's errors as one sentence naming each field and the value it got."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err["loc"] if p not in ("body", "query", "path")) or "body"
        got = err.get("input")
        shown = repr(got) if len(repr(got)) <= 80 else repr(got)[:77] + "..."
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown field {where!r} (the request schemas are at GET /docs)")
        elif err["type"] == "missing":
            parts.append(f"{where} is missing")
        else:
            parts.append(f"{where}={shown} is not valid: {err['msg']}")
    return "invalid request: " + "; ".join(parts) + "."


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def check_model(name: str | None, settings) -> str:
    """The model a request asks for, or the default; ConfigError if it is not configured."""
    name = name or settings.default_model
    if name not in settings.models:
        raise ConfigError(f"model={name!r} is not served here; allowed: {settings.models} "
                          "(setting models).")
    return name


def job_params(req, settings, kind: str, text_required: bool = True) -> tuple[dict, str, str, str]:
    """Validate a request and turn it into ``(params, model, batch_key, cache_key)``."""
    if req.prompt is not None and req.prompts is not None:
        raise ConfigError("give either prompt or prompts, not both.")
    prompts = [req.prompt] if req.prompt is not None else req.prompts
    if prompts is None:
        if text_required:
            raise ConfigError("prompt is missing; send {\"prompt\": \"lo-fi piano\"} or "
                              "{\"prompts\": [...]}.")
        prompts = [None]
    if not 1 <= len(prompts) <= settings.max_prompts:
        raise ConfigError(f"{len(prompts)} prompts in one request; allowed: 1 to "
                          f"{settings.max_prompts} (setting max_prompts).")
    for i, p in enumerate(prompts):
        if p is not None and (not p.strip() or len(p) > MAX_PROMPT_CHARS):
            raise ConfigError(f"prompt {i} has {len(p)} characters and {len(p.strip())} "
                              f"non-blank; allowed: 1 to {MAX_PROMPT_CHARS}.")
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
    model = check_model(req.model, settings)
    settings_ = {k: v for k, v in dataclasses.asdict(config).items() if k != "seed"}
    params = dict(prompts=prompts, negatives=[req.negative_prompt] * len(prompts),
                  seeds=[seed + i for i in range(len(prompts))], settings=settings_)
    batch_key = _digest(kind, model, settings_) if kind == "generate" else ""
    # what else decides the audio: the backend, precision and device the server runs
    runtime = (settings.backend, settings.dtype, settings.device)
    cache_key = _digest(kind, model, runtime, params) if chosen and kind == "generate" else ""
    return params, model, batch_key, cache_key


def capabilities(name: str, loaded: dict) -> dict:
    """What ``name`` can do, from the loaded model or the registry (None: unknown until loaded)."""
    if name in loaded:
        m = loaded[name].model
        return dict(melody=m.is_melody, channels=m.audio_channels, sample_rate=m.sample_rate,
                    max_duration=m.max_duration)
    if name in DEBUG_MODELS:
        channels, melody = DEBUG_MODELS[name]
    elif name in HUB_MODELS:
        channels, melody, _ = HUB_MODELS[name]
    elif name in RANDOM_MODELS:
        channels, melody = 1, False
    else:
        channels = melody = None
    return dict(melody=melody, channels=channels, sample_rate=None, max_duration=30.0)
