"""The neural vocoder: checkpoint reading without PyTorch, the ONNX generator, copy-synthesis."""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import types

import numpy as np
import pytest
from conftest import voiced

from voicecheck.research import neural

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


# --- a legacy torch.save file, written without PyTorch ----------------------------------


class _Storage:
    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key, self.data = key, data


def _fake_torch(monkeypatch: pytest.MonkeyPatch) -> tuple[type, object]:
    """Modules named like PyTorch's, so that pickle writes the globals a checkpoint has."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"

    def _rebuild_tensor_v2(*args: object) -> None:  # pragma: no cover - never called
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage = FloatStorage  # type: ignore[attr-defined]
    torch._utils = utils  # type: ignore[attr-defined]
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return FloatStorage, _rebuild_tensor_v2


def write_legacy_checkpoint(
    path, tree: dict, tensors: dict[str, tuple[str, int, tuple, tuple]], storages, monkeypatch
) -> None:
    """Write ``tree`` the way ``torch.save(..., _use_new_zipfile_serialization=False)`` does.

    ``tensors`` maps a leaf name to (storage key, offset, size, stride); ``storages`` maps
    a storage key to its float32 data.
    """
    storage_type, rebuild = _fake_torch(monkeypatch)

    class Tensor:
        def __init__(self, key, offset, size, stride):
            self.args = (
                _Storage(key, storages[key]),
                offset,
                size,
                stride,
                False,
                collections.OrderedDict(),
            )

        def __reduce__(self):
            return rebuild, self.args

    def to_tensors(node):
        if isinstance(node, dict):
            return collections.OrderedDict((k, to_tensors(v)) for k, v in node.items())
        if isinstance(node, str) and node in tensors:
            return Tensor(*tensors[node])
        return node

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", storage_type, obj.key, "cpu", obj.data.size)
            return None

    buf = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, buf, protocol=2)
    pickle.dump(1001, buf, protocol=2)
    pickle.dump({"little_endian": True}, buf, protocol=2)
    Pickler(buf, protocol=2).dump(to_tensors(tree))
    pickle.dump(list(storages), buf, protocol=2)
    for data in storages.values():
        buf.write(struct.pack("<q", data.size))
        buf.write(np.asarray(data, "<f4").tobytes())
    path.write_bytes(buf.getvalue())


def test_checkpoint_reader_rebuilds_tensors_views_and_offsets(tmp_path, monkeypatch):
    a = np.arange(12, dtype=np.float32)
    b = np.linspace(-1, 1, 5, dtype=np.float32)
    path = tmp_path / "g.pth.tar"
    write_legacy_checkpoint(
        path,
        {"generator": {"w": "w", "w_t": "w_t", "tail": "tail", "b": "b"}, "steps": 7},
        {
            "w": ("0", 0, (3, 4), (4, 1)),
            "w_t": ("0", 0, (4, 3), (1, 4)),  # a transposed view of the same storage
            "tail": ("0", 8, (4,), (1,)),  # an offset into it
            "b": ("1", 0, (5,), (1,)),
        },
        {"0": a, "1": b},
        monkeypatch,
    )
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.delitem(sys.modules, "torch._utils")
    out = neural.load_checkpoint(path)
    assert out["steps"] == 7
    g = out["generator"]
    np.testing.assert_array_equal(g["w"], a.reshape(3, 4))
    np.testing.assert_array_equal(g["w_t"], a.reshape(3, 4).T)
    np.testing.assert_array_equal(g["tail"], a[8:])
    np.testing.assert_array_equal(g["b"], b)
    g["w"][0, 0] = 99.0  # each tensor owns its memory
    assert g["w_t"][0, 0] == 0.0


def test_checkpoint_reader_never_runs_code_from_the_file(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return os.system, ("touch " + str(tmp_path / "pwned"),)

    buf = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, buf, protocol=2)
    pickle.dump(1001, buf, protocol=2)
    pickle.dump({}, buf, protocol=2)
    pickle.dump({"generator": Evil()}, buf, protocol=2)
    path = tmp_path / "evil.pth.tar"
    path.write_bytes(buf.getvalue())
    with pytest.raises(neural.CheckpointError, match="not trusted"):
        neural.load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_reader_refuses_other_files(tmp_path):
    path = tmp_path / "x.pth.tar"
    path.write_bytes(b"PK\x03\x04 a zip-format checkpoint or anything else")
    with pytest.raises(neural.CheckpointError, match="legacy PyTorch"):
        neural.load_checkpoint(path)


# --- the generator graph against a plain numpy forward pass -----------------------------

TINY = {
    "resblock": "1",
    "upsample_rates": [2, 2],
    "upsample_kernel_sizes": [4, 4],
    "upsample_initial_channel": 8,
    "resblock_kernel_sizes": [3, 5],
    "resblock_dilation_sizes": [[1, 3], [1, 2]],
}


def _tiny_weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    w: dict[str, np.ndarray] = {}

    def layer(name, out_ch, in_ch, k, transpose=False):
        shape = (in_ch, out_ch, k) if transpose else (out_ch, in_ch, k)
        w[f"{name}.weight_v"] = rng.standard_normal(shape).astype(np.float32)
        w[f"{name}.weight_g"] = rng.uniform(0.5, 1.5, (shape[0], 1, 1)).astype(np.float32)
        w[f"{name}.bias"] = (0.1 * rng.standard_normal(out_ch)).astype(np.float32)

    ch = TINY["upsample_initial_channel"]
    layer("conv_pre", ch, neural.N_MELS, 7)
    n_k = len(TINY["resblock_kernel_sizes"])
    for i, k in enumerate(TINY["upsample_kernel_sizes"]):
        layer(f"ups.{i}", ch // 2, ch, k, transpose=True)
        ch //= 2
        for j, (rk, dils) in enumerate(
            zip(TINY["resblock_kernel_sizes"], TINY["resblock_dilation_sizes"], strict=True)
        ):
            for m in range(len(dils)):
                layer(f"resblocks.{i * n_k + j}.convs1.{m}", ch, ch, rk)
                layer(f"resblocks.{i * n_k + j}.convs2.{m}", ch, ch, rk)
    layer("conv_post", 1, ch, 7)
    return w


def _conv(x, w, b, dilation=1):
    out_ch, in_ch, k = w.shape
    pad = (k * dilation - dilation) // 2
    xp = np.pad(x, ((0, 0), (pad, pad)))
    n = x.shape[1]
    y = np.tile(b[:, None], (1, n)).astype(np.float64)
    for t in range(k):
        y += w[:, :, t] @ xp[:, t * dilation : t * dilation + n]
    return y


def _conv_transpose(x, w, b, stride, pad):
    in_ch, out_ch, k = w.shape
    n = x.shape[1]
    full = np.zeros((out_ch, (n - 1) * stride + k))
    for i in range(n):
        full[:, i * stride : i * stride + k] += np.einsum("c,cok->ok", x[:, i], w)
    return full[:, pad : full.shape[1] - pad] + b[:, None]


def _lrelu(x, slope=0.1):
    return np.where(x > 0, x, slope * x)


def _reference(weights, mel):
    fold = lambda n: neural.fold_weight_norm(weights, n).astype(np.float64)  # noqa: E731
    x = _conv(mel, fold("conv_pre"), weights["conv_pre.bias"])
    n_k = len(TINY["resblock_kernel_sizes"])
    rates = zip(TINY["upsample_rates"], TINY["upsample_kernel_sizes"], strict=True)
    for i, (u, k) in enumerate(rates):
        x = _conv_transpose(_lrelu(x), fold(f"ups.{i}"), weights[f"ups.{i}.bias"], u, (k - u) // 2)
        total = 0
        for j, dils in enumerate(TINY["resblock_dilation_sizes"]):
            r = x
            for m, d in enumerate(dils):
                name = f"resblocks.{i * n_k + j}"
                t = _conv(
                    _lrelu(r), fold(f"{name}.convs1.{m}"), weights[f"{name}.convs1.{m}.bias"], d
                )
                t = _conv(_lrelu(t), fold(f"{name}.convs2.{m}"), weights[f"{name}.convs2.{m}.bias"])
                r = r + t
            total = total + r
        x = total / n_k
    x = _conv(_lrelu(x, 0.01), fold("conv_post"), weights["conv_post.bias"])
    return np.tanh(x)[0]


def test_onnx_generator_equals_the_numpy_forward_pass(rng):
    weights = _tiny_weights(rng)
    model = neural.build_graph(weights, TINY)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    mel = (0.3 * rng.standard_normal((neural.N_MELS, 9))).astype(np.float32)
    out = session.run(None, {"mel": mel[None]})[0][0, 0]
    assert out.shape == (9 * 4,)  # frames times the product of the upsampling rates
    np.testing.assert_allclose(out, _reference(weights, mel.astype(np.float64)), atol=2e-4)


def test_only_resblock_type_1_generators_are_built(rng):
    with pytest.raises(neural.CheckpointError, match="resblock"):
        neural.build_graph(_tiny_weights(rng), {**TINY, "resblock": "2"})


def test_weight_norm_folding_gives_rows_of_norm_g(rng):
    weights = {
        "c.weight_v": rng.standard_normal((3, 2, 5)).astype(np.float32),
        "c.weight_g": np.array([1.0, 2.0, 0.5], np.float32).reshape(3, 1, 1),
    }
    w = neural.fold_weight_norm(weights, "c")
    np.testing.assert_allclose(np.sqrt((w**2).sum(axis=(1, 2))), [1.0, 2.0, 0.5], rtol=1e-6)


# --- copy-synthesis with the shipped weights ---------------------------------------------

needs_weights = pytest.mark.skipif(neural.missing() is not None, reason=str(neural.missing()))


@needs_weights
def test_hifigan_copy_keeps_pitch_length_and_envelope():
    from voicecheck.research.vocoders import resynthesize

    sr = 16_000
    y = voiced(1.5, sr=sr, f0=150.0)
    out = resynthesize(y, sr=sr, method="hifigan")
    assert out.shape == y.shape and out.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(out[sr // 4 : -sr // 4]))
    freqs = np.fft.rfftfreq(out[sr // 4 : -sr // 4].size, 1 / sr)
    low = freqs < 400
    assert abs(freqs[low][spectrum[low].argmax()] - 150.0) < 8.0

    def bands(s: np.ndarray) -> np.ndarray:
        magnitude = np.abs(np.fft.rfft(s))
        return np.log([magnitude[a : a + 600].sum() + 1e-9 for a in range(0, 12000, 600)])

    assert np.corrcoef(bands(y), bands(out))[0, 1] > 0.8
    assert not np.allclose(out, y, atol=1e-3)  # a new waveform, not the input


@needs_weights
def test_hifigan_refuses_an_unknown_model():
    from voicecheck.research.vocoders import resynthesize

    with pytest.raises(ValueError, match="universal"):
        resynthesize(voiced(0.5, sr=16_000), sr=16_000, method="hifigan", model="vits")
