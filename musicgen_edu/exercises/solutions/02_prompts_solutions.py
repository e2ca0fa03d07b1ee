"""Solutions to the exercises of lecture 02 (prompts).

Each ``solve_*`` returns an answer that ``mg.exercises.check_*`` accepts; read them after you
have tried the exercise. They reason from the model's tokenizer (``mg.tokenize_prompt`` shows
the same tokens) and its config; for text models (a melody model's conditioning also holds
the melody prefix).
"""


def num_tokens(model, prompt):
    """Tokens the text encoder reads: the tokenizer's ids, </s> included."""
    return len(model.tokenizer(prompt)["input_ids"])


def solve_num_text_tokens(model, prompt):
    """The tokenizer's pieces, </s> included (ByT5: one per UTF-8 byte, plus 1)."""
    return num_tokens(model, prompt)


def solve_embedding_shape(model, prompts):
    """[B, L, D]: prompts, tokens of the longest prompt, decoder width (after the projection)."""
    lengths = [num_tokens(model, p) for p in prompts]
    return (len(prompts), max(lengths), model.config.decoder.hidden_size)


def solve_padding(model, prompts):
    """Every prompt is padded to the longest one."""
    lengths = [num_tokens(model, p) for p in prompts]
    return sum(max(lengths) - n for n in lengths)


def solve_cfg_rows(num_prompts, guidance_scale):
    """CFG runs a conditioned and an unconditioned row per prompt; scale 1 turns it off."""
    return 2 * num_prompts if guidance_scale > 1 else num_prompts
