"""audiocraft's ``audiocraft/utils`` package, the part its demos use: ``notebook.py``
(``display_audio``)."""

__all__: list[str] = []
