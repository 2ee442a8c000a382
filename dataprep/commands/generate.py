"""`dataprep generate`: greedy generation with the training data's template, base vs tuned;
for a trained classifier, the labels each text gets."""

from __future__ import annotations

import json

import click


@click.command(
    "generate",
    epilog="Example: dataprep generate out/adapter --prompt 'x plus 1' --compare-base",
)
@click.argument("model")
@click.option("--prompt", "prompts", multiple=True, help="A prompt (repeatable).")
@click.option("--prompts-file", type=click.File("r"), help="One prompt a line.")
@click.option("--response", "responses", multiple=True, help="Reward models: the response to score after each --prompt "
              "(repeatable, one per prompt).")
@click.option("--template", default=None, help="A template name (latex, alpaca, ...), a format string with {prompt}, `chat` or `raw` "
              "[default: the template recorded in the adapter's manifest].")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--compare-base", is_flag=True, help="Also show the base model's output (MODEL must be an adapter).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of text.")
def command(model, prompts, prompts_file, responses, template, max_new_tokens, compare_base, as_json) -> None:
    """Generate from MODEL (an adapter dir, a merged model dir or a model name) for each prompt.

    For a classifier (the output of `dataprep train --task classify`), print the labels each
    prompt gets at the saved thresholds, with their scores. For a reward model (`--task reward`),
    print the score of each prompt + --response."""
    from dataprep.errors import DataprepError
    from training.generate import classify_texts, generate
    from training.outputs import is_classifier
    from training.reward import is_reward_model, score_responses

    prompts = list(prompts) + ([line.rstrip("\n") for line in prompts_file if line.strip()] if prompts_file else [])
    if not prompts:
        raise DataprepError("no prompt given; pass --prompt TEXT or --prompts-file FILE")
    if is_reward_model(model):
        for r in score_responses(model, prompts, list(responses)):
            click.echo(json.dumps(r, ensure_ascii=False) if as_json else
                       f"### prompt\n{r['prompt']}\n--- response\n{r['response']}\n--- score {r['score']:.4f}\n")
        return
    if responses:
        raise DataprepError(f"--response scores answers with a reward model; {model} is not one (no reward.json)")
    if is_classifier(model):
        if compare_base or template:
            raise DataprepError(f"{model} is a classifier: --compare-base and --template apply to SFT models; drop them")
        for r in classify_texts(model, prompts):
            if as_json:
                click.echo(json.dumps(r, ensure_ascii=False))
                continue
            hits = ", ".join(f"{n} {r['scores'][n]:.3f}" for n in r["labels"]) or "(no label above its threshold)"
            click.echo(f"### text\n{r['prompt']}\n--- labels\n{hits}\n")
        return
    for r in generate(model, prompts, template, max_new_tokens, compare_base):
        if as_json:
            click.echo(json.dumps(r, ensure_ascii=False))
            continue
        click.echo(f"### prompt\n{r['prompt']}")
        if compare_base:
            click.echo(f"--- base\n{r['base_output'].strip()}")
        click.echo(f"--- tuned\n{r['output'].strip()}\n")
