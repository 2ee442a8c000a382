"""`dataprep validate RECIPE...`: check recipes without running them."""

from __future__ import annotations

import click


@click.command(epilog="Example: dataprep validate recipes/*.yaml")
@click.argument("recipes", nargs=-1, required=True, type=click.Path(dir_okay=False))
def command(recipes):
    """Validate each recipe and list every problem, one line each: FILE:LINE: key: problem (unknown or
    duplicate keys, wrong types, values out of range, missing fields)."""
    from dataprep.errors import DataprepError
    from dataprep.recipe import load_recipe

    failed = 0
    for path in recipes:
        try:
            r = load_recipe(path)
            click.echo(f"ok    {path}: {' → '.join(s.stage for s in r.stages)}")
        except DataprepError as exc:
            failed += 1
            click.echo(str(exc), err=True)
    if failed:
        raise SystemExit(1)
