"""`dataprep run RECIPE`: run a whole pipeline from one YAML recipe."""

from __future__ import annotations

import click


@click.command(epilog="Example: dataprep run recipes/demo.yaml --set tokenize.max_len=512")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--from", "start", metavar="STAGE", help="Start at this stage (earlier outputs must exist).")
@click.option("--until", metavar="STAGE", help="Stop after this stage.")
@click.option("--set", "overrides", multiple=True, metavar="STAGE.KEY=VALUE", help="Override a recipe option.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Where stage outputs go (default: the recipe's).")
@click.option("--force", is_flag=True, help="Redo every stage even if its output is current.")
def command(recipe, start, until, overrides, workdir, force):
    """Run the recipe's stages in order (convert → dedupe → tokenize → train).

    Each stage writes WORKDIR/<stage>/ and is skipped when its output is already current.
    """
    from dataprep.pipeline import run_recipe, summary_table
    from dataprep.recipe import load_recipe

    config = load_recipe(recipe, list(overrides))

    def announce(i, total, name):
        click.secho(f"[{i + 1}/{total}] {name}", bold=True, err=True)

    results = run_recipe(config, start=start, until=until, force=force, workdir=workdir, on_stage=announce)
    click.echo(summary_table(results))
    for r in results:  # e.g. dedupe: semantic skipped because the model does not read the texts
        for w in (r.manifest.get("warnings") or []) if r.manifest else []:
            click.echo(f"warning ({r.stage}): {w}")
    click.echo(f"outputs: {workdir or config.workdir}/")
