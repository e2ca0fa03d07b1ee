"""The musicgen_edu service: a REST + streaming API around :class:`MusicGenerator`.

The path of one request, ``POST /v1/generate {"prompt": "lo-fi piano", "seed": 1}``::

    HttpSpans        a SERVER span (only with tracing on)                tracing.py
    RequestLog       request id, metrics, one JSON log line              monitoring.py
    BodyLimit, CORS  413 for oversized bodies                            security.py
    who: User        API key -> owner + role (401/403), rate limit (429) deps.py
    job_params       GenerationConfig validates (422: its ConfigError)   schemas.py
    submit           a result cache hit, done at once; else a queued Job routes/generation.py
    JobStore         durable queue + job records: SQLite or Redis        jobs.py
    Worker thread    claim the job + compatible queued ones (dynamic     worker.py
                     batching), MusicGenerator.generate(..., callback)
                     with one cancel check per step for the whole run
    202 {"id"}  ->   GET /v1/jobs/{id}, /audio?format=wav|flac|mp3       routes/jobs.py
                     /events (SSE), or WS /v1/stream for audio while it  streaming.py
                     is decoded

Install with ``pip install 'musicgen-edu[serve]'``; start with ``musicgen-edu serve`` or, in a
notebook, ``mg.start_server(port=0)`` (lecture 09). Settings: :mod:`musicgen_edu.settings`.
"""

from .app import ServerHandle, create_app, run_server, start_server
from .jobs import Job, JobStore
from .local_redis import LocalRedis, start_redis
from .redis_store import RedisJobStore
from .service import Service
from .sqlite_store import SQLiteJobStore
from .tracing import format_trace, in_memory_provider

__all__ = ["create_app", "start_server", "run_server", "ServerHandle", "Service", "Job",
           "JobStore", "SQLiteJobStore", "RedisJobStore", "LocalRedis", "start_redis",
           "in_memory_provider", "format_trace"]
