"""Errors of the Kafka side that are not an event's outcome (they stop a command or a worker)."""

from __future__ import annotations


class StreamsError(Exception):
    """Root of operational errors: the CLI prints ``str(error)`` on one line and exits 1."""


class BrokerUnavailable(StreamsError):
    """Kafka cannot be reached, or refused a request we cannot do without."""


class TopicMissing(BrokerUnavailable):
    """A topic we need does not exist (no worker has declared it yet)."""


class DeliveryFailed(StreamsError):
    """A record was not acknowledged by Kafka after the producer's retries."""


class OutcomeTimeout(StreamsError):
    """An event's outcome did not appear within the time we were asked to wait."""
