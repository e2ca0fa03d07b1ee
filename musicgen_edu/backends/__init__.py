"""Backends run the network; the generator owns the decoding loop.

A backend turns prompts into a conditioning, runs one decoder step with a KV cache, and
converts between waveforms and EnCodec tokens. The contract is :class:`Backend`
(``contract.py``): the attributes ``name``, ``mg`` and ``path``; the methods ``encode_text``,
``start``, ``step``, ``encode_audio`` and ``decode_audio``, with defaults for ``step_draw``
(step, then draw) and ``release``; and the optional capabilities ``decoder``, ``fuses_draw``,
``replays`` and ``capture_s``, declared as attributes with defaults. ``transformers`` (the
reference) wraps the Hugging Face modules; the native decoder (``native``, ``native-int8``)
implements the same contract faster; ``audiocraft`` runs Meta's reference modules (audiocraft
1.3.0, installed with ``musicgen-edu install-audiocraft``) on converted weights.
"""

from collections.abc import Callable

from .audiocraft import AudiocraftBackend
from .contract import Backend, Conditioning
from .native_backend import NativeBackend
from .transformers import DecoderState, TransformersBackend

__all__ = ["Backend", "Conditioning", "DecoderState", "TransformersBackend", "NativeBackend",
           "AudiocraftBackend", "get_backend"]

BACKENDS: dict[str, Callable[..., Backend]] = {
    "transformers": TransformersBackend, "native": NativeBackend,
    "native-int8": lambda model: NativeBackend(model, int8=True),
    "audiocraft": AudiocraftBackend}      # needs `musicgen-edu install-audiocraft` (audiocraft.py)


def get_backend(name: str | Backend, model) -> Backend:
    """Instantiate the backend called ``name`` for a loaded :class:`MusicGenModel`.

    A backend object (e.g. ``NativeBackend(model, graphs=True)``) is returned as it is.
    """
    from ..errors import ConfigError

    if isinstance(name, Backend):
        if name.mg is not model:
            raise ConfigError("the backend object was built for another model; build it with "
                              "the model you pass to MusicGenerator.")
        return name
    if name not in BACKENDS:
        raise ConfigError(f"backend={name!r} is not available; choose one of {sorted(BACKENDS)} "
                          "or pass an object that implements backends.Backend.")
    return BACKENDS[name](model)
