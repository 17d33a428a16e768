"""How long are real lyrics in encoder tokens? Backs the choice of max_tokens and the long policy.

Reads the Genius pages of MoodyLyrics4Q (../shared/data/moodylyrics4q/lyrics/*.json), cleans them
with labeler.lyrics.text.clean_lyrics and counts MiniLM (BERT uncased WordPiece) tokens without
truncation, special tokens included. Reports the distribution, the share of songs over 256 and 512
tokens and the mean share of a song's tokens each window keeps. Not a test.

    .venv/bin/python bench/bench_lyrics_length.py --data ../shared/data [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labeler.lyrics.pretrained import load_tokenizer  # noqa: E402
from labeler.lyrics.text import clean_lyrics  # noqa: E402


def token_lengths(files: list[Path], tokenizer) -> np.ndarray:
    texts = []
    for f in files:
        cleaned = clean_lyrics(json.loads(f.read_text(encoding="utf-8"))["song"].get("lyrics"))
        if cleaned:
            texts.append(cleaned)
    ids = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return np.array([len(x) for x in ids])


def summarise(lengths: np.ndarray, windows=(128, 256, 384, 512)) -> dict:
    out = {
        "songs": int(lengths.size),
        "median": float(np.median(lengths)),
        "p75": float(np.percentile(lengths, 75)),
        "p90": float(np.percentile(lengths, 90)),
        "p99": float(np.percentile(lengths, 99)),
        "max": int(lengths.max()),
    }
    for w in windows:
        out[f"frac_over_{w}"] = float(np.mean(lengths > w))
        # per song, the share of its tokens a window of w keeps (a few book-length pages would
        # dominate a pooled share)
        out[f"mean_song_coverage_{w}"] = float(np.mean(np.minimum(lengths, w) / lengths))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("MOOD_LABELER_DATA", "../shared/data"))
    parser.add_argument("--tokenizer", default="MiniLM", help="alias, folder or s3:// path (default MiniLM)")
    parser.add_argument("--json", help="also write the summary here")
    args = parser.parse_args(argv)
    files = sorted((Path(args.data) / "moodylyrics4q" / "lyrics").glob("*.json"))
    if not files:
        raise SystemExit(f"no MoodyLyrics4Q lyrics under {args.data}/moodylyrics4q/lyrics")
    start = time.perf_counter()
    lengths = token_lengths(files, load_tokenizer(args.tokenizer))
    summary = {"files": len(files), "tokenizer": args.tokenizer, **summarise(lengths),
               "seconds": round(time.perf_counter() - start, 2)}
    for key, value in summary.items():
        print(f"{key:>24}: {value:.3f}" if isinstance(value, float) else f"{key:>24}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
