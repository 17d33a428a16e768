"""PMEmo (Zhang et al., ICMR 2018): chorus clips rated for valence and arousal.

Layout::

    annotations/static_annotations.csv   musicId,Arousal(mean),Valence(mean)   (0..1, midpoint 0.5)
    chorus/<musicId>.mp3                  the chorus clip itself (45-60 s)
    lyrics/<musicId>.lrc                  lyrics (LRC time tags in the real set; any .lrc/.txt accepted)
    metadata.csv                          musicId,fileName,title,artist,album,duration,
                                          chorus_start_time,chorus_end_time   (mm:ss)

Valence and arousal are rescaled to `v - 0.5`, so 0 is the midpoint and a song is "high" strictly
above it (0.5 itself is low), and the quadrant follows from them.

Chorus times: `chorus/` already holds the chorus, so the metadata's `chorus_start_time/end_time`
(positions in the *full* song) do not apply to these files. Rows with a clip get
`chorus_start_s = 0` and `chorus_end_s = duration` (the clip's length from metadata.csv), i.e. "the
whole clip is the chorus", so the featuriser does not search for a chorus inside a chorus.

Policy for annotated songs without files: the annotations cover all 767 songs, while a copy may hold
audio or lyrics for only some of them. A song is kept with whatever it has (audio only, lyrics only,
both); with `require_inputs=True` (default) songs with neither are dropped and counted, because a row
without any input cannot train or evaluate anything.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from train.data.datasets.common import (
    Skips,
    build_table,
    index_files,
    parse_float_at,
    read_csv,
    read_lyrics_file,
    require_columns,
    require_file,
    text_or_none,
)

DATASET = "pmemo"
MIDPOINT = 0.5
ANNOTATIONS = Path("annotations") / "static_annotations.csv"
METADATA = "metadata.csv"


def parse_clock(value: str, where: str) -> float:
    """'02:50' or '1:02:50' or '170.5' -> seconds."""
    text = str(value).strip()
    try:
        seconds = 0.0
        for part in text.split(":"):
            seconds = seconds * 60 + float(part)
        return seconds
    except ValueError:
        raise ValueError(f"{where}: not a time (mm:ss): {value!r}") from None


def prepare_pmemo(
    path: str | Path,
    audio_dir: str = "chorus",
    lyrics_dir: str = "lyrics",
    require_inputs: bool = True,
) -> pa.Table:
    """PMEmo at `path` as manifest rows (`pmemo:<musicId>`), fold -1. See the module doc for policies."""
    root = Path(path)
    annotations_path = require_file(root / ANNOTATIONS, "PMEmo static annotations")
    annotations = read_csv(annotations_path)
    columns = ["musicId", "Arousal(mean)", "Valence(mean)"]
    require_columns(annotations, columns, annotations_path)

    metadata: dict[str, object] = {}
    metadata_path = root / METADATA
    if metadata_path.is_file():
        meta = read_csv(metadata_path)
        require_columns(meta, ["musicId", "title", "artist", "duration"], metadata_path)
        metadata = {str(r.musicId).strip(): r for r in meta.itertuples(index=False)}

    audio_files = index_files(root / audio_dir, (".mp3", ".wav", ".flac", ".ogg"))
    lyrics_files = index_files(root / lyrics_dir, (".lrc", ".txt", ".json"))
    skips = Skips(DATASET)
    rows = []
    for line, record in enumerate(annotations.itertuples(index=False, name=None), start=2):
        music_id, arousal_raw, valence_raw = (str(v).strip() for v in record[:3])
        where = f"{annotations_path} line {line} (musicId {music_id})"
        if not music_id:
            raise ValueError(f"{annotations_path} line {line}: empty musicId")
        valence = parse_float_at(valence_raw, where) - MIDPOINT
        arousal = parse_float_at(arousal_raw, where) - MIDPOINT
        meta = metadata.get(music_id)
        audio = audio_files.get(music_id)
        if audio is None:
            listed = text_or_none(getattr(meta, "fileName", None)) if meta is not None else None
            reason = "clips listed in metadata.csv but absent" if listed else "annotated songs without audio"
            skips.add(reason, music_id)
        lyrics_file = lyrics_files.get(music_id)
        text = read_lyrics_file(lyrics_file) if lyrics_file is not None else None
        if text is None:
            skips.add("annotated songs without lyrics", music_id)
        chorus_end = None
        if audio is not None and meta is not None and text_or_none(meta.duration):
            chorus_end = parse_clock(meta.duration, f"{metadata_path} (musicId {music_id}) duration")
        rows.append(
            {
                "source_id": music_id,
                "audio_uri": str(audio.resolve()) if audio is not None else None,
                "lyrics": text,
                "valence": valence,
                "arousal": arousal,
                "chorus_start_s": 0.0 if chorus_end is not None else None,
                "chorus_end_s": chorus_end,
                "artist": text_or_none(meta.artist) if meta is not None else None,
                "title": text_or_none(meta.title) if meta is not None else None,
            }
        )
    return build_table(DATASET, rows, skips, require_inputs=require_inputs)
