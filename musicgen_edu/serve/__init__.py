"""The musicgen_edu service: a REST + streaming API around :class:`MusicGenerator`.

The path of one request, ``POST /v1/generate {"prompt": "lo-fi piano", "seed": 1}``::

    RequestLog        request id, metrics, one JSON log line          monitoring.py
    BodyLimit, CORS   413 for oversized bodies                         security.py
    need("user")      API key -> owner + role (401/403), rate limit (429)
    job_params        GenerationConfig validates (422 = its ConfigError text)   schemas.py
    submit            result cache hit -> done at once; else a queued Job       routes.py
    SQLiteJobStore    durable queue + job records (a Redis store later)         jobs.py
    Worker thread     claim the job + compatible queued ones (dynamic batching),
                      MusicGenerator.generate(..., callback) with cancel checks  worker.py
    202 {"id"}  ->  GET /v1/jobs/{id}, /events (SSE), /audio?format=wav|flac|mp3
                    or WS /v1/stream for audio while it is decoded          streaming.py

Install with ``pip install 'musicgen-edu[serve]'``; start with ``musicgen-edu serve`` or, in a
notebook, ``mg.start_server(port=0)`` (lecture 09). Settings: :mod:`musicgen_edu.settings`.
"""

from .app import ServerHandle, Service, create_app, run_server, start_server
from .jobs import Job, JobStore, SQLiteJobStore

__all__ = ["create_app", "start_server", "run_server", "ServerHandle", "Service", "Job",
           "JobStore", "SQLiteJobStore"]
