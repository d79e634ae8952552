"""PIXELPIPE_FAULTS parsing and firing."""

from __future__ import annotations

import random

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


def test_a_probability_fault_fails_about_that_share_of_calls() -> None:
    random.seed(11)
    injector = FaultInjector.parse("resize:storage_unavailable:p=0.15")
    failures = 0
    for _ in range(4000):
        try:
            injector.check("resize")
        except StorageUnavailable:
            failures += 1
    assert 0.12 < failures / 4000 < 0.18
    injector.check("decode")  # other processors untouched


def test_a_probability_burst_stops_after_its_duration() -> None:
    injector = FaultInjector.parse("resize:storage_unavailable:p=1/30s")
    with pytest.raises(StorageUnavailable):
        injector.check("resize")
    injector.started -= 31
    injector.check("resize")  # the burst is over


@pytest.mark.parametrize("when", ["p=1.5", "p=-0.1", "p=lots", "p=0.5/never"])
def test_a_bad_probability_is_refused(when: str) -> None:
    with pytest.raises(ConfigError, match="PIXELPIPE_FAULTS"):
        FaultInjector.parse(f"resize:storage_unavailable:{when}")


def test_process_faults_are_handed_to_the_pool_not_raised() -> None:
    injector = FaultInjector.parse("resize:crash:1;blur:hang:always;sharpen:oom:1")
    injector.check("resize")  # never raised in the worker: they happen in the image process
    assert injector.process_fault(["format", "resize"]) == "crash"
    assert injector.process_fault(["resize"]) is None  # its one time is used up
    assert injector.process_fault(["blur"]) == "hang"
    assert injector.process_fault(["sharpen"]) == "oom"
    assert injector.process_fault(["crop"]) is None
