"""What a prompt names: the packaged vocabulary and facet detection (genre, mood, ..., bpm, key).

:class:`FacetFinder` turns the vocabulary file ``musicgen_edu/data/prompt_vocabulary.json``
into one regular expression per facet and finds them by word matching, longest term first,
plural ``s`` allowed. Each facet masks its matches before the next looks (genre, production,
instrument, era, tempo, mood), so "drum and bass" is a genre, not two instruments::

    "dark drum and bass, 174 bpm, in A minor"
      genre       "drum and bass"  -> masked: "dark ______________, 174 bpm, in A minor"
      tempo       "174 bpm"        (a regular expression for numbers, then tempo words)
      mood        "dark"
      key         "A minor"        (a capital tonic, or "in"/"key of" before a small one)

:meth:`FacetFinder.drop_vocals` removes what MusicGen cannot make (a request for vocals, with
the words that joined it), and :meth:`FacetFinder.language_warning` says when a prompt does
not read as English (script and known words). :class:`~musicgen_edu.prompt.PromptEngineer`
checks and edits prompts with what this finds.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from importlib import resources

from .errors import ConfigError

__all__ = ["FacetFinder", "load_vocabulary", "clean_prompt", "estimate_tokens", "FACETS"]

# facets explain() reports, in the order improve() adds them ("vocals" is only reported)
FACETS = ("genre", "mood", "instrument", "tempo", "key", "era", "production", "vocals")
_MASK_ORDER = ("genre", "production", "instrument", "era", "tempo", "mood")  # detection order

_BPM = re.compile(r"(?<![\w.])([0-9]{1,3}(?:\.[0-9]+)?)\s?-?\s?(?:bpm|beats per minute)(?!\w)")
_DECADE = re.compile(r"(?<![\w'’])['’]?((?:19|20)?[0-9]0)s(?!\w)")      # 80s, '90s, 1970s
_ACC = r"(#|♯|b|♭|-sharp|-flat| sharp| flat)?"
_KEY_UPPER = re.compile(rf"(?<![\w#♯♭])([A-G]){_ACC}[ -]?(?i:(major|minor|maj|min))(?!\w)")
_KEY_IN = re.compile(rf"(?i)(?<!\w)(?:in|key of)\s+([a-g]){_ACC}[ -]?(major|minor|maj|min)(?!\w)"
                     r"(?!\s+keys?(?!\w))")                  # "in a minor key": any minor key
_MODE_ONLY = re.compile(r"(?i)(?<!\w)(major|minor)[ -]keys?(?!\w)")

# Words that only join a request for vocals to the prompt; drop_vocals drops them with it:
# before it ("with a female singer"), and after it where it began a phrase ("singing over piano")
_JOINED_BEFORE = re.compile(r"(?:(?<!\w)(?:(?i:with|and|featuring|feat\.?|by|plus|some|female|male)"
                            r"|a|an|the)\s+)*$")
_JOINED_AFTER = re.compile(r"^\s*(?:(?i:over|with|and|featuring|feat\.?|by|plus)(?!\w)\s*)*")


@lru_cache(maxsize=1)
def _packaged_vocabulary() -> str:
    return (resources.files("musicgen_edu") / "data" / "prompt_vocabulary.json").read_text("utf-8")


def load_vocabulary() -> dict:
    """The curated prompt vocabulary shipped in ``musicgen_edu/data`` (a fresh copy to edit)."""
    return json.loads(_packaged_vocabulary())


def clean_prompt(text: str) -> str:
    """One tidy line: whitespace runs -> a space, invisible characters dropped, no trailing ,;:."""
    kept = (" " if c.isspace() else c for c in text
            if c.isspace() or unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    return re.sub(" +", " ", "".join(kept)).strip().rstrip(" ,;:.")


def estimate_tokens(text: str) -> int:
    """A rough T5 token count without a tokenizer (what ``PromptEngineer`` uses without a model).

    One token per 6 letters of an ASCII word, one per digit, punctuation mark or other
    character, plus ``</s>``: ``estimate_tokens("calm piano")`` is 3. Monotone: appending text
    never lowers it.
    """
    return 1 + sum(-(-len(p) // 6) if p.isascii() and p.isalpha() else 1
                   for p in re.findall(r"[A-Za-z]+|\S", text))


def _key_name(tonic: str, accidental: str | None, mode: str) -> str:
    acc = (accidental or "").strip(" -").lower()
    sign = "#" if acc in ("#", "♯", "sharp") else "b" if acc in ("b", "♭", "flat") else ""
    return f"{tonic.upper()}{sign} {'major' if mode.lower().startswith('maj') else 'minor'}"


def _unique(items) -> list:
    return list(dict.fromkeys(items))


class FacetFinder:
    """Facet detection with one vocabulary (a dict shaped like :func:`load_vocabulary`).

    Attributes:
        canon: facet -> {term as written: canonical term} ("lofi" -> "lo-fi hip hop").
        regex: facet -> the compiled pattern of its terms, longest first.
        known: every word of the vocabulary and stopword list (for the language check).
    """

    def __init__(self, voc: dict):
        missing = [k for k in ("genres", "moods", "instruments", "eras", "production", "keys",
                               "tempo_words", "vocal_words", "negative_base", "templates")
                   if k not in voc]
        if missing:
            raise ConfigError(f"vocabulary lacks {missing}; start from mg.load_vocabulary().")
        terms = {"genre": {t: g for g, info in voc["genres"].items()
                           for t in [g, *info.get("aliases", [])]},
                 "production": voc["production"], "instrument": voc["instruments"],
                 "era": voc["eras"], "tempo": voc["tempo_words"], "mood": list(voc["moods"]),
                 "vocals": voc["vocal_words"]}
        self.canon = {f: t if isinstance(t, dict) else {x: x for x in t} for f, t in terms.items()}
        self.regex = {f: re.compile(r"(?<!\w)(" + "|".join(
            re.escape(t) for t in sorted(c, key=len, reverse=True)) + r")(?:e?s)?(?!\w)")
            for f, c in self.canon.items()}
        words = " ".join([*voc.get("stopwords", []), *(t for c in self.canon.values() for t in c),
                          *(o for m in voc["moods"].values() for o in m["opposites"])])
        self.known = set(re.findall(r"[^\W\d_]+", words))

    def explain(self, text: str) -> dict:
        """``{facet: [matches]}`` for :data:`FACETS`, plus ``bpm`` (see PromptEngineer.explain)."""
        low = text.lower()
        found = {f: [] for f in FACETS}
        work = low
        for facet in _MASK_ORDER:   # each facet hides what it matched from the next ones
            spans = []
            if facet == "era":
                for m in _DECADE.finditer(work):
                    d = m.group(1)   # "80" -> "1980s", "10" -> "2010s", "1970" -> "1970s"
                    century = "" if len(d) == 4 else "20" if d in ("00", "10") else "19"
                    found["era"].append(f"{century}{d}s")
                    spans.append(m.span())
            if facet == "tempo":
                for m in _BPM.finditer(work):
                    found["tempo"].append(f"{round(float(m.group(1)))} bpm")
                    spans.append(m.span())
            for m in self.regex[facet].finditer(work):
                found[facet].append(self.canon[facet][m.group(1)])
                spans.append(m.span())
            for a, b in spans:
                work = work[:a] + " " * (b - a) + work[b:]
        found["vocals"] = [self.canon["vocals"][m[1]] for m in self.regex["vocals"].finditer(low)]
        keys = sorted([(m.start(), _key_name(*m.groups())) for r in (_KEY_UPPER, _KEY_IN)
                       for m in r.finditer(text)])
        found["key"] = [k for _, k in keys] or [f"{m.group(1).lower()} key"
                                                 for m in _MODE_ONLY.finditer(text)]
        found = {f: _unique(v) for f, v in found.items()}
        bpms = [int(t.split()[0]) for t in found["tempo"] if t.endswith(" bpm")]
        return {**found, "bpm": bpms[0] if bpms else None}

    def drop_vocals(self, text: str) -> tuple[str, bool]:
        """``(text without its requests for vocals, whether any were dropped)``.

        Each vocal term goes with the words that only joined it to the prompt
        (``"pop with female vocals, 110 bpm"`` -> ``"pop, 110 bpm"``); a term inside another
        facet's term (a custom vocabulary's "vocal chops") stays. Repeated until none is left,
        since a removal can bring words together into a new term."""
        vocals = re.compile(self.regex["vocals"].pattern, re.IGNORECASE)
        others = [re.compile(r.pattern, re.IGNORECASE) for f, r in self.regex.items()
                  if f != "vocals"]
        dropped = False
        while True:
            inside = [m.span() for r in others for m in r.finditer(text)]
            spans = [(a, b) for a, b in (m.span() for m in vocals.finditer(text))
                     if not any(c <= a and b <= d for c, d in inside)]
            if not spans:
                return text, dropped
            dropped = True
            for a, b in reversed(spans):      # right to left: earlier spans stay valid
                start = _JOINED_BEFORE.search(text, 0, a).start()
                rest = text[b:]
                if not text[:start].rsplit(",", 1)[-1].strip():   # it began a phrase
                    rest = " " + rest[_JOINED_AFTER.match(rest).end():]
                text = text[:start] + rest
            pieces = [p.strip() for p in text.split(",")]
            text = clean_prompt(", ".join(p for p in pieces if p))

    def language_warning(self, text: str, min_latin_share: float, min_known_share: float,
                         min_words: int) -> str | None:
        """A warning when ``text`` does not look like English, else None.

        A heuristic, not a language detector: (1) at least ``min_latin_share`` of the letters
        (once there are 8) must be Latin script; (2) of the words (once there are
        ``min_words``), at least ``min_known_share`` must be :attr:`known` (the vocabulary and
        the small English stopword list, ``stopwords`` in the vocabulary file). The limits are
        ``PromptSettings`` fields."""
        letters = [c for c in text if c.isalpha()]
        if len(letters) >= 8:
            latin = sum(c.isascii() or "LATIN" in unicodedata.name(c, "") for c in letters)
            if latin / len(letters) < min_latin_share:
                return (f"only {latin / len(letters):.0%} of the letters are Latin script: "
                        "MusicGen was trained on English descriptions, other languages do worse.")
        words = re.findall(r"[^\W\d_]+", text.lower())
        if len(words) >= min_words:
            known = sum(w in self.known or w.rstrip("s") in self.known or w[:-2] in self.known
                        for w in words)
            if known / len(words) < min_known_share:
                return (f"only {known} of {len(words)} words are known English or music words; is "
                        "the prompt in English? MusicGen was trained on English descriptions.")
        return None
