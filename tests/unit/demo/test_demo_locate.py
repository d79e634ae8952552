"""The demo runs from a checkout or from an installed package: where it finds infra/ and photos."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixelpipe.demo import CHECKOUT, find_kafka_sh, find_photos


def checkout(root: Path, *, photos: bool = True) -> Path:
    (root / "repo" / "pixelpipe").mkdir(parents=True)
    (root / "repo" / "pyproject.toml").write_text("[project]\nname='pixelpipe'\n")
    (root / "repo" / "infra").mkdir()
    (root / "repo" / "infra" / "kafka.sh").write_text("#!/bin/sh\n")
    if photos:
        (root / "shared" / "data" / "photos").mkdir(parents=True)
    return root / "repo"


def test_in_a_checkout_the_demo_uses_its_infra_and_the_shared_photos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIXELPIPE_INFRA_DIR", raising=False)
    monkeypatch.delenv("PIXELPIPE_DEMO_PHOTOS", raising=False)
    repo = checkout(tmp_path)
    assert find_kafka_sh(repo) == repo / "infra" / "kafka.sh"
    assert find_photos(None, repo) == tmp_path / "shared" / "data" / "photos"


def test_installed_without_a_checkout_it_finds_nothing_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"  # what parents[2] of an installed module looks like
    site.mkdir()
    monkeypatch.delenv("PIXELPIPE_INFRA_DIR", raising=False)
    monkeypatch.delenv("PIXELPIPE_DEMO_PHOTOS", raising=False)
    assert find_kafka_sh(site) is None
    assert find_photos(None, site) is None
    elsewhere = checkout(tmp_path / "other")
    monkeypatch.setenv("PIXELPIPE_INFRA_DIR", str(elsewhere / "infra"))
    monkeypatch.setenv("PIXELPIPE_DEMO_PHOTOS", str(tmp_path / "other" / "shared" / "data" / "photos"))
    assert find_kafka_sh(site) == elsewhere / "infra" / "kafka.sh"
    assert find_photos(None, site) == tmp_path / "other" / "shared" / "data" / "photos"


def test_photos_given_on_the_command_line_win(tmp_path: Path) -> None:
    given = tmp_path / "mine"
    given.mkdir()
    assert find_photos(given, checkout(tmp_path)) == given


def test_this_test_runs_from_a_checkout() -> None:
    assert (CHECKOUT / "infra" / "kafka.sh").is_file()
