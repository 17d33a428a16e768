"""The names of musicnn's 50 tags, per model, in the order of its output layer (`MusiCNN.tags`).

Why a module of its own: the bundle keeps the checkpoint's tag layer (Dense 200 -> 50), and a
recommender wants what it says about a song (genre, era, instrumentation, mood words); `labeler
label --tags` writes it as the `tags` column, a map tag -> probability. The names are musicnn 0.1.0's
`MSD_LABELS` and `MTT_LABELS` (musicnn/configuration.py of the wheel), copied verbatim, case and all,
because musicnn's code is never imported; tests/test_musicnn_tags.py checks them against that file.
No torch here: the drivers check a bundle against `--tags` from its config alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MSD_MUSICNN_TAGS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul",
    "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies",
    "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop",
    "70s", "party", "country", "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal",
    "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy",
)

MTT_MUSICNN_TAGS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals",
    "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft",
    "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal",
    "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
)

# model id (AudioCnnConfig.encoder) -> its tag names
TAGS: dict[str, tuple[str, ...]] = {"MSD_musicnn": MSD_MUSICNN_TAGS, "MTT_musicnn": MTT_MUSICNN_TAGS}


def bundle_tags(branch: str, audio: Mapping[str, Any] | None, where: str = "the bundle") -> tuple[str, ...]:
    """The tag names of a model with this `branch` and audio config (config.json's model.audio, as a
    mapping); ValueError saying why when its audio branch is not a MusiCNN (Cnn6/Cnn10 have no tag layer)."""
    what = "writes the MusiCNN audio encoder's 50 tag probabilities"
    if branch not in ("audio", "fusion") or not audio:
        raise ValueError(f"--tags {what}, but {where} is a {branch} model without an audio branch")
    arch = audio.get("arch")
    if arch != "MusiCNN":
        raise ValueError(f"--tags {what}, but the audio branch of {where} is {arch}, which has no tag layer "
                         f"(train with --model MusiCNN, or label without --tags)")
    encoder = audio.get("encoder")
    if encoder not in TAGS:
        raise ValueError(f"--tags: {where} names the musicnn encoder {encoder!r}, whose tags are unknown "
                         f"(expected one of {', '.join(TAGS)})")
    return TAGS[encoder]
