"""PaddlePaddle inference predictors from decrypted memory, never from plaintext files.

Two program formats, measured with Paddle 3.3.1 here:

- **PIR** (``.json`` + ``.pdiparams``, the Paddle 3 default): its loader
  reads only paths and picks the format from the path's suffix; handed to
  ``Config.set_model_buffer`` a PIR program crashes the process
  (segmentation fault).
- **Legacy** (``.pdmodel`` + ``.pdiparams``, Paddle 2.x and
  ``paddle.pir_utils.OldIrGuard()`` exports): ``set_model_buffer`` works,
  but builds a predictor ten times slower and with ten times the model's
  size in peak memory than loading the same files from paths
  (bench/RESULTS.md, "Paddle predictors").

So both formats are decrypted straight into sealed memfds
(:mod:`modelseal.loaders.memfile`) and Paddle opens them through symlinks
named like the sealed files (``inference.json``, ``inference.pdiparams``).
Everything is decrypted and authenticated before Paddle sees a path; the
symlinks go and the memfds close as soon as the predictor exists, since
Paddle has read both into its own memory by then. Where there is no memfd
(macOS, Windows), legacy programs fall back to ``set_model_buffer`` and PIR
programs are refused with a :class:`LoaderError`.

One consequence: ``predictor.clone()`` of a PIR predictor re-reads both
files from the paths it was built from, which no longer exist, so it fails;
call :func:`modelseal.load` again for another predictor. (A legacy
predictor's clone shares the loaded program and works.) Keeping the
plaintext around for a clone that may never come would add the model's
size to memory and keep it reachable through ``/proc`` for the
predictor's whole life.
"""

from __future__ import annotations

import os
import posixpath
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from modelseal.errors import DeviceUnavailableError, LoaderError, MissingDependencyError
from modelseal.loaders import memfile
from modelseal.loaders.memfile import MemoryFiles
from modelseal.sealed import Entry

#: Called with the ``paddle.inference.Config`` after modelseal's defaults (CPU,
#: Paddle's info logging off) and before the predictor is built, so every GPU
#: and CPU setting passes through: ``config.enable_use_gpu(256, 0)``,
#: ``config.enable_mkldnn()``, ``config.set_cpu_math_library_num_threads(4)``...
Configure = Callable[[Any], None]

#: Writes an entry's authenticated plaintext into a buffer of its size.
ReadInto = Callable[[Entry, memoryview], None]

PARAMS_SUFFIX = ".pdiparams"


def _inference() -> Any:
    # Paddle's C++ logging and a build-tool warning fire at import time; both
    # are noise for a library user and can only be silenced before the import.
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No ccache found")
            import paddle.inference as inference
    except ImportError:
        raise MissingDependencyError(
            "framework 'paddle' needs PaddlePaddle: pip install 'modelseal[paddle]'"
        ) from None
    return inference


def is_pir(program_name: str) -> bool:
    """PIR programs are JSON; the legacy format is a protobuf ``.pdmodel``."""
    return program_name.lower().endswith(".json")


@dataclass(frozen=True)
class PaddleProgram:
    """One inference program in a sealed directory and the parameters beside it."""

    program: Entry
    params: Entry | None

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.program.path)[0]

    @property
    def pir(self) -> bool:
        return is_pir(self.program.path)


def find_programs(entries: Sequence[Entry]) -> list[PaddleProgram]:
    """Every program: ``X.pdmodel``, and ``X.json`` when ``X.pdiparams`` is beside it.

    A ``.json`` without parameters beside it is some other file (PaddleX
    exports ship configuration JSON next to the model), not a program.
    """
    by_path = {e.path: e for e in entries}
    programs = []
    for e in entries:
        stem, suffix = posixpath.splitext(e.path)
        params = by_path.get(stem + PARAMS_SUFFIX)
        if suffix.lower() == ".pdmodel" or (suffix.lower() == ".json" and params is not None):
            programs.append(PaddleProgram(e, params))
    return programs


def select_program(entries: Sequence[Entry], entry: str | None) -> PaddleProgram:
    """The program ``entry`` names: its program or params file, its stem, or its folder.

    Several programs in one container (a PaddleOCR-style ``det/``, ``cls/``,
    ``rec/``) load one at a time: ``entry="det"`` or
    ``entry="det/inference.json"``.
    """
    programs = find_programs(entries)
    listing = ", ".join(p.program.path for p in programs)
    if not programs:
        raise LoaderError(
            "no PaddlePaddle program in this container "
            "(a .pdmodel, or a .json beside a .pdiparams of the same name)"
        )
    if entry is None:
        if len(programs) == 1:
            return programs[0]
        raise LoaderError(f"several PaddlePaddle programs; pick one with entry=...: {listing}")
    folder = entry.rstrip("/") + "/"
    matches = [
        p
        for p in programs
        if entry in (p.program.path, p.stem)
        or (p.params is not None and entry == p.params.path)
        or p.program.path.startswith(folder)
    ]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LoaderError(f"no PaddlePaddle program at {entry!r}; programs: {listing}")
    names = ", ".join(p.program.path for p in matches)
    raise LoaderError(f"{entry!r} matches several programs ({names}); name the program file")


def load_predictor(
    entries: Sequence[Entry],
    read_into: ReadInto,
    *,
    entry: str | None = None,
    threads: int | None = None,
    configure: Configure | None = None,
    gpu: int | None = None,
) -> Any:
    """A predictor for the program ``entry`` names, decrypted with ``read_into``.

    The program and parameters decrypt straight into sealed memfds (no
    intermediate buffer); without memfd, legacy programs go through buffers.
    """
    chosen = select_program(entries, entry)
    if chosen.params is None:
        raise LoaderError(f"no {chosen.stem}{PARAMS_SUFFIX} beside {chosen.program.path}")
    program, params = chosen.program, chosen.params
    inference = _inference()  # a missing Paddle is reported before anything is decrypted
    _check_gpu(gpu)  # and a missing GPU too
    if memfile.supported():
        with MemoryFiles() as files:
            for e in (program, params):
                files.add(posixpath.basename(e.path), e.size, _filler(read_into, e))
            return _predictor_from_files(
                inference,
                files,
                posixpath.basename(program.path),
                posixpath.basename(params.path),
                threads,
                configure,
                gpu,
            )
    if chosen.pir:
        raise _pir_needs_memfd(program.path)
    prog_buf, params_buf = bytearray(program.size), bytearray(params.size)
    read_into(program, memoryview(prog_buf))
    read_into(params, memoryview(params_buf))
    return _predictor_from_buffers(inference, prog_buf, params_buf, threads, configure, gpu)


def _check_gpu(gpu: int | None) -> None:
    """Refuse a GPU Paddle cannot use: Paddle itself would fall back to the CPU."""
    if gpu is None:
        return
    import paddle

    if not paddle.device.is_compiled_with_cuda():
        raise DeviceUnavailableError(
            f"device='cuda:{gpu}' was requested but this PaddlePaddle is built without CUDA "
            "(install paddlepaddle-gpu); pass device='cpu' to run on the CPU"
        )
    count = paddle.device.cuda.device_count()
    if gpu >= count:
        raise DeviceUnavailableError(
            f"device='cuda:{gpu}' was requested but Paddle sees {count} CUDA device(s)"
        )


def _pir_needs_memfd(name: str) -> LoaderError:
    return LoaderError(
        f"{name} is a PIR program, which PaddlePaddle reads only from a path; modelseal "
        "gives it one in memory with memfd_create and /proc (Linux), which this platform "
        "does not have. Seal a legacy export instead (paddle.jit.save inside "
        "paddle.pir_utils.OldIrGuard(), giving .pdmodel + .pdiparams)"
    )


def _filler(read_into: ReadInto, e: Entry) -> Callable[[memoryview], None]:
    def fill(view: memoryview) -> None:
        read_into(e, view)

    return fill


def create_predictor(
    program: Any,
    params: Any,
    *,
    program_name: str = "model.pdmodel",
    threads: int | None = None,
    configure: Configure | None = None,
    gpu: int | None = None,
) -> Any:
    """A predictor from a program and its parameters held in memory.

    ``program_name`` tells the format: ``*.json`` is PIR, anything else legacy.
    The buffers are copied into sealed memfds for the duration of the call.
    """
    inference = _inference()
    _check_gpu(gpu)
    if not memfile.supported():
        if is_pir(program_name):
            raise _pir_needs_memfd(program_name)
        return _predictor_from_buffers(inference, program, params, threads, configure, gpu)
    prog_file = posixpath.basename(program_name.replace("\\", "/"))
    params_file = posixpath.splitext(prog_file)[0] + PARAMS_SUFFIX
    with MemoryFiles() as files:
        files.add_bytes(prog_file, program)
        files.add_bytes(params_file, params)
        return _predictor_from_files(
            inference, files, prog_file, params_file, threads, configure, gpu
        )


def _predictor_from_buffers(
    inference: Any,
    program: Any,
    params: Any,
    threads: int | None,
    configure: Configure | None,
    gpu: int | None = None,
) -> Any:
    config = inference.Config()
    # set_model_buffer takes bytes (not memoryview) with exact lengths: a short
    # params length loads silently with wrong weights, so lengths come from len().
    prog = bytes(memoryview(program).cast("B"))
    par = bytes(memoryview(params).cast("B"))
    config.set_model_buffer(prog, len(prog), par, len(par))
    del prog, par  # Paddle copied them
    return _build(inference, config, threads, configure, gpu)


def _predictor_from_files(
    inference: Any,
    files: MemoryFiles,
    prog_file: str,
    params_file: str,
    threads: int | None,
    configure: Configure | None,
    gpu: int | None = None,
) -> Any:
    # Paddle reads both files while it builds the predictor and not after
    # (tests/loaders/test_paddle.py runs predictors whose memfds are closed),
    # so the links and the memfds live exactly as long as this call.
    with files.linked() as folder:
        try:
            config = inference.Config(str(folder / prog_file), str(folder / params_file))
        except Exception as exc:  # paddle raises untyped errors
            raise LoaderError(f"PaddlePaddle rejected the program: {_first_line(exc)}") from None
        return _build(inference, config, threads, configure, gpu)


#: Paddle's initial GPU memory pool for ``device="cuda"``; it grows on demand.
GPU_POOL_MB = 256


def _build(
    inference: Any,
    config: Any,
    threads: int | None,
    configure: Configure | None,
    gpu: int | None = None,
) -> Any:
    if gpu is None:
        config.disable_gpu()
    else:
        config.enable_use_gpu(GPU_POOL_MB, gpu)
    config.disable_glog_info()
    if threads:
        config.set_cpu_math_library_num_threads(threads)
    if configure is not None:
        configure(config)
    try:
        return inference.create_predictor(config)
    except Exception as exc:  # paddle raises untyped errors (ValueError, RuntimeError, ...)
        raise LoaderError(
            f"PaddlePaddle could not create a predictor: {_first_line(exc)}"
        ) from None


def _first_line(exc: Exception) -> str:
    # Paddle appends C++ source locations and hints on further lines.
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
