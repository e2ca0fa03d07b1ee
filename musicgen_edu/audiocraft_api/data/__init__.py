"""audiocraft's ``audiocraft/data`` package, the parts a MusicGen user calls:
``audio.py`` (``audio_write``, ``audio_read``) and ``audio_utils.py`` (``normalize_audio``,
``convert_audio_channels``)."""

__all__: list[str] = []
