"""The declared training and evaluation data (``data_manifest.yaml``).

Every dataset names its root folder (environment variables are substituted, e.g.
``${VOICECHECK_SHARED:-../shared}/data/devpool``; a relative root is relative to
the manifest file), how to list its files (a CSV manifest or a glob rule), and
for each field (label, generator, speaker, source, language, licence, and optionally
family) either a constant or the CSV column that holds it. ``group_by`` names the field used to
split train from validation data: never the clip itself. A dataset derived from
another (vocoded copies of its real clips, say) names it in ``group_with``: its groups
are then that dataset's, so a copy is always on the same side of a split as its original.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ManifestError

LABELS = ("bonafide", "spoof")
FIELDS = ("label", "generator", "speaker", "source", "language", "licence")
GROUP_FIELDS = (*FIELDS, "family")
"""Fields a dataset may split by (``group_by``)."""


def generator_family(name: str) -> str:
    """Group a generator's variants and spellings into one family.

    A parenthesised variant is dropped and the rest compared without case, spaces or
    punctuation: ``"StyleTTS 2 (ablation noSD)"`` -> ``"styletts2"``, and the corpus's
    ``hifigan`` copies fall in one family with a data set's ``HiFi-GAN``. A dataset that
    knows its families better declares a ``family`` column instead.

    Examples
    --------
    >>> generator_family("StyleTTS 2 (ablation noSD)"), generator_family("HiFi-GAN")
    ('styletts2', 'hifigan')
    """
    base = re.sub(r"\s*\(.*\)\s*$", "", name).strip() or name
    return re.sub(r"[^a-z0-9+]", "", base.lower()) or base


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Clip:
    """One labelled recording declared by the manifest."""

    path: Path
    dataset: str
    label: str
    generator: str
    speaker: str
    source: str
    language: str
    licence: str
    group: str
    family: str = ""
    """Generator family (versions and variants of one model share it); ``bonafide`` for
    real clips. From the dataset's ``family`` field, else derived from the generator."""
    scored: bool = True
    """False for a dataset that trains but is never scored in cross-validated evaluation
    (``scored: false``, e.g. a corpus of classic engines that is not the threat)."""

    @property
    def y(self) -> int:
        """1 for a cloned (spoof) clip, 0 for a real one."""
        return int(self.label == "spoof")


@dataclass(frozen=True)
class Dataset:
    """One dataset entry of the manifest."""

    name: str
    root: Path
    spec: dict[str, Any]

    @property
    def optional(self) -> bool:
        """Whether a missing file list is skipped instead of being an error."""
        return bool(self.spec.get("optional", False))

    def available(self) -> bool:
        """Whether the dataset's file list (CSV) or root folder exists."""
        files = self.spec["files"]
        return (self.root / files["csv"]).exists() if "csv" in files else self.root.is_dir()

    def clips(self) -> list[Clip]:
        """List the dataset's clips."""
        files = self.spec["files"]
        if "csv" in files:
            rows = self._csv_rows(files)
        else:
            rows = [
                {"__path": str(p.relative_to(self.root))}
                for p in sorted(self.root.glob(files["glob"]))
                if p.is_file()
            ]
        clips = []
        group_by = self.spec.get("group_by", "source")
        prefix = str(self.spec.get("group_with", self.name))
        for i, row in enumerate(rows):
            values = {f: self._field(f, row, i) for f in FIELDS}
            if values["label"] not in LABELS:
                raise ManifestError(
                    f"dataset '{self.name}', row {i + 1}: label is '{values['label']}'; "
                    f"expected one of {', '.join(LABELS)}"
                )
            if values["label"] == "bonafide":
                values["family"] = "bonafide"
            elif "family" in self.spec:
                values["family"] = self._field("family", row, i) or generator_family(
                    values["generator"]
                )
            else:
                values["family"] = generator_family(values["generator"])
            path = self.root / row["__path"]
            clips.append(
                Clip(
                    path=path,
                    dataset=self.name,
                    group=f"{prefix}:{values[group_by]}",
                    scored=bool(self.spec.get("scored", True)),
                    **values,
                )
            )
        return clips

    def _csv_rows(self, files: dict[str, Any]) -> list[dict[str, str]]:
        csv_path = self.root / files["csv"]
        if not csv_path.exists():
            raise ManifestError(
                f"dataset '{self.name}': file list {csv_path} does not exist "
                "(is the data folder where the manifest says? set VOICECHECK_SHARED)"
            )
        column = files.get("path_column", "path")
        with csv_path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows and column not in rows[0]:
            raise ManifestError(
                f"dataset '{self.name}': {csv_path.name} has no column '{column}' "
                f"(files.path_column); it has {', '.join(rows[0])}"
            )
        for row in rows:
            row["__path"] = row[column]
        return rows

    def _field(self, name: str, row: dict[str, str], index: int) -> str:
        spec = self.spec.get(name, "")
        if isinstance(spec, dict):
            column = spec.get("column")
            if column not in row:
                raise ManifestError(
                    f"dataset '{self.name}', field '{name}': column '{column}' is not in the "
                    "file list"
                )
            return row[column] or str(spec.get("default", ""))
        return str(spec)


@dataclass(frozen=True)
class Manifest:
    """A loaded, validated ``data_manifest.yaml``."""

    path: Path
    text: str
    datasets: tuple[Dataset, ...]

    def dataset(self, name: str) -> Dataset:
        """Return the dataset called ``name``."""
        for d in self.datasets:
            if d.name == name:
                return d
        names = ", ".join(d.name for d in self.datasets)
        raise ManifestError(f"no dataset '{name}' in {self.path}; it declares: {names}")

    def clips(self, names: list[str] | None = None) -> list[Clip]:
        """All clips of the named datasets (all available datasets when ``names`` is None).

        A dataset marked ``optional: true`` whose file list does not exist yet is
        skipped when no names are given (see :meth:`missing_optional`).
        """
        if names:
            chosen = tuple(self.dataset(n) for n in names)
        else:
            chosen = tuple(d for d in self.datasets if d not in self.missing_optional())
        return [c for d in chosen for c in d.clips()]

    def missing_optional(self) -> tuple[Dataset, ...]:
        """Optional datasets whose file list is not there (e.g. a corpus not built yet)."""
        return tuple(d for d in self.datasets if d.optional and not d.available())

    def sha256(self, clips: list[Clip]) -> str:
        """Hash of the manifest text and of the clip list it resolves to."""
        h = hashlib.sha256(self.text.encode())
        for c in sorted(clips, key=lambda c: (c.dataset, str(c.path))):
            size = c.path.stat().st_size if c.path.exists() else -1
            h.update(f"{c.dataset}\t{c.path.name}\t{c.label}\t{c.generator}\t{size}\n".encode())
        return h.hexdigest()


def expand_vars(text: str) -> str:
    """Substitute ``${VAR}`` and ``${VAR:-default}`` from the environment."""

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value:
            return value
        if m.group(2) is not None:
            return m.group(2)
        raise ManifestError(f"environment variable {m.group(1)} is not set and has no default")

    return _VAR.sub(sub, text)


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a data manifest.

    Raises
    ------
    voicecheck.errors.ManifestError
        Naming the dataset and field that is wrong.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        doc = yaml.safe_load(text)
    except OSError as exc:
        raise ManifestError(f"cannot read data manifest {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"data manifest {path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("datasets"), list):
        raise ManifestError(f"data manifest {path} needs a top-level 'datasets' list")
    datasets = []
    seen: set[str] = set()
    for i, spec in enumerate(doc["datasets"]):
        if not isinstance(spec, dict) or not spec.get("name"):
            raise ManifestError(f"{path}: dataset #{i + 1} has no 'name'")
        name = str(spec["name"])
        if name in seen:
            raise ManifestError(f"{path}: dataset '{name}' is declared twice")
        seen.add(name)
        for key in ("root", "files", "label"):
            if key not in spec:
                raise ManifestError(f"{path}: dataset '{name}' has no '{key}'")
        files = spec["files"]
        if not isinstance(files, dict) or not ({"csv", "glob"} & set(files)):
            raise ManifestError(
                f"{path}: dataset '{name}', field 'files' needs 'csv' (a file list) or 'glob'"
            )
        group_by = spec.get("group_by", "source")
        if group_by not in GROUP_FIELDS:
            raise ManifestError(
                f"{path}: dataset '{name}', field 'group_by' is '{group_by}'; "
                f"expected one of {', '.join(GROUP_FIELDS)}"
            )
        if "group_with" in spec and spec["group_with"] not in {
            str(d.get("name")) for d in doc["datasets"] if isinstance(d, dict)
        }:
            raise ManifestError(
                f"{path}: dataset '{name}', field 'group_with' is '{spec['group_with']}', "
                "which is not a dataset of this manifest"
            )
        root = Path(expand_vars(str(spec["root"])))
        if not root.is_absolute():
            root = (path.parent / root).resolve()
        datasets.append(Dataset(name=name, root=root, spec=spec))
    return Manifest(path=path, text=text, datasets=tuple(datasets))
