"""Lyrics whose words carry the song's quadrant, diluted near the axes.

Lyrics: a verse of 4 lines, a chorus of 2 lines, a second verse of 4 new lines, the chorus again
(with [Verse]/[Chorus] tags), 6 words a line. Each word comes from the emotional vocabulary of the
song's lyrics quadrant (joy/energy for Q1, anger/tension for Q2, sadness for Q3, tenderness/peace
for Q4) with probability p = clip(0.15 + 0.6·min(|v|, |a|), 0.15, 0.75), else from a neutral filler
list: songs near an axis read as mostly neutral.
"""

from __future__ import annotations

import numpy as np

# Emotional vocabulary per quadrant (index 0 = Q1) and neutral filler.
VOCABULARY: dict[int, tuple[str, ...]] = {
    1: ("joy", "dance", "shine", "alive", "celebrate", "bright", "thrill", "fire", "jump", "wild",
        "sunshine", "party", "laugh", "glory", "energy", "run", "free", "victory", "excited", "golden",
        "cheer", "spark", "high", "loud", "rush", "happy", "electric", "winning", "bold", "blazing"),
    2: ("rage", "hate", "fight", "scream", "anger", "blood", "war", "burn", "enemy", "storm",
        "destroy", "fury", "violent", "break", "kill", "danger", "panic", "threat", "bitter", "smash",
        "attack", "venom", "riot", "hostile", "tension", "clash", "cruel", "wrath", "shout", "chaos"),
    3: ("tears", "alone", "cry", "lonely", "grief", "lost", "empty", "sorrow", "gone", "cold",
        "broken", "mourn", "regret", "grey", "rain", "dying", "sad", "fade", "pain", "goodbye",
        "hollow", "weary", "despair", "ashes", "funeral", "silence", "misery", "heartache", "tired", "dark"),
    4: ("gentle", "calm", "peace", "tender", "soft", "breeze", "embrace", "warm", "quiet", "serene",
        "smile", "love", "dream", "cozy", "rest", "meadow", "lullaby", "kind", "sweet", "hold",
        "safe", "harmony", "slow", "easy", "tranquil", "cradle", "glow", "content", "home", "grace"),
}
FILLER: tuple[str, ...] = (
    "the", "a", "and", "we", "you", "i", "in", "on", "to", "of", "my", "your", "this", "that", "is",
    "was", "with", "for", "at", "it", "street", "night", "day", "car", "window", "road", "city", "time",
    "door", "morning", "table", "river", "train", "phone", "paper", "corner", "walk", "say", "know", "see",
)


def make_lyrics(rng: np.random.Generator, quadrant: int, valence: float, arousal: float) -> str:
    """Verse, chorus, verse, chorus; emotional words with a probability that grows away from the axes."""
    p_emotional = float(np.clip(0.15 + 0.6 * min(abs(valence), abs(arousal)), 0.15, 0.75))
    vocabulary = VOCABULARY[quadrant]

    def line() -> str:
        words = [
            vocabulary[rng.integers(len(vocabulary))] if rng.random() < p_emotional else FILLER[rng.integers(len(FILLER))]
            for _ in range(6)
        ]
        return " ".join(words).capitalize()

    chorus = [line() for _ in range(2)]
    parts = ["[Verse]", *(line() for _ in range(4)), "[Chorus]", *chorus,
             "[Verse]", *(line() for _ in range(4)), "[Chorus]", *chorus]
    return "\n".join(parts)
