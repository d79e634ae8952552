"""Topic names: small pure functions over a prefix, shared by agents, CLI and tests.

The default names are a contract (ARCHITECTURE.md section 2): ``pixelpipe.uploads``,
``pixelpipe.processed``, ``pixelpipe.retry.<tier>``, ``pixelpipe.dlq``, ``pixelpipe.outcomes``,
``pixelpipe.breaker``, ``pixelpipe.alerts``, ``pixelpipe.control``, ``pixelpipe.workers``.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "pixelpipe"


def uploads_topic(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}.uploads"


def processed_topic(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}.processed"


def retry_topic(tier: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``retry_topic("5s") == "pixelpipe.retry.5s"``."""
    return f"{prefix}.retry.{tier}"


def dlq_topic(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}.dlq"


def dlq_replays_topic(prefix: str = DEFAULT_PREFIX) -> str:
    """The compacted replay ledger of ``pixelpipe dlq replay`` (one record per dead letter)."""
    return f"{prefix}.dlq.replays"


def outcomes_topic(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}.outcomes"


def breaker_topic(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}.breaker"


def alerts_topic(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}.alerts"


def control_topic(prefix: str = DEFAULT_PREFIX) -> str:
    """The compacted operator controls every worker follows (``pixelpipe degrade``)."""
    return f"{prefix}.control"


def workers_topic(prefix: str = DEFAULT_PREFIX) -> str:
    """The compacted worker heartbeats (key = worker id): ``pixelpipe status`` reads them."""
    return f"{prefix}.workers"


#: the breaker agent's faust table (``agents/breaker.py``); its changelog is faust's topic
BREAKER_TABLE = "breaker-window"


def changelog_topic(app_id: str, table: str) -> str:
    """The changelog faust names for ``table`` of app ``app_id`` (faust
    ``tables/base.py``: ``f"{app.conf.id}-{self.name}-changelog"``)."""
    return f"{app_id}-{table}-changelog"


def breaker_changelog_topic(app_id: str) -> str:
    """The changelog of the breaker table: ``<app id>-breaker-window-changelog``."""
    return changelog_topic(app_id, BREAKER_TABLE)


def min_insync_replicas(replication_factor: int) -> int:
    """The ``min.insync.replicas`` of the topics pixelpipe creates: ``min(2, RF - 1)``, at
    least 1. RF 3 or more: 2 (an ``acks=all`` write is on two brokers before it is
    acknowledged, and one broker may be down without stopping writes); RF 2: 1 (with 2, one
    broker down would stop every write); RF 1: 1 (set explicitly, so a broker whose default is
    2 still accepts writes to a single-replica dev topic)."""
    return max(1, min(2, replication_factor - 1))


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic the app declares at start-up when missing (existing topics are never altered)."""

    name: str
    partitions: int
    compacted: bool = False
    retention_ms: int | None = None
    #: roll segments this often: compaction never touches the active segment, so a topic
    #: written every few seconds needs short segments to stay small for readers from the start
    segment_ms: int | None = None
    #: ``min.insync.replicas``; None: ``min_insync_replicas(replication factor)``
    min_insync_replicas: int | None = None


def pipeline_topic_specs(
    prefix: str, upload_partitions: int, tiers: tuple[str, ...] = ()
) -> tuple[TopicSpec, ...]:
    """Every topic of the upload -> processed / retry / dead-letter path, with its shape."""
    return (
        TopicSpec(uploads_topic(prefix), upload_partitions),
        TopicSpec(processed_topic(prefix), upload_partitions),
        # Retry tiers have the uploads' partitions: a tier's throughput is the main topic's.
        *(TopicSpec(retry_topic(tier, prefix), upload_partitions) for tier in tiers),
        # Dead letters are kept until an operator deals with them: no time-based deletion.
        TopicSpec(dlq_topic(prefix), 1, retention_ms=-1),
        # One partition: one breaker agent sees every processor's outcomes in order, and the
        # window table (co-partitioned with it) has one owner.
        TopicSpec(outcomes_topic(prefix), 1, retention_ms=24 * 3600 * 1000),
        # The latest state per processor, forever: compacted.
        TopicSpec(breaker_topic(prefix), 1, compacted=True),
        # The operator's degradation override (one record per control key), read from the
        # beginning by every worker: one partition, compacted.
        TopicSpec(control_topic(prefix), 1, compacted=True),
        # The last heartbeat of every worker; one partition, so the worker that owns it is
        # the cluster's one alert evaluator (as the outcomes partition makes one breaker agent).
        TopicSpec(workers_topic(prefix), 1, compacted=True, segment_ms=10 * 60 * 1000),
        # firing / resolved alert events, a week of history
        TopicSpec(alerts_topic(prefix), 1, retention_ms=7 * 24 * 3600 * 1000),
    )


def worker_topic_specs(
    prefix: str, app_id: str, upload_partitions: int, tiers: tuple[str, ...] = ()
) -> tuple[TopicSpec, ...]:
    """The pipeline's topics and the faust changelog of the breaker table, which a worker
    declares before faust starts.

    faust checks that a table's changelog has as many partitions as its source topic
    (``tables/base.py`` ``_verify_source_topic_partitions``) from its consumer's metadata, in
    which a topic not (yet) listed counts 0 partitions; created by faust itself a moment
    before its consumer reads the metadata from a node that has not caught up, the changelog
    is "0 partitions" and the breaker agent crashes with ``PartitionsMismatch`` until the
    next metadata refresh. Declared here with the outcomes topic's shape (and listed by every
    node before faust starts, ``admin.declare_worker_topics``), faust finds it existing.
    """
    pipeline = pipeline_topic_specs(prefix, upload_partitions, tiers)
    (outcomes,) = (s for s in pipeline if s.name == outcomes_topic(prefix))
    # compacted, as faust declares a (non-windowed) table's changelog
    return (*pipeline, TopicSpec(breaker_changelog_topic(app_id), outcomes.partitions,
                                 compacted=True))


def co_partitioned_topics(prefix: str, app_id: str) -> tuple[tuple[str, str], ...]:
    """(source, changelog) pairs faust requires to have the same number of partitions."""
    return ((outcomes_topic(prefix), breaker_changelog_topic(app_id)),)
