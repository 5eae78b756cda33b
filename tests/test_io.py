"""save/load: round trips, and clear errors for truncated, corrupted or foreign files."""

import json
import os
import stat
import struct

import pytest
import torch
from safetensors.torch import save_file

import torchtcn


@pytest.fixture
def saved(tmp_path):
    model = torchtcn.SequenceModel(torchtcn.TCN(2, [6, 6], kernel_size=3), "per_step", 3)
    path = tmp_path / "model.safetensors"
    torchtcn.save(model, path)
    return model.eval(), path


def test_round_trip_identical_outputs(saved):
    model, path = saved
    loaded = torchtcn.load(path)
    assert not loaded.training
    x = torch.randn(2, 2, 20)
    assert torch.equal(model(x), loaded(x))
    assert loaded.config == model.config


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_round_trip_keeps_the_dtype(tmp_path, dtype):
    model = torchtcn.TCN(2, [6, 6], kernel_size=3).to(dtype).eval()
    torchtcn.save(model, tmp_path / "m.safetensors")
    loaded = torchtcn.load(tmp_path / "m.safetensors")
    assert {p.dtype for p in loaded.parameters()} == {dtype}
    x = torch.randn(2, 2, 20, dtype=dtype)
    assert torch.equal(model(x), loaded(x))


def test_save_leaves_no_temporary_files(saved):
    _, path = saved
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_saved_file_gets_the_umask_permissions(tmp_path):
    model = torchtcn.TCN(2, [4], kernel_size=2)
    old = os.umask(0o022)
    try:
        torchtcn.save(model, tmp_path / "a.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.safetensors").stat().st_mode) == 0o644  # not 0600


def test_truncated_file(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    for cut in (4, 20, len(data) // 2, len(data) - 3):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=f"cut{cut}.safetensors"):
            torchtcn.load(bad)


def test_oversized_header_length(tmp_path):
    bad = tmp_path / "huge.safetensors"
    bad.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(ValueError, match="header claims"):
        torchtcn.load(bad)


def test_corrupted_tensor_bytes_detected(saved, tmp_path):
    _, path = saved
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    # Point the first tensor past the end of the buffer.
    key = next(k for k in header if k != "__metadata__")
    header[key]["data_offsets"] = [0, 10**9]
    raw = json.dumps(header).encode()
    bad = tmp_path / "offsets.safetensors"
    bad.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(data[8 + n :]))
    with pytest.raises(ValueError, match="offsets.safetensors"):
        torchtcn.load(bad)


def test_a_flipped_weight_byte_is_detected(saved, tmp_path):
    # the structure stays valid; only the recorded SHA-256 of the data can tell
    _, path = saved
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    data[8 + n + 5] ^= 0x40
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="flipped.safetensors: corrupted tensor data"):
        torchtcn.load(bad)


def test_foreign_safetensors_file(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a torchtcn model"):
        torchtcn.load(foreign)


def test_not_a_safetensors_file(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, this is not a model at all")
    with pytest.raises(ValueError, match="notes.safetensors"):
        torchtcn.load(text)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        torchtcn.load(tmp_path / "nothing.safetensors")


def test_save_into_a_missing_folder_or_onto_a_folder(tmp_path):
    model = torchtcn.TCN(2, [4], kernel_size=2)
    with pytest.raises(FileNotFoundError, match="no folder .*nowhere"):
        torchtcn.save(model, tmp_path / "nowhere" / "m.safetensors")
    (tmp_path / "taken").mkdir()
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        torchtcn.save(model, tmp_path / "taken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing written anywhere


def test_config_with_unknown_key_or_wrong_type(saved, tmp_path):
    model, _ = saved
    spec = torchtcn.registry.model_spec(model)
    for mutate, match in [
        (lambda s: s["config"]["body"]["config"].update(kernel_sizes=3), "unknown TCNConfig key"),
        (lambda s: s["config"]["body"]["config"].update(kernel_size="3"), "kernel_size must be an int"),
        (lambda s: s.update(name="transformer"), "unknown model 'transformer'"),
    ]:
        bad_spec = json.loads(json.dumps(spec))
        mutate(bad_spec)
        bad = tmp_path / "badcfg.safetensors"
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            str(bad),
            metadata={"torchtcn_format": "1", "torchtcn_model": json.dumps(bad_spec)},
        )
        with pytest.raises(ValueError, match=match):
            torchtcn.load(bad)


def test_reserved_metadata_keys_are_refused(tmp_path):
    for key in ("torchtcn_model", "torchtcn_format", "torchtcn_sha256"):
        with pytest.raises(ValueError, match=f"{key}' is reserved"):
            torchtcn.save(torchtcn.TCN(2, [3]), tmp_path / "m.safetensors", metadata={key: "1"})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("device, match", [
    ("bogus", "device must be a torch device"),
    ("meta", "holds no data"),
    pytest.param("cuda", "CUDA is not available", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="CUDA is available here")),
])
def test_a_bad_device_is_not_called_a_bad_file(saved, device, match):
    _, path = saved
    with pytest.raises(ValueError, match=match):
        torchtcn.load(path, device=device)


def test_weights_of_another_architecture(tmp_path):
    small = torchtcn.TCN(2, [4], kernel_size=3)
    bad = tmp_path / "mismatch.safetensors"
    spec = torchtcn.registry.model_spec(torchtcn.TCN(2, [4, 4], kernel_size=3))
    save_file(
        {k: v.contiguous() for k, v in small.state_dict().items()},
        str(bad),
        metadata={"torchtcn_format": "1", "torchtcn_model": json.dumps(spec)},
    )
    with pytest.raises(ValueError, match="do not match the architecture"):
        torchtcn.load(bad)


def test_a_model_of_mixed_float_dtypes_loads_each_tensor_exactly(tmp_path):
    model = torchtcn.TCN(2, [4, 4], kernel_size=3)
    model.blocks[1].double()
    path = tmp_path / "mixed.safetensors"
    torchtcn.save(model, path)
    loaded = torchtcn.load(path)
    want, got = model.state_dict(), loaded.state_dict()
    for key, value in want.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


@pytest.mark.parametrize("norm", ["weight", "batch", None])
def test_whole_module_pickling_round_trips(norm):
    """torch.save(model) works although torch refuses to pickle weight-norm parametrizations:
    same outputs, dtype, frozen parameters and train/eval modes; no draw from the RNG."""
    import copy
    import io
    import pickle

    body = torchtcn.TCN(2, [4, 4], kernel_size=3, norm=norm)
    model = torchtcn.SequenceModel(body, head="per_step", out_features=3).double()
    model.body.blocks[0].requires_grad_(False)
    model.eval()
    model.body.blocks[1].train()
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    rng = torch.get_rng_state()
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(rng, torch.get_rng_state())
    assert [n for n, p in loaded.named_parameters() if not p.requires_grad] == \
        [n for n, p in model.named_parameters() if not p.requires_grad]
    assert {n: m.training for n, m in loaded.named_modules()} == \
        {n: m.training for n, m in model.named_modules()}
    model.eval(), loaded.eval()
    x = torch.randn(2, 2, 16, dtype=torch.float64)
    assert torch.equal(loaded(x), model(x))
    assert torch.equal(pickle.loads(pickle.dumps(body)).eval()(x), body(x))
    # deepcopy is torch's own: it keeps hooks
    calls = []
    body.register_forward_hook(lambda *args: calls.append(1))
    copy.deepcopy(body)(x)
    assert calls == [1]
    # copy.copy too: a shallow copy sharing the blocks
    assert copy.copy(body).blocks is body.blocks
    # attributes are carried; under weight norm, a tensor the config does not build refuses
    # to pickle (the rebuilt model could not hold it)
    other = torchtcn.TCN(2, [4, 4], kernel_size=3, norm=norm)
    other.tag = "run 7"
    assert pickle.loads(pickle.dumps(other)).tag == "run 7"
    if norm == "weight":
        other.extra = torch.nn.Linear(2, 2)
        with pytest.raises(pickle.PicklingError,
                           match=r"does not build \(\['extra', 'extra.bias', 'extra.weight'\]\)"):
            pickle.dumps(other)
        del other.extra
        other.head = torch.nn.ReLU()  # a submodule without tensors: was dropped silently
        with pytest.raises(pickle.PicklingError, match=r"\['head'\]"):
            pickle.dumps(other)
        del other.head
        other.skip_activation = None
        other.blocks[0].unit1.conv.bias = torch.nn.Parameter(torch.zeros(5))  # config builds 4
        with pytest.raises(pickle.PicklingError, match="blocks.0.unit1.conv.bias"):
            pickle.dumps(other)


def test_deepcopy_of_a_compiled_tcn_runs_its_own_weights():
    import copy

    model = torchtcn.TCN(2, [4], kernel_size=2, norm=None)
    model.compile(backend="eager")
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(1.0)
    x = torch.randn(1, 2, 5)
    assert not torch.equal(clone(x), model(x))  # was the original's forward, through the copy
