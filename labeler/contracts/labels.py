"""Label definitions: Russell's quadrants, the modes Ar/Va/4Q, and the rules between them.

This is the only place that knows which quadrant is high on which axis, so training targets,
dataset adapters and the labels output can never disagree about it.

Mode `classes` is a catalogue's own fixed taxonomy (MIREX clusters, editorial moods, a vendor's tags):
its class names come from the data (the manifest's `label` column), are stored in the bundle, and
have no quadrant or axis meaning.

    Q2 A+V-  angry, tense   |  Q1 A+V+  joyful, powerful
    ------------------------+------------------------- valence
    Q3 A-V-  sad, bitter    |  Q4 A-V+  tender, peaceful
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Literal

Mode = Literal["Ar", "Va", "4Q", "classes"]
QUADRANT_MODES: tuple[str, ...] = ("Ar", "Va", "4Q")
MODES: tuple[str, ...] = (*QUADRANT_MODES, "classes")
CLASSES_MODE = "classes"
QUADRANTS: tuple[str, ...] = ("Q1", "Q2", "Q3", "Q4")
QUADRANT_DESCRIPTIONS: dict[str, str] = {
    "Q1": "A+V+ joyful, powerful",
    "Q2": "A+V- angry, tense",
    "Q3": "A-V- sad, bitter",
    "Q4": "A-V+ tender, peaceful",
}
# Class names of the binary modes, index 0 = low, 1 = high.
AXIS_CLASSES: tuple[str, ...] = ("low", "high")


def check_mode(mode: str) -> str:
    """Return `mode` if it is one of Ar, Va, 4Q, classes; raise a ValueError naming the valid ones otherwise."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    return mode


def check_classes(classes: list[str] | tuple[str, ...] | None) -> list[str]:
    """A `classes`-mode taxonomy: at least two distinct, non-empty names (their order is the logit order)."""
    names = [str(c) for c in (classes or [])]
    if len(names) < 2:
        raise ValueError(f"mode 'classes' needs at least two class names, got {names!r}")
    if any(not n.strip() for n in names):
        raise ValueError(f"class names must be non-empty, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be distinct, got {names!r}")
    return names


def class_names(mode: str, classes: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The output classes of a model trained in `mode`, in logit order (`classes` only for mode 'classes')."""
    check_mode(mode)
    if mode == CLASSES_MODE:
        return check_classes(classes)
    return list(QUADRANTS) if mode == "4Q" else list(AXIS_CLASSES)


def num_classes(mode: str, classes: list[str] | tuple[str, ...] | None = None) -> int:
    return len(class_names(mode, classes))


def check_quadrant(quadrant: int) -> int:
    """Quadrants are numbered 1..4 in manifests; anything else is a data error."""
    if isinstance(quadrant, bool) or int(quadrant) != quadrant or not 1 <= int(quadrant) <= 4:
        raise ValueError(f"quadrant must be an integer 1..4, got {quadrant!r}")
    return int(quadrant)


def parse_quadrant(value: object) -> int:
    """Accept 1..4, '1'..'4' or 'Q1'..'Q4' (any case) and return 1..4."""
    text = str(value).strip().upper()
    if text.startswith("Q"):
        text = text[1:]
    if text not in {"1", "2", "3", "4"}:
        raise ValueError(f"not a quadrant: {value!r} (expected Q1..Q4 or 1..4)")
    return int(text)


def is_high(value: float, midpoint: float = 0.0) -> bool:
    """'High' on an axis means strictly above the dataset's midpoint; the midpoint itself is low."""
    if value is None or math.isnan(float(value)):  # float(): numpy float32 NaN is not a Python float
        raise ValueError("cannot place a missing valence/arousal value on an axis")
    return float(value) > midpoint


def quadrant_from_va(valence: float, arousal: float, midpoint: float = 0.0) -> int:
    """Quadrant 1..4 from valence and arousal on a scale whose midpoint is `midpoint`."""
    valence_high = is_high(valence, midpoint)
    arousal_high = is_high(arousal, midpoint)
    if arousal_high:
        return 1 if valence_high else 2
    return 4 if valence_high else 3


def arousal_high(quadrant: int) -> bool:
    """Q1 and Q2 are high-arousal."""
    return check_quadrant(quadrant) in (1, 2)


def valence_high(quadrant: int) -> bool:
    """Q1 and Q4 are high-valence."""
    return check_quadrant(quadrant) in (1, 4)


def target_for_mode(quadrant: int, mode: str) -> int:
    """The class index a song of `quadrant` has when training in `mode` (not 'classes': see class_index)."""
    check_mode(mode)
    if mode == CLASSES_MODE:
        raise ValueError("mode 'classes' takes its targets from the label column, not the quadrant")
    if mode == "4Q":
        return check_quadrant(quadrant) - 1
    high = arousal_high(quadrant) if mode == "Ar" else valence_high(quadrant)
    return int(high)


def quadrant_probs_to_axes(probs: Collection[float]) -> tuple[float, float]:
    """(P(arousal high), P(valence high)) from the four quadrant probabilities Q1..Q4, within [0, 1]: float32
    softmax outputs of a confident model can sum to 1.0000001, which is not a probability."""
    if len(probs) != 4:
        raise ValueError(f"expected 4 quadrant probabilities, got {len(probs)}")
    q1, q2, q3, q4 = (float(p) for p in probs)
    return min(1.0, max(0.0, q1 + q2)), min(1.0, max(0.0, q1 + q4))


def quadrant_name(quadrant: int) -> str:
    return QUADRANTS[check_quadrant(quadrant) - 1]


def class_index(label: object, classes: list[str] | tuple[str, ...]) -> int:
    """The logit index of a `classes`-mode label; a ValueError naming the known classes otherwise."""
    try:
        return list(classes).index(str(label))
    except ValueError:
        raise ValueError(f"label {label!r} is not one of the classes {', '.join(map(repr, classes))}") from None


def row_classes(table) -> list[str]:
    """Per row of a manifest table (pyarrow), its class name: 'Q1'..'Q4' from `quadrant` in a quadrant
    dataset, the `label` in a classes dataset."""
    labels = table.column("label").to_pylist() if "label" in table.column_names else [None] * table.num_rows
    return [lab if lab is not None else QUADRANTS[q - 1] for q, lab in zip(table.column("quadrant").to_pylist(), labels)]
