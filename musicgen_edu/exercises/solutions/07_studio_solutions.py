"""Solutions to the exercises of lecture 07 (the studio).

Each ``solve_*`` returns an answer that ``mg.exercises.check_*`` accepts; read them after you
have tried the exercise. They use the studio's Python API, the same path as its buttons.
"""

import dataclasses

import musicgen_edu as mg


def solve_setting_range(name):
    """Exercise 1: every numeric GenerationConfig field carries its range as field metadata."""
    metadata = {f.name: f.metadata for f in dataclasses.fields(mg.GenerationConfig)}[name]
    return (metadata["low"], metadata["high"])


def solve_greedy_pair(studio, seed=0, model=None):
    """Exercise 2: two greedy clips, seeds ``seed`` and ``seed + 1``, everything else equal
    (``model``: the lecture's MODEL; None takes the one the studio's picker shows)."""
    model = model or studio.model_picker.value
    for s in (seed, seed + 1):
        studio.generate(mode="text", model=model, use_sampling=False, seed=s)
    return studio


def solve_reproduced(studio, index):
    """Exercise 3: replay history item ``index`` with the generator, outside the studio."""
    original = studio.history[index]
    negative = studio.jobs[index]["negative_prompt"]    # how it was asked for, beside it
    settings = {k: v for k, v in dataclasses.asdict(original.config).items() if k != "seed"}
    gen = mg.MusicGenerator(original.model_name, device=str(studio.generator.model.device),
                            progress=False)
    return gen.generate(original.prompts[0], negative_prompt=negative, seeds=original.seeds,
                        **settings)
