"""Latency profiling and music evaluation.

* ``profiling``: where generation time goes (timings tables, KV cache), ``breakdown`` (the
  torch.profiler split by stage) and ``profiling_plots`` — lecture 05;
* ``bound``: the memory-bandwidth lower bound of one decoder step — lecture 05;
* ``descriptors``: loudness, peaks, silence, spectral shape, tempo, key of a clip — lecture 08;
* ``clap``: text-audio agreement with CLAP (real weights, or a clearly labelled random model
  offline);
* ``fad``: Fréchet Audio Distance and diversity over embeddings (CLAP, VGGish, or EnCodec
  latents offline);
* ``evaluate``: all of them over a list of files, one row per file (``musicgen-edu evaluate``).
"""

from .bound import decode_bound, measure_bandwidth
from .breakdown import BREAKDOWN_STAGES, breakdown
from .clap import (
                   Clap,
                   clap_embeddings,
                   clap_score,
                   clap_text_embeddings,
                   load_clap,
                   prompt_adherence_table,
)
from .descriptors import DescriptorSettings, describe, describe_batch
from .evaluate import evaluate_files
from .fad import (
                   diversity,
                   embedding_stats,
                   encodec_embeddings,
                   fad,
                   frechet_distance,
                   vggish_embeddings,
)
from .profiling import (
                   cpu_load,
                   kv_cache_comparison,
                   profile_generation,
                   profile_summary,
                   profile_variants,
)
from .profiling_plots import plot_breakdown, plot_kv_cache, plot_rtf, plot_scaling

__all__ = [
    "profile_generation", "profile_variants", "profile_summary", "breakdown",
    "kv_cache_comparison", "measure_bandwidth", "decode_bound", "plot_scaling", "plot_rtf",
    "plot_breakdown", "plot_kv_cache", "cpu_load",
    "BREAKDOWN_STAGES",
    "DescriptorSettings", "describe", "describe_batch", "evaluate_files",
    "Clap", "load_clap", "clap_embeddings", "clap_text_embeddings", "clap_score",
    "prompt_adherence_table",
    "frechet_distance", "fad", "embedding_stats", "diversity", "encodec_embeddings",
    "vggish_embeddings",
]
