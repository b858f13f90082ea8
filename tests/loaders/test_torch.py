from __future__ import annotations

import collections
from pathlib import Path

import pytest
import torch

import modelseal
from modelseal.crypto import ContentKey
from modelseal.errors import LoaderError

KEY = ContentKey(bytes(32))


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.fc = torch.nn.Linear(8 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_state_dict_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = Net()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    modelseal.seal(tmp_path / "net.pt", tmp_path / "net.mseal", key=KEY, chunk_size=1024)
    assert modelseal.inspect(tmp_path / "net.mseal").framework == "torch"
    sd = modelseal.load(tmp_path / "net.mseal", key=KEY)
    for k, v in net.state_dict().items():
        assert torch.equal(sd[k], v)
    clone = Net()
    clone.load_state_dict(sd)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(clone(x), net(x))


class Custom:
    def __init__(self) -> None:
        self.secret = 42


def test_weights_only_by_default_and_pickle_only_on_request(tmp_path: Path) -> None:
    torch.save({"obj": Custom(), "w": torch.ones(2)}, tmp_path / "c.pt")
    modelseal.seal(tmp_path / "c.pt", tmp_path / "c.mseal", key=KEY)
    with pytest.raises(LoaderError, match="weights_only=False"):
        modelseal.load(tmp_path / "c.mseal", key=KEY, framework="torch")
    with pytest.warns(modelseal.UnsafePickleWarning):
        full = modelseal.load(tmp_path / "c.mseal", key=KEY, framework="torch", weights_only=False)
    assert full["obj"].secret == 42


def test_ordered_dicts_and_nested_containers_load_weights_only(tmp_path: Path) -> None:
    ckpt = {"model": collections.OrderedDict(w=torch.ones(3)), "epoch": 3, "lr": [0.1, 0.01]}
    torch.save(ckpt, tmp_path / "k.pt")
    modelseal.seal(tmp_path / "k.pt", tmp_path / "k.mseal", key=KEY)
    out = modelseal.load(tmp_path / "k.mseal", key=KEY, framework="torch")
    assert out["epoch"] == 3 and torch.equal(out["model"]["w"], torch.ones(3))


def test_torchscript_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = Net().eval()
    torch.jit.script(net).save(str(tmp_path / "net.ts"))
    modelseal.seal(tmp_path / "net.ts", tmp_path / "ts.mseal", key=KEY)
    assert modelseal.inspect(tmp_path / "ts.mseal").framework == "torchscript"
    with pytest.warns(modelseal.UnsafeCodeWarning, match="TorchScript"):
        module = modelseal.load(tmp_path / "ts.mseal", key=KEY, framework="torchscript")
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(module(x), net(x))


class _FileWriter(torch.nn.Module):
    """A TorchScript module whose ``__setstate__`` creates a file when the archive loads.

    ``torch.from_file(..., shared=True)`` opens the path with O_CREAT: a stand-in
    for what the review did (a ``.pth`` in a site directory, run by Python later).
    """

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.t = torch.zeros(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.t.sum()

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.target = state[0]
        self.training = state[1]
        self.t = torch.from_file(self.target, shared=True, size=16, dtype=torch.uint8).float()


@pytest.fixture
def hostile_torchscript(tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "written-by-the-model"
    torch.jit.script(_FileWriter(str(target))).save(str(tmp_path / "evil.pt"))
    assert not target.exists()
    return tmp_path / "evil.pt", target


@pytest.mark.parametrize("hint", [None, "torch", "bytes"])
def test_torchscript_never_runs_unless_asked_for_by_name(
    tmp_path: Path, hostile_torchscript: tuple[Path, Path], hint: str | None
) -> None:
    """Regression (#8 item 1): a TorchScript archive sealed with the automatic hint
    (or a hint lying that it is a checkpoint) ran its code under framework='torch'."""
    src, target = hostile_torchscript
    sealed = tmp_path / f"evil-{hint}.mseal"
    modelseal.seal(src, sealed, key=KEY, framework=hint)
    if hint is None:
        assert modelseal.inspect(sealed).framework == "torchscript"
    for kwargs in ({}, {"framework": "torch"}, {"framework": "torch", "weights_only": False}):
        if hint == "bytes" and not kwargs:
            continue  # the default for a bytes hint returns bytes and runs nothing
        with pytest.raises(modelseal.CodeExecutionRefusedError, match="torchscript"):
            modelseal.load(sealed, key=KEY, **kwargs)
        assert not target.exists(), kwargs
    with modelseal.open(sealed, key=KEY) as m, pytest.raises(modelseal.CodeExecutionRefusedError):
        m.load("torch")
    assert not target.exists()
    # the test's archive does what it claims: asked for by name, its code runs
    with pytest.warns(modelseal.UnsafeCodeWarning):
        modelseal.load(sealed, key=KEY, framework="torchscript")
    assert target.exists()


def test_garbage_checkpoint_is_a_loader_error(tmp_path: Path) -> None:
    (tmp_path / "g.pt").write_bytes(b"\x80\x02not a checkpoint")
    modelseal.seal(tmp_path / "g.pt", tmp_path / "g.mseal", key=KEY)
    with pytest.raises(LoaderError):
        modelseal.load(tmp_path / "g.mseal", key=KEY, framework="torch")


def test_framework_that_does_not_fit_the_model(tmp_path: Path) -> None:
    torch.save({"w": torch.ones(1)}, tmp_path / "w.pt")
    modelseal.seal(tmp_path / "w.pt", tmp_path / "w.mseal", key=KEY)
    with pytest.raises(LoaderError, match="cannot be loaded as 'numpy'"):
        modelseal.load(tmp_path / "w.mseal", key=KEY, framework="numpy")
    with pytest.raises(modelseal.UnsupportedAlgorithmError):
        modelseal.load(tmp_path / "w.mseal", key=KEY, framework="tensorflow")


def test_tampered_checkpoint_raises_integrity_error_not_a_torch_error(tmp_path: Path) -> None:
    torch.save({f"w{i}": torch.randn(300) for i in range(20)}, tmp_path / "t.pt")
    modelseal.seal(tmp_path / "t.pt", tmp_path / "t.mseal", key=KEY, chunk_size=1024)
    blob = bytearray((tmp_path / "t.mseal").read_bytes())
    for pos in (len(blob) // 2, len(blob) - 5):
        bad = bytearray(blob)
        bad[pos] ^= 0x40
        (tmp_path / "bad.mseal").write_bytes(bytes(bad))
        with pytest.raises(modelseal.ChunkIntegrityError):
            modelseal.load(tmp_path / "bad.mseal", key=KEY, framework="torch")


def test_many_small_tensors_read_each_chunk_about_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelseal.sealed import SealedReader

    torch.save({f"w{i}": torch.randn(50) for i in range(400)}, tmp_path / "s.pt")
    modelseal.seal(tmp_path / "s.pt", tmp_path / "s.mseal", key=KEY, chunk_size=4096)
    opened: list[int] = []
    real = SealedReader._open_chunk

    def spy(self: SealedReader, index: int, out: memoryview) -> None:
        opened.append(index)
        real(self, index, out)

    monkeypatch.setattr(SealedReader, "_open_chunk", spy)
    sd = modelseal.load(tmp_path / "s.mseal", key=KEY, framework="torch")
    assert len(sd) == 400
    chunks = modelseal.inspect(tmp_path / "s.mseal").chunk_count
    assert set(opened) == set(range(chunks))  # everything authenticated
    assert len(opened) <= 3 * chunks  # zip headers hit the one-chunk cache
