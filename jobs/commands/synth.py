"""`labeler synth`: its flags, turned into a `SynthConfig` and one `synthesise` call.

The generator is the `synth` package; the manifest comes from the corpus's dataset adapter
(`train.data.datasets.synth.prepare_synth`), as for every corpus, and is written beside the catalogue.
"""

from __future__ import annotations

import argparse

from jobs.flags import config_from_flags
from labeler.io import storage
from synth import SynthConfig, synthesise
from synth.config import DISTRIBUTIONS
from train.data.datasets.synth import prepare_synth


def configure_parser(parser: argparse.ArgumentParser) -> None:
    defaults = SynthConfig()
    parser.add_argument("--songs", type=int, default=defaults.songs, help="number of songs (default %(default)s)")
    parser.add_argument("--output", required=True, help="output directory (local path, s3:// or memory://)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="song length in seconds (default %(default)s)")
    parser.add_argument("--formats", default=",".join(defaults.formats),
                        help="comma-separated audio formats, cycled over songs (default %(default)s)")
    parser.add_argument("--distribution", choices=DISTRIBUTIONS, default=defaults.distribution,
                        help="how valence/arousal are drawn (default %(default)s)")
    parser.add_argument("--lyrics-noise", type=float, default=defaults.lyrics_noise,
                        help="fraction of songs whose lyrics use another quadrant's words (default %(default)s)")
    parser.add_argument("--audio-flip", type=float, default=defaults.audio_flip,
                        help="fraction of songs whose audio expresses the opposite valence (default %(default)s)")
    parser.add_argument("--no-lyrics", type=float, default=defaults.no_lyrics,
                        help="fraction of catalogue rows without lyrics (default %(default)s)")
    parser.add_argument("--corrupt", action="store_true", help="add broken rows (missing, empty, truncated file, no audio)")


def run_cli(args: argparse.Namespace) -> int:
    config = config_from_flags(SynthConfig, args,
                               formats=tuple(f.strip().lower() for f in args.formats.split(",") if f.strip()))
    result = synthesise(config)
    manifest_uri = storage.join(result.output, "manifest.parquet")
    storage.write_parquet(prepare_synth(result.output), manifest_uri)
    rows = len(result.songs) + len(result.corrupt_ids)
    print(f"synth: {len(result.songs)} songs ({rows} catalogue rows, {len(result.corrupt_ids)} broken) "
          f"in {result.seconds_taken:.1f} s ({len(result.songs) / max(result.seconds_taken, 1e-9):.1f} songs/s)")
    print(f"  catalogue: {storage.describe(result.catalogue_uri)}")
    print(f"  manifest:  {storage.describe(manifest_uri)} (fold -1: assign folds with train.data.folds or `labeler prepare`)")
    return 0
