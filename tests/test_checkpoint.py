import struct
import zipfile
from pathlib import Path

import pytest
import torch

from nerf import checkpoint
from nerf.checkpoint import FORMAT_VERSION, latest_checkpoint, load_checkpoint, save_checkpoint
from raytrace.errors import InputError


def _model_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "encoding.params": torch.randn(1000, generator=g),
        "mlp.0.weight": torch.randn(16, 32, generator=g),
    }


def _save(path: Path, step: int = 7, seed: int = 0) -> None:
    save_checkpoint(
        path,
        step=step,
        model_state=_model_state(seed),
        optimizer_state={"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.01}]},
        grid_state={"density": torch.full((4, 4, 4), 0.5)},
        config={"lr": 0.01, "betas": (0.9, 0.99), "data": "datasets/lego"},
        extra={"psnr": 31.5},
    )


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    _save(path, step=1234)
    ck = load_checkpoint(path)
    assert ck["step"] == 1234 and ck["format_version"] == FORMAT_VERSION == 4
    for key, value in _model_state(0).items():
        torch.testing.assert_close(ck["model"][key], value, rtol=0, atol=0)
    torch.testing.assert_close(ck["grid"]["density"], torch.full((4, 4, 4), 0.5))
    assert ck["optimizer"]["param_groups"][0]["lr"] == 0.01
    assert ck["config"] == {"lr": 0.01, "betas": (0.9, 0.99), "data": "datasets/lego"}
    assert ck["extra"] == {"psnr": 31.5}
    assert ck["torch_version"] == torch.__version__ and ck["nerfkit_version"] == checkpoint.nerfkit_version()


def test_nerfkit_version_is_the_installed_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint.metadata, "version", lambda name: {"nerfkit": "9.8.7"}[name])
    _save(tmp_path / "ck.pt")
    assert load_checkpoint(tmp_path / "ck.pt")["nerfkit_version"] == "9.8.7"

    def not_installed(name: str) -> str:
        raise checkpoint.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(checkpoint.metadata, "version", not_installed)
    assert checkpoint.nerfkit_version() == "unknown"


def test_damaged_tensor_bytes_are_refused(tmp_path: Path) -> None:
    """torch.load reads a flipped bit of a tensor silently; the archive's CRC-32 catches it."""
    path = tmp_path / "ck.pt"
    _save(path)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        record = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 64)
    name_len, extra_len = struct.unpack("<HH", raw[record.header_offset + 26 : record.header_offset + 30])
    raw[record.header_offset + 30 + name_len + extra_len + 8] ^= 0x10  # inside its data (a local header is 30 bytes)
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="fails its CRC check"):
        load_checkpoint(path)


def test_failed_save_leaves_previous_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ck.pt"
    _save(path, step=1)
    before = path.read_bytes()

    def broken_save(obj, f) -> None:
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save(path, step=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]  # no temporary file left behind
    assert load_checkpoint(path)["step"] == 1


def test_truncated_missing_and_foreign_files_raise_input_error(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    _save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"ck\.pt") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"state_dict": _model_state(0)}, path)  # someone else's checkpoint
    with pytest.raises(InputError, match="format_version"):
        load_checkpoint(path)
    torch.save({"format_version": 2, "step": 1, "model": {}, "config": {"data": Path("x")}}, path)
    with pytest.raises(InputError, match=r"holds a pathlib\.PosixPath object"):
        load_checkpoint(path)  # never unpickled: weights_only


def test_other_format_version_names_the_version(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    torch.save({"format_version": 7, "step": 1, "model": {}, "config": {}}, path)
    with pytest.raises(InputError) as err:
        load_checkpoint(path)
    assert "ck.pt" in str(err.value)
    assert "checkpoint format version 7, this nerfkit reads 4" in str(err.value)
    torch.save({"format_version": 1, "step": 1, "model": {}, "config": {}}, path)
    with pytest.raises(InputError, match="hash grid of another layout; train it again"):
        load_checkpoint(path)
    torch.save({"format_version": 2, "step": 1, "config": {}}, path)
    with pytest.raises(InputError, match="model"):
        load_checkpoint(path)


def test_latest_checkpoint_picks_the_highest_step(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    for step in (900, 10000, 2000):
        _save(checkpoint.checkpoint_path(tmp_path, step), step=step)
    (tmp_path / "checkpoints" / "step_9999999.pt.tmp").write_bytes(b"")  # not a checkpoint name
    (tmp_path / "checkpoints" / "notes.txt").write_text("x")
    (tmp_path / "checkpoints" / "step_50.pt").write_bytes(b"")  # unpadded: step 50, though it sorts last
    latest = latest_checkpoint(tmp_path)
    assert latest == tmp_path / "checkpoints" / "step_0010000.pt"
    assert load_checkpoint(latest)["step"] == 10000
