"""Prompt routes: check a prompt, or fill in what it lacks, with :class:`PromptEngineer`.

Both use the default model's tokenizer once it is loaded (exact token counts), the
an estimate before::

    POST /v1/prompts/validate {"prompt": ...}          -> errors, warnings, tokens, missing facets
    POST /v1/prompts/improve  {"prompt": ..., "seed"}  -> the prompt with genre, instruments,
                                                          mood and tempo filled in, a negative
"""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter

from ..deps import USER_ANSWERS, ServiceDep, User
from ..schemas import PromptCheck, PromptImproved, PromptRequest, error_responses
from ..service import Service

__all__ = ["router"]

router = APIRouter(tags=["prompts"])
_ANSWERS = {**USER_ANSWERS, **error_responses(400, 413)}


def _engineer(svc: Service):
    """A PromptEngineer with the default model's tokenizer, if that model is loaded."""
    from ...prompt import PromptEngineer

    loaded = svc.pool.loaded().get(svc.settings.default_model)
    return PromptEngineer(loaded.model if loaded else None)


@router.post("/v1/prompts/validate", response_model=PromptCheck, responses=_ANSWERS)
def validate_prompt(req: PromptRequest, svc: ServiceDep, who: User):
    """PromptEngineer.validate: errors, warnings, token count, missing facets."""
    report = _engineer(svc).validate(req.prompt)
    return dict(dataclasses.asdict(report), ok=report.ok)


@router.post("/v1/prompts/improve", response_model=PromptImproved, responses=_ANSWERS)
def improve_prompt(req: PromptRequest, svc: ServiceDep, who: User):
    """PromptEngineer.improve: the prompt with genre, instruments, mood and tempo filled in."""
    engineer = _engineer(svc)
    return {"prompt": req.prompt, "improved": engineer.improve(req.prompt, seed=req.seed),
            "negative": engineer.negative(req.prompt)}
