"""musicgen_edu: learn, run and profile Meta's MusicGen from notebooks.

The flat public API that lectures and homework import::

    import musicgen_edu as mg
    gen = mg.MusicGenerator("edu-tiny")       # offline, shipped; "facebook/musicgen-small" on Colab
    out = gen.generate("lo-fi piano", duration=4, seed=0)
    out.save("first.wav")

Core modules (see docs/architecture.md): errors, models, generator, sampling, patterns,
backends, audio, chroma. Only torch, transformers and numpy are imported eagerly; audio
libraries, plotting and IPython load when first used.
"""

from . import exercises, metrics
from .audio import (
    crossfade,
    duration_seconds,
    fade_in,
    fade_out,
    load_audio,
    loudness,
    loudness_normalize,
    peak_normalize,
    play,
    plot_spectrogram,
    plot_waveform,
    resample,
    save_audio,
    to_mono,
    to_stereo,
    trim_silence,
)
from .batch import BatchRunner, grid, load_rows, read_manifest, run_batch
from .chroma import chroma_features
from .codec import (
    decode_tokens,
    decode_with_codebooks,
    encode_audio,
    plot_delay_pattern,
    plot_reconstruction,
    plot_tokens,
    reconstruction_error,
)
from .convert import from_audiocraft, to_audiocraft  # checkpoints: musicgen-edu convert
from .distributions import (
    entropy,
    filter_steps,
    first_step_logits,
    plot_distribution,
    plot_filter_steps,
    step_logits,
    token_diversity,
)
from .errors import (
    AudioError,
    ConfigError,
    DataError,
    GenerationError,
    ModelLoadError,
    MusicGenEduError,
    TrainingError,
)
from .generation import MAX_PROMPT_CHARS, MAX_PROMPT_TOKENS, Generation, GenerationConfig
from .generator import MusicGenerator
from .metrics import *
from .metrics import __all__ as _metrics_all
from .models import (
    DEBUG_MODELS,
    DEFAULT_MODEL,
    HUB_MODELS,
    MusicGenModel,
    clear_model_cache,
    list_models,
    load_model,
    resolve_device,
    resolve_dtype,
    shipped_model_info,
)
from .patterns import build_delay_grid, codebook_delays, delay_pattern, undelay
from .prompt import PromptEngineer, PromptReport, PromptSettings, prompt_report
from .prompt_facets import clean_prompt, load_vocabulary
from .sampling import (
    apply_temperature,
    classifier_free_guidance,
    counter_uniform,
    process_logits,
    sample_counter,
    sample_tokens,
    top_k_filter,
    top_p_filter,
)
from .studio import Studio
from .studio_history import audio_compare
from .text import embed_prompts, prompt_similarity, tokenize_prompt

# fine-tuning (lecture 10); binds `train` to the function, as students call it: mg.train(...)
from .train import (
    ClipSpec,
    CodecConfig,
    CodecTrainer,
    ContrastConfig,
    ContrastTrainer,
    EduTinyConfig,
    Judges,
    TokenDataset,
    TrainConfig,
    Trainer,
    TrainResult,
    accuracy_table,
    arpeggio_clips,
    build_dataset,
    build_edu_tiny,
    caption_reading,
    find_clips,
    grade_attributes,
    model_generate,
    synth_clips,
    synth_token_dataset,
    train,
    write_dataset,
)
from .train import plot_curves as plot_training_curves
from .widgets import param_sliders, token_grid

__version__ = "0.1.0"

# The service (lecture 09) needs the `serve` extra (fastapi, pydantic-settings, ...): its names
# are imported on first use, so `import musicgen_edu` stays light and works without the extra.
_LAZY = {"start_server": "serve", "create_app": "serve", "ServerHandle": "serve",
         "start_redis": "serve", "in_memory_provider": "serve", "format_trace": "serve",
         "load_settings": "settings", "Settings": "settings"}


def __getattr__(name: str):
    import importlib

    if name in ("serve", "settings"):
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'musicgen_edu' has no attribute {name!r}")


__all__ = [
    # generation
    "MusicGenerator", "GenerationConfig", "Generation", "MAX_PROMPT_CHARS", "MAX_PROMPT_TOKENS",
    # models
    "load_model", "list_models", "MusicGenModel", "clear_model_cache", "resolve_device",
    "resolve_dtype", "HUB_MODELS", "DEBUG_MODELS", "DEFAULT_MODEL",
    # how it works
    "delay_pattern", "build_delay_grid", "undelay", "codebook_delays",
    "classifier_free_guidance", "apply_temperature", "top_k_filter", "top_p_filter",
    "process_logits", "sample_tokens", "sample_counter", "counter_uniform", "chroma_features",
    # experiments (lecture 06)
    "BatchRunner", "grid", "load_rows", "read_manifest", "run_batch",
    # prompt engineering
    "PromptEngineer", "PromptReport", "PromptSettings", "clean_prompt", "load_vocabulary",
    "prompt_report",
    # prompts and text conditioning (lecture 02)
    "tokenize_prompt", "embed_prompts", "prompt_similarity",
    # audio tokens (lecture 03)
    "encode_audio", "decode_tokens", "decode_with_codebooks", "reconstruction_error",
    "plot_delay_pattern", "plot_reconstruction", "plot_tokens",
    # one decoding step's distribution (lecture 04)
    "first_step_logits", "step_logits", "entropy", "filter_steps", "token_diversity",
    "plot_distribution", "plot_filter_steps",
    # latency profiling (lecture 05) and music evaluation (lecture 08)
    *_metrics_all, "metrics",
    # widgets: explore by ear (lecture 07; ipywidgets is imported only when one is made)
    "Studio", "param_sliders", "audio_compare", "token_grid",
    # serving (lecture 09; needs pip install 'musicgen-edu[serve]')
    "start_server", "create_app", "ServerHandle", "load_settings", "Settings",
    "start_redis", "in_memory_provider", "format_trace",
    # checkpoints: audiocraft <-> transformers (musicgen-edu convert)
    "to_audiocraft", "from_audiocraft",
    # fine-tuning (lecture 10)
    "train", "Trainer", "TrainConfig", "TrainResult", "TokenDataset", "build_dataset",
    "find_clips", "write_dataset", "arpeggio_clips", "plot_training_curves",
    # training the whole thing: edu-tiny (lecture 11)
    "ClipSpec", "synth_clips", "shipped_model_info", "CodecConfig", "CodecTrainer",
    "EduTinyConfig", "build_edu_tiny", "synth_token_dataset", "Judges", "grade_attributes",
    "model_generate", "accuracy_table", "caption_reading", "ContrastTrainer", "ContrastConfig",
    # exercise checks
    "exercises",
    # audio
    "load_audio", "save_audio", "resample", "to_mono", "to_stereo", "peak_normalize",
    "loudness", "loudness_normalize", "fade_in", "fade_out", "crossfade", "trim_silence",
    "play", "plot_waveform", "plot_spectrogram", "duration_seconds",
    # errors
    "MusicGenEduError", "ConfigError", "ModelLoadError", "AudioError", "GenerationError",
    "DataError", "TrainingError", "__version__",
]
