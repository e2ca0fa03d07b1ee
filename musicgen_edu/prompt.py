"""Prompt engineering for MusicGen: validate, explain, improve and vary text prompts.

MusicGen reads prompts with a frozen T5 encoder trained on short English descriptions of music
(Copet et al. 2023); its model card says it "is not able to generate realistic vocals" and does
worse in other languages. :class:`PromptEngineer` turns this into checks and edits: ``validate``
(errors block generation, warnings teach), ``explain`` (facets found: genre, mood, instrument,
tempo, key, era, production, vocals, plus bpm and key parsed with regular expressions),
``improve`` (adds missing facets from ``musicgen_edu/data/prompt_vocabulary.json`` without
contradicting the prompt: never a second genre or tempo, instruments and moods of the genre, a
key whose mode suits the mood), ``variations``, ``fill_template`` and ``negative``, all
deterministic under a seed. Detection is word matching, longest term first, plural ``s``
allowed (``prompt_facets.py``: the vocabulary, the detection, dropping vocals and the
language check)::

    >>> PromptEngineer().improve("calm piano")
    'calm piano, classical, 98 bpm, in A major, romantic era style, soft dynamics'
"""

from __future__ import annotations

import numbers
import random
import re
import string
import unicodedata
from dataclasses import dataclass, field, fields, replace

from .errors import ConfigError, check_int, check_range
from .prompt_facets import FACETS, FacetFinder, clean_prompt, estimate_tokens, load_vocabulary

__all__ = ["PromptEngineer", "PromptSettings", "PromptReport", "prompt_report", "TEMPLATE_FIELDS"]

TEMPLATE_FIELDS = ("genre", "mood", "instrument", "bpm", "key", "era", "production")
MAX_SEED = 2**63 - 1        # same range as GenerationConfig.seed
MAX_VARIATIONS = 100        # variations(n=...) upper bound


@dataclass
class PromptSettings:
    """Limits of the checks. ``max_tokens``: MusicGen's T5 reads short descriptions; 256 tokens is
    the practical cap used here (transformers does not truncate by itself; T5's tokenizer allows
    512), and tokens past it are reported as dropped, as a truncating tokenizer would."""

    max_tokens: int = 256           # text-encoder tokens (</s> included) allowed, 1 <= max_tokens
    min_words: int = 3              # fewer words -> "vague prompt" warning
    min_latin_share: float = 0.5    # below this share of Latin-script letters -> language warning
    min_known_share: float = 0.25   # below this share of known English/music words -> warning
    language_min_words: int = 4     # the known-word check needs at least this many words
    bpm_range: tuple = (40, 220)    # tempos outside [low, high] bpm -> warning
    instruments_added: int = 2      # instruments improve() adds when none is named, 1..4

    def __post_init__(self):
        for name, low, high in [("max_tokens", 1, 100_000), ("min_words", 0, 1000),
                                ("language_min_words", 1, 1000), ("instruments_added", 1, 4)]:
            check_int(name, getattr(self, name), low, high)
        check_range("min_latin_share", self.min_latin_share, 0, 1)
        check_range("min_known_share", self.min_known_share, 0, 1)
        if len(tuple(self.bpm_range)) != 2 or not 0 < self.bpm_range[0] <= self.bpm_range[1]:
            raise ConfigError(f"bpm_range must be (low, high) with 0 < low <= high, got "
                              f"{self.bpm_range!r}; e.g. (40, 220).")


@dataclass
class PromptReport:
    """What :meth:`PromptEngineer.validate` found. ``ok`` is True when there are no errors."""

    prompt: object                  # the prompt as given (may not be a string)
    errors: list[str]               # problems to fix before generating
    warnings: list[str]             # things likely to hurt the result
    n_chars: int = 0                # characters
    n_words: int = 0                # whitespace-separated words
    n_tokens: int = 0               # text-encoder tokens, </s> included
    tokens_exact: bool = False      # True: counted with the model's tokenizer; False: estimated
    max_tokens: int = 256           # the limit checked against
    dropped_tokens: int = 0         # tokens past max_tokens
    missing: list[str] = field(default_factory=list)  # facets the prompt does not name

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        how = "counted with the model's tokenizer" if self.tokens_exact else "estimated, no model"
        lines = [f"prompt: {self.prompt!r}",
                 f"status: {'OK' if self.ok else 'NOT OK'} ({len(self.errors)} errors, "
                 f"{len(self.warnings)} warnings)",
                 f"size: {self.n_chars} characters, {self.n_words} words, {self.n_tokens} of "
                 f"{self.max_tokens} tokens ({how})"]
        if self.missing:
            lines.append(f"missing facets: {', '.join(self.missing)}")
        lines += [f"error: {e}" for e in self.errors] + [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


class PromptEngineer:
    """Checks and edits prompts with a curated vocabulary; everything is deterministic.

    Args:
        model: ``None`` (token counts are estimated), a model name, a ``mg.load_model(...)``
            model or a ``mg.MusicGenerator``; its ``tokenizer`` counts tokens exactly (ByT5 for
            the debug models: one token per UTF-8 byte, T5 SentencePiece for the hub models).
        settings: a :class:`PromptSettings`; ``**overrides`` change single fields of it, e.g.
            ``PromptEngineer(model, max_tokens=64)``.
        vocabulary: a dict shaped like :func:`load_vocabulary` (default: the packaged one).
    """

    def __init__(self, model=None, settings: PromptSettings | None = None,
                 vocabulary: dict | None = None, **overrides):
        names = {f.name for f in fields(PromptSettings)}
        if set(overrides) - names:
            raise ConfigError(f"unknown setting(s) {sorted(set(overrides) - names)}; "
                              f"PromptSettings has {sorted(names)}.")
        self.settings = replace(settings or PromptSettings(), **overrides)
        self.tokenizer = None if model is None else self._tokenizer(model)
        self.vocabulary = vocabulary if vocabulary is not None else load_vocabulary()
        self._facets = FacetFinder(self.vocabulary)          # checks the vocabulary's keys
        voc = self.vocabulary
        self.templates = tuple(voc["templates"])   # e.g. "{mood} {genre} with {instrument}, ..."

    @staticmethod
    def _tokenizer(model):
        from .models import as_model, load_model

        return as_model(load_model(model) if isinstance(model, str) else model).tokenizer

    # --- small pieces ---------------------------------------------------------------------

    @staticmethod
    def _require_str(prompt) -> str:
        if not isinstance(prompt, str):
            raise ConfigError(f"prompt must be text (str), got {type(prompt).__name__} "
                              f"{prompt!r:.60}; e.g. 'calm lo-fi piano'.")
        return prompt

    @staticmethod
    def _rng(seed, *parts) -> random.Random:
        """An RNG for one decision: str seeds hash with SHA-512, same on every run and machine."""
        return random.Random("|".join(map(str, (seed, *parts))))

    def count_tokens(self, prompt: str) -> tuple[int, bool]:
        """``(tokens incl. </s>, exact?)``: the model's tokenizer if given, else an estimate."""
        text = self._require_str(prompt)
        if self.tokenizer is None or any(unicodedata.category(c) == "Cs" for c in text):
            return estimate_tokens(text), False
        return len(self.tokenizer(text)["input_ids"]), True

    def _fits(self, text: str) -> bool:
        return self.count_tokens(text)[0] <= self.settings.max_tokens

    def _mode(self, moods: list[str], rng: random.Random) -> str:
        mode = self.vocabulary["moods"].get(moods[0], {}).get("mode") if moods else None
        return mode or rng.choice(["major", "minor"])

    def _choices(self, genre: str, moods: list[str], seed) -> dict:
        """A value for each facet, typical of ``genre`` (any term for an unknown genre); one
        seeded RNG per decision, so a choice does not depend on which others are needed."""
        voc = self.vocabulary
        info = voc["genres"].get(genre) or {"moods": list(voc["moods"]), "bpm": [60, 140],
                                            "instruments": voc["instruments"], "eras": voc["eras"],
                                            "production": voc["production"]}
        rng = lambda what: self._rng(seed, what, genre)  # noqa: E731
        mood = moods[0] if moods else rng("mood").choice(info["moods"])
        k = min(self.settings.instruments_added, len(info["instruments"]))
        return {"mood": mood, "instrument": rng("instrument").sample(info["instruments"], k),
                "bpm": rng("bpm").randint(*info["bpm"]), "era": rng("era").choice(info["eras"]),
                "key": f"{rng('key').choice(voc['keys'])} {self._mode([mood], rng('mode'))}",
                "production": rng("production").choice(info["production"])}

    def _choose_genre(self, facets: dict, seed) -> str:
        """A genre that fits what the prompt already says (instruments, moods, era, bpm)."""
        def score(info):
            s = 2 * len(set(facets["instrument"]) & set(info["instruments"]))
            s += 2 * len(set(facets["mood"]) & set(info["moods"]))
            s += len(set(facets["era"]) & set(info["eras"]))
            s += len(set(facets["production"]) & set(info["production"]))
            if facets["bpm"] is not None:
                s += 2 if info["bpm"][0] <= facets["bpm"] <= info["bpm"][1] else -2
            return s
        scores = {g: score(info) for g, info in self.vocabulary["genres"].items()}
        best = sorted(g for g, s in scores.items() if s == max(scores.values()))
        return self._rng(seed, "genre", *best).choice(best)

    # --- the public methods ---------------------------------------------------------------

    def explain(self, prompt: str) -> dict:
        """Which facets the prompt names: ``{facet: [matches]}`` for :data:`FACETS`, plus ``bpm``.

        Matches are vocabulary terms (aliases give their genre: "lofi" -> "lo-fi hip hop"),
        decades as ``"1980s"``, tempos as ``"120 bpm"``, keys as ``"A minor"`` (a capital
        tonic, or "in"/"key of" before a small one; ``"minor key"`` without a tonic); ``bpm``
        is the first tempo in BPM (int) or None. Example::

            >>> PromptEngineer().explain("dark techno, 130 bpm, in A minor")["key"]
            ['A minor']
        """
        return self._facets.explain(self._require_str(prompt))

    def validate(self, prompt) -> PromptReport:
        """Check a prompt before generating; never raises. See :class:`PromptReport`."""
        s = self.settings
        if not isinstance(prompt, str):
            hint = ("decode it first: prompt.decode('utf-8')" if isinstance(prompt, bytes)
                    else "e.g. 'calm lo-fi piano'")
            return PromptReport(prompt, [f"prompt must be text (str), got {type(prompt).__name__} "
                                         f"{prompt!r:.60}; {hint}."], [], max_tokens=s.max_tokens)
        errors, warnings = [], []
        if not prompt.strip():
            errors.append(f"prompt is {'empty' if not prompt else 'only whitespace'}; describe the "
                          "music, e.g. 'calm lo-fi piano, 80 bpm' (or let improve('') write one).")
        if any(unicodedata.category(c) == "Cs" for c in prompt):
            errors.append("prompt holds lone surrogate code points (broken Unicode that cannot be "
                          "encoded as UTF-8); decode the source text with errors='replace'.")
        bad = list(dict.fromkeys(f"U+{ord(c):04X}" for c in prompt
                                 if unicodedata.category(c) in ("Cc", "Cf") and c not in "\t\n\r"))
        if bad:
            errors.append(f"prompt holds invisible control characters ({', '.join(bad[:5])}); "
                          "remove them (mg.clean_prompt(prompt) or improve() does).")
        if any(c in "\t\n\r" for c in prompt):
            warnings.append("prompt has line breaks or tabs; MusicGen reads one description, "
                            "so write it on one line (mg.clean_prompt joins it).")
        n_tokens, exact = self.count_tokens(prompt)
        dropped = max(0, n_tokens - s.max_tokens)
        if dropped:
            errors.append(f"prompt is {n_tokens} tokens ({'exact' if exact else 'estimated'}) but "
                          f"the text encoder limit is max_tokens={s.max_tokens}: {dropped} tokens "
                          "would be dropped. Shorten it, or raise PromptSettings.max_tokens.")
        facets = self.explain(prompt)
        if facets["vocals"]:
            warnings.append(f"asks for vocals ({', '.join(facets['vocals'])}): MusicGen makes "
                            "instrumental music and cannot sing words (model card: 'not able to "
                            "generate realistic vocals'); describe instruments instead (improve() "
                            "does) and put 'vocals' in the negative prompt.")
        n_words = len(prompt.split())
        if prompt.strip() and not any(c.isalpha() for c in prompt):
            warnings.append("prompt has no words; describe genre, mood and instruments.")
        elif 0 < n_words < s.min_words:
            warnings.append(f"prompt has only {n_words} word(s); MusicGen follows detailed "
                            "descriptions better: add genre, mood, instruments, tempo (improve()).")
        warnings += [w for w in [self._facets.language_warning(
            prompt, s.min_latin_share, s.min_known_share, s.language_min_words)] if w]
        bpms = [int(t.split()[0]) for t in facets["tempo"] if t.endswith(" bpm")]
        low, high = s.bpm_range
        warnings += [f"tempo {b} bpm is outside the usual range [{low}, {high}] bpm; MusicGen "
                     "rarely saw such tempos." for b in bpms if not low <= b <= high]
        if len(bpms) > 1:
            warnings.append(f"several tempos ({', '.join(map(str, bpms))} bpm); keep one.")
        missing = [f for f in FACETS[:-1] if not facets[f]]
        return PromptReport(prompt, errors, warnings, len(prompt), n_words, n_tokens, exact,
                            s.max_tokens, dropped, missing)

    def improve(self, prompt: str, seed: int = 0) -> str:
        """Add the missing facets (genre, mood, instruments, bpm, key, era, production).

        The prompt is tidied (:func:`clean_prompt`) and kept, except what asks for vocals
        (MusicGen cannot sing, see :meth:`validate`): those words go, with the words that only
        joined them, and ``"instrumental"`` comes first among the additions. Additions follow
        the prompt, comma separated, chosen under ``seed`` to fit the genre (the named one, or
        one matching the instruments/moods/bpm named), and stop before one would pass
        ``max_tokens``. Example::

            >>> PromptEngineer().improve("upbeat funk with female vocals").split(", ")[:2]
            ['upbeat funk', 'instrumental']

        An empty prompt gets a whole description. Idempotent: ``improve(improve(p)) == improve(p)``.

        Args:
            prompt: the user's prompt (kept word for word but its vocals, only tidied).
            seed: picks among the fitting values; 0 <= seed <= 2**63 - 1.

        Returns:
            The prompt with the additions, e.g. ``"calm piano, classical, 98 bpm, ..."``.
        """
        check_int("seed", seed, 0, MAX_SEED)
        text, dropped = self._facets.drop_vocals(clean_prompt(self._require_str(prompt)))
        facets = self.explain(text)
        genre = facets["genre"][0] if facets["genre"] else self._choose_genre(facets, seed)
        c = self._choices(genre, facets["mood"], seed)
        head = ([] if facets["mood"] else [c["mood"]]) + ([] if facets["genre"] else [genre])
        pieces = ["instrumental"] if dropped else []          # said instead of the vocals
        pieces += [" ".join(head)] if head else []
        adds = {"instrument": "with " + " and ".join(c["instrument"]), "tempo": f"{c['bpm']} bpm",
                "key": f"in {c['key']}", "era": f"{c['era']} style", "production": c["production"]}
        pieces += [piece for facet, piece in adds.items() if not facets[facet]]
        out = text
        for piece in pieces:   # stop at the first addition that would not fit
            candidate = f"{out}, {piece}" if out else piece
            if not self._fits(candidate):
                break
            out = candidate
        return out or prompt

    def variations(self, prompt: str, n: int = 3, seed: int = 0) -> list[str]:
        """``n`` distinct improved versions of ``prompt`` (same ``seed`` -> same list).

        Each is :meth:`improve` under a derived seed, sometimes plus one more instrument or
        production touch typical of its genre. The user's words are kept in every variant.

        Raises:
            ConfigError: ``n`` outside ``[1, 100]``, a bad seed, or fewer distinct variants
                possible (a prompt naming every facet, or near ``max_tokens``).
        """
        n = check_int("n", n, 1, MAX_VARIATIONS)
        seed = check_int("seed", seed, 0, MAX_SEED)
        base = clean_prompt(self._require_str(prompt))
        out: list[str] = []
        for attempt in range(20 * n + 20):
            rng = self._rng(seed, "variation", attempt)
            variant = self.improve(base, seed=rng.randrange(2**32))
            facets = self.explain(variant)
            info = self.vocabulary["genres"].get((facets["genre"] or [""])[0])
            extras = [] if info is None else (
                [f"with {i}" for i in info["instruments"] if i not in facets["instrument"]]
                + [p for p in info["production"] if p not in facets["production"]])
            if extras and (variant == base or rng.random() < 0.5):
                candidate = f"{variant}, {rng.choice(extras)}"
                variant = candidate if self._fits(candidate) else variant
            if variant != base and variant not in out:
                out.append(variant)
            if len(out) == n:
                return out
        raise ConfigError(f"n={n}, but only {len(out)} distinct variations of {base!r} fit "
                          f"(n may be 1..{MAX_VARIATIONS}, here at most {len(out)}): leave a facet "
                          f"open or shorten the prompt (max_tokens={self.settings.max_tokens}).")

    def fill_template(self, template: str | int, seed: int = 0, **given) -> str:
        """Fill a template such as ``"{mood} {genre} with {instrument}, {bpm} bpm"``.

        Args:
            template: a format string using :data:`TEMPLATE_FIELDS`, or an index into
                :attr:`templates`.
            seed: chooses the values not given (deterministic).
            **given: fixed values, e.g. ``genre="jazz"``; the others are picked to fit them.
        """
        seed = check_int("seed", seed, 0, MAX_SEED)
        if isinstance(template, numbers.Integral) and not isinstance(template, bool):
            template = self.templates[check_int("template", template, 0, len(self.templates) - 1)]
        if not isinstance(template, str):
            raise ConfigError(f"template must be a format string or an index, got {template!r}.")
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as err:
            raise ConfigError(f"template {template!r} is not a format string: {err}.") from None
        unknown = sorted({*names, *given} - set(TEMPLATE_FIELDS))
        if unknown:
            raise ConfigError(f"unknown template field(s) {unknown}; use {list(TEMPLATE_FIELDS)}.")
        facets = self.explain(", ".join(str(v) for v in given.values()))
        genre = str(given.get("genre") or self._choose_genre(facets, seed))
        moods = [str(given["mood"]).lower()] if "mood" in given else []
        c = self._choices(genre.lower(), moods, seed)
        return template.format(**{**c, "instrument": c["instrument"][0], "genre": genre, **given})

    def negative(self, prompt: str) -> str:
        """A negative prompt: the vocabulary's ``negative_base`` ("vocals, low quality,
        distorted, noise") plus the opposites of the moods found, leaving out anything the
        prompt asks for ("distorted guitar" keeps "distorted" out) except "vocals", which
        MusicGen cannot sing anyway (see :meth:`validate`)."""
        text = self._require_str(prompt).lower()
        facets = self.explain(text)
        moods = self.vocabulary["moods"]
        terms = [*self.vocabulary["negative_base"],
                 *(o for m in facets["mood"] for o in moods.get(m, {}).get("opposites", []))]
        asked = lambda t: re.search(rf"(?<!\w){re.escape(t)}(?:e?s)?(?!\w)", text)  # noqa: E731
        keep = [t for t in dict.fromkeys(terms) if t == "vocals" or not (asked(t) or t in facets["mood"])]
        return ", ".join(keep)


def prompt_report(prompt, improve: bool = False, variations: int = 0, seed: int = 0,
                  model=None) -> str:
    """A plain-text report for the CLI: validation, facets, negative prompt, and optionally the
    improved prompt and ``variations`` variants (same as ``musicgen-edu prompt``)."""
    variations = check_int("variations", variations, 0, MAX_VARIATIONS)
    seed = check_int("seed", seed, 0, MAX_SEED)
    eng = PromptEngineer(model)
    lines = [str(eng.validate(prompt))]
    if not isinstance(prompt, str):
        return "\n".join(lines)
    facets = eng.explain(prompt)
    lines.append("facets:")
    lines += [f"  {f}: {', '.join(facets[f]) or '-'}" for f in FACETS]
    lines.append(f"  bpm: {facets['bpm'] if facets['bpm'] is not None else '-'}")
    lines.append(f"negative: {eng.negative(prompt)}")
    if improve:
        lines.append(f"improved: {eng.improve(prompt, seed=seed)}")
    if variations:
        lines.append("variations:")
        lines += [f"  {i}. {v}" for i, v in enumerate(eng.variations(prompt, variations, seed), 1)]
    return "\n".join(lines)
