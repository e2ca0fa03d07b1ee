"""Backends run the network; the generator owns the decoding loop.

A backend turns prompts into a conditioning, runs one decoder step with a KV cache, and
converts between waveforms and EnCodec tokens. ``transformers`` (the reference) wraps the
Hugging Face modules; faster backends (a native decoder, audiocraft) plug in with the same
five methods: ``encode_text``, ``start``, ``step``, ``encode_audio``, ``decode_audio``.
"""

from .native import NativeBackend
from .transformers import Conditioning, DecoderState, TransformersBackend

__all__ = ["Conditioning", "DecoderState", "TransformersBackend", "NativeBackend", "get_backend"]

BACKENDS = {"transformers": TransformersBackend, "native": NativeBackend,
            "native-int8": lambda model: NativeBackend(model, int8=True)}


def get_backend(name, model):
    """Instantiate the backend called ``name`` for a loaded :class:`MusicGenModel`.

    A backend object (e.g. ``NativeBackend(model, graphs=True)``) is returned as it is.
    """
    from ..errors import ConfigError

    if not isinstance(name, str) and callable(getattr(name, "step", None)):
        if getattr(name, "mg", model) is not model:
            raise ConfigError("the backend object was built for another model; build it with "
                              "the model you pass to MusicGenerator.")
        return name
    if name not in BACKENDS:
        raise ConfigError(f"backend={name!r} is not available; choose one of {sorted(BACKENDS)}.")
    return BACKENDS[name](model)
