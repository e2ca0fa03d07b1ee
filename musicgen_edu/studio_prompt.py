"""The studio's prompt panel: the prompt box checked as one types, *improve prompt*, the negative.

What the prompt goes through (``mg.Studio`` holds one :class:`PromptPanel`):

    prompt box ─► PromptEngineer.validate at every change ─► the line under the box:
        "✓ 5 words, 12/256 tokens; missing: era, ..." then errors in red, warnings in amber
    improve prompt ─► PromptEngineer.improve: the missing facets added, the box replaced
    Generate ─► :meth:`PromptPanel.job`: the prompt (an error blocks the click) and the
        negative prompt, for ``MusicGenerator.generate``

Token counts are the studio's model's: when another model loads, :meth:`PromptPanel.use`
gives the panel a :class:`~musicgen_edu.prompt.PromptEngineer` with that model's tokenizer.
"""

from __future__ import annotations

import html

from .errors import ConfigError, MusicGenEduError
from .prompt import PromptEngineer
from .widget_kit import STATUS_COLORS, make

__all__ = ["PromptPanel"]


class PromptPanel:
    """The prompt and negative-prompt inputs of the studio, with live checks.

    Args:
        generator: the ``MusicGenerator`` whose tokenizer counts the prompt's tokens.
        prompt: the text the prompt box starts with.
        on_error: called with a library error when *improve prompt* fails (the studio shows
            it in its status line).
    """

    def __init__(self, generator, prompt: str, on_error):
        self.engineer = PromptEngineer(generator)
        self.prompt_box = make("Textarea", "mg-studio-prompt", value=prompt, rows=2,
                               description="prompt", layout={"width": "95%"})
        self.info = make("HTML")                      # the live check, under the prompt box
        self.improve_button = make("Button", description="improve prompt", icon="magic",
                                   tooltip="PromptEngineer.improve: add the missing facets")
        self.negative_box = make("Text", value="", description="negative",
                                 placeholder="what to steer away from, e.g. vocals",
                                 layout={"width": "95%"})
        self.row = make("HBox", children=[self.improve_button, self.info])
        self._on_error = on_error
        self.prompt_box.observe(lambda _: self.check(), "value")
        self.improve_button.on_click(lambda _: self._improve_or_say())
        self.check()

    def use(self, generator) -> None:
        """Count tokens with ``generator``'s tokenizer from now on (a newly loaded model)."""
        self.engineer = PromptEngineer(generator)

    def improve(self) -> str:
        """Replace the prompt with ``PromptEngineer.improve`` of it (missing facets added)."""
        self.prompt_box.value = self.engineer.improve(self.prompt_box.value)
        return self.prompt_box.value

    def job(self, mode: str) -> dict:
        """``{"prompt", "negative_prompt"}`` for a run in ``mode`` (blank ones: ``None``).

        Raises:
            ConfigError: the prompt's first error; a blank prompt is one only in text mode
                (a continuation or melody may run without text).
        """
        prompt = self.prompt_box.value
        report = self.engineer.validate(prompt)
        if (mode == "text" or prompt.strip()) and not report.ok:
            raise ConfigError(report.errors[0])
        return dict(prompt=prompt if prompt.strip() else None,
                    negative_prompt=self.negative_box.value.strip() or None)

    def shows(self, exc: Exception) -> bool:
        """True when ``exc`` is the prompt's own error, already in red under the box."""
        return str(exc) in self.engineer.validate(self.prompt_box.value).errors

    def check(self) -> None:
        """Live validation under the prompt box: errors in red, warnings in amber."""
        r = self.engineer.validate(self.prompt_box.value)
        head = (f"{r.n_words} words, {r.n_tokens}/{r.max_tokens} tokens"
                + (f"; missing: {', '.join(r.missing)}" if r.missing else ""))
        lines = [(e, "error") for e in r.errors] + [(w, "warn") for w in r.warnings]
        self.info.value = "<br>".join(
            [f"{'✓' if r.ok else '✗'} {html.escape(head)}"] + [
                f'<span style="color:{STATUS_COLORS[k]}">{html.escape(t)}</span>'
                for t, k in lines])

    def _improve_or_say(self) -> None:
        try:
            self.improve()
        except MusicGenEduError as exc:
            self._on_error(exc)
