"""The in-memory file helper: sealed, close-on-exec memfds, reachable by path
only inside ``linked()``, gone when closed."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.errors import LoaderError, ModelsealError
from modelseal.loaders import memfile
from modelseal.loaders.memfile import MemoryFiles

pytestmark = pytest.mark.skipif(not memfile.supported(), reason="needs Linux memfd_create")
fcntl = pytest.importorskip("fcntl")

ALL_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def _open_memfds() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:modelseal:"):
            out.append(target)
    return out


@pytest.fixture(autouse=True)
def _private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr("tempfile.tempdir", None)
    return tmp


def test_files_read_back_through_links_and_vanish(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    before = _open_memfds()
    with MemoryFiles() as files:
        files.add_bytes("model.json", b'{"program": 1}')
        files.add("model.pdiparams", 3, lambda view: view.__setitem__(slice(None), b"abc"))
        assert files.names == ("model.json", "model.pdiparams")
        with files.linked() as folder:
            assert folder.parent == tmp
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
            assert (folder / "model.json").read_bytes() == b'{"program": 1}'
            assert (folder / "model.pdiparams").read_bytes() == b"abc"
            link = os.readlink(folder / "model.json")
            assert link == f"/proc/{os.getpid()}/fd/{files.fd('model.json')}"
            held = os.open(folder / "model.pdiparams", os.O_RDONLY)
        # links and folder are gone at once; a descriptor opened inside stays valid
        assert list(tmp.iterdir()) == []
        assert os.pread(held, 3, 0) == b"abc"
        os.close(held)
        assert len(_open_memfds()) == len(before) + 2
    assert files.closed
    assert _open_memfds() == before


def test_memfds_are_sealed_cloexec_and_refuse_writes() -> None:
    with MemoryFiles() as files:
        files.add_bytes("w.bin", b"x" * 5000)
        fd = files.fd("w.bin")
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & ALL_SEALS == ALL_SEALS
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        # Another same-user opener of /proc/<pid>/fd/<n> cannot swap the bytes.
        with files.linked() as folder:
            try:
                wfd = os.open(folder / "w.bin", os.O_WRONLY)
            except PermissionError:
                pass  # refused at open (kernels that check seals there)
            else:
                try:
                    with pytest.raises(PermissionError):
                        os.write(wfd, b"evil")
                finally:
                    os.close(wfd)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 1)
        assert os.pread(fd, 5000, 0) == b"x" * 5000


def test_children_inherit_no_memfd() -> None:
    code = textwrap.dedent(
        """
        import os
        print(sum(os.readlink(f"/proc/self/fd/{f}").startswith("/memfd:")
                  for f in os.listdir("/proc/self/fd")
                  if os.path.exists(f"/proc/self/fd/{f}")))
        """
    )
    with MemoryFiles() as files:
        files.add_bytes("a.json", b"{}")
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            close_fds=False,
        )
    assert out.stdout.strip() == "0"


def test_failed_fill_leaves_nothing(tmp_path: Path) -> None:
    class TamperedError(ModelsealError):
        pass

    def fill(view: memoryview) -> None:
        # A derived view still referenced from the traceback when the error
        # propagates, as the reader's own frames do: the mapping must not be
        # closed under it (this once raised BufferError instead of Tampered).
        dest = view.cast("B")
        dest[:4] = b"half"
        raise TamperedError("chunk 3 failed authentication")

    before = _open_memfds()
    with MemoryFiles() as files:
        files.add_bytes("ok.json", b"{}")
        with pytest.raises(TamperedError):
            files.add("bad.pdiparams", 4096, fill)
        assert files.names == ("ok.json",)
        assert len(_open_memfds()) == len(before) + 1
    assert _open_memfds() == before
    assert list((tmp_path / "tmp").iterdir()) == []


def test_links_removed_when_the_body_raises(tmp_path: Path) -> None:
    with MemoryFiles() as files:
        files.add_bytes("m.json", b"{}")
        with pytest.raises(RuntimeError), files.linked():
            raise RuntimeError("framework failed")
    assert list((tmp_path / "tmp").iterdir()) == []


def test_empty_file_and_misuse() -> None:
    files = MemoryFiles()
    with pytest.raises(ValueError, match="no open in-memory files"), files.linked():
        pass
    files.add_bytes("empty.pdiparams", b"")
    with files.linked() as folder:
        assert (folder / "empty.pdiparams").read_bytes() == b""
    with pytest.raises(ValueError, match="twice"):
        files.add_bytes("empty.pdiparams", b"x")
    for bad in ("", ".", "..", "a/b", "../x", "a\x00b", "x" * 201):
        with pytest.raises(ValueError, match="one plain file name"):
            files.add_bytes(bad, b"x")
    files.close()
    with pytest.raises(ValueError, match="closed"):
        files.add_bytes("late.json", b"{}")
    with pytest.raises(ValueError, match="no open in-memory files"), files.linked():
        pass


def test_unsupported_platform_is_a_loader_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "memfd_create")
    with pytest.raises(LoaderError, match="memfd_create"):
        MemoryFiles()


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_other_platforms_are_unsupported(monkeypatch: pytest.MonkeyPatch, platform: str) -> None:
    monkeypatch.setattr("sys.platform", platform)
    assert not memfile.supported()
    with pytest.raises(LoaderError, match="this platform does not have"):
        MemoryFiles()


def test_out_of_descriptors_is_a_loader_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str, flags: int = 0) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    files = MemoryFiles()
    monkeypatch.setattr(os, "memfd_create", refuse)
    with pytest.raises(LoaderError, match="Too many open files"):
        files.add_bytes("m.json", b"{}")


@settings(max_examples=30, deadline=None)
@given(
    contents=st.dictionaries(
        st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}", fullmatch=True).filter(
            lambda n: n not in (".", "..")
        ),
        st.binary(max_size=20000),
        min_size=1,
        max_size=4,
    )
)
def test_any_contents_round_trip(contents: dict[str, bytes]) -> None:
    with MemoryFiles() as files:
        for name, data in contents.items():
            files.add_bytes(name, data)
        with files.linked() as folder:
            assert {p.name: p.read_bytes() for p in folder.iterdir()} == contents


def test_links_fall_back_from_an_unusable_tmpdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    monkeypatch.setenv("TEMP", str(tmp_path / "tmp"))
    with MemoryFiles() as files:
        files.add_bytes("m.json", b"{}")
        with files.linked() as folder:
            assert folder.parent == tmp_path / "tmp"
            assert (folder / "m.json").read_bytes() == b"{}"
    assert not (tmp_path / "missing").exists()
