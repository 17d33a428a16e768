"""labeler.label_job.resume: which failures a labelling run resumes from, and how often (pure; the real
actor death and the resumed run are in test_pipeline, the lost node in test_multinode)."""

from __future__ import annotations

import pytest

from labeler.label_job.config import LabelJobConfig
from labeler.label_job.resume import exception_chain, infrastructure_failure, run_with_resumes


class ActorDiedError(Exception):
    """Stands in for ray.exceptions.ActorDiedError: classification is by Ray's names, not by import."""


def test_a_node_gone_since_the_attempt_began_is_an_infrastructure_failure():
    reason = infrastructure_failure(ValueError("anything"), {"aaaaaaaaaaaa", "bbbbbbbbbbbb"}, {"aaaaaaaaaaaa"})
    assert reason == "1 node(s) lost (bbbbbbbb)"


def test_ray_names_a_lost_actor_by_type_or_inside_a_wrapped_message():
    assert infrastructure_failure(ActorDiedError("gone"), {"a"}, {"a"}) == "ActorDiedError"
    # Ray Data hands the driver an UnserializableException carrying only the original's text
    wrapped = RuntimeError("Failed to deserialize exception.\nOriginal exception:\nray.exceptions.RayTaskError: "
                           "ray::ListFiles() ... The actor died because its node has died. Node Id: 123")
    assert infrastructure_failure(wrapped, set(), set()) == "its node has died"
    try:
        try:
            raise ActorDiedError("the actor died unexpectedly")
        except ActorDiedError as cause:
            raise RuntimeError("iteration failed") from cause
    except RuntimeError as outer:
        assert [type(e) for e in exception_chain(outer)] == [RuntimeError, ActorDiedError]
        assert infrastructure_failure(outer, set(), set()) == "ActorDiedError"


def test_a_bug_or_bad_input_is_not_resumed():
    assert infrastructure_failure(ValueError("bundle holds no model"), {"a"}, {"a", "b"}) is None
    assert infrastructure_failure(KeyError("song_id"), set(), set()) is None


def test_a_cyclic_exception_chain_ends():
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert exception_chain(a) == [a, b]


def test_resumes_after_infrastructure_failures_up_to_the_limit_then_raises_rays_error():
    calls, notes = [], []

    def attempt(number):
        calls.append(number)
        if number < 2:
            raise ActorDiedError(f"attempt {number}")

    resumed = run_with_resumes(attempt, max_resumes=2, nodes=lambda: {"n"},
                               on_resume=lambda n, reason, exc: notes.append((n, reason, str(exc))))
    assert resumed == 2 and calls == [0, 1, 2]
    assert notes == [(1, "ActorDiedError", "attempt 0"), (2, "ActorDiedError", "attempt 1")]

    calls.clear()
    with pytest.raises(ActorDiedError, match="attempt 1"):
        run_with_resumes(attempt, max_resumes=1, nodes=lambda: {"n"})
    assert calls == [0, 1]


def test_any_other_failure_is_raised_at_once():
    calls = []

    def attempt(number):
        calls.append(number)
        raise ValueError("a bug fails the same way again")

    with pytest.raises(ValueError, match="same way"):
        run_with_resumes(attempt, max_resumes=3, nodes=lambda: {"n"})
    assert calls == [0]


def test_a_clean_first_attempt_is_not_a_resume():
    assert run_with_resumes(lambda number: None, max_resumes=2, nodes=set) == 0


@pytest.mark.parametrize("bad", [-1, 1.5, None])
def test_max_resumes_is_checked_when_the_config_is_built(bad):
    with pytest.raises(ValueError, match="max_resumes must be an integer >= 0"):
        LabelJobConfig(max_resumes=bad)
