"""Research commands: ``voicecheck train``, ``voicecheck evaluate`` and ``voicecheck corpus``.

The top command line (:mod:`voicecheck.cli`) finds them through the ``voicecheck.commands``
entry points, so that the scoring path never imports research code.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from ..cli import fail, feature_scheduler_option, jobs_option, load_detector
from ..errors import VoiceCheckError
from .corpus import corpus_cli

__all__ = ["corpus_cli", "evaluate", "train"]


def _progress(label: str):
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = click.progressbar(
                length=total, label=label, file=sys.stderr, show_pos=True
            )
            state["bar"].__enter__()
        state["bar"].update(1)
        if done == total:
            state["bar"].__exit__(None, None, None)

    return update


def _feature_engine(jobs: int, scheduler: str | None):
    """One Dask cluster for every feature table of a command, started when first needed."""
    from ..batch import n_workers, shared_engine

    if scheduler is None and jobs == 1:
        return contextlib.nullcontext()
    try:
        workers = None if scheduler else n_workers(jobs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--jobs") from None
    return shared_engine(scheduler=scheduler, workers=workers)


copies_option = click.option(
    "--copies",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Channel copies of every training clip: G.711, AMR-NB, then random phone chains.",
)


@click.command()
@click.option(
    "--manifest",
    default="data_manifest.yaml",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="The data manifest.",
)
@click.option("--dataset", "datasets", multiple=True, help="Use only these datasets (repeatable).")
@click.option(
    "--output",
    "-o",
    default="runs/latest",
    show_default=True,
    help="Run folder for the model, its card and metrics.",
)
@click.option("--name", default="voicecheck", show_default=True, help="Model name in its id.")
@click.option("--seed", default=0, show_default=True, type=int)
@copies_option
@click.option(
    "--folds",
    default=10,
    show_default=True,
    type=click.IntRange(min=2),
    help="Grouped leave-sites-out folds that give every clip its out-of-site score.",
)
@jobs_option
@feature_scheduler_option
def train(
    manifest: str,
    datasets: tuple[str, ...],
    output: str,
    name: str,
    seed: int,
    copies: int,
    folds: int,
    jobs: int,
    scheduler: str | None,
) -> None:
    """Train a model from the data manifest; writes the model, card and metrics to OUTPUT."""
    from .training import TrainConfig
    from .training import train as run_train

    config = TrainConfig(
        manifest=manifest,
        datasets=list(datasets) or None,
        output=output,
        name=name,
        seed=seed,
        copies=copies,
        folds=folds,
        n_jobs=jobs,
        scheduler=scheduler,
    )
    try:
        with _feature_engine(jobs, scheduler):
            metrics = run_train(config, progress=_progress("Features"))
    except VoiceCheckError as exc:
        fail(str(exc))
    p = metrics["pooled"]
    promise = metrics["verdict_promise"]
    fa, miss = promise["real_called_cloned"], promise["cloned_called_human"]
    click.echo(
        f"model written to {output}/model.skops\n"
        f"leave-one-site-out validation ({metrics['n_sites']} sites): EER {p['eer']:.1%}, "
        f"minDCF {p['min_dcf']:.3f}, ROC AUC {p['roc_auc']:.3f} on {p['n_real']} real and "
        f"{p['n_cloned']} cloned clips\n"
        f"verdicts on unseen sites: real called likely_cloned {fa['rate']:.1%} "
        f"[{fa['low']:.1%}, {fa['high']:.1%}], cloned called likely_human {miss['rate']:.1%} "
        f"[{miss['low']:.1%}, {miss['high']:.1%}] (95% bootstrap over sites)"
    )


@click.command()
@click.option(
    "--model",
    envvar="VOICECHECK_MODEL",
    type=click.Path(path_type=str),
    help="A .skops model file for the shipped protocol (default: the shipped model).",
)
@click.option(
    "--manifest",
    default="data_manifest.yaml",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=str),
)
@click.option("--dataset", "datasets", multiple=True, help="Use only these datasets (repeatable).")
@click.option(
    "--protocol",
    "protocols",
    multiple=True,
    type=click.Choice(["shipped", "loro", "lofo", "loso", "logo"]),
    help="shipped: score with --model; loro / lofo: hold out sites / generator families in "
    "--folds grouped folds and score what each fold's model never saw; loso / logo: one model "
    "per held-out source / generator family (repeatable; default shipped).",
)
@click.option(
    "--folds",
    default=10,
    show_default=True,
    type=click.IntRange(2, 1000),
    help="Grouped folds of the loro and lofo protocols (every site or family held out once).",
)
@click.option(
    "--condition",
    "conditions",
    multiple=True,
    help="Phone channel both classes pass through (repeatable; default: clean_8k, g711, "
    "amr_nb, opus, mp3).",
)
@click.option(
    "--output",
    "-o",
    default="runs/evaluation",
    show_default=True,
    type=click.Path(file_okay=False, path_type=str),
    help="Folder for the report (Markdown, HTML, plots, metrics.json, scores.csv).",
)
@click.option("--seed", default=0, show_default=True, type=int)
@copies_option
@jobs_option
@feature_scheduler_option
def evaluate(
    model: str | None,
    manifest: str,
    datasets: tuple[str, ...],
    protocols: tuple[str, ...],
    conditions: tuple[str, ...],
    folds: int,
    output: str,
    seed: int,
    copies: int,
    jobs: int,
    scheduler: str | None,
) -> None:
    """Measure detection honestly: grouped protocols under phone channels, with a report."""
    from .evaluation import CONDITIONS, run
    from .report import ScoreTable, write_report

    protocols = protocols or ("shipped",)
    card = load_detector(model).card if "shipped" in protocols else None
    try:
        with _feature_engine(jobs, scheduler):
            rows = run(
                manifest=manifest,
                datasets=list(datasets) or None,
                protocols=protocols,
                conditions=conditions or CONDITIONS,
                model_path=model,
                seed=seed,
                copies=copies,
                n_jobs=-1 if scheduler else jobs,
                folds=folds,
                progress=_progress("Features"),
            )
    except VoiceCheckError as exc:
        fail(str(exc))
    if not rows:
        fail("nothing was scored: no clip of the manifest could be decoded")
    table = ScoreTable.from_records(rows)
    write_report(table, output, title="voicecheck evaluation", model_card=card)
    metrics = json.loads((Path(output) / "metrics.json").read_text())
    for protocol, block in metrics["protocols"].items():
        for condition, result in block["conditions"].items():
            p = result["pooled"]
            if p.get("eer") is None:
                click.echo(f"{protocol:24s} {condition:10s} (one class only)")
                continue
            click.echo(
                f"{protocol:24s} {condition:10s} EER {p['eer']:6.1%}  minDCF {p['min_dcf']:.3f}"
                f"  AUC {p['roc_auc']:.3f}  ({p['n_real']} real, {p['n_cloned']} cloned)"
            )
    click.echo(f"report written to {output}/report.html")
