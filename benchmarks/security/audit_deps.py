"""Audit the locked Python dependencies against what the package registry says (issue 14).

pip-audit cannot work from this project's machines: its PyPI service asks the per-version JSON
API, which answers 404 here (pip-audit then *skips* every package and still exits 0: "No known
vulnerabilities found"), and its OSV service needs an API that is out of reach. This script
asks only what is reachable, and says plainly what it could not judge:

* PyPI's project JSON: the latest version; the ``vulnerabilities`` that PyPI lists for the
  latest release (id, aliases, ``fixed_in``, no affected ranges); every release's files with
  their sha256 and ``yanked`` flag. A locked version equal to the latest is judged fully (as
  fully as PyPI judges it); a locked *older* version is judged only for what still affects the
  latest ("presumed": no range says since when), and otherwise is "unknown: the registry does
  not say for this version".
* The per-version JSON, when it answers (it does not here): that version's own list.
* Optionally ``--advisory-db DIR``: a local copy of the PyPA advisory database (OSV YAML files,
  ``vulns/<package>/*.yaml``, with real affected ranges). The script never fetches it; how the
  copy was had, and how old it is, belongs in the recorded result.

Commands::

    python benchmarks/security/audit_deps.py lock [--python .venv/bin/python] [-o requirements.lock]
    python benchmarks/security/audit_deps.py audit [requirements.lock] [--advisory-db DIR] [--json]
    python benchmarks/security/audit_deps.py serve-osv --advisory-db DIR [--port 8799]

``serve-osv`` answers OSV's ``/v1/query`` on 127.0.0.1 from the local advisory copy, so that
pip-audit itself can run: ``pip-audit -s osv --osv-url http://127.0.0.1:8799/v1/query ...``.

Exit codes of ``audit``: 0 nothing found; 1 a locked version is affected (or presumed affected)
by a known vulnerability, or is yanked; 2 some package could not be checked (registry
unreachable, bad answer); with ``--fail-on-unknown``, 3 when some locked version could not be
judged. The pure parts (lock parsing, range evaluation, verdicts) are unit-tested in
``tests/unit/test_audit_deps.py`` without network.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

REGISTRY = "https://pypi.org/pypi"
USER_AGENT = "pixelpipe-audit-deps/1 (+benchmarks/security/audit_deps.py)"

EXIT_OK, EXIT_FOUND, EXIT_ERROR, EXIT_UNKNOWN = 0, 1, 2, 3

# ---------------------------------------------------------------------------------------------
# pure parts


def normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


@dataclass(frozen=True)
class Locked:
    name: str
    version: str


def parse_lock(text: str) -> list[Locked]:
    """``name==version`` lines of a requirements file; hashes, markers, comments ignored.

    Continuation lines (``\\`` then ``--hash=...``) are joined first. Anything that is not an
    exact pin is refused: an audit of a range audits nothing in particular.
    """
    joined = re.sub(r"\\\r?\n", " ", text)
    out: list[Locked] = []
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):  # --hash alone, -e, --index-url: options, not pins
            continue
        spec = line.split(";", 1)[0].split("--hash", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*===?\s*([^\s]+)", spec)
        if not m:
            raise ValueError(f"not an exact pin (name==version): {raw.strip()!r}")
        out.append(Locked(normalize(m.group(1)), m.group(3)))
    return out


def format_lock(entries: Sequence[tuple[str, str, Sequence[str]]], header: str) -> str:
    """pip-compile's layout: ``name==version \\`` then one ``--hash=sha256:..`` per line."""
    lines = [header.rstrip("\n"), ""] if header else []
    for name, version, hashes in sorted(entries, key=lambda e: normalize(e[0])):
        if hashes:
            lines.append(f"{name}=={version} \\")
            hs = sorted(set(hashes))
            for i, h in enumerate(hs):
                lines.append(f"    --hash=sha256:{h}" + (" \\" if i < len(hs) - 1 else ""))
        else:
            lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def release_files(project: Mapping[str, Any], version: str) -> list[Mapping[str, Any]] | None:
    """The files of ``version`` in the project JSON's ``releases``, None when it has none.

    Versions are matched by value (``1.0`` == ``1.0.0``), as pip matches them.
    """
    releases: Mapping[str, Any] = project.get("releases") or {}
    if version in releases:
        return list(releases[version])
    want = parse_version(version)
    if want is None:
        return None
    for key, files in releases.items():
        if parse_version(key) == want:
            return list(files)
    return None


def yanked(files: Sequence[Mapping[str, Any]]) -> tuple[bool, str | None]:
    """A release is yanked when every one of its files is (PEP 592 yanks whole releases)."""
    if not files:
        return False, None
    if all(f.get("yanked") for f in files):
        reasons = sorted({str(f.get("yanked_reason") or "") for f in files} - {""})
        return True, "; ".join(reasons) or None
    return False, None


def sha256s(files: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted({str(f["digests"]["sha256"]) for f in files if f.get("digests", {}).get("sha256")})


def _ev_version(text: str) -> Version | None:
    return Version("0") if text == "0" else parse_version(text)


def osv_affects(record: Mapping[str, Any], name: str, version: str) -> bool:
    """Whether an OSV record says PyPI package ``name`` at ``version`` is affected.

    ``affected[].versions`` (explicit list) or an ECOSYSTEM range whose events, in version
    order, leave ``version`` inside: ``introduced`` <= v, not past a ``fixed`` (v >= fixed is
    out) nor past a ``last_affected`` (v > it is out). GIT ranges are ignored (no commits here).
    A withdrawn record affects nothing.
    """
    if record.get("withdrawn"):
        return False
    v = parse_version(version)
    want = normalize(name)
    for aff in record.get("affected") or []:
        pkg = aff.get("package") or {}
        if pkg.get("ecosystem") != "PyPI" or normalize(str(pkg.get("name", ""))) != want:
            continue
        listed = [str(x) for x in aff.get("versions") or []]
        if version in listed or (v is not None and v in {parse_version(x) for x in listed}):
            return True
        if v is None:
            continue
        for rng in aff.get("ranges") or []:
            if rng.get("type") != "ECOSYSTEM":
                continue
            events: list[tuple[Version, int, str]] = []
            for ev in rng.get("events") or []:
                for kind, order in (("introduced", 0), ("fixed", 1), ("last_affected", 2)):
                    if kind in ev:
                        ev_v = _ev_version(str(ev[kind]))
                        if ev_v is not None:
                            events.append((ev_v, order, kind))
            inside = False
            for ev_v, _, kind in sorted(events):
                if kind == "introduced" and v >= ev_v:
                    inside = True
                elif (kind == "fixed" and v >= ev_v) or (kind == "last_affected" and v > ev_v):
                    inside = False
            if inside:
                return True
    return False


def osv_fixed_versions(record: Mapping[str, Any], name: str) -> list[str]:
    want = normalize(name)
    out: list[str] = []
    for aff in record.get("affected") or []:
        pkg = aff.get("package") or {}
        if pkg.get("ecosystem") != "PyPI" or normalize(str(pkg.get("name", ""))) != want:
            continue
        for rng in aff.get("ranges") or []:
            if rng.get("type") == "ECOSYSTEM":
                out += [str(ev["fixed"]) for ev in rng.get("events") or [] if "fixed" in ev]
    return sorted(set(out), key=lambda s: parse_version(s) or Version("0"))


@dataclass
class Vuln:
    id: str
    aliases: list[str]
    fixed_in: list[str]
    verdict: str  # "affected" (known to affect the locked version) | "presumed"
    source: str  # "registry" | "registry-version" | "advisory-db"
    summary: str = ""


@dataclass
class Result:
    name: str
    locked: str
    latest: str | None = None
    on_registry: bool | None = None
    yanked: bool = False
    yanked_reason: str | None = None
    vulns: list[Vuln] = field(default_factory=list)
    coverage: str = ""  # what the verdict rests on
    error: str | None = None
    hashes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.error:
            return "ERROR"
        if self.vulns:
            return "VULNERABLE"
        if self.yanked:
            return "YANKED"
        if self.on_registry is False:
            return "NOT-ON-REGISTRY"
        if self.coverage.startswith("unknown"):
            return "UNKNOWN"
        return "ok"


def _summary(text: str | None, limit: int = 100) -> str:
    s = " ".join((text or "").split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def registry_vulns(
    entries: Sequence[Mapping[str, Any]], locked: str, latest: str | None, *, per_version: bool
) -> list[Vuln]:
    """Verdicts from PyPI's ``vulnerabilities`` list (no ranges in it).

    ``per_version``: the list is the locked version's own (per-version JSON): each entry affects
    it. Otherwise it is the latest release's: an entry affects the locked version for sure when
    the locked version *is* the latest; for an older one it is "presumed" (it affects the latest,
    and nothing says since when), unless a ``fixed_in`` version of the locked version's own
    major.minor line is <= the locked version (fixed on that branch already): then it is left out.
    """
    lv = parse_version(locked)
    same = per_version or (latest is not None and parse_version(latest) == lv and lv is not None)
    out: list[Vuln] = []
    for e in entries:
        if e.get("withdrawn"):
            continue
        fixed = [str(x) for x in e.get("fixed_in") or []]
        if not same and lv is not None:
            fixed_vs = [fv for fv in (parse_version(x) for x in fixed) if fv is not None]
            if any(fv <= lv and fv.release[:2] == lv.release[:2] for fv in fixed_vs):
                continue
        out.append(
            Vuln(
                id=str(e.get("id")),
                aliases=sorted(str(a) for a in e.get("aliases") or []),
                fixed_in=fixed,
                verdict="affected" if same else "presumed",
                source="registry-version" if per_version else "registry",
                summary=_summary(e.get("summary") or e.get("details")),
            )
        )
    return out


def merge_vulns(vulns: Iterable[Vuln]) -> list[Vuln]:
    """One entry per advisory: ids and aliases that overlap are the same one.

    "affected" wins over "presumed"; the advisory database's record (with ranges) wins over the
    registry's for the fields.
    """
    rank = {"advisory-db": 0, "registry-version": 1, "registry": 2}
    groups: list[tuple[set[str], list[Vuln]]] = []
    for v in vulns:
        keys = {v.id, *v.aliases}
        hit = [g for g in groups if g[0] & keys]
        if not hit:
            groups.append((keys, [v]))
            continue
        first = hit[0]
        first[0].update(keys)
        first[1].append(v)
        for g in hit[1:]:
            first[0].update(g[0])
            first[1].extend(g[1])
            groups.remove(g)
    out: list[Vuln] = []
    for keys, members in groups:
        members.sort(key=lambda m: (m.verdict != "affected", rank.get(m.source, 9)))
        best = members[0]
        ids = sorted(keys - {best.id})
        sources = sorted({m.source for m in members}, key=lambda s: rank.get(s, 9))
        fixed = best.fixed_in or next((m.fixed_in for m in members if m.fixed_in), [])
        out.append(
            Vuln(best.id, ids, fixed, best.verdict, "+".join(sources), best.summary)
        )
    return sorted(out, key=lambda v: v.id)


def judge(
    name: str,
    locked: str,
    project: Mapping[str, Any] | None,
    version_doc: Mapping[str, Any] | None,
    advisories: Sequence[Mapping[str, Any]] | None,
    advisory_label: str = "advisory db",
) -> Result:
    """Everything known about one locked package, from the answers already fetched.

    ``project``: the project JSON (None: 404, the project is not on the registry);
    ``version_doc``: the per-version JSON (None when it does not answer);
    ``advisories``: the advisory database's records for this package, None when no database
    was given.
    """
    r = Result(name=name, locked=locked)
    if project is None:
        r.on_registry = False
        r.coverage = "unknown: the project is not on the registry"
        return r
    r.latest = str((project.get("info") or {}).get("version") or "") or None
    files = release_files(project, locked)
    r.on_registry = files is not None
    if files is not None:
        r.yanked, r.yanked_reason = yanked(files)
        r.hashes = sha256s(files)
    found: list[Vuln] = []
    basis: list[str] = []
    lv, latest_v = parse_version(locked), parse_version(r.latest or "")
    if version_doc is not None:
        found += registry_vulns(version_doc.get("vulnerabilities") or [], locked, r.latest, per_version=True)
        basis.append("registry: this version's own list")
    else:
        found += registry_vulns(project.get("vulnerabilities") or [], locked, r.latest, per_version=False)
        if lv is not None and lv == latest_v:
            basis.append("registry: locked = latest, whose list it gives")
        else:
            basis.append("registry: only what still affects the latest")
    if advisories is not None:
        for rec in advisories:
            if osv_affects(rec, name, locked):
                found.append(
                    Vuln(
                        id=str(rec.get("id")),
                        aliases=sorted(str(a) for a in rec.get("aliases") or []),
                        fixed_in=osv_fixed_versions(rec, name),
                        verdict="affected",
                        source="advisory-db",
                        summary=_summary(rec.get("summary") or rec.get("details")),
                    )
                )
        basis.append(f"{advisory_label}: ranges checked")
    r.vulns = merge_vulns(found)
    full = version_doc is not None or (lv is not None and lv == latest_v) or advisories is not None
    r.coverage = "; ".join(basis) if full else "unknown: the registry does not say for this version"
    if not full and r.vulns:
        r.coverage = "partial: " + "; ".join(basis)
    if files is None:
        r.coverage = "unknown: the locked version is not on the registry; " + r.coverage
    return r


def exit_code(results: Sequence[Result], fail_on_unknown: bool = False) -> int:
    if any(r.vulns or r.yanked for r in results):
        return EXIT_FOUND
    if any(r.error for r in results):
        return EXIT_ERROR
    if fail_on_unknown and any(r.status in ("UNKNOWN", "NOT-ON-REGISTRY") for r in results):
        return EXIT_UNKNOWN
    return EXIT_OK


def render_table(results: Sequence[Result]) -> str:
    head = ("package", "locked", "latest", "yanked", "status", "vulnerabilities / basis")
    rows = []
    for r in results:
        if r.error:
            what = f"error: {r.error}"
        elif r.vulns:
            what = ", ".join(
                f"{v.id} ({v.verdict}; fixed in {', '.join(v.fixed_in) or 'no release'}; {v.source})"
                for v in r.vulns
            )
        else:
            what = r.coverage
        yk = ("yes: " + _summary(r.yanked_reason or "no reason given", 30)) if r.yanked else "no"
        rows.append((r.name, r.locked, r.latest or "-", yk, r.status, what))
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(5)]
    out = []
    for row in [head, (*("-" * w for w in widths), "-" * 24), *rows]:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(row[:5], widths, strict=True)) + "  " + row[5])
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# I/O: the registry, the advisory database, the venv


class Registry:
    """PyPI's JSON API with timeouts and a few retries; 404 is an answer, not an error."""

    def __init__(self, base: str = REGISTRY, timeout: float = 15.0, retries: int = 3) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.requests = 0
        self._lock = threading.Lock()

    def get(self, path: str) -> Mapping[str, Any] | None:
        url = f"{self.base}/{path}"
        last: Exception | None = None
        for attempt in range(self.retries):
            with self._lock:
                self.requests += 1
            req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    doc: Mapping[str, Any] = json.loads(resp.read())
                    return doc
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return None
                last = e
                if e.code < 500 and e.code != 429:
                    break
            except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
                last = e
            time.sleep(0.5 * 2**attempt)
        raise RuntimeError(f"{url}: {last}")

    def project(self, name: str) -> Mapping[str, Any] | None:
        return self.get(f"{name}/json")

    def version(self, name: str, version: str) -> Mapping[str, Any] | None:
        return self.get(f"{name}/{version}/json")


def _plain(obj: Any) -> Any:
    """YAML's timestamps back to OSV's RFC 3339 text (``...Z``), as the OSV API serves them."""
    if isinstance(obj, datetime):
        return obj.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


class AdvisoryDB:
    """A local directory of OSV YAML (or JSON) files: ``<root>/vulns/<package>/*.yaml``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        base = root / "vulns" if (root / "vulns").is_dir() else root
        if not base.is_dir():
            raise FileNotFoundError(f"advisory database not found: {root}")
        self.base = base
        self._cache: dict[str, list[Mapping[str, Any]]] = {}
        self._dirs = {normalize(p.name): p for p in base.iterdir() if p.is_dir()}

    def records(self, name: str) -> list[Mapping[str, Any]]:
        key = normalize(name)
        if key not in self._cache:
            recs: list[Mapping[str, Any]] = []
            d = self._dirs.get(key)
            if d is not None:
                for path in sorted(d.iterdir()):
                    if path.suffix in (".yaml", ".yml"):
                        import yaml  # PyYAML: in the test extras; only needed with --advisory-db

                        recs.append(_plain(yaml.safe_load(path.read_text(encoding="utf-8"))))
                    elif path.suffix == ".json":
                        recs.append(json.loads(path.read_text(encoding="utf-8")))
            self._cache[key] = recs
        return self._cache[key]

    def newest_modified(self) -> str:
        stamps = []
        for d in self._dirs.values():
            for path in d.iterdir():
                m = re.search(r"^modified:\s*'?([0-9T:.\-Z]+)", path.read_text(encoding="utf-8"), re.M)
                if m:
                    stamps.append(m.group(1))
        return max(stamps) if stamps else "unknown"


def audit(
    locked: Sequence[Locked],
    registry: Registry,
    db: AdvisoryDB | None,
    workers: int = 4,
    per_version: bool = True,
) -> list[Result]:
    label = f"advisory db ({db.root})" if db else "advisory db"

    def one(item: Locked) -> Result:
        try:
            project = registry.project(item.name)
            doc = registry.version(item.name, item.version) if per_version and project else None
            recs = db.records(item.name) if db else None
            return judge(item.name, item.version, project, doc, recs, label)
        except Exception as e:  # one package's failure is reported, never hides the others
            return Result(name=item.name, locked=item.version, error=str(e))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, locked))


_LIST_DISTS = r"""
import json, importlib.metadata as md
out = []
for d in md.distributions():
    name = d.metadata["Name"]
    if not name:
        continue
    direct = d.read_text("direct_url.json")
    editable = False
    if direct:
        try:
            editable = bool(json.loads(direct).get("dir_info", {}).get("editable"))
        except ValueError:
            pass
    out.append([name, d.version, editable])
print(json.dumps(out))
"""


def installed(python: str) -> list[tuple[str, str, bool]]:
    """(name, version, editable) of every distribution in that interpreter's environment."""
    # -I: no current directory on sys.path (the checkout's pixelpipe.egg-info would shadow the
    # editable install's dist-info and its direct_url.json)
    text = subprocess.run([python, "-I", "-c", _LIST_DISTS], check=True, capture_output=True, text=True).stdout
    seen: dict[str, tuple[str, str, bool]] = {}
    for name, version, editable in json.loads(text):
        key = normalize(name)
        if key not in seen or (editable and not seen[key][2]):
            seen[key] = (str(name), str(version), bool(editable))
    return sorted(seen.values(), key=lambda t: normalize(t[0]))


# ---------------------------------------------------------------------------------------------
# commands


def cmd_lock(args: argparse.Namespace) -> int:
    dists = installed(args.python)
    pins = [(n, v) for n, v, editable in dists if not editable]
    skipped = [f"{n}=={v}" for n, v, editable in dists if editable]
    registry = Registry(timeout=args.timeout)
    entries: list[tuple[str, str, Sequence[str]]] = []
    missing: list[str] = []

    def hashes_of(pin: tuple[str, str]) -> tuple[str, str, list[str]]:
        if args.no_hashes:
            return pin[0], pin[1], []
        project = registry.project(normalize(pin[0]))
        files = release_files(project, pin[1]) if project else None
        return pin[0], pin[1], sha256s(files or [])

    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for name, version, hs in pool.map(hashes_of, pins):
            entries.append((name, version, hs))
            if not hs and not args.no_hashes:
                missing.append(f"{name}=={version}")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = "\n".join(
        [
            "# requirements.lock: every distribution installed in the project's venv, exactly",
            f"# (made {stamp} from {args.python}; Python {_py_version(args.python)}).",
            "# Regenerate after any install or upgrade in the venv (./dev.sh installs .[test],",
            '# the benchmarks add .[bench]):',
            "#     .venv/bin/python benchmarks/security/audit_deps.py lock -o requirements.lock",
            "# Hashes: the sha256 of every file the registry has for that version (any platform),",
            "# so `pip install --require-hashes --no-deps -r requirements.lock` checks what it gets.",
            "# Audited by: .venv/bin/python benchmarks/security/audit_deps.py audit requirements.lock",
            *(f"# not pinned (editable install of the checkout): {s}" for s in skipped),
            *(f"# no hashes (the registry lists no files for it): {s}" for s in missing),
        ]
    )
    text = format_lock(entries, header)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}: {len(entries)} pins, {registry.requests} registry requests", file=sys.stderr)
    return 0


def _py_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def cmd_audit(args: argparse.Namespace) -> int:
    locked = parse_lock(Path(args.lock).read_text(encoding="utf-8"))
    db = AdvisoryDB(Path(args.advisory_db)) if args.advisory_db else None
    registry = Registry(args.registry, timeout=args.timeout)
    started = time.monotonic()
    results = audit(locked, registry, db, workers=args.workers, per_version=not args.no_per_version)
    elapsed = time.monotonic() - started
    code = exit_code(results, args.fail_on_unknown)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    meta = {
        "lock": args.lock,
        "packages": len(results),
        "counts": counts,
        "exit_code": code,
        "registry_requests": registry.requests,
        "seconds": round(elapsed, 1),
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "advisory_db": str(db.root) if db else None,
        "advisory_db_newest_modified": db.newest_modified() if db else None,
    }
    if args.json:
        for r in results:
            d = asdict(r)
            d.pop("hashes")
            d["status"] = r.status
            print(json.dumps(d, sort_keys=True))
        print(json.dumps({"summary": meta}, sort_keys=True))
    else:
        print(render_table(results))
        print()
        found = [r for r in results if r.vulns or r.yanked]
        for r in found:
            for v in r.vulns:
                print(f"FOUND {r.name}=={r.locked}: {v.id} [{', '.join(v.aliases)}] {v.verdict}, "
                      f"fixed in {', '.join(v.fixed_in) or 'no release'} ({v.source}): {v.summary}")
            if r.yanked:
                print(f"FOUND {r.name}=={r.locked}: yanked ({r.yanked_reason or 'no reason given'})")
        print(
            f"{len(results)} packages in {args.lock}: "
            + ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
            + f"; {registry.requests} registry requests in {elapsed:.1f} s"
            + (f"; advisory db {db.root} (newest record modified {meta['advisory_db_newest_modified']})" if db else "; no advisory db")
            + f"; exit {code}"
        )
    return code


class _OSVHandler(BaseHTTPRequestHandler):
    db: AdvisoryDB

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/query":
            self.send_error(404)
            return
        try:
            q = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            name, version = q["package"]["name"], q["version"]
            vulns = [rec for rec in self.db.records(name) if osv_affects(rec, name, version)]
            body = json.dumps({"vulns": vulns} if vulns else {}, default=str).encode()
        except (KeyError, ValueError, TypeError) as e:
            self.send_error(400, str(e))
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def cmd_serve_osv(args: argparse.Namespace) -> int:
    handler = type("Handler", (_OSVHandler,), {"db": AdvisoryDB(Path(args.advisory_db))})
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    print(f"OSV /v1/query from {args.advisory_db} on http://127.0.0.1:{server.server_port}/v1/query", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="cmd", required=True)
    lk = sub.add_parser("lock", help="write the lock from an environment's installed distributions")
    lk.add_argument("--python", default=".venv/bin/python", help="interpreter of the environment (default .venv/bin/python)")
    lk.add_argument("-o", "--output", default="requirements.lock", help="file, or - for stdout")
    lk.add_argument("--no-hashes", action="store_true", help="pins only, no registry requests")
    lk.add_argument("--timeout", type=float, default=15.0)
    lk.add_argument("--workers", type=int, default=4)
    au = sub.add_parser("audit", help="audit a lock against the registry (and an advisory db)")
    au.add_argument("lock", nargs="?", default="requirements.lock")
    au.add_argument("--advisory-db", metavar="DIR", help="local copy of the PyPA advisory database")
    au.add_argument("--json", action="store_true", help="JSON lines: one per package, then a summary")
    au.add_argument("--timeout", type=float, default=15.0, help="per request, seconds (default 15)")
    au.add_argument("--workers", type=int, default=4, help="requests in flight (default 4)")
    au.add_argument("--no-per-version", action="store_true", help="do not try the per-version JSON")
    au.add_argument("--registry", default=REGISTRY, help=f"JSON API base (default {REGISTRY})")
    au.add_argument("--fail-on-unknown", action="store_true", help="exit 3 when a locked version cannot be judged")
    so = sub.add_parser("serve-osv", help="answer OSV /v1/query on loopback from an advisory db (for pip-audit)")
    so.add_argument("--advisory-db", metavar="DIR", required=True)
    so.add_argument("--port", type=int, default=8799)
    args = p.parse_args(argv)
    try:
        return {"lock": cmd_lock, "audit": cmd_audit, "serve-osv": cmd_serve_osv}[args.cmd](args)
    except (OSError, ValueError, RuntimeError, subprocess.CalledProcessError) as e:
        print(f"audit_deps: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
