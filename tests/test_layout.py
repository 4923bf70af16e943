"""The rooms of the code base and the one way imports run between them.

``voicecheck.service`` -> ``voicecheck`` (the scoring path and the batch engine) ->
``voicecheck.features``; ``voicecheck.research`` may import the scoring path, never the
reverse; the features import nothing of voicecheck but its constants. Every import counts,
also those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# where each installed package lives in the source tree (pyproject's package-dir)
PACKAGES = {
    "voicecheck.features": ROOT / "features",
    "voicecheck.service": ROOT / "service",
    "voicecheck": ROOT / "voicecheck",
}


def _module_name(path: Path) -> str:
    for package, folder in PACKAGES.items():
        if path.is_relative_to(folder):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([package, *parts])
    raise AssertionError(path)


def _modules() -> dict[str, Path]:
    out = {}
    for folder in PACKAGES.values():
        for path in folder.rglob("*.py"):
            out[_module_name(path)] = path
    return out


MODULES = _modules()


def imports_of(name: str) -> set[str]:
    """Every voicecheck module that module ``name`` imports, at any depth of its code."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found.add(stem)
            # ``from package import module`` imports the module
            found |= {f"{stem}.{a.name}" for a in node.names if f"{stem}.{a.name}" in MODULES}
    return {m for m in found if m == "voicecheck" or m.startswith("voicecheck.")}


def _room(module: str) -> str:
    for room in ("voicecheck.features", "voicecheck.service", "voicecheck.research"):
        if module == room or module.startswith(room + "."):
            return room.rsplit(".", 1)[1]
    return "scoring"


# what each room may import, besides itself
ALLOWED = {
    "features": {"voicecheck.constants"},
    "scoring": {"features"},
    "research": {"scoring", "features"},
    "service": {"scoring", "features"},
}


def _allowed(source: str, target: str) -> bool:
    room, other = _room(source), _room(target)
    return room == other or other in ALLOWED[room] or target in ALLOWED[room]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module):
    wrong = sorted(t for t in imports_of(module) if not _allowed(module, t))
    assert not wrong, f"{module} ({_room(module)}) imports {wrong}"


def test_the_checker_sees_imports_inside_functions(tmp_path, monkeypatch):
    bad = ROOT / "voicecheck" / "scoring.py"
    code = bad.read_text() + "\n\ndef _late():\n    from .research import training\n"
    fake = tmp_path / "scoring.py"
    fake.write_text(code)
    monkeypatch.setitem(MODULES, "voicecheck.scoring", fake)
    assert "voicecheck.research.training" in imports_of("voicecheck.scoring")
    assert not _allowed("voicecheck.scoring", "voicecheck.research.training")


def test_about_a_dozen_modules_at_the_top():
    top = sorted(p.stem for p in (ROOT / "voicecheck").glob("*.py") if p.stem != "__init__")
    assert len(top) <= 13, top
    assert {"audio", "analysis", "model", "scoring", "explain", "errors"} <= set(top)
