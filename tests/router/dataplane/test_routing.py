import pytest

from router.dataplane.routing import BUCKETS, Decision, bucket, in_canary, resolve
from router.settings import ModelRoute

KEYS = [f"user-{i}" for i in range(20_000)]


def test_bucket_is_stable_and_in_range():
    assert bucket("alice") == bucket("alice")
    assert all(0 <= bucket(k) < BUCKETS for k in KEYS[:1000])


@pytest.mark.parametrize("percent", [1, 5, 20, 50, 90])
def test_canary_share_matches_percent(percent):
    share = sum(in_canary(k, percent) for k in KEYS) / len(KEYS) * 100
    assert abs(share - percent) < 1.0


def test_raising_the_percent_only_moves_users_onto_the_canary():
    steps = [0, 1, 5, 10, 25, 50, 75, 100]
    for key in KEYS[:5000]:
        flags = [in_canary(key, p) for p in steps]
        assert flags == sorted(flags), f"{key} left the canary as the percent rose: {flags}"
    assert not any(in_canary(k, 0) for k in KEYS) and all(in_canary(k, 100) for k in KEYS)


CANARY_KEY = next(k for k in KEYS if in_canary(k, 20))
STABLE_KEY = next(k for k in KEYS if not in_canary(k, 20))
ROUTE = ModelRoute(default_version=2, canary_version=3, canary_percent=20)


@pytest.mark.parametrize("route,ready,key,requested,expected", [
    # explicit version wins when ready
    (ROUTE, {1, 2, 3}, CANARY_KEY, 1, Decision(1, "pinned")),
    # explicit version unknown or not ready -> default, saying so
    (ROUTE, {1, 2, 3}, STABLE_KEY, 9, Decision(2, "fallback", 9)),
    (ROUTE, {2, 3}, STABLE_KEY, 1, Decision(2, "fallback", 1)),
    # canary share
    (ROUTE, {1, 2, 3}, CANARY_KEY, None, Decision(3, "canary")),
    (ROUTE, {1, 2, 3}, STABLE_KEY, None, Decision(2, "default")),
    # canary not ready -> default, saying so
    (ROUTE, {1, 2}, CANARY_KEY, None, Decision(2, "fallback", 3)),
    # default not ready -> highest ready version
    (ROUTE, {1, 3}, STABLE_KEY, None, Decision(3, "fallback", 2)),
    # no default configured -> highest ready
    (ModelRoute(), {1, 2}, STABLE_KEY, None, Decision(2, "default")),
    (ModelRoute(), {1, 4}, STABLE_KEY, 4, Decision(4, "pinned")),
    # nothing ready -> nothing
    (ROUTE, set(), STABLE_KEY, None, None),
    (ROUTE, set(), STABLE_KEY, 1, None),
    # pinned version that is the only one ready
    (ROUTE, {1}, STABLE_KEY, 1, Decision(1, "pinned")),
])
def test_resolution_table(route, ready, key, requested, expected):
    assert resolve(route, frozenset(ready), key, requested) == expected
