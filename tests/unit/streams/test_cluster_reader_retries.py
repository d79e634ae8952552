"""ClusterReader's admin reads while a node is down (no broker: a stand-in admin client).

aiokafka's admin client sends each request to a random node of its metadata and does not
retry (``NodeNotReadyError`` for a killed one); the coordinator of a group is the dead node
until it is fenced. What must hold: a retriable failure is tried again, within the read's
bound; an OffsetFetch answer without the partitions asked for (aiokafka ignores the answer's
top-level error, e.g. a coordinator still loading) is not taken for "nothing committed"; a
read that cannot succeed in time is one ``BrokerUnavailable`` naming what and why; a
non-retriable error is raised at once.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, NodeNotReadyError
from aiokafka.structs import OffsetAndMetadata

from pixelpipe.config import Settings
from pixelpipe.errors import BrokerUnavailable
from pixelpipe.streams.cluster_status import ClusterReader

TPS = [TopicPartition("t.uploads", 0), TopicPartition("t.uploads", 1)]


class Admin:
    """Answers ``list_consumer_group_offsets`` from a script: an exception or an answer."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.calls = 0

    async def list_consumer_group_offsets(self, group: str, group_coordinator_id: Any = None,
                                          partitions: Any = None) -> Any:
        self.calls += 1
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, BaseException):
            raise step
        return step


def reader(admin: Admin, deadline_s: float = 5.0) -> ClusterReader:
    r = ClusterReader(Settings(), request_timeout_s=1.0, read_deadline_s=deadline_s)
    r._admin = admin  # type: ignore[assignment]
    return r


ANSWER = {TPS[0]: OffsetAndMetadata(7, ""), TPS[1]: OffsetAndMetadata(-1, "")}


async def test_a_dead_node_is_retried_until_a_live_one_answers() -> None:
    admin = Admin(NodeNotReadyError("node 1"), NodeNotReadyError("node 1"), ANSWER)
    r = reader(admin)
    assert await r.committed("g", TPS) == {TPS[0]: 7}
    assert admin.calls == 3 and r.retries == 2


async def test_an_answer_without_the_partitions_is_not_nothing_committed() -> None:
    admin = Admin({}, ANSWER)  # e.g. COORDINATOR_LOAD_IN_PROGRESS, then the offsets
    r = reader(admin)
    assert await r.committed("g", TPS) == {TPS[0]: 7}
    assert admin.calls == 2


async def test_a_read_that_cannot_succeed_is_one_bounded_error() -> None:
    admin = Admin(NodeNotReadyError("node 1"))
    r = reader(admin, deadline_s=0.5)
    with pytest.raises(BrokerUnavailable, match=r"cannot read the committed offsets of g: "
                                                r"\d+ attempt\(s\) in 0.5 s failed"):
        await r.committed("g", TPS)
    assert admin.calls >= 2


async def test_a_non_retriable_error_is_raised_at_once() -> None:
    admin = Admin(GroupAuthorizationFailedError("no"))
    with pytest.raises(GroupAuthorizationFailedError):
        await reader(admin).committed("g", TPS)
    assert admin.calls == 1
