"""Redis: the job store and result cache that several processes share (rate limits:
redis_limiter.py; stream chunks: relay.py).

With ``store = "redis"`` every API replica and every worker process (``musicgen-edu worker``)
reads and writes the same Redis server, so a job queued by one replica is run by any worker,
a cached result is found by every replica, and a key's burst spent on one replica is spent on
all of them. Audio files stay in ``storage_dir``, a volume every process mounts.

**Why Redis's own primitives and not a task-queue library.** arq, RQ, dramatiq and Celery each
take one message per job; none claims *compatible* jobs together (our dynamic batching: the
oldest job plus queued jobs with its ``batch_key``), and their acknowledgement is not fenced by
a lease (a late worker's result is still written). A Stream with a consumer group
(``XREADGROUP`` + ``XAUTOCLAIM``) hands out entries in order, one consumer at a time, also
without "the ones that batch with this one". So each change of state is one Lua script, which
Redis runs atomically (no other command runs between its lines)::

    job:{id}        HASH   the job's fields (params, result as JSON text), + seq, lease_until
    queue           ZSET   queued ids by arrival (seq)        claim takes the head ...
    bk:{batch_key}  ZSET   queued ids with that batch key     ... and its batch-mates from here
    running         ZSET   running ids by lease deadline      requeue_running takes the overdue
    ended           ZSET   ended, unexpired ids by finish     retention (expiring)
    cache:{key}     ZSET   succeeded, unexpired ids by seq    the result cache
    all, owner:{o}  ZSET   every id by seq                    listings
    counts          HASH   jobs per status                    metrics, the queue limit
    wake            LIST   one item per queued job            workers block on it (BLPOP)

**Leases** (jobs.py): ``claim`` gives the run a random token and a deadline ``lease_s`` ahead;
the worker renews it every ``lease_s / 3``. Any process's ``requeue_running`` (each worker
calls it every few seconds) puts jobs whose deadline passed back in the queue: their worker
died, was killed, or lost the network. Every worker write checks the token, so a worker that
comes back late changes nothing. Deadlines are the claiming process's wall clock; keep the
machines' clocks in sync (NTP) to well under ``lease_s``.

**Durability.** Run redis-server with ``appendonly yes`` and ``appendfsync always`` (deploy/):
every acknowledged write is on disk before the reply, as with the SQLite store; restarted, it
reloads every queued, running and finished job. While Redis is unreachable requests get 503.

Not for Redis Cluster: the scripts build key names from the prefix (one server, or a
primary with replicas and Sentinel).
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any

import redis

from .jobs import STATUSES, Job, died_error, new_lease
from .json_values import finite_json, valid_text

__all__ = ["RedisJobStore", "UNAVAILABLE", "connect"]

# what a request meets while Redis is down or restarting (app.py answers 503)
UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_ANY = "*"                       # the lease argument of writes that are not fenced (lease=None)
_INTS = {f.name for f in fields(Job) if f.type == "int"}
_FLOATS = {"created_at", "started_at", "finished_at", "expired_at"}

# Lua shared by the scripts: key names, the fence, and one status change with its indexes
_LUA = """
local P = ARGV[1]
local function K(...) return P .. ':' .. table.concat({...}, ':') end
local function get(id, f) return redis.call('HGET', K('job', id), f) end
local function held(id, lease)   -- running, and (unless lease is '*') under this lease
  return get(id, 'status') == 'running' and (lease == '*' or get(id, 'lease') == lease)
end
local function move(id, to, now)  -- leave the old status's indexes, enter the new one's
  local k, from = K('job', id), get(id, 'status')
  local seq, bk = get(id, 'seq'), get(id, 'batch_key')
  redis.call('HINCRBY', K('counts'), from, -1)
  redis.call('HINCRBY', K('counts'), to, 1)
  redis.call('HSET', k, 'status', to)
  redis.call('ZREM', K('queue'), id)
  redis.call('ZREM', K('running'), id)
  if bk ~= '' then redis.call('ZREM', K('bk', bk), id) end
  if to == 'queued' then
    redis.call('ZADD', K('queue'), seq, id)
    if bk ~= '' then redis.call('ZADD', K('bk', bk), seq, id) end
    redis.call('HSET', k, 'step', 0, 'total', 0)
    redis.call('HDEL', k, 'finished_at')
    redis.call('RPUSH', K('wake'), id)
    redis.call('LTRIM', K('wake'), -256, -1)
  elseif to ~= 'running' then                   -- an end
    redis.call('HSET', k, 'finished_at', now)
    redis.call('ZADD', K('ended'), now, id)
    local ck = get(id, 'cache_key')
    if to == 'succeeded' and ck ~= '' then redis.call('ZADD', K('cache', ck), seq, id) end
  end
end
"""

_CLAIM = _LUA + """
local max_items, now, deadline, lease = tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local head = redis.call('ZRANGE', K('queue'), 0, 0)[1]
if not head then return {} end
local jobs, items = {head}, tonumber(get(head, 'items'))
local bk = get(head, 'batch_key')
if bk ~= '' and get(head, 'attempts') == get(head, 'interrupted') then
  -- batch-mates: never a job a worker died in (it runs alone; jobs.py)
  for _, id in ipairs(redis.call('ZRANGE', K('bk', bk), 0, 4 * max_items + 16)) do
    local n = tonumber(get(id, 'items'))
    if id ~= head and items + n <= max_items and get(id, 'attempts') == get(id, 'interrupted')
    then table.insert(jobs, id); items = items + n end
  end
end
local out = {}
for _, id in ipairs(jobs) do
  move(id, 'running', now)
  redis.call('HSET', K('job', id), 'started_at', now, 'lease', lease, 'lease_until', deadline)
  redis.call('HINCRBY', K('job', id), 'attempts', 1)
  redis.call('ZADD', K('running'), deadline, id)
  table.insert(out, redis.call('HGETALL', K('job', id)))
end
return out
"""

_RENEW = _LUA + """
local out = {}
for i = 4, #ARGV do
  if held(ARGV[i], ARGV[2]) then
    redis.call('ZADD', K('running'), ARGV[3], ARGV[i])
    redis.call('HSET', K('job', ARGV[i]), 'lease_until', ARGV[3])
    table.insert(out, ARGV[i])
  end
end
return out
"""

_PROGRESS = _LUA + """
for i = 5, #ARGV do
  if held(ARGV[i], ARGV[2]) then
    redis.call('HSET', K('job', ARGV[i]), 'step', ARGV[3], 'total', ARGV[4])
  end
end
"""

_FINISH = _LUA + """
local id, lease, now, result = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not held(id, lease) then        -- already ended under this lease: the same answer again
  if lease ~= '*' and get(id, 'lease') == lease and get(id, 'status') ~= 'queued'
     and get(id, 'status') ~= 'running' then return get(id, 'status') end
  return false
end
if get(id, 'cancel_requested') == '1' then
  redis.call('HDEL', K('job', id), 'result')
  move(id, 'cancelled', now)
else
  redis.call('HSET', K('job', id), 'result', result, 'step', get(id, 'total'))
  move(id, 'succeeded', now)
end
return get(id, 'status')
"""

_END = _LUA + """          -- fail (ARGV[5] = error) or cancel (ARGV[5] = false) a job
local id, lease, now, err = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local status = get(id, 'status')
if not (status == 'running' or (err == '' and status == 'queued')) then return 0 end
if lease ~= '*' and get(id, 'lease') ~= lease then return 0 end
if err ~= '' then redis.call('HSET', K('job', id), 'error', err) end
move(id, err ~= '' and 'failed' or 'cancelled', now)
return 1
"""

_REQUEST_CANCEL = _LUA + """
local id, now = ARGV[2], ARGV[3]
local status = get(id, 'status')
if status == 'queued' then move(id, 'cancelled', now); return 'cancelled' end
if status == 'running' then
  redis.call('HSET', K('job', id), 'cancel_requested', 1); return 'cancelling'
end
return status or 'missing'
"""

_REQUEUE = _LUA + """
local id, lease, now = ARGV[2], ARGV[3], ARGV[4]
if not held(id, lease) then return 0 end
redis.call('HINCRBY', K('job', id), 'interrupted', 1)
move(id, get(id, 'cancel_requested') == '1' and 'cancelled' or 'queued', now)
return 1
"""

_REQUEUE_RUNNING = _LUA + """
local now, max_attempts, message = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local moved = {queued = 0, failed = 0, cancelled = 0}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K('running'), '-inf', '(' .. now)) do
  local died = tonumber(get(id, 'attempts')) - tonumber(get(id, 'interrupted'))
  local to = 'queued'
  if get(id, 'cancel_requested') == '1' then to = 'cancelled'
  elseif died >= max_attempts then
    to = 'failed'
    redis.call('HSET', K('job', id), 'error', (string.gsub(message, '{died}', died)))
  end
  move(id, to, now)
  moved[to] = moved[to] + 1
end
return {moved.queued, moved.failed, moved.cancelled}
"""

def connect(url: str) -> Any:
    """A client of ``url`` (a pool of connections, safe to share between threads).

    Typed ``Any``: redis-py annotates every reply as "this or an awaitable of it" (one
    annotation for its sync and asyncio clients), which no caller could use as is."""
    return redis.Redis.from_url(url, socket_timeout=15, socket_connect_timeout=5,
                                health_check_interval=30)


class RedisJobStore:
    """:class:`~musicgen_edu.serve.jobs.JobStore` on one Redis server, for many processes.

    Args:
        url: ``redis://host:port/db`` (``rediss://`` for TLS).
        prefix: the namespace of every key (one Redis may hold several services).
        lease_s: how long a claim holds without :meth:`renew`.
        clock: wall-clock seconds (tests move it forward to let leases run out).
    """

    shared = True                          # many processes: heartbeats re-queue dead workers' jobs

    def __init__(self, url: str, prefix: str = "musicgen", lease_s: float = 30.0,
                 clock: Callable[[], float] = time.time):
        self.redis, self.prefix, self.lease_s, self.clock = connect(url), prefix, lease_s, clock
        scripts = dict(claim=_CLAIM, renew=_RENEW, progress=_PROGRESS, finish=_FINISH, end=_END,
                       request_cancel=_REQUEST_CANCEL, requeue=_REQUEUE,
                       requeue_running=_REQUEUE_RUNNING)
        self._lua = {name: self.redis.register_script(src) for name, src in scripts.items()}

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _run(self, script: str, *args: Any) -> Any:
        return self._lua[script](args=[self.prefix, *args])

    # --- hashes <-> jobs ----------------------------------------------------------------------
    @staticmethod
    def _job(raw: dict[bytes, bytes] | list[bytes]) -> Job:
        if isinstance(raw, list):                     # HGETALL inside Lua: [k1, v1, k2, ...]
            raw = dict(zip(raw[::2], raw[1::2]))
        text = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
        values: dict[str, Any] = {}
        for f in fields(Job):
            value = text.get(f.name)
            if f.name in _INTS:
                values[f.name] = int(value or 0)
            elif f.name in _FLOATS:
                values[f.name] = float(value) if value else None
            elif f.name == "cancel_requested":
                values[f.name] = value == "1"
            elif f.name in ("params", "result"):
                values[f.name] = json.loads(value) if value else None
            else:
                values[f.name] = value
        values["params"] = values["params"] or {}
        return Job(**values)

    def _jobs(self, ids: builtins.list[bytes]) -> builtins.list[Job]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._key("job", job_id.decode()))
        return [self._job(raw) for raw in pipe.execute() if raw]

    # --- the interface ----------------------------------------------------------------------------
    def add(self, job: Job) -> Job:
        """Store a new job; ValueError if its params or result hold inf or NaN."""
        values = {k: v for k, v in asdict(job).items() if v is not None}
        values["params"] = finite_json(job.params, job.id, "params")
        if job.result is not None:
            values["result"] = finite_json(job.result, job.id, "result")
        values["cancel_requested"] = int(job.cancel_requested)
        values = {k: repr(v) if isinstance(v, float) else v for k, v in values.items()}
        seq = self.redis.incr(self._key("seq"))
        pipe = self.redis.pipeline(transaction=True)      # MULTI ... EXEC: all or nothing
        pipe.hset(self._key("job", job.id), mapping={**values, "seq": seq})
        pipe.zadd(self._key("all"), {job.id: seq})
        pipe.zadd(self._key("owner", job.owner), {job.id: seq})
        pipe.hincrby(self._key("counts"), job.status, 1)
        if job.status == "queued":
            pipe.zadd(self._key("queue"), {job.id: seq})
            if job.batch_key:
                pipe.zadd(self._key("bk", job.batch_key), {job.id: seq})
            pipe.rpush(self._key("wake"), job.id)
            pipe.ltrim(self._key("wake"), -256, -1)
        elif job.status in ("succeeded", "failed", "cancelled"):
            pipe.zadd(self._key("ended"), {job.id: job.finished_at or job.created_at})
            if job.status == "succeeded" and job.cache_key:
                pipe.zadd(self._key("cache", job.cache_key), {job.id: seq})
        pipe.execute()
        return job

    def get(self, job_id: str) -> Job | None:
        raw = self.redis.hgetall(self._key("job", job_id))
        return self._job(raw) if raw else None

    def list(self, owner: str | None = None, limit: int = 100) -> builtins.list[Job]:
        index = self._key("all") if owner is None else self._key("owner", owner)
        return self._jobs(self.redis.zrevrange(index, 0, int(limit) - 1))

    def wait_for_jobs(self, timeout: float) -> bool:
        """Block until a job is queued (True) or ``timeout`` seconds pass (False)."""
        return self.redis.blpop([self._key("wake")], timeout=max(0.01, timeout)) is not None

    def claim(self, max_items: int) -> builtins.list[Job]:
        """The oldest queued job + queued jobs with its batch key (up to ``max_items``
        prompts), running under one new lease (``job.lease``) of ``lease_s``."""
        now = self.clock()
        return [self._job(raw) for raw in self._run("claim", max_items, repr(now),
                                                    repr(now + self.lease_s), new_lease())]

    def renew(self, job_ids: builtins.list[str], lease: str) -> set[str]:
        """Push the lease of ``job_ids`` ``lease_s`` ahead; answer the ids still held."""
        held = self._run("renew", lease, repr(self.clock() + self.lease_s), *job_ids)
        return {job_id.decode() for job_id in held}

    def progress(self, job_ids: builtins.list[str], step: int, total: int,
                 lease: str | None = None) -> None:
        self._run("progress", lease or _ANY, step, total, *job_ids)

    def finish(self, job_id: str, result: dict[str, Any],
               lease: str | None = None) -> str | None:
        """``succeeded`` with ``result``, or ``cancelled`` if a cancel came meanwhile; None if
        the job is not running (under ``lease``). ValueError if ``result`` holds inf or NaN."""
        text = finite_json(result, job_id, "result")
        status = self._run("finish", job_id, lease or _ANY, repr(self.clock()), text)
        return status.decode() if status else None

    def fail(self, job_id: str, error: str, lease: str | None = None) -> bool:
        return bool(self._run("end", job_id, lease or _ANY, repr(self.clock()),
                              valid_text(error) or "failed"))

    def cancel(self, job_id: str, lease: str | None = None) -> bool:
        return bool(self._run("end", job_id, lease or _ANY, repr(self.clock()), ""))

    def request_cancel(self, job_id: str) -> str:
        return self._run("request_cancel", job_id, repr(self.clock())).decode()

    def cancelled(self, job_ids: builtins.list[str]) -> set[str]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self._key("job", job_id), "cancel_requested")
        return {i for i, flag in zip(job_ids, pipe.execute()) if flag == b"1"}

    def requeue(self, job_id: str, lease: str | None = None) -> bool:
        """Back to the queue after a graceful stop (``cancelled`` if a cancel came first)."""
        return bool(self._run("requeue", job_id, lease or _ANY, repr(self.clock())))

    def requeue_running(self, max_attempts: int) -> dict[str, int]:
        """Settle the running jobs whose lease ran out (their worker is gone): queued again,
        ``failed`` once a worker died in them ``max_attempts`` times, or ``cancelled``."""
        message = died_error(0, max_attempts).replace("stopped 0 times", "stopped {died} times")
        queued, failed, cancelled = self._run("requeue_running", repr(self.clock()),
                                              max_attempts, message)
        return {"queued": queued, "failed": failed, "cancelled": cancelled}

    def expiring(self, finished_before: float, limit: int = 100) -> builtins.list[Job]:
        ids = self.redis.zrangebyscore(self._key("ended"), "-inf", f"({finished_before!r}",
                                       start=0, num=int(limit))
        return [j for j in self._jobs(ids) if j.expired_at is None]

    def expire(self, job_id: str, at: float) -> builtins.list[str]:
        """Mark ``job_id`` and its result-cache copies (same files) expired at ``at``."""
        job = self.get(job_id)
        if job is None or job.expired_at is not None:
            return []
        jobs = [job]
        if job.cache_key and job.result is not None:
            copies = self._jobs(self.redis.zrange(self._key("cache", job.cache_key), 0, -1))
            jobs += [c for c in copies if c.id != job.id and c.expired_at is None and c.result
                     and c.result.get("files") == job.result.get("files")]
        pipe = self.redis.pipeline(transaction=True)
        for j in jobs:
            values: dict[str, Any] = {"expired_at": repr(at)}
            if j.result is not None:
                values["result"] = json.dumps({**j.result, "expired": True, "expired_at": at})
            pipe.hset(self._key("job", j.id), mapping=values)
            pipe.zrem(self._key("ended"), j.id)
            if j.cache_key:
                pipe.zrem(self._key("cache", j.cache_key), j.id)
        pipe.execute()
        return [j.id for j in jobs]

    def counts(self) -> dict[str, int]:
        raw = self.redis.hgetall(self._key("counts"))
        return {**dict.fromkeys(STATUSES, 0), **{k.decode(): int(v) for k, v in raw.items()}}

    def find_cached(self, cache_key: str) -> Job | None:
        """The newest succeeded job with ``cache_key`` whose files are kept."""
        for job in self._jobs(self.redis.zrevrange(self._key("cache", cache_key), 0, 0)):
            if job.status == "succeeded" and job.expired_at is None:
                return job
        return None

    def close(self) -> None:
        self.redis.close()
