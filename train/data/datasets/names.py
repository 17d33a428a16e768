"""Artist and title names folded for matching: one song key for every place that asks "is this the same song?".

`song_key(artist, title)` is the key dataset merges (`train.data.manifest`), fold grouping (`train.data.folds`), the
Deezer join and the `--lexical-source` overlap filter (`train.data.lexical_source`) all use: accents, case,
punctuation, "feat. X" parts, (bracketed) suffixes and the artist's word order are ignored. Names are
untrusted text: every function here is linear in its input's length.
"""

from __future__ import annotations

import math
import re
import unicodedata

# Names are untrusted text (dataset files, users' tables): every pattern here matches a bounded stretch
# wherever it is tried, so it runs in linear time. The two rules that reach back or far ahead are a search
# plus string work: as one backtracking pattern (spaces, a bracket, spaces, "feat") each is cubic on spaces.
_FEAT = re.compile(r"\b(?:feat\.?|ft\.?|featuring)\s", re.IGNORECASE)
_OPEN = re.compile(r"[\(\[]")
_CLOSE = re.compile(r"[\)\]]")
_NON_WORD = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


def _drop_featuring(value: str) -> str:
    """Cut from a "feat." / "ft." / "featuring" word (followed by a space) to the end of the text, with the
    spaces and one opening bracket before it: "Song (feat. X)" -> "Song". Only a word whose following
    space lies on the last line counts, and a final newline is kept."""
    body = len(value) - 1 if value.endswith("\n") else len(value)
    last_line = value.rfind("\n", 0, body)  # the space after the word must be this newline or later
    pos = max(0, last_line - 10)  # the longest word and its space ("featuring ") start within 10 of it
    while (match := _FEAT.search(value, pos)) is not None and match.end() - 1 < last_line:
        pos = match.start() + 1
    if match is None:
        return value
    head = value[:match.start()].rstrip()
    if head.endswith(("(", "[")):
        head = head[:-1].rstrip()
    return head + value[max(body, match.end()):]


def _drop_bracketed(value: str) -> str:
    """Drop every bracketed part, from an opening bracket to the first closing one after it, with the
    spaces before it: "Halo (Remastered 2011)" -> "Halo". An opening bracket never closed is kept."""
    parts, pos = [], 0
    while (opening := _OPEN.search(value, pos)) is not None:
        closing = _CLOSE.search(value, opening.end())
        if closing is None:
            break  # nothing after this bracket closes: no later one can close either
        start = opening.start()
        while start > pos and value[start - 1].isspace():
            start -= 1
        parts.append(value[pos:start])
        pos = closing.end()
    parts.append(value[pos:])
    return "".join(parts)


def normalise_name(text: object) -> str:
    """Lowercase, accents and punctuation stripped, "feat. X" parts and (bracketed) suffixes dropped.

    "Beyoncé - Halo (Remastered 2011)" and "beyonce halo" give the same string; used for matching only.
    Linear in the text's length whatever it holds (names are untrusted: see the patterns above).
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    value = unicodedata.normalize("NFKD", str(text))
    value = "".join(ch for ch in value if not unicodedata.combining(ch))
    value = value.replace("&", " and ")
    value = _drop_featuring(value)
    value = _drop_bracketed(value)
    value = _NON_WORD.sub(" ", value.lower())
    return _SPACES.sub(" ", value).strip()


def song_key(artist: object, title: object) -> str | None:
    """'artist|title' normalised (`normalise_name`, the artist's words in sorted order so that "Smith, Bessie"
    is "Bessie Smith"), or None when either is unknown (such rows are never matched or merged)."""
    a, t = normalise_name(artist), normalise_name(title)
    if not a or not t:
        return None
    return f"{' '.join(sorted(a.split()))}|{t}"
