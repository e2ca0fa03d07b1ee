"""Solutions to the exercises of lecture 04 (sampling and classifier-free guidance).

Each ``solve_*`` returns an answer that ``mg.exercises.check_*`` accepts. They use plain torch
on purpose, so you can see what the package's sampling functions do inside.
"""

import torch


def solve_cfg_by_hand(first, scale):
    """Exercise 1: classifier-free guidance is one line of arithmetic on the logits."""
    cond, uncond = first["cond"], first["uncond"]
    return uncond + scale * (cond - uncond)


def solve_greedy_token(first, scale):
    """Exercise 2: greedy = argmax of the guided logits of codebook 0 (temperature is irrelevant)."""
    guided = solve_cfg_by_hand(first, scale) if scale > 1 else first["cond"]
    return int(guided[0].argmax())


def solve_nucleus_size(logits, p):
    """Exercise 3: count the most likely tokens until their probability mass reaches p."""
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_probs = torch.sort(probs, descending=True).values
    running_mass = torch.cumsum(sorted_probs, dim=-1)
    # every token before the running sum reaches p, plus the one that reaches it
    return min(int((running_mass < p).sum()) + 1, len(probs))


def entropy_nats(logits):
    """Entropy of softmax(logits) in nats: -sum p log p (tokens with p = 0 add nothing)."""
    probs = torch.softmax(logits.float(), dim=-1)
    log_probs = torch.log(probs.clamp_min(1e-30))
    return float(-(probs * log_probs).sum())


def solve_temperature_for_entropy(logits, fraction=0.5):
    """Exercise 4: lower the temperature step by step until the entropy has dropped enough."""
    target = fraction * entropy_nats(logits)
    temperature = 1.0
    while entropy_nats(logits / temperature) > target and temperature > 0.01:
        temperature *= 0.9
    return temperature
