"""Solutions to the exercises of lecture 09 (serving: batching, the result cache, rate limits).

Each ``solve_*`` returns an answer that ``mg.exercises.check_*`` accepts; read them after you
have tried the exercise. They apply the service's rules by hand.
"""

import math

# what does not split a batch or make a request different for the cache's purposes
PER_ITEM = ("prompt", "prompts", "negative_prompt", "seed")


def solve_batches(bodies, max_batch_size):
    """Exercise 1: requests with equal settings (all but prompt, negative prompt and seed)
    share batches of at most ``max_batch_size`` prompts; one prompt per body here."""
    groups = {}
    for body in bodies:
        key = tuple(sorted((k, v) for k, v in body.items() if k not in PER_ITEM))
        groups[key] = groups.get(key, 0) + 1
    return sum(math.ceil(n / max_batch_size) for n in groups.values())


def solve_cached(first, second):
    """Exercise 2: reused only when the client chose the seed and everything else is equal."""
    return "seed" in second and first == second


def solve_refused(requests, burst):
    """Exercise 3: the bucket starts with ``burst`` tokens; back to back, nothing refills."""
    return max(0, requests - burst)
