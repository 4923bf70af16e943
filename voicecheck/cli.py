"""The ``voicecheck`` command line."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from . import __version__
from .batch import FILES_PER_TASK, FLUSH_S, PART_ROWS
from .constants import MAX_DURATION_S
from .errors import VoiceCheckError

FORMATS = ("table", "json", "csv")
CSV_COLUMNS = (
    "path",
    "score",
    "verdict",
    "error",
    "error_code",
    "duration_s",
    "container",
    "codec",
    "sample_rate",
    "channels",
    "channel_scores",
    "segments",
    "model_id",
)


def fail(message: str, code: int = 1) -> None:
    """Print ``message`` as an error on standard error and exit with ``code``."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def load_detector(model: str | None):
    """Load the model file ``model`` (the shipped one for None), or exit with its error."""
    from .model import load_model

    try:
        return load_model(model)
    except VoiceCheckError as exc:
        fail(str(exc))


model_option = click.option(
    "--model",
    envvar="VOICECHECK_MODEL",
    type=click.Path(path_type=str),
    help="A .skops model file (default: the model shipped with voicecheck).",
)
max_duration_option = click.option(
    "--max-duration",
    type=click.FloatRange(min=1),
    default=MAX_DURATION_S,
    show_default=True,
    envvar="VOICECHECK_MAX_DURATION_S",
    help="Longest recording accepted, in seconds.",
)
jobs_option = click.option(
    "--jobs", default=-1, show_default=True, type=int, help="Worker processes."
)
feature_scheduler_option = click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Compute features on the Dask cluster of this scheduler (tcp://host:port; --jobs "
    "is then ignored); its workers need voicecheck and must see the clips at these paths.",
)


COMMAND_GROUP = "voicecheck.commands"
"""Entry-point group through which research and the service add their commands."""


class _Commands(click.Group):
    """The commands defined here, and those registered under :data:`COMMAND_GROUP`.

    Registered commands (``train``, ``evaluate``, ``corpus``, ``serve``, ...) are imported
    only when they are run or listed, so that scoring a file imports neither the research
    code nor the web service, and this module imports neither.
    """

    @staticmethod
    def _registered() -> dict[str, metadata.EntryPoint]:
        return {ep.name: ep for ep in metadata.entry_points(group=COMMAND_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._registered()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and (entry := self._registered().get(cmd_name)) is not None:
            command = entry.load()
        return command


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="voicecheck")
def main() -> None:
    """Tell whether the voice in a recorded call is a real person or an AI clone."""


def _read_list(path: str) -> list[str]:
    from .batch import read_list

    try:
        return list(read_list(path))
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}") from None


def _row(path: str, result: dict[str, Any] | None, error: VoiceCheckError | None) -> dict:
    if error is not None:
        return {
            "path": path,
            "score": None,
            "verdict": None,
            "error": str(error),
            "error_code": error.code,
        }
    assert result is not None
    return {"path": path, **result, "error": None}


@main.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=True, path_type=str))
@click.option(
    "--input-list",
    "input_list",
    type=click.Path(path_type=str),
    help="A file with one recording path a line ('-' reads standard input).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=str),
    help="Write results here instead of standard output.",
)
@click.option("--segments", is_flag=True, help="Include the score of every 3 s window.")
@model_option
@max_duration_option
def score(
    files: tuple[str, ...],
    input_list: str | None,
    fmt: str,
    output: str | None,
    segments: bool,
    model: str | None,
    max_duration: float,
) -> None:
    """Score recordings: how likely each voice is an AI clone.

    Prints one result per FILE. A file that cannot be scored gets its error and
    the command goes on; the exit status is 1 if any file failed.
    """
    from .scoring import analyze

    paths = list(files) + (_read_list(input_list) if input_list else [])
    if not paths:
        raise click.UsageError("give at least one FILE or --input-list")
    detector = load_detector(model)
    rows: list[dict[str, Any]] = []
    progress = (
        click.progressbar(paths, label="Scoring", file=sys.stderr, show_pos=True)
        if len(paths) > 1
        else contextlib.nullcontext(paths)
    )
    with progress as iterator:
        for path in iterator:
            try:
                result = analyze(path, detector, max_duration_s=max_duration)
                rows.append(_row(path, result.to_dict(segments=segments), None))
            except VoiceCheckError as exc:
                rows.append(_row(path, None, exc))
    text = {"table": _table, "json": _json, "csv": _csv}[fmt](rows, segments=segments)
    if output:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror}")
    else:
        click.echo(text, nl=False)
    if any(r["error"] for r in rows):
        failed = sum(1 for r in rows if r["error"])
        click.echo(f"{failed} of {len(rows)} file(s) could not be scored", err=True)
        sys.exit(1)


def _fmt_score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _table(rows: list[dict[str, Any]], *, segments: bool) -> str:
    out = io.StringIO()
    width = max(8, min(60, max(len(r["path"]) for r in rows)))
    out.write(f"{'FILE':<{width}}  {'SCORE':>5}  {'VERDICT':<13}  {'DURATION':>8}  DETAILS\n")
    for r in rows:
        name = r["path"] if len(r["path"]) <= width else "..." + r["path"][-width + 3 :]
        if r["error"]:
            out.write(f"{name:<{width}}  {'-':>5}  {'error':<13}  {'-':>8}  {r['error']}\n")
            continue
        a = r["audio"]
        details = f"{a['codec']} {a['sample_rate']} Hz"
        if a["channels"] > 1:
            per = ", ".join(f"ch{c['channel']}={_fmt_score(c['score'])}" for c in r["channels"])
            details += f", {a['channels']} channels ({per})"
        out.write(
            f"{name:<{width}}  {r['score']:>5.3f}  {r['verdict']:<13}  "
            f"{a['duration_s']:>7.1f}s  {details}\n"
        )
        if segments:
            for c in r["channels"]:
                for s in c.get("segments", []):
                    out.write(
                        f"{'':<{width}}    ch{c['channel']} {s['start_s']:7.2f}-{s['end_s']:7.2f}s"
                        f"  {_fmt_score(s['score'])}\n"
                    )
    return out.getvalue()


def _json(rows: list[dict[str, Any]], *, segments: bool) -> str:
    return json.dumps(rows, indent=2) + "\n"


def _csv(rows: list[dict[str, Any]], *, segments: bool) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        a = r.get("audio") or {}
        writer.writerow(
            {
                "path": r["path"],
                "score": "" if r["score"] is None else r["score"],
                "verdict": r["verdict"] or "",
                "error": r["error"] or "",
                "error_code": r.get("error_code") or "",
                "duration_s": a.get("duration_s", ""),
                "container": a.get("container", ""),
                "codec": a.get("codec", ""),
                "sample_rate": a.get("sample_rate", ""),
                "channels": a.get("channels", ""),
                "channel_scores": ";".join(_fmt_score(c["score"]) for c in r.get("channels", [])),
                "segments": ";".join(
                    f"{c['channel']}:{s['start_s']}-{s['end_s']}:{_fmt_score(s['score'])}"
                    for c in r.get("channels", [])
                    for s in c.get("segments", [])
                )
                if segments
                else "",
                "model_id": (r.get("model") or {}).get("id", ""),
            }
        )
    return out.getvalue()


class _StopRequest:
    """Turns SIGINT and SIGTERM into a stop request the batch polls; a second one aborts."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        click.echo(
            "\nstopping: writing the finished results (signal again to stop at once)", err=True
        )

    def __enter__(self) -> _StopRequest:
        import signal

        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _batch_progress(every_s: float):
    tty = sys.stderr.isatty()
    state = {"shown": 0.0}

    def show(stats) -> None:
        now = stats.elapsed_s
        if now - state["shown"] < every_s:
            return
        state["shown"] = now
        if tty:
            click.echo(f"\r{stats.line()}\x1b[K", err=True, nl=False)
        else:
            click.echo(stats.line(), err=True)

    return show


@main.command()
@click.argument("input_", metavar="INPUT", type=str)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(path_type=str),
    help="OUT: a .csv file, or a .parquet folder of part files; appended to, and resumed.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet"]),
    help="Output format (default: from the suffix of OUT).",
)
@click.option(
    "--pattern",
    "patterns",
    multiple=True,
    metavar="GLOB",
    help="Only files whose name matches, e.g. '*.wav' (repeatable; a folder INPUT only).",
)
@model_option
@max_duration_option
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Processes of the local Dask cluster, one thread each (default: one per core).",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Run on the Dask cluster of this scheduler (tcp://host:port) instead of a local "
    "one; its workers need voicecheck and must see the files and the model at these paths.",
)
@click.option(
    "--files-per-task",
    type=click.IntRange(min=1),
    default=FILES_PER_TASK,
    show_default=True,
    help="Files one Dask task scores.",
)
@click.option("--restart", is_flag=True, help="Delete what OUT holds and score everything.")
@click.option(
    "--retry-errors",
    is_flag=True,
    help="Score again the files OUT has error rows for (the old rows are removed).",
)
@click.option(
    "--flush-seconds",
    type=click.FloatRange(min=0.01),
    default=FLUSH_S,
    show_default=True,
    help="Seconds between durable writes: fsync of the CSV, a new Parquet part.",
)
@click.option(
    "--part-rows",
    type=click.IntRange(min=1),
    default=PART_ROWS,
    show_default=True,
    help="Most rows in one Parquet part file.",
)
def batch(
    input_: str,
    output: str,
    fmt: str | None,
    patterns: tuple[str, ...],
    model: str | None,
    max_duration: float,
    workers: int | None,
    scheduler: str | None,
    files_per_task: int,
    restart: bool,
    retry_errors: bool,
    flush_seconds: float,
    part_rows: int,
) -> None:
    """Score every recording of INPUT on a Dask cluster; one row per file in OUT.

    INPUT is a folder (walked recursively; hidden files skipped) or a file with one
    path a line ('-' reads standard input). Running the same command again resumes:
    files OUT already holds are skipped. The exit status is 1 if any file failed (or a
    folder could not be read), 130 or 143 when stopped by Ctrl-C or SIGTERM (run it
    again to go on).
    """
    import os

    from . import batch as engine

    if workers is not None and scheduler is not None:
        raise click.UsageError("give --workers (a local cluster) or --scheduler, not both")
    unreadable: list[str] = []

    def skip_folder(folder: str, exc: OSError) -> None:
        unreadable.append(folder)
        click.echo(f"warning: cannot read folder {folder}: {exc.strerror}; skipped", err=True)

    try:
        fmt = engine.format_for(output, fmt)
        paths = engine.input_paths(
            input_, patterns=patterns, exclude=os.path.abspath(output), on_error=skip_folder
        )
    except VoiceCheckError as exc:
        raise click.UsageError(str(exc)) from None
    model_path = os.path.abspath(model) if model else None
    model_id = load_detector(model_path).model_id
    try:
        out = engine.open_output(
            output,
            fmt=fmt,
            model_id=model_id,
            restart=restart,
            retry_errors=retry_errors,
            flush_s=flush_seconds,
            part_rows=part_rows,
        )
    except engine.BatchOutputError as exc:
        fail(str(exc), 2)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    for note in out.notes:
        click.echo(note, err=True)
    progress = _batch_progress(0.5 if sys.stderr.isatty() else 10.0)
    try:
        with (
            _StopRequest() as stop,
            engine.DaskEngine(scheduler=scheduler, workers=workers) as cluster,
            out,
        ):
            stats = engine.run_batch(
                paths,
                out,
                client=cluster.client,
                model=model_path,
                model_id=model_id,
                max_duration_s=max_duration,
                files_per_task=files_per_task,
                window=engine.TASKS_PER_THREAD * cluster.threads(),
                stop=stop,
                progress=progress,
            )
    except VoiceCheckError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        click.echo("\nstopped at once; run the same command again to go on", err=True)
        sys.exit(130)
    if sys.stderr.isatty():
        click.echo("", err=True)
    click.echo(engine.summary_line(stats, output), err=True)
    if stop.signum is not None:
        click.echo("interrupted: run the same command again to go on", err=True)
        sys.exit(128 + stop.signum)
    if stats.failed or unreadable:
        sys.exit(1)


@main.command()
@click.option(
    "--model",
    envvar="VOICECHECK_MODEL",
    type=click.Path(path_type=str),
    help="A .skops model file (default: the shipped model).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole model card as JSON.")
def info(model: str | None, as_json: bool) -> None:
    """Print the model card: what the model is, how it was trained and measured."""
    detector = load_detector(model)
    card = detector.card
    if as_json:
        click.echo(json.dumps(card, indent=2))
        return
    pooled = card.get("metrics", {}).get("pooled", {})
    t = card["thresholds"]
    lines = [
        f"model            {card['model_id']}",
        f"created          {card.get('created', '?')}",
        f"trained with     voicecheck {card['library_versions'].get('voicecheck')}, "
        f"scikit-learn {card['library_versions'].get('scikit-learn')}",
        f"features         {len(card['feature_names'])} per "
        f"{card['feature_params']['SEGMENT_S']:g} s segment at "
        f"{card['feature_params']['ANALYSIS_SR_HZ']} Hz",
        f"data             {', '.join(card.get('data_manifest', {}).get('datasets', []))} "
        f"(manifest sha256 {card.get('data_manifest', {}).get('sha256', '?')[:16]}...)",
        f"thresholds       likely_cloned >= {t['cloned']:.3f}; likely_human < {t['human']:.3f}"
        f"; EER threshold {t['eer']:.3f}",
        f"validation       {card.get('metrics', {}).get('protocol', '?')}",
        f"                 EER {pooled.get('eer', float('nan')):.1%}, "
        f"minDCF {pooled.get('min_dcf', float('nan')):.3f}, "
        f"ROC AUC {pooled.get('roc_auc', float('nan')):.3f} "
        f"({pooled.get('n_real', 0)} real, {pooled.get('n_cloned', 0)} cloned clips)",
    ]
    promise = card.get("metrics", {}).get("verdict_promise")
    if promise:
        fa, miss = promise["real_called_cloned"], promise["cloned_called_human"]
        lines.append(
            f"verdicts         on sites it never saw ({promise['n_sites']}): real voices called "
            f"likely_cloned {fa['rate']:.1%} [{fa['low']:.1%}-{fa['high']:.1%}], cloned "
            f"called likely_human {miss['rate']:.1%} [{miss['low']:.1%}-{miss['high']:.1%}]"
            " (95% bootstrap over sites)"
        )
    click.echo("\n".join(lines))


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--text",
    default="This is an automated message about the election on Tuesday. "
    "Your polling place has changed. Please stay home and vote next week instead.",
    show_default=False,
    help="What the synthetic voice says.",
)
def sample(path: str, text: str) -> None:
    """Write a sample robocall to PATH: espeak-ng speech through G.711 mu-law at 8 kHz.

    The voice is synthetic, so a good model should not call it human.
    """
    from .samples import robocall

    try:
        robocall(path, text=text)
    except VoiceCheckError as exc:
        fail(str(exc))
    click.echo(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
