"""Shadow comparisons (classifier scores, tensors) and the bounded runner of
shadow calls."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from router.dataplane.shadow import Comparison, Shadows, compare_scores, compare_tensors


def test_compare_scores_top_1_and_max_diff():
    same = compare_scores([("pos", 0.7), ("neg", 0.3)], [("pos", 0.6), ("neg", 0.4)])
    assert same.agree is True and same.max_abs_diff == pytest.approx(0.1)
    other = compare_scores([("pos", 0.55), ("neg", 0.45)], [("neg", 0.8), ("pos", 0.2)])
    assert other.agree is False and other.max_abs_diff == pytest.approx(0.35)
    assert compare_scores([("pos", 0.9)], [("neg", 0.9)]) == Comparison(False, None), "no label in common"
    assert compare_scores([], [("neg", 0.9)]).agree is False


def classes(*rows):
    array = np.empty((len(rows), len(rows[0])), dtype=object)
    array[:] = [[v.encode() for v in row] for row in rows]
    return array


def test_compare_tensors_classification_strings_agree_on_every_rows_top_entry():
    primary = {"classes": classes(["0.9:3:cat", "0.1:1:dog"], ["0.7:1:dog", "0.3:3:cat"])}
    agree = compare_tensors(primary, {"classes": classes(["0.6:3:cat", "0.4:1:dog"], ["0.9:1:dog", "0.1:3:cat"])},
                            classifier=False, min_cosine=0.99)
    assert agree == Comparison(True, None, None)
    second_row = {"classes": classes(["0.9:3:cat", "0.1:1:dog"], ["0.6:3:cat", "0.4:1:dog"])}
    assert compare_tensors(primary, second_row, classifier=False, min_cosine=0.99).agree is False


def test_compare_tensors_classifier_argmax_per_row():
    primary = {"scores": np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)}
    close = {"scores": np.array([[0.3, 0.7], [0.6, 0.4]], dtype=np.float32)}
    flipped = {"scores": np.array([[0.3, 0.7], [0.4, 0.6]], dtype=np.float32)}
    judged = compare_tensors(primary, close, classifier=True, min_cosine=0.9999)
    assert judged.agree is True and judged.max_abs_diff == pytest.approx(0.2)
    assert judged.cosine < 0.9999, "a classifier agrees on argmax, whatever the cosine"
    assert compare_tensors(primary, flipped, classifier=True, min_cosine=0.0).agree is False
    assert compare_tensors(primary, close, classifier=False, min_cosine=0.9999).agree is False


def test_compare_tensors_cosine_threshold():
    a = {"embedding": np.array([[1.0, 2.0, 3.0]])}
    near = compare_tensors(a, {"embedding": np.array([[1.0, 2.0, 3.1]])}, classifier=False, min_cosine=0.99)
    assert near.agree is True and near.cosine > 0.99 and near.max_abs_diff == pytest.approx(0.1)
    far = compare_tensors(a, {"embedding": np.array([[3.0, 2.0, 1.0]])}, classifier=False, min_cosine=0.99)
    assert far.agree is False and far.cosine == pytest.approx(10 / 14)
    zeros = {"embedding": np.zeros((1, 3))}
    assert compare_tensors(zeros, zeros, classifier=False, min_cosine=0.99).agree is True


def test_compare_tensors_shape_or_name_mismatch_disagrees():
    a = {"embedding": np.ones((1, 3))}
    assert compare_tensors(a, {"embedding": np.ones((1, 4))}, classifier=False, min_cosine=0.0) == Comparison(False)
    assert compare_tensors(a, {"other": np.ones((1, 3))}, classifier=False, min_cosine=0.0) == Comparison(False)


def test_shadows_skip_beyond_max_in_flight_and_never_raise(caplog):
    skipped: list[int] = []

    async def scenario():
        shadows = Shadows(max_in_flight=2, on_skip=lambda: skipped.append(1))
        release, done = asyncio.Event(), []

        async def work():
            await release.wait()
            done.append(1)

        async def boom():
            raise RuntimeError("the shadow version exploded")

        started = [shadows.run(work), shadows.run(work), shadows.run(work)]
        in_flight = shadows.in_flight
        release.set()
        await asyncio.sleep(0.01)
        after = shadows.in_flight
        assert shadows.run(boom) is True
        await asyncio.sleep(0.01)
        again = shadows.run(work)
        await asyncio.sleep(0.01)
        await shadows.close()
        return started, in_flight, after, again, len(done), shadows.in_flight

    started, in_flight, after, again, done, left = asyncio.run(scenario())
    assert started == [True, True, False] and skipped == [1]
    assert (in_flight, after, again, done, left) == (2, 0, True, 3, 0)
    failed = [r for r in caplog.records if r.name == "router.dataplane.shadow"]
    assert [r.getMessage() for r in failed] == ["shadow call failed unexpectedly"]
    assert failed[0].exc_info[1].args == ("the shadow version exploded",)

