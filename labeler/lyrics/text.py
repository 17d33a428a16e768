"""Lyrics: decode, clean and tokenise, the same way for training and labelling.

Catalogue lyrics arrive as plain text, LRC files with time tags, Genius page scrapes (a
"<Title> Lyrics" header, [Chorus] tags, "You might also like" and "…123Embed" residue), as bytes in
an unknown legacy encoding, or not at all (instrumentals). `clean_lyrics` reduces all of them to the
sung words, one lyric line per line, so the encoder sees the same kind of text in both jobs.

Long lyrics: an encoder reads at most `max_tokens`. With `long_policy="head_tail"` (the default) a
long lyric keeps the first half and the last half of the window instead of only the start. The
opening verse sets the scene, and the final chorus and outro return to the song's hook and
resolution, while the middle is mostly repeated verses and choruses already seen; for long texts
head+tail truncation is also what worked best for BERT classification (Sun et al. 2019, "How to
Fine-Tune BERT for Text Classification?"). It matters: on the 1,353 MoodyLyrics4Q lyrics the
MiniLM token count has median 276 and p90 647; 55% of songs exceed 256 tokens and 16.5% exceed 512
(`bench/bench_lyrics_length.py`), so the window cuts most songs and the policy decides what is kept.

Whole lyrics: with `max_windows > 1` the lyric is instead cut into consecutive windows of
`max_tokens` (each framed by the special tokens, neighbours sharing `window_overlap` tokens), at most
`max_windows` of them; a longer lyric keeps `max_windows` windows spread evenly from its first to
its last (a documented cap: 8 windows of 256 tokens cover ~2,000 tokens, more than 99% of
MoodyLyrics4Q songs whole). The windows sit side by side in one row of `max_windows * max_tokens`
ids, unused windows all padding; the lyrics encoder (labeler.models.LyricsEncoder) encodes each
non-empty window and pools them into one song vector. Training, labelling and serving all tokenise
here, with the bundle's LyricsConfig.
"""

from __future__ import annotations

import codecs
import math
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LONG_POLICIES = ("head_tail", "head")
MAX_WINDOWS = 32  # hard limit on LyricsConfig.max_windows (encoding cost grows with it)
# Lyrics are cut to this many characters (head and tail) before tokenising, so a 200,000-character
# "lyric" (a pasted book, a broken scrape) costs no more than a long song. 25,000 characters on each
# side is far more than any token window holds (a token is rarely more than ~10 characters).
MAX_CHARS = 50_000


class LyricsError(ValueError):
    """Lyrics that cannot be used; str(e) is "bad_lyrics: <detail>" (the row error of the pipeline)."""

    kind = "bad_lyrics"

    def __init__(self, detail: str):
        super().__init__(f"{self.kind}: {detail}")


@dataclass(frozen=True)
class LyricsConfig:
    """How lyrics become encoder input; stored in the model bundle so labelling matches training."""

    max_tokens: int = 256         # encoder window, special tokens included; every row is padded to it
    long_policy: str = "head_tail"  # "head": first max_tokens; "head_tail": first and last halves of the window
    max_windows: int = 1            # > 1: whole-lyric windows of max_tokens (long_policy unused), at most this many
    window_overlap: int = 16        # tokens shared by neighbouring windows

    def __post_init__(self) -> None:
        for name in ("max_windows", "window_overlap"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"LyricsConfig.{name} must be an integer, got {value!r}")
        if not 1 <= self.max_windows <= MAX_WINDOWS:
            raise ValueError(f"LyricsConfig.max_windows must be in 1..{MAX_WINDOWS}, got {self.max_windows}")
        if self.window_overlap < 0 or (self.max_windows > 1 and self.window_overlap > self.max_tokens // 2):
            raise ValueError(f"LyricsConfig.window_overlap must be in 0..max_tokens/2, got {self.window_overlap}")
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or self.max_tokens < 8:
            raise ValueError(f"LyricsConfig.max_tokens must be an integer >= 8, got {self.max_tokens!r}")
        if self.long_policy not in LONG_POLICIES:
            raise ValueError(f"LyricsConfig.long_policy must be one of {LONG_POLICIES}, got {self.long_policy!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LyricsConfig:
        from labeler.contracts.coerce import config_from_dict  # noqa: PLC0415

        return config_from_dict(cls, d)


# --- decoding ------------------------------------------------------------------------------------

_ALLOWED_CONTROLS = {"\t", "\n", "\r", "\f", "\v"}


def _looks_binary(text: str) -> str | None:
    """The reason decoded text is not text (NUL bytes, many control characters), or None when it looks fine."""
    if "\x00" in text:
        return "contains NUL bytes (binary data, or UTF-16 without a byte-order mark)"
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS)
    if controls > max(2, len(text) // 100):
        return f"{controls} control characters in {len(text)} (binary data, not text)"
    return None


def decode_lyrics(value: str | bytes | None) -> str | None:
    """Text from a catalogue value: str as is; bytes as UTF-8 (BOM stripped, UTF-16 with a BOM), else
    Windows-1252, else Latin-1. Latin-1 decodes any byte string, so bytes that are evidently not text
    (NUL bytes, many control characters) raise LyricsError. None (and NaN from pandas) -> None."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise LyricsError(f"expected text or bytes, got {type(value).__name__}")
    if value.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = value.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise LyricsError(f"UTF-16 byte-order mark but undecodable: {exc.reason}") from exc
    else:
        for encoding in ("utf-8-sig", "cp1252", "latin-1"):
            try:
                text = value.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    text = cap_chars(text)  # the per-character checks below cost no more than a long song's
    problem = _looks_binary(text)
    if problem:
        raise LyricsError(f"{len(value)} bytes {problem}")
    return text


# --- cleaning ------------------------------------------------------------------------------------

# Genius header on the first line: "[N Contributors][Translations…]<Title> Lyrics" glued to the first
# lyric, a section tag, a space or punctuation (all seen in MoodyLyrics4Q). Only the first line is
# searched, and only a capitalised " Lyrics" that ends a word, so ordinary first lines stay.
_GENIUS_HEADER = re.compile(r"^.{0,1000}? Lyrics(?![a-z])")
# Genius footer: "…Embed", "…123Embed", "…1.2KEmbed", possibly after "You might also like".
# The count may only start where a run of digits starts ((?<![\d.])): without that, a long run of
# digits was tried from every position in it (quadratic: 40,000 digits took 54 s with the GIL held).
_GENIUS_EMBED = re.compile(r"(?:You might also like)?(?:(?<![\d.])\d+(?:\.\d+)?K?)?Embed\s*$")
_GENIUS_RECOMMEND = re.compile(r"You might also like")
# Every pattern here runs in linear time on any input (1 MB of digits, brackets or whitespace each in
# well under a second: tests/test_lyrics_security.py), and runs only on text capped to MAX_CHARS.
# LRC: [mm:ss], [mm:ss.xx] and enhanced word stamps <mm:ss.xx>; metadata ([ar:…], [offset:…]) and
# section tags ([Chorus], [Verse 1: Artist], [?]) go with the general rule below: square brackets in
# lyrics hold annotations, not sung words (sung asides are written in parentheses, which are kept).
_LRC_TIME = re.compile(r"\[\s*\d{1,3}\s*:\s*\d{1,2}(?:[.:]\d{1,3})?\s*\]|<\d{1,3}:\d{1,2}(?:[.:]\d{1,3})?>")
_SQUARE_TAG = re.compile(r"\[[^\[\]\n]*\]")
_REPEAT_MARK = re.compile(r"\(\s*(?:[x×]\s*\d+|\d+\s*[x×])\s*\)|(?<=\s)(?:[x×]\d+|\d+[x×])\s*$", re.IGNORECASE | re.MULTILINE)
_INVISIBLE = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")


def clean_lyrics(text: str | None) -> str:
    """The sung words, one lyric line per line ("" for None, empty or annotation-only input).

    Removes LRC time and metadata tags, section tags ([Chorus], [Verse 1: X]), repeat marks ((x2)),
    the Genius header ("<Title> Lyrics") and footer ("You might also like", "…Embed"), invisible and
    control characters; collapses spaces and drops empty lines. Parenthesised backing vocals stay.
    """
    if not text:
        return ""
    text = cap_chars(text)  # before any regular expression: the cost of one lyric is bounded
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    text = "".join(ch if ch in "\n\t" or unicodedata.category(ch) != "Cc" else " " for ch in text)
    text = text.lstrip()
    first, sep, rest = text.partition("\n")
    first = _GENIUS_HEADER.sub("", first, count=1)
    text = first + sep + rest
    text = _GENIUS_EMBED.sub("", text.rstrip())
    text = _GENIUS_RECOMMEND.sub("\n", text)
    text = _LRC_TIME.sub("", text)
    text = _SQUARE_TAG.sub("\n", text)
    text = _REPEAT_MARK.sub("", text)
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


# --- tokenisation --------------------------------------------------------------------------------


def _special_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after one sequence ([CLS] … [SEP] for BERT).

    Found by encoding one word with and without special tokens, because transformers 5 tokenizers
    no longer expose build_inputs_with_special_tokens, and this works for any post-processor.
    """
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(framed) - len(plain) + 1):
        if framed[start:start + len(plain)] == plain:
            return list(framed[:start]), list(framed[start + len(plain):])
    raise ValueError(f"cannot find where {type(tokenizer).__name__} places its special tokens")


def cap_chars(text: str, policy: str = "head_tail") -> str:
    """At most MAX_CHARS characters (+1 newline): the head, or the head and the tail (where Genius
    headers and footers, and the final chorus, are)."""
    if len(text) <= MAX_CHARS:
        return text
    if policy == "head":
        return text[:MAX_CHARS]
    half = MAX_CHARS // 2
    return text[:half] + "\n" + text[-half:]


def window_starts(n_tokens: int, body: int, overlap: int, max_windows: int) -> list[int]:
    """Start offsets of the windows over `n_tokens` content tokens: windows of up to `body` tokens, each
    starting `body - overlap` after the previous, until the lyric is covered (the last one may be
    short); when there are more than `max_windows`, that many spread evenly (first and last kept)."""
    step = max(1, body - overlap)
    if n_tokens <= body:
        return [0]
    starts = list(range(0, n_tokens - overlap, step))
    if len(starts) > max_windows:
        picks = np.linspace(0, len(starts) - 1, max_windows).round().astype(int)
        starts = [starts[i] for i in picks]
    return starts


def tokenize(tokenizer, texts: list[str], config: LyricsConfig | dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids int32 (n, max_windows * max_tokens) and attention mask int8 (same), padded to a fixed width.

    Texts are tokenised without truncation (after a character cap), then cut by the long-lyrics
    policy (one window) or into windows (see the module doc), each window framed with the
    tokenizer's own special tokens. "" gives just the special tokens (e.g. [CLS] [SEP]) with their
    mask set, so no row is all padding; use has_lyrics to tell empty rows apart.
    """
    config = LyricsConfig.from_dict(config) if isinstance(config, dict) else (config or LyricsConfig())
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and limit < 1_000_000 and config.max_tokens > limit:
        raise ValueError(f"LyricsConfig.max_tokens={config.max_tokens} exceeds the tokenizer's model_max_length={limit}")
    prefix, suffix = _special_frame(tokenizer)
    budget = config.max_tokens - len(prefix) - len(suffix)
    if budget < 2:
        raise ValueError(f"LyricsConfig.max_tokens={config.max_tokens} leaves no room beside {len(prefix) + len(suffix)} special tokens")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n = len(texts)
    width = config.max_tokens
    ids = np.full((n, config.max_windows * width), pad_id, dtype=np.int32)
    mask = np.zeros((n, config.max_windows * width), dtype=np.int8)
    if n == 0:
        return ids, mask
    capped = [cap_chars(t or "", config.long_policy) for t in texts]
    encoded = tokenizer(capped, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    head = budget - budget // 2
    for row, content in enumerate(encoded):
        if config.max_windows > 1:
            for w, start in enumerate(window_starts(len(content), budget, config.window_overlap, config.max_windows)):
                seq = prefix + list(content[start:start + budget]) + suffix
                ids[row, w * width:w * width + len(seq)] = seq
                mask[row, w * width:w * width + len(seq)] = 1
            continue
        if len(content) > budget:
            content = content[:budget] if config.long_policy == "head" else content[:head] + content[len(content) - budget // 2:]
        seq = prefix + list(content) + suffix
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1
    return ids, mask


def prepare_lyrics(value: Any) -> tuple[str, str | None]:
    """Cleaned text and the row's lyrics_error (None when there are lyrics to use); never raises."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", "no_lyrics: null"
    try:
        text = clean_lyrics(decode_lyrics(value))
    except LyricsError as exc:
        return "", str(exc)
    except Exception as exc:  # noqa: BLE001 - one odd value must not fail the batch
        return "", f"bad_lyrics: {type(exc).__name__}: {exc}"
    return (text, None) if text else ("", "no_lyrics: empty")


def _as_list(column: Any, n: int) -> list:
    return list(column) if column is not None else [None] * n


class LyricsTokenizer:
    """Ray Data map_batches callable (batch_format="numpy"): lyrics column -> encoder inputs.

    The tokenizer is loaded once per worker (a tokenizer object, or a name resolved by
    labeler.lyrics.pretrained: alias, local folder, s3:// folder or hub id). Each batch keeps its input
    columns and gains input_ids int32 (n, max_windows * max_tokens), attention_mask int8 (same),
    has_lyrics bool (n,), lyrics_error (None | "no_lyrics: …" | "bad_lyrics: …") and lyrics_text
    (the cleaned text, "" when unusable: the lexical model's input, labeler.lyrics.lexical). A row without
    lyrics is normal (an instrumental) and is labelled from audio; one bad row never fails a batch.
    """

    def __init__(self, tokenizer, config: LyricsConfig | dict | None = None, column: str = "lyrics"):
        if isinstance(tokenizer, str):
            from labeler.lyrics.pretrained import load_tokenizer  # noqa: PLC0415 - transformers only where needed

            tokenizer = load_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.config = LyricsConfig.from_dict(config) if isinstance(config, dict) else (config or LyricsConfig())
        self.column = column
        tokenize(self.tokenizer, [""], self.config)  # fail here, once, on a tokenizer/config mismatch


    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not batch:
            return batch
        n = len(next(iter(batch.values())))
        if self.column not in batch:
            raise ValueError(f"batch has no {self.column!r} column (columns: {', '.join(batch)})")
        prepared = [prepare_lyrics(v) for v in _as_list(batch[self.column], n)]
        texts = [text for text, _ in prepared]
        errors = [error for _, error in prepared]
        try:
            ids, mask = tokenize(self.tokenizer, texts, self.config)
        except Exception:  # noqa: BLE001 - find the offending rows instead of failing them all
            ids, mask = tokenize(self.tokenizer, [""] * n, self.config)
            for row, text in enumerate(texts):
                try:
                    ids[row], mask[row] = (a[0] for a in tokenize(self.tokenizer, [text], self.config))
                except Exception as exc:  # noqa: BLE001
                    errors[row] = f"bad_lyrics: tokenizer failed: {type(exc).__name__}: {exc}"
        out = dict(batch)
        out["input_ids"] = ids
        out["attention_mask"] = mask
        out["has_lyrics"] = np.array([e is None for e in errors], dtype=bool)
        out["lyrics_error"] = np.array(errors, dtype=object)
        out["lyrics_text"] = np.array([t if e is None else "" for t, e in zip(texts, errors)], dtype=object)
        return out
