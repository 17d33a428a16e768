"""Label definitions: quadrants, the Ar/Va/4Q modes and the boundary rules every module relies on."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from labeler.contracts import labels
from labeler.contracts.labels import (
    arousal_high,
    check_mode,
    check_quadrant,
    class_names,
    is_high,
    num_classes,
    parse_quadrant,
    quadrant_from_va,
    quadrant_name,
    quadrant_probs_to_axes,
    target_for_mode,
    valence_high,
)


def test_modes_and_their_classes():
    assert labels.MODES == ("Ar", "Va", "4Q", "classes")
    assert class_names("4Q") == ["Q1", "Q2", "Q3", "Q4"]
    assert class_names("Ar") == class_names("Va") == ["low", "high"]
    assert [num_classes(m) for m in labels.MODES[:3]] == [2, 2, 4]
    assert class_names("classes", ["Cluster 1", "Cluster 2", "Cluster 3"]) == ["Cluster 1", "Cluster 2", "Cluster 3"]
    assert num_classes("classes", ("a", "b")) == 2


@pytest.mark.parametrize("bad", [None, [], ["only"], ["a", "a"], ["a", " "]])
def test_classes_mode_needs_two_distinct_names(bad):
    with pytest.raises(ValueError, match="class names|at least two"):
        class_names("classes", bad)


def test_class_index_names_the_known_classes():
    assert labels.class_index("b", ["a", "b"]) == 1
    with pytest.raises(ValueError, match="'c' is not one of the classes 'a', 'b'"):
        labels.class_index("c", ["a", "b"])
    with pytest.raises(ValueError, match="label column"):
        target_for_mode(1, "classes")
    assert set(labels.QUADRANT_DESCRIPTIONS) == set(labels.QUADRANTS)


@pytest.mark.parametrize("mode", ["4q", "AR", "va", "", "Q4", "arousal"])
def test_unknown_mode_is_a_value_error_naming_it(mode):
    with pytest.raises(ValueError, match=f"unknown mode {mode!r}"):
        check_mode(mode)
    with pytest.raises(ValueError, match="expected one of Ar, Va, 4Q"):
        target_for_mode(1, mode)
    with pytest.raises(ValueError):
        class_names(mode)


@pytest.mark.parametrize(
    "valence, arousal, quadrant",
    [(0.5, 0.5, 1), (-0.5, 0.5, 2), (-0.5, -0.5, 3), (0.5, -0.5, 4), (1.0, 1.0, 1), (-1.0, -1.0, 3)],
)
def test_quadrant_from_va_in_each_quadrant(valence, arousal, quadrant):
    assert quadrant_from_va(valence, arousal) == quadrant


def test_the_midpoint_itself_is_low_and_just_above_is_high():
    eps = 1e-9
    assert quadrant_from_va(0.0, 0.0) == 3
    assert quadrant_from_va(eps, 0.0) == 4
    assert quadrant_from_va(0.0, eps) == 2
    assert quadrant_from_va(eps, eps) == 1
    assert quadrant_from_va(-0.0, -0.0) == 3
    assert not is_high(0.0) and is_high(math.nextafter(0.0, 1.0))


def test_midpoint_half_for_zero_to_one_scales():
    """PMEmo-style annotations lie in [0, 1] with midpoint 0.5."""
    assert quadrant_from_va(0.5, 0.5, midpoint=0.5) == 3
    assert quadrant_from_va(0.5000001, 0.5, midpoint=0.5) == 4
    assert quadrant_from_va(0.5, 0.5000001, midpoint=0.5) == 2
    assert quadrant_from_va(0.9, 0.8, midpoint=0.5) == 1
    assert quadrant_from_va(0.4, 0.8, midpoint=0.5) == 2
    # A value that is high on a -1..1 scale is low on a 0..1 scale: the midpoint matters.
    assert quadrant_from_va(0.3, 0.3) == 1 and quadrant_from_va(0.3, 0.3, midpoint=0.5) == 3


@pytest.mark.parametrize("bad", [float("nan"), None, np.float32("nan"), np.float64("nan")])
def test_missing_values_are_refused(bad):
    with pytest.raises(ValueError, match="missing"):
        quadrant_from_va(bad, 0.5)
    with pytest.raises(ValueError, match="missing"):
        quadrant_from_va(0.5, bad)
    with pytest.raises(ValueError, match="missing"):
        is_high(bad)


def test_axes_of_each_quadrant():
    assert [arousal_high(q) for q in (1, 2, 3, 4)] == [True, True, False, False]
    assert [valence_high(q) for q in (1, 2, 3, 4)] == [True, False, False, True]
    for q in (1, 2, 3, 4):
        # The two rules agree with quadrant_from_va at the quadrant's centre.
        v = 0.5 if valence_high(q) else -0.5
        a = 0.5 if arousal_high(q) else -0.5
        assert quadrant_from_va(v, a) == q


@pytest.mark.parametrize(
    "quadrant, expected",
    [(1, {"4Q": 0, "Ar": 1, "Va": 1}), (2, {"4Q": 1, "Ar": 1, "Va": 0}),
     (3, {"4Q": 2, "Ar": 0, "Va": 0}), (4, {"4Q": 3, "Ar": 0, "Va": 1})],
)
def test_target_for_every_mode(quadrant, expected):
    assert {mode: target_for_mode(quadrant, mode) for mode in labels.QUADRANT_MODES} == expected
    for mode, target in expected.items():
        assert 0 <= target < num_classes(mode)


@pytest.mark.parametrize("bad", [0, 5, -1, 1.5, True, "Q1"])
def test_bad_quadrants_are_value_errors(bad):
    with pytest.raises(ValueError):
        check_quadrant(bad)
    with pytest.raises(ValueError):
        arousal_high(bad)
    with pytest.raises(ValueError):
        target_for_mode(bad, "4Q")


@pytest.mark.parametrize(
    "value, expected",
    [(1, 1), (4, 4), ("2", 2), ("Q3", 3), ("q4", 4), (" Q1 ", 1), ("q2\n", 2), (3.0, None)],
)
def test_parse_quadrant_variants(value, expected):
    if expected is None:  # "3.0" is not one of the accepted spellings
        with pytest.raises(ValueError, match="not a quadrant"):
            parse_quadrant(value)
    else:
        assert parse_quadrant(value) == expected


@pytest.mark.parametrize("bad", ["Q5", "Q0", "", "Q", "high", "QQ1", None, 0, 12])
def test_parse_quadrant_errors_name_the_value(bad):
    with pytest.raises(ValueError, match=re.escape(f"not a quadrant: {bad!r}")):
        parse_quadrant(bad)


def test_quadrant_names_and_probability_projection():
    assert [quadrant_name(q) for q in (1, 2, 3, 4)] == ["Q1", "Q2", "Q3", "Q4"]
    arousal, valence = quadrant_probs_to_axes([0.4, 0.3, 0.2, 0.1])
    assert arousal == pytest.approx(0.7) and valence == pytest.approx(0.5)
    with pytest.raises(ValueError, match="expected 4 quadrant probabilities, got 2"):
        quadrant_probs_to_axes([0.5, 0.5])
    confident = np.array([0.99999994, 1.2e-07, 1e-9, 1e-9], dtype=np.float32)  # a float32 softmax: Q1 + Q2 > 1
    assert float(confident[0]) + float(confident[1]) > 1.0
    arousal, valence = quadrant_probs_to_axes(confident)
    assert arousal == 1.0 and 0.0 <= valence <= 1.0
