"""``pixelpipe ops`` and ``pixelpipe presets``: what a rendition can be made of.

Both read the imaging engine's own definitions (the operation registry and each parameter's
type, range, choices and default; the preset table), so they can never disagree with what the
parser accepts.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from pixelpipe.cli.common import emit, print_table, user_errors

if TYPE_CHECKING:
    from pixelpipe.imaging.ops.base import OpDef, Param

#: free text (``values``) last, so the plain layout stays aligned
OP_COLUMNS = ("operation", "parameter", "type", "default", "values")


def _default(value: Any) -> str:
    from pixelpipe.imaging.spec import format_value

    return "-" if value is None else format_value(value)


def _values(param: Param) -> str:
    text = param.values_text()
    if param.aliases:
        text += " (also " + ", ".join(f"{a} = {c}" for a, c in param.aliases.items()) + ")"
    return text


def _op_rows(opdef: OpDef) -> list[tuple[str, str, str, str, str]]:
    if not opdef.params:
        return [(opdef.name, "-", "-", "-", "takes no parameters")]
    return [(opdef.name, p.name, p.kind, _default(p.default), _values(p)) for p in opdef.params]


def op_json(opdef: OpDef) -> dict[str, Any]:
    """One line of ``pixelpipe ops --json``."""
    from pixelpipe.imaging.spec import aliases_of

    return {
        "name": opdef.name,
        "aliases": list(aliases_of(opdef.name)),
        "params": [param.describe() for param in opdef.params],
        "doc": inspect.cleandoc(opdef.doc) if opdef.doc else None,
    }


@click.command()
@click.argument("names", nargs=-1, metavar="[OPERATION]...")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per operation: name, aliases, params (name, type, default, "
                   "minimum, maximum, choices, aliases, values), doc.")
@user_errors
def ops(names: Sequence[str], as_json: bool) -> None:
    """Every image operation with its parameters: type, accepted values (range or choices) and
    default ("-": none, the parameter is left out unless given).

    Operations go in --op of publish (resize:width=800,fit=cover) or in an event's
    "operations" list, in that grammar or as {"op": "resize", "width": 800}. Give OPERATION
    names to see only those, with their full description.
    """
    from pixelpipe.imaging.spec import aliases_of, available_operations, operation_def

    chosen = [operation_def(name) for name in names] if names else list(available_operations())
    if as_json:
        for opdef in chosen:
            emit(op_json(opdef))
        return
    print_table(OP_COLUMNS, [row for opdef in chosen for row in _op_rows(opdef)],
                title=f"{len(chosen)} operation(s)", wrap={"values"})
    if names:
        for opdef in chosen:
            also = aliases_of(opdef.name)
            if opdef.doc or also:
                click.echo(f"\n{opdef.name}" + (f" (also: {', '.join(also)})" if also else ""))
            if opdef.doc:
                click.echo(inspect.cleandoc(opdef.doc))
        return
    aliases = [f"{alias} = {name}" for opdef in chosen for name in [opdef.name]
               for alias in aliases_of(name)]
    if aliases:
        click.echo(f"\nalso accepted: {', '.join(aliases)}")
    click.echo("'pixelpipe ops NAME' describes one operation; 'pixelpipe presets' lists the "
               "presets.")


@click.command()
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per preset: name, operations (as written), canonical (the "
                   "canonical spec, defaults filled in).")
@user_errors
def presets(as_json: bool) -> None:
    """Every named preset and the operations it stands for.

    A preset goes in --preset of publish, or as {"name": ..., "preset": "thumbnail"} in an
    event's renditions.
    """
    from pixelpipe.imaging.presets import PRESET_SPECS, PRESETS
    from pixelpipe.imaging.spec import canonical_spec

    if as_json:
        for name, specs in PRESET_SPECS.items():
            emit({"name": name, "operations": list(specs),
                  "canonical": canonical_spec(PRESETS[name])})
        return
    print_table(("preset", "operations"),
                [(name, " | ".join(specs)) for name, specs in PRESET_SPECS.items()],
                title=f"{len(PRESET_SPECS)} preset(s)", wrap={"operations"})
