import pytest

from router import context
from router.context import accept_request_id, current_request_id

@pytest.mark.parametrize("candidate", ["abc-123", "A", "req.1:2_3", "x" * 128])
def test_sane_request_ids_are_kept(candidate):
    assert accept_request_id(candidate) == candidate


@pytest.mark.parametrize("candidate", [None, "", "x" * 129, "has space", "-leading-dash", "semi;colon", "ü"])
def test_other_request_ids_are_replaced(candidate):
    rid = accept_request_id(candidate)
    assert rid != candidate and len(rid) == 32 and int(rid, 16) >= 0


def test_the_record_is_current_until_ended():
    assert current_request_id() is None
    record, token = context.begin("abc")
    try:
        assert context.current() is record and current_request_id() == "abc"
        record.served("sentiment", 2, "canary", hit=False)
        assert (record.model, record.version, record.routed_by, record.cache) == ("sentiment", 2, "canary", "MISS")
        assert record.elapsed_ms() >= 0
    finally:
        context.end(token)
    assert context.current() is None


def test_request_ids_are_random_hex_drawn_in_blocks_and_never_shared_with_a_fork():
    import os
    import re

    from router.context import new_request_id

    ids = [new_request_id() for _ in range(1000)]  # several 4 KiB blocks of the kernel's randomness
    assert len(set(ids)) == 1000 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child draws from a fresh block, not from what the parent has left
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    assert os.read(read, 64).decode() != new_request_id()
