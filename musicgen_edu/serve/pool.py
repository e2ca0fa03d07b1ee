"""The model pool: one loaded :class:`MusicGenerator` per model name, shared by the workers.

    pool.get(name)      the generator, loaded on demand (one load at a time: loads are memory
                        peaks); past ``model_memory_gb`` the least recently used other model is
                        unloaded, never the default one
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..settings import Settings
from .monitoring import get_logger

if TYPE_CHECKING:
    from ..generator import MusicGenerator

__all__ = ["ModelPool"]

log = get_logger()


class ModelPool:
    """Loaded generators by model name, least recently used unloaded past the memory budget.

    The default model is never unloaded: ``/readyz`` means "the default model is loaded", and
    an orchestrator would take a replica out of service the moment that stopped being true.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._gens: OrderedDict[str, MusicGenerator] = OrderedDict()  # name -> generator
        self._bytes: dict[str, int] = {}
        self._lock = threading.Lock()        # guards the two dicts
        self._load_lock = threading.Lock()   # one load at a time (loads are memory peaks)

    def loaded(self) -> dict[str, MusicGenerator]:
        with self._lock:
            return dict(self._gens)

    def get(self, name: str) -> MusicGenerator:
        """The generator for ``name``, loading it (and unloading others) if needed."""
        with self._lock:
            if name in self._gens:
                self._gens.move_to_end(name)
                return self._gens[name]
        with self._load_lock:
            with self._lock:
                if name in self._gens:
                    return self._gens[name]
            from ..generator import MusicGenerator

            s = self.settings
            gen = MusicGenerator(name, device=s.device, dtype=s.dtype, backend=s.backend,
                                 progress=False, cache_dir=str(s.cache_dir) if s.cache_dir else None)
            size = sum(p.numel() * p.element_size() for p in gen.model.model.parameters())
            with self._lock:
                self._gens[name], self._bytes[name] = gen, size
                self._evict(keep=name)
            log.info("model loaded", model=name, bytes=size)
            return gen

    def _evict(self, keep: str) -> None:
        from ..models import clear_model_cache

        budget = self.settings.model_memory_gb * 2**30
        pinned = (keep, self.settings.default_model)
        while sum(self._bytes.values()) > budget:
            old = next((n for n in self._gens if n not in pinned), None)  # least recently used
            if old is None:
                return
            del self._gens[old], self._bytes[old]
            clear_model_cache(old)
            log.info("model unloaded", model=old, reason="memory budget")
