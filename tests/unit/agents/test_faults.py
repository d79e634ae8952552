"""PIXELPIPE_FAULTS parsing and firing."""

from __future__ import annotations

import pytest

from pixelpipe.agents.faults import FaultInjector
from pixelpipe.errors import ConfigError, StorageUnavailable, WorkerCrashed


def test_a_count_fault_fails_the_first_n_calls_only() -> None:
    faults = FaultInjector.parse("resize:storage_unavailable:2")
    for _ in range(2):
        with pytest.raises(StorageUnavailable) as info:
            faults.check("resize")
        assert info.value.processor == "resize"
    faults.check("resize")
    faults.check("format")


def test_always_and_duration_faults() -> None:
    faults = FaultInjector.parse("store:worker_crashed:always; decode:storage_unavailable:1h")
    for _ in range(5):
        with pytest.raises(WorkerCrashed):
            faults.check("store")
    with pytest.raises(StorageUnavailable):
        faults.check("decode")
    faults.started -= 7200  # the hour is over
    faults.check("decode")


def test_an_expired_duration_fault_does_not_fire() -> None:
    faults = FaultInjector.parse("resize:storage_unavailable:0.001s")
    faults.started -= 1
    faults.check("resize")


@pytest.mark.parametrize("spec", ["resize:storage_unavailable", "resize:no_such_code:2",
                                  "resize:storage_unavailable:soon"])
def test_bad_specs_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        FaultInjector.parse(spec)


def test_empty_spec_is_off() -> None:
    assert not FaultInjector.parse("").active
