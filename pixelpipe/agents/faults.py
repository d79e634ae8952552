"""Fault injection for tests and drills: ``PIXELPIPE_FAULTS`` (contract).

A ``;``-separated list of ``processor:code:when``:

- ``processor``: an operation name (``resize``, ``format``, ...), ``decode`` or ``store``;
- ``code``: any error code of ``pixelpipe.errors`` (``storage_unavailable``, ...), or
  ``delay=DURATION`` (``delay=100ms``): the call is slowed by that long instead of failing
  (used to build a backlog of fetched-but-unfinished uploads in takeover drills);
- ``when``: a count (``2``: the first 2 calls fail), a duration (``30s``: calls fail for 30 s
  after the worker starts), a probability (``p=0.15``: each call fails with probability 0.15,
  an error-rate drill; ``p=0.15/40s``: only for the first 40 s, a burst) or ``always``.

Example: ``PIXELPIPE_FAULTS="resize:storage_unavailable:2;store:storage_unavailable:30s"``.
Off unless set; logged loudly at start-up when on. Counters are per worker process.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pixelpipe.config import parse_duration
from pixelpipe.errors import ERROR_CLASSES, ConfigError, PixelpipeError, error_for_code
from pixelpipe.imaging.pool import PROCESS_FAULTS

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Fault:
    processor: str
    code: str
    count: int | None = None  # fail this many calls
    delay_s: float = 0.0  # a delay fault: slow the call instead of failing it
    for_s: float | None = None  # fail for this long after start
    probability: float | None = None  # fail each call with this probability
    calls: int = 0

    def fires(self, now: float, started: float) -> bool:
        self.calls += 1
        if self.probability is not None:
            if self.for_s is not None and now - started >= self.for_s:
                return False
            return random.random() < self.probability
        if self.count is not None:
            return self.calls <= self.count
        if self.for_s is not None:
            return now - started < self.for_s
        return True  # always


@dataclass(slots=True)
class FaultInjector:
    """Raises the configured error when a faulty processor is called."""

    faults: dict[str, list[Fault]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def parse(cls, spec: str) -> FaultInjector:
        injector = cls()
        for item in spec.split(";"):
            item = item.strip()
            if not item:
                continue
            parts = item.split(":")
            if len(parts) != 3:
                raise ConfigError(f"PIXELPIPE_FAULTS entry {item!r} is not processor:code:when")
            processor, code, when = (p.strip() for p in parts)
            delay_s = 0.0
            if code.startswith("delay="):
                try:
                    delay_s = parse_duration(code.removeprefix("delay="))
                except ValueError as exc:
                    raise ConfigError(f"PIXELPIPE_FAULTS: {exc}") from exc
            elif code not in ERROR_CLASSES and code not in PROCESS_FAULTS:
                raise ConfigError(f"PIXELPIPE_FAULTS: unknown error code {code!r}")
            fault = Fault(processor=processor, code=code, delay_s=delay_s)
            if when == "always":
                pass
            elif when.isdigit():
                fault.count = int(when)
            elif when.startswith("p="):
                chance, _, lasting = when.removeprefix("p=").partition("/")
                try:
                    fault.probability = float(chance)
                    fault.for_s = parse_duration(lasting) if lasting else None
                except ValueError:
                    fault.probability = -1.0
                if not 0.0 <= fault.probability <= 1.0:
                    raise ConfigError(f"PIXELPIPE_FAULTS: probability in {item!r} must be "
                                      f"between 0 and 1")
            else:
                try:
                    fault.for_s = parse_duration(when)
                except ValueError as exc:
                    raise ConfigError(f"PIXELPIPE_FAULTS: {exc}") from exc
            injector.faults.setdefault(processor, []).append(fault)
        if injector.faults:
            log.warning("FAULT INJECTION IS ON: %s", spec)
        return injector

    @property
    def active(self) -> bool:
        return bool(self.faults)

    def process_fault(self, processors: Sequence[str]) -> str | None:
        """The process fault (``crash``, ``hang``, ``oom``) a render of ``processors`` should
        suffer in its image process at this call, if one fires."""
        for processor in processors:
            for fault in self.faults.get(processor, ()):
                if fault.code in PROCESS_FAULTS and fault.fires(time.monotonic(), self.started):
                    return fault.code
        return None

    def check(self, processor: str) -> None:
        """Raise the injected error if ``processor`` is faulty at this call."""
        for fault in self.faults.get(processor, ()):
            if fault.delay_s or fault.code in PROCESS_FAULTS:
                continue  # delays are served by delay_for(), process faults by the pool
            if fault.fires(time.monotonic(), self.started):
                error: PixelpipeError = error_for_code(
                    fault.code, f"injected fault ({fault.code}) in {processor}",
                    processor=processor,
                )
                raise error

    def delay_for(self, processor: str) -> float:
        """Seconds a delay fault adds to this call of ``processor`` (0 when none fires)."""
        total = 0.0
        for fault in self.faults.get(processor, ()):
            if fault.delay_s and fault.fires(time.monotonic(), self.started):
                total += fault.delay_s
        return total
