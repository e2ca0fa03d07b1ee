"""Checks for lecture 09 (serving): batches of queued requests, cache hits, rate-limit refusals.

The right answers come from the service's own code, not from the server's state: requests
become jobs with ``serve.schemas.job_params`` (their batch and cache keys), batches are claimed
from a throw-away ``SQLiteJobStore`` as the worker claims them, and refusals are counted on a
fresh ``RateLimiter`` with the lecture's settings. So the checks run after the lecture has
stopped its server, and hold for any settings and model. They need the ``serve`` extra
(imported when a check runs). Solutions: ``mg.exercises.solution(9)``.
"""

from __future__ import annotations

import json
import numbers
import tempfile
from pathlib import Path

from .checks import CheckResult, not_yet, result

__all__ = ["check_batches", "check_cached", "check_refused"]

OWNER = "lab1"      # the lecture's keys belong to this owner (part of the cache key)


def _count(answer) -> int | None:
    """The answer as a whole number, or None when it is not one (None, text, 2.5, True)."""
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return None
    return int(answer) if float(answer).is_integer() else None


def _job(settings, body: dict, owner: str = OWNER):
    """``(params, model, batch_key, cache_key)`` of one JSON body, as ``POST /v1/generate``
    computes them (the body goes through JSON, as it does over HTTP)."""
    from ..serve.schemas import GenerateRequest, job_params

    req = GenerateRequest.model_validate_json(json.dumps(body))
    return job_params(req, settings, "generate", owner=owner)


def _claimed_batches(settings, bodies) -> list[int]:
    """Jobs per batch when ``bodies`` wait in the queue together (the worker's claim order)."""
    from ..serve.jobs import Job
    from ..serve.sqlite_store import SQLiteJobStore

    with tempfile.TemporaryDirectory(prefix="check_batches_") as folder:
        store = SQLiteJobStore(Path(folder) / "jobs.sqlite")
        try:
            for body in bodies:
                params, model, batch_key, _ = _job(settings, body)
                store.add(Job(owner=OWNER, kind="generate", model=model, params=params,
                              batch_key=batch_key, items=len(params["prompts"])))
            sizes = []
            while jobs := store.claim(settings.max_batch_size):
                sizes.append(len(jobs))
        finally:
            store.close()
    return sizes


def check_batches(settings, bodies, answer) -> CheckResult:
    """Exercise 1: how many batches does the worker decode for ``bodies`` queued together?

    Requests share a batch when everything but prompt, negative prompt and seed is equal (the
    same ``batch_key``), up to ``settings.max_batch_size`` prompts per batch.

    Args:
        settings: the lecture's ``settings`` (``mg.load_settings(...)``).
        bodies: the JSON bodies of ``POST /v1/generate``, sent at once.
        answer: the student's number of batches.
    """
    if answer is None:
        return not_yet("the number of batches")
    sizes = _claimed_batches(settings, bodies)
    right, value = len(sizes), _count(answer)
    if value == 1 and right > 1:
        return result(False, "", "one batch holds only requests with equal settings (everything "
                      "but prompt, negative prompt and seed), and at most max_batch_size="
                      f"{settings.max_batch_size} prompts.")
    if value == len(bodies) and right < len(bodies):
        return result(False, "", "that is one batch per request: requests whose settings are "
                      "equal except for prompt and seed are decoded together.")
    return result(value == right,
                  f"{right} batches of {sizes} requests: one per group of equal settings (the "
                  f"batch key), at most {settings.max_batch_size} prompts each. Each item keeps "
                  "its own seeded generator, so batching changes no clip.",
                  "group the requests by their settings without prompt, negative prompt and "
                  f"seed; each group is cut into batches of at most max_batch_size="
                  f"{settings.max_batch_size} prompts.")


def check_cached(settings, first: dict, second: dict, answer) -> CheckResult:
    """Exercise 2: is ``second``, sent after ``first`` finished, answered from the result cache?

    Args:
        settings: the lecture's ``settings``.
        first: the JSON body of the earlier request (it succeeded).
        second: the JSON body of the new request.
        answer: True or False.
    """
    if answer is None:
        return not_yet("True or False")
    if not isinstance(answer, bool):
        return result(False, "", f"{answer!r} is no yes or no; answer True or False.")
    key_a, key_b = _job(settings, first)[3], _job(settings, second)[3]
    right = bool(settings.result_cache and key_b and key_a == key_b)
    if not key_b:
        why = ("the new request has no seed: the server draws a fresh one, and a drawn seed is "
               "never repeated, so there is nothing to reuse")
    elif not settings.result_cache:
        why = "the result cache is off in these settings (result_cache=False)"
    elif key_a != key_b:
        why = ("something that decides the audio differs (prompt, settings, seed or model): the "
               "cache key covers all of them, and the owner")
    else:
        why = "same owner, prompt, settings, seed and model: the same audio, so it is reused"
    return result(answer == right, f"{right}: {why}.",
                  f"not {answer}: the cache answers only a request whose prompt, settings, model, "
                  "owner and a client-chosen seed all equal an earlier one's.")


def check_refused(settings, requests: int, answer) -> CheckResult:
    """Exercise 3: of ``requests`` sent back to back with one key, how many get 429?

    Counted on a fresh token bucket (the service's ``RateLimiter``) with the lecture's
    ``rate_limit_per_minute`` and ``rate_limit_burst``.

    Args:
        settings: the lecture's ``settings``.
        requests: how many requests arrive at once.
        answer: the student's number of refused requests.
    """
    if answer is None:
        return not_yet("the number of refused requests")
    from ..serve.security import RateLimiter

    per_minute, burst = settings.rate_limit_per_minute, settings.rate_limit_burst
    bucket = RateLimiter(per_minute, burst)
    right = sum(bucket.wait("student") > 0 for _ in range(requests))
    value = _count(answer)
    if value == requests and right < requests:
        return result(False, "", f"the bucket starts full: the first rate_limit_burst={burst} "
                      "requests pass at once.")
    if value == 0 and right > 0:
        return result(False, "", f"the bucket holds only rate_limit_burst={burst} tokens, one "
                      "per request; it refills far slower than requests arrive back to back.")
    if per_minute == 0:
        why = "rate_limit_per_minute=0 turns the limit off"
    else:
        why = (f"the bucket starts with {burst} tokens and refills one every "
               f"{60 / per_minute:g} s; a refused request gets 429 and Retry-After")
    return result(value == right, f"{right} of {requests} refused: {why}.",
                  f"the first rate_limit_burst={burst} requests pass, the others find the bucket "
                  f"empty (it refills at {per_minute} per minute).")
