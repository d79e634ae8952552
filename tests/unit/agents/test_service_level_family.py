"""The service level's CPU and memory signal reads the worker's process family without
scanning every process on the machine (issue 15: psutil's scan ran on the event loop every
second and cost up to tens of ms on a loaded machine)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from pixelpipe.agents import service_level
from pixelpipe.agents.service_level import child_pids

GRANDPARENT = (
    "import subprocess, sys, time\n"
    "kid = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
    "print(kid.pid, flush=True)\n"
    "time.sleep(30)\n"
)


def test_children_and_grandchildren_are_found_as_psutil_finds_them() -> None:
    parent = subprocess.Popen([sys.executable, "-c", GRANDPARENT], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert parent.stdout is not None
        grandchild = int(parent.stdout.readline())
        before = {c.pid for c in psutil.Process().children(recursive=True)}
        found = child_pids(os.getpid())
        after = {c.pid for c in psutil.Process().children(recursive=True)}
        assert {parent.pid, grandchild} <= set(found)
        assert set(found) <= before | after  # what psutil's scan finds (a pool may recycle)
        assert len(found) == len(set(found))
    finally:
        for proc in psutil.Process(parent.pid).children(recursive=True):
            proc.kill()
        parent.kill()
        parent.wait()


def test_a_process_without_children_has_none() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.1)
        assert child_pids(sleeper.pid) == []
    finally:
        sleeper.kill()
        sleeper.wait()


def test_without_the_proc_files_psutil_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        monkeypatch.setattr(service_level, "Path", lambda _p: _Missing())
        assert sleeper.pid in child_pids(os.getpid())
    finally:
        sleeper.kill()
        sleeper.wait()


class _Missing:
    def exists(self) -> bool:
        return False
