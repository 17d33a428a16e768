"""Text from files, shown to people: the one policy for what a bundle, a manifest or a label file says.

Bundles, manifests, catalogues and label partitions are inputs: a person who trains on a hostile label,
or edits a bundle's config.json outside its `model_version` (model_id, provenance, metrics), chooses
the strings below. The policy, in two parts:

- **Checked where they enter: identifiers written into data.** A bundle's `model_id` and its class
  names go into every label row (Parquet), Serve's `/healthz` and `/label` answers and the console. They
  must be `check_plain` text: a string of 1 to `MAX_NAME_CHARS` characters with no control, format,
  line-separator or surrogate character (no terminal escape code, no newline, no bidi override).
  `labeler.bundle.verified.read_config` refuses a bundle whose model_id or classes fail (every reader of a
  bundle goes through it), `labeler.bundle.store.save_bundle` refuses to write one, and `train.data.manifest.label_kind`
  refuses such a class name in a manifest before `prepare` or `train` does any work. Refused rather than
  escaped: these values are identifiers that ETL joins and filters on, and a silently rewritten
  identifier would be a different one; no legitimate name holds a control character. `|`, `$`, `*` and
  the like stay allowed: they are ordinary text in data and are escaped where a format gives them meaning.
- **Escaped where shown: everything else.** Song ids, partition versions, labels read back from a
  partition and class names rendered into a report may come from any file, so every place that shows
  them to a person escapes them for its medium: `plain_text` for a terminal or a log line,
  `markdown_cell` for Markdown reports, `plot_label` for matplotlib text. The console
  (labeler.runtime.console.Console) passes every line it prints through `plain_text(..., newlines=True)`.
  A bundle's provenance and metrics are only ever written as JSON (config.json, report.json, the
  training report's provenance block), whose string escapes cover control characters.

`plain_text` writes each unsafe character as its Python escape (`\\x1b`, `\\n`, `\\u202e`), so a person
sees that something odd was there; it is for display only and not reversible (a backslash in the input
is kept as it is).
"""

from __future__ import annotations

import unicodedata

MAX_NAME_CHARS = 200  # longest model_id or class name a bundle or manifest may hold
# Control (C0, DEL, C1), format (bidi overrides, zero-width), surrogate, line and paragraph separators.
UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Markdown's structure (`|` splits table cells), code spans, links and images, raw HTML and entities,
# emphasis and strike-through, math ($ on GitHub), and the escape character itself.
MARKDOWN_SPECIALS = frozenset("\\`*_[]<>|~$&")


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in UNSAFE_CATEGORIES


def _escape(ch: str) -> str:
    return ascii(ch)[1:-1]  # '\x1b', '\n', '\u202e'


def plain_text(value: object, newlines: bool = False) -> str:
    """`str(value)` with every control, format, separator and surrogate character shown as its escape.

    With `newlines=True` a "\\n" is kept (multi-line console output); every other unsafe character,
    "\\r" included, is escaped. The result holds nothing a terminal acts on.
    """
    text = str(value)
    if text.isprintable() or not any(_unsafe(ch) for ch in text):
        return text
    return "".join(_escape(ch) if _unsafe(ch) and not (newlines and ch == "\n") else ch for ch in text)


def markdown_cell(value: object) -> str:
    """`value` as literal text inside Markdown (a table cell, a heading, a sentence): one line, no markup.

    `plain_text` first (a newline becomes the two characters `\\n`, so a table row stays one row), then a
    backslash before every character of MARKDOWN_SPECIALS (CommonMark's escape for ASCII punctuation).
    """
    return "".join("\\" + ch if ch in MARKDOWN_SPECIALS else ch for ch in plain_text(value))


def plot_label(value: object) -> str:
    """`value` as literal matplotlib text: `plain_text`, then every `$` escaped (`\\$`), so no mathtext is parsed.

    matplotlib reads text with an even number of unescaped `$` as mathtext, which fails on most input
    (ValueError) and renders the rest as formulas; escaped, it draws the characters as written.
    This holds with matplotlib's default `text.usetex = False`, which the project's plots use.
    """
    return plain_text(value).replace("$", "\\$")


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table: `header` and `rows` (cells already formatted for Markdown: wrap untrusted text in
    `markdown_cell` first; a cell is `str()`-ed), one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def check_plain(value: object, what: str, max_chars: int = MAX_NAME_CHARS) -> str:
    """`value` when it is a string of 1 to `max_chars` characters with no unsafe character; else ValueError.

    The message names `what` and shows the value as its repr (control characters escaped), so the error
    line is safe to print too.
    """
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {repr(value)[:80]}")
    if len(value) > max_chars:
        raise ValueError(f"{what} is {len(value)} characters long (at most {max_chars}): {value[:40]!r}...")
    bad = next((ch for ch in value if _unsafe(ch)), None)
    if bad is not None:
        raise ValueError(f"{what} {value[:120]!r} holds the control character {_escape(bad)} "
                         f"(names are plain text: no escape codes, newlines or format characters)")
    return value
