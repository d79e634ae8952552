"""Issue 12 point 5: ``pixelpipe ops`` and ``pixelpipe presets`` list what a rendition can be
made of, straight from the registry and the preset table; a bad preset, operation or value is
one line that names the valid ones."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from pixelpipe.cli import main
from pixelpipe.imaging.ops import REGISTRY
from pixelpipe.imaging.ops.debug import DEBUG_ENV
from pixelpipe.imaging.presets import PRESET_SPECS

OFFERED = [name for name in REGISTRY if not name.startswith("debug-")]


def test_ops_lists_every_operation_and_parameter_of_the_registry(runner: CliRunner) -> None:
    result = runner.invoke(main, ["ops"])
    assert result.exit_code == 0, result.stderr
    rows = [line.split(maxsplit=4) for line in result.stdout.splitlines()[1:] if line.strip()]
    listed = {(row[0], row[1]) for row in rows if len(row) == 5}
    for name in OFFERED:
        params = REGISTRY[name].params
        expected = {(name, p.name) for p in params} if params else {(name, "-")}
        assert expected <= listed, name
    assert "debug-sleep" not in result.stdout
    # each parameter's type, default and accepted values, as the registry defines them
    fit = next(row for row in rows if row[:2] == ["resize", "fit"])
    assert fit[2:] == ["choice", "inside", "inside, cover, contain, exact (also fill = exact)"]
    quality = next(row for row in rows if row[:2] == ["format", "quality"])
    assert quality[2:] == ["int", "-", "1..100"]
    sigma = next(row for row in rows if row[:2] == ["blur", "sigma"])
    assert sigma[2:] == ["float", "1.0", "0.3..100"]


def test_ops_json_is_the_registrys_own_parameter_definitions(runner: CliRunner) -> None:
    result = runner.invoke(main, ["ops", "--json"])
    assert result.exit_code == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [line["name"] for line in lines] == OFFERED
    for line in lines:
        opdef = REGISTRY[line["name"]]
        assert [p["name"] for p in line["params"]] == [p.name for p in opdef.params]
        for given, param in zip(line["params"], opdef.params, strict=True):
            assert given["type"] == param.kind
            assert given["default"] == param.default
            assert given["minimum"] == param.minimum and given["maximum"] == param.maximum
            assert given["choices"] == (list(param.choices) or None)
    assert next(line for line in lines if line["name"] == "grayscale")["aliases"] == ["greyscale"]


def test_ops_with_a_name_describes_it_and_accepts_an_alias(runner: CliRunner) -> None:
    result = runner.invoke(main, ["ops", "greyscale", "watermark"])
    assert result.exit_code == 0, result.stderr
    assert "grayscale (also: greyscale)" in result.stdout
    assert "``image`` (required)" in result.stdout  # the operation's own description
    assert "resize" not in result.stdout


def test_debug_operations_are_listed_only_where_they_are_allowed(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert runner.invoke(main, ["ops", "debug-sleep"]).exit_code == 1
    monkeypatch.setenv(DEBUG_ENV, "1")
    result = runner.invoke(main, ["ops", "--json"])
    assert "debug-sleep" in [orjson.loads(line)["name"] for line in result.stdout.splitlines()]


def test_an_unknown_operation_in_ops_is_one_line_naming_the_known_ones(
    runner: CliRunner,
) -> None:
    result = runner.invoke(main, ["ops", "nope"])
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line == ("pixelpipe: error: unknown operation 'nope' (known: "
                    f"{', '.join(OFFERED)})")


def test_presets_lists_every_preset_with_its_operations(runner: CliRunner) -> None:
    result = runner.invoke(main, ["presets"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["preset", "operations"]
    assert [line.split()[0] for line in lines[1:]] == list(PRESET_SPECS)
    for name, specs in PRESET_SPECS.items():
        assert f"{name}" in result.stdout and " | ".join(specs) in result.stdout


def test_presets_json(runner: CliRunner) -> None:
    result = runner.invoke(main, ["presets", "--json"])
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert {line["name"]: tuple(line["operations"]) for line in lines} == dict(PRESET_SPECS)
    thumbnail = next(line for line in lines if line["name"] == "thumbnail")
    assert thumbnail["canonical"].startswith("resize:enlarge=false,fit=cover")


def test_help_points_at_ops_and_presets(runner: CliRunner) -> None:
    text = runner.invoke(main, ["--help"]).output
    assert "ops " in text and "presets " in text
    publish = runner.invoke(main, ["publish", "--help"]).output
    assert "'pixelpipe ops'" in publish and "'pixelpipe presets'" in publish


# --------------------------------------------------------------------------- errors name the way


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    path.write_bytes(b"checked before anything is published")
    return path


@pytest.mark.parametrize(("args", "expected"), [
    (["--preset", "nope"],
     "unknown preset 'nope' (known: thumbnail, web-large, avatar, webp-fallback)"),
    (["--op", "resize:width=100,fit=sideways"],
     "resize: bad value 'sideways' for fit (choice expected: one of inside, cover, contain, "
     "exact)"),
    (["--op", "sepia"], "unknown operation 'sepia' (known: resize, crop, rotate, auto-orient"),
    (["--op", "blur:radius=3"], "blur: unknown parameter(s) radius (known: sigma)"),
    (["--op", "format:type=gif"],
     "format: bad value 'gif' for type (choice expected: one of jpeg, png, webp, avif)"),
    (["--op", "blur:sigma=500"], "blur: sigma=500.0 is above 100 (float expected: 0.3..100)"),
])
def test_publish_errors_list_the_valid_values(
    runner: CliRunner, image: Path, args: list[str], expected: str
) -> None:
    result = runner.invoke(main, ["publish", str(image), *args, "--broker", "kafka://127.0.0.1:1"])
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"pixelpipe: error: {expected}"), line
