"""The restricted .pth reader: torch.save'd tensors come back exactly, pickled code never runs."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest

from llama_local.errors import ModelFormatError, UnsafeCheckpointError
from llama_local.formats.pth_io import load_pth, load_state_dict

torch = pytest.importorskip("torch", reason="torch is needed to write the test checkpoints")


def test_tensors_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 10, generator=g)
    sd = {
        "bf16": torch.randn(5, 7, generator=g).bfloat16(),
        "f16": torch.randn(3, generator=g).half(),
        "f32": base,
        "f64": torch.randn(2, 2, generator=g).double(),
        "i64": torch.arange(12).reshape(3, 4),
        "i8": torch.tensor([-3, 0, 7], dtype=torch.int8),
        "bool": torch.tensor([True, False]),
        "fp8": torch.randn(8, generator=g).to(torch.float8_e4m3fn),
        "transposed": base.t(),  # non-contiguous strides
        "offset_slice": base[2:5, 1::3],  # storage offset + step
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "sd.pth"
    torch.save(sd, path)
    out = load_state_dict(path)
    assert set(out) == set(sd)
    for name, t in sd.items():
        a = out[name]
        assert a.shape == tuple(t.shape), name
        if t.is_floating_point():
            np.testing.assert_array_equal(a.astype(np.float64), t.double().numpy(), err_msg=name)
        else:
            np.testing.assert_array_equal(a, t.numpy(), err_msg=name)
    assert str(out["bf16"].dtype) == "bfloat16" and str(out["fp8"].dtype) == "float8_e4m3fn"
    assert not out["f32"].flags.writeable  # a view of the mapped file, not a copy
    # Views of one storage share memory, as in torch.
    assert np.shares_memory(out["f32"], out["transposed"])


def test_nested_objects_and_parameters(tmp_path):
    obj = {"model": {"w": torch.nn.Parameter(torch.ones(2, 2))}, "step": 7, "names": ["a", "b"]}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    loaded = load_pth(path)
    assert loaded["step"] == 7 and loaded["names"] == ["a", "b"]
    np.testing.assert_array_equal(loaded["model"]["w"], np.ones((2, 2), np.float32))
    assert list(load_state_dict(path)) == ["w"]


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_pth(path, payload):
    """A real torch zip checkpoint whose data.pkl also carries `payload`."""
    torch.save({"w": torch.ones(2)}, path)
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in entries if n.endswith("data.pkl"))
    entries[pkl] = pickle.dumps({"w": payload}, protocol=2)
    path.unlink()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for n, data in entries.items():
            z.writestr(n, data)


def test_pickle_that_runs_a_command_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    _malicious_pth(path, _RunsShell(marker))
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os|nt)\.system"):
        load_pth(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [print, eval, np.load])
def test_other_globals_are_refused(tmp_path, payload):
    path = tmp_path / "evil.pth"
    _malicious_pth(path, payload)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        load_pth(path)


def test_truncated_shard_names_the_file(tmp_path):
    path = tmp_path / "consolidated.00.pth"
    torch.save({"w": torch.randn(64, 64)}, path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 100):
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFormatError, match="consolidated.00.pth"):
            load_pth(path)


def test_storage_bytes_cut_short_is_detected(tmp_path):
    path = tmp_path / "short.pth"
    torch.save({"w": torch.randn(16)}, path)
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    key = next(n for n in entries if "/data/" in n and not n.endswith("serialization_id"))
    entries[key] = entries[key][:20]
    path.unlink()
    with zipfile.ZipFile(path, "w") as z:
        for n, d in entries.items():
            z.writestr(n, d)
    with pytest.raises(ModelFormatError, match="declares 16"):
        load_pth(path)


def test_not_a_checkpoint(tmp_path):
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ModelFormatError, match="legacy"):
        load_pth(legacy)
    with pytest.raises(ModelFormatError, match="no such"):
        load_pth(tmp_path / "missing.pth")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty"):
        load_pth(empty)
    notdict = tmp_path / "list.pth"
    torch.save([torch.ones(1)], notdict)
    with pytest.raises(ModelFormatError, match="dict of tensors"):
        load_state_dict(notdict)
