"""The pure parts of benchmarks/security/audit_deps.py (issue 14): no network, no venv."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

SECURITY_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "security"
sys.path.insert(0, str(SECURITY_DIR))
import audit_deps as ad  # noqa: E402


def _project(latest: str, releases: dict[str, list[dict[str, Any]]], vulns: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"info": {"version": latest}, "releases": releases, "vulnerabilities": vulns or []}


def _file(sha: str, yanked: bool = False, reason: str | None = None) -> dict[str, Any]:
    return {"digests": {"sha256": sha}, "yanked": yanked, "yanked_reason": reason}


def _osv(events: list[dict[str, str]], versions: list[str] | None = None, name: str = "demo", **extra: Any) -> dict[str, Any]:
    return {
        "id": "PYSEC-0000-1",
        "aliases": ["CVE-0000-1"],
        "affected": [
            {
                "package": {"name": name, "ecosystem": "PyPI"},
                "ranges": [{"type": "GIT", "events": [{"introduced": "0"}, {"fixed": "abc123"}]},
                           {"type": "ECOSYSTEM", "events": events}],
                "versions": versions or [],
            }
        ],
        **extra,
    }


def test_parse_lock_reads_pins_with_hashes_and_comments() -> None:
    text = (
        "# header\n\n"
        "Foo_Bar==1.2.3 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
        "baz[extra]==2.0 ; python_version >= '3.11'  # why\n"
        "qux===3.0\n"
    )
    assert ad.parse_lock(text) == [ad.Locked("foo-bar", "1.2.3"), ad.Locked("baz", "2.0"), ad.Locked("qux", "3.0")]


def test_parse_lock_refuses_ranges() -> None:
    with pytest.raises(ValueError, match="not an exact pin"):
        ad.parse_lock("foo>=1.0\n")


def test_format_lock_round_trips() -> None:
    text = ad.format_lock([("Zed", "1.0", []), ("alpha", "2.0", ["bb", "aa"])], "# head")
    assert text.splitlines()[2:] == ["alpha==2.0 \\", "    --hash=sha256:aa \\", "    --hash=sha256:bb", "Zed==1.0"]
    assert ad.parse_lock(text) == [ad.Locked("alpha", "2.0"), ad.Locked("zed", "1.0")]


@pytest.mark.parametrize(
    ("version", "affected"),
    [("0.9", True), ("1.0", True), ("1.4.9", True), ("1.5", False), ("2.0", False), ("2.1", True), ("2.3", True), ("2.3.1", False)],
)
def test_osv_ranges(version: str, affected: bool) -> None:
    rec = _osv([{"introduced": "0"}, {"fixed": "1.5"}, {"introduced": "2.1"}, {"last_affected": "2.3"}])
    assert ad.osv_affects(rec, "demo", version) is affected


def test_osv_explicit_versions_name_and_withdrawn() -> None:
    rec = _osv([{"introduced": "0"}, {"fixed": "1.0"}], versions=["3.0"], name="Demo_Pkg")
    assert ad.osv_affects(rec, "demo-pkg", "3.0")  # listed, though past the fix
    assert ad.osv_affects(rec, "demo-pkg", "0.5")
    assert not ad.osv_affects(rec, "other", "0.5")
    assert not ad.osv_affects({**rec, "withdrawn": "2024-01-01T00:00:00Z"}, "demo-pkg", "0.5")
    assert ad.osv_fixed_versions(rec, "demo-pkg") == ["1.0"]


def test_yanked_needs_every_file() -> None:
    assert ad.yanked([_file("a", True, "broken"), _file("b", True, "broken")]) == (True, "broken")
    assert ad.yanked([_file("a", True), _file("b")]) == (False, None)
    assert ad.yanked([]) == (False, None)


def test_judge_latest_version_is_judged_by_the_registry_list() -> None:
    vuln = {"id": "PYSEC-1", "aliases": ["CVE-1"], "fixed_in": [], "details": "bad"}
    r = ad.judge("demo", "2.0", _project("2.0", {"2.0": [_file("h")]}, [vuln]), None, None)
    assert [(v.id, v.verdict) for v in r.vulns] == [("PYSEC-1", "affected")]
    assert r.status == "VULNERABLE" and r.hashes == ["h"]
    assert ad.exit_code([r]) == ad.EXIT_FOUND


def test_judge_older_version_without_database_is_unknown_or_presumed() -> None:
    project = _project("2.0", {"1.0": [_file("h")], "2.0": [_file("i")]})
    r = ad.judge("demo", "1.0", project, None, None)
    assert r.status == "UNKNOWN" and r.coverage.startswith("unknown: the registry does not say")
    assert ad.exit_code([r]) == ad.EXIT_OK
    assert ad.exit_code([r], fail_on_unknown=True) == ad.EXIT_UNKNOWN
    project["vulnerabilities"] = [{"id": "PYSEC-2", "fixed_in": ["3.0"]}]
    r = ad.judge("demo", "1.0", project, None, None)
    assert [(v.id, v.verdict) for v in r.vulns] == [("PYSEC-2", "presumed")]
    # fixed on the locked version's own line already: not presumed
    project["vulnerabilities"] = [{"id": "PYSEC-3", "fixed_in": ["1.0", "2.1"]}]
    assert ad.judge("demo", "1.0", project, None, None).vulns == []


def test_judge_with_database_merges_aliases_and_reports_yanked() -> None:
    project = _project(
        "2.0",
        {"1.0": [_file("h", True, "oops")], "2.0": [_file("i")]},
        [{"id": "GHSA-x", "aliases": ["CVE-0000-1"], "fixed_in": []}],
    )
    rec = _osv([{"introduced": "0"}, {"fixed": "1.5"}])
    r = ad.judge("demo", "1.0", project, None, [rec])
    assert [(v.id, v.verdict, v.source) for v in r.vulns] == [("PYSEC-0000-1", "affected", "advisory-db+registry")]
    assert r.yanked and r.yanked_reason == "oops"
    r2 = ad.judge("demo", "2.0", {**project, "vulnerabilities": []}, None, [rec])
    assert r2.vulns == [] and r2.status == "ok"


def test_judge_missing_project_and_errors() -> None:
    r = ad.judge("nope", "1.0", None, None, None)
    assert r.status == "NOT-ON-REGISTRY"
    err = ad.Result(name="x", locked="1", error="timed out")
    assert ad.exit_code([r, err]) == ad.EXIT_ERROR
    table = ad.render_table([r, err])
    assert "NOT-ON-REGISTRY" in table and "error: timed out" in table
