"""musicgen_edu: learn, run and profile Meta's MusicGen from notebooks.

The flat public API that lectures and homework import::

    import musicgen_edu as mg
    gen = mg.MusicGenerator("debug")          # offline tiny model; "facebook/musicgen-small" on Colab
    out = gen.generate("lo-fi piano", duration=4, seed=0)
    out.save("first.wav")

Core modules (see docs/architecture.md): errors, models, generator, sampling, patterns,
backends, audio, chroma. Only torch, transformers and numpy are imported eagerly; audio
libraries, plotting and IPython load when first used.
"""

from .audio import (crossfade, duration_seconds, fade_in, fade_out, load_audio, loudness,
                    loudness_normalize, peak_normalize, play, plot_spectrogram, plot_waveform,
                    resample, save_audio, to_mono, to_stereo, trim_silence)
from .chroma import chroma_features
from .errors import (AudioError, ConfigError, GenerationError, ModelLoadError, MusicGenEduError)
from .generator import Generation, GenerationConfig, MusicGenerator
from .models import (DEBUG_MODELS, HUB_MODELS, MusicGenModel, clear_model_cache, list_models,
                     load_model, resolve_device, resolve_dtype)
from .patterns import build_delay_grid, codebook_delays, delay_pattern, undelay
from .sampling import (apply_temperature, classifier_free_guidance, process_logits, sample_tokens,
                       top_k_filter, top_p_filter)

__version__ = "0.1.0"

__all__ = [
    # generation
    "MusicGenerator", "GenerationConfig", "Generation",
    # models
    "load_model", "list_models", "MusicGenModel", "clear_model_cache", "resolve_device",
    "resolve_dtype", "HUB_MODELS", "DEBUG_MODELS",
    # how it works
    "delay_pattern", "build_delay_grid", "undelay", "codebook_delays",
    "classifier_free_guidance", "apply_temperature", "top_k_filter", "top_p_filter",
    "process_logits", "sample_tokens", "chroma_features",
    # audio
    "load_audio", "save_audio", "resample", "to_mono", "to_stereo", "peak_normalize",
    "loudness", "loudness_normalize", "fade_in", "fade_out", "crossfade", "trim_silence",
    "play", "plot_waveform", "plot_spectrogram", "duration_seconds",
    # errors
    "MusicGenEduError", "ConfigError", "ModelLoadError", "AudioError", "GenerationError",
    "__version__",
]
