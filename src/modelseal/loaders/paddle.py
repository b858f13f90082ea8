"""PaddlePaddle inference predictors from decrypted memory buffers."""

from __future__ import annotations

from typing import Any

from modelseal.errors import LoaderError, MissingDependencyError


def _inference() -> Any:
    try:
        import paddle.inference as inference
    except ImportError:
        raise MissingDependencyError(
            "framework 'paddle' needs PaddlePaddle: pip install 'modelseal[paddle]'"
        ) from None
    return inference


def create_predictor(program: Any, params: Any, *, threads: int | None = None) -> Any:
    """A predictor whose program and parameters come from memory, never from files."""
    inference = _inference()
    config = inference.Config()
    prog = bytes(memoryview(program).cast("B"))
    par = bytes(memoryview(params).cast("B"))
    config.set_model_buffer(prog, len(prog), par, len(par))
    config.disable_gpu()
    if hasattr(config, "disable_glog_info"):
        config.disable_glog_info()
    if threads:
        config.set_cpu_math_library_num_threads(threads)
    try:
        return inference.create_predictor(config)
    except Exception as exc:  # paddle raises its own untyped exceptions
        raise LoaderError(f"PaddlePaddle could not create a predictor: {exc}") from None
