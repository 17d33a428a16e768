"""One rule set for KEY=VALUE strings (train --set, prepare --option, serve run arguments): labeler.contracts.coerce."""

from __future__ import annotations

import pytest

from labeler.contracts.coerce import coerce


@pytest.mark.parametrize("raw, annotation, expected", [
    ("true", bool, True), ("Yes", bool, True), ("off", bool, False), ("0", bool, False),
    ("3", int, 3), (" 3 ", int, 3), ("1e-3", float, 1e-3), ("2", float, 2.0),
    ("none", int | None, None), ("", float | None, None), ("NULL", str | None, None), ("7", int | None, 7),
    ("0,2", tuple[int, ...], (0, 2)), ("s3://a/, /data", tuple[str, ...], ("s3://a/", "/data")), ("", tuple[str, ...], ()),
    (" keep spaces ", str, " keep spaces "), ("none", str, "none"),
])
def test_strings_take_the_fields_type(raw, annotation, expected):
    assert coerce("field", raw, annotation) == expected


def test_values_from_python_pass_through_and_lists_become_tuples():
    assert coerce("field", 3, float) == 3 and coerce("field", None, int) is None
    assert coerce("field", [0, 1], tuple[int, ...]) == (0, 1)


@pytest.mark.parametrize("raw, annotation, message", [
    ("maybe", bool, "flag expects true or false, got 'maybe'"),
    ("3.5", int, "flag expects an integer, got '3.5'"),
    ("fast", float, "flag expects a number, got 'fast'"),
    ("0,x", tuple[int, ...], "flag expects an integer, got 'x'"),
    ("none", int, "flag expects an integer, got 'none'"),  # None only where the field is optional
])
def test_a_string_that_does_not_convert_names_the_field_and_what_it_expects(raw, annotation, message):
    with pytest.raises(ValueError, match=message):
        coerce("flag", raw, annotation)


def test_the_three_callers_follow_the_same_rules(tmp_path):
    from jobs.commands.prepare import parse_sources
    from labeler.serve.options import ServeConfig
    from train.fit.presets import get_preset

    assert get_preset("cpu-small", spec_augment="on", folds="1, 3").spec_augment is True
    assert get_preset("cpu-small", folds="1, 3").folds == (1, 3)
    config = ServeConfig.from_mapping({"bundle": "/b", "max_replicas": "none", "embeddings": "yes",
                                       "allow_uri_prefixes": "s3://a/,/data"})
    assert config.max_replicas is None and config.embeddings is True and config.allow_uri_prefixes == ("s3://a/", "/data")
    assert parse_sources([f"4q={tmp_path}"], ["4q.require_inputs=off"]) == [("4q", str(tmp_path), {"require_inputs": False})]
    for call in (lambda: get_preset("cpu-small", spec_augment="maybe"),
                 lambda: ServeConfig.from_mapping({"bundle": "/b", "embeddings": "maybe"}),
                 lambda: parse_sources([f"4q={tmp_path}"], ["4q.require_inputs=maybe"])):
        with pytest.raises(ValueError, match="expects true or false, got 'maybe'"):
            call()
