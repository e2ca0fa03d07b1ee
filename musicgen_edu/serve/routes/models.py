"""Models route: the models this server is configured with, loaded or not, and what each can do.

``GET /v1/models`` answers from the loaded generator where there is one, else from the
registry (schemas.capabilities: melody, channels; sample rate once loaded).
"""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import VIEWER_ANSWERS, ServiceDep, Viewer
from ..schemas import ModelList, capabilities

__all__ = ["router"]

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList, responses=VIEWER_ANSWERS)
def models(svc: ServiceDep, who: Viewer):
    """Configured models: loaded or not, and what each can do."""
    loaded = svc.pool.loaded()
    return {"default": svc.settings.default_model,
            "models": [dict(name=n, loaded=n in loaded, **capabilities(n, loaded))
                       for n in svc.settings.models]}
