"""audiocraft's MusicGen API on musicgen_edu: port audiocraft code by changing its imports.

Mirrors audiocraft 1.3.0's layout, so the import lines are the only change::

    from audiocraft.models import MusicGen
      -> from musicgen_edu.audiocraft_api.models import MusicGen
    from audiocraft.data.audio import audio_write
      -> from musicgen_edu.audiocraft_api.data.audio import audio_write
    from audiocraft.utils.notebook import display_audio
      -> from musicgen_edu.audiocraft_api.utils.notebook import display_audio
    import torchaudio
      -> from musicgen_edu.audiocraft_api import torchaudio

    models.py             MusicGen (audiocraft models/musicgen.py + models/genmodel.py)
    data/audio.py         audio_write, audio_read (audiocraft data/audio.py)
    data/audio_utils.py   normalize_audio, convert_audio_channels (data/audio_utils.py)
    utils/notebook.py     display_audio (utils/notebook.py)
    torchaudio.py         load: torchaudio.load on soundfile

Everything runs on :class:`musicgen_edu.MusicGenerator` and its backends; audiocraft need not
be installed. What maps to what, and what differs: ``docs/audiocraft.md``.
"""

from .data.audio import audio_read, audio_write
from .data.audio_utils import normalize_audio
from .models import MultiBandDiffusion, MusicGen
from .utils.notebook import display_audio

__all__ = ["MusicGen", "MultiBandDiffusion", "audio_write", "audio_read", "normalize_audio",
           "display_audio"]
