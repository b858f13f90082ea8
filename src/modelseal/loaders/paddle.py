"""PaddlePaddle inference predictors from decrypted memory buffers.

Measured with Paddle 3.3.1 here: ``Config.set_model_buffer`` loads the
legacy program format (``.pdmodel`` + ``.pdiparams``) from memory and copies
the buffers; a PIR program (``.json``, the 3.x default) handed to it
crashes the process with a segmentation fault, because Paddle's PIR loader
reads only from file paths. So PIR programs are refused here with a clear
error instead of crashing; export with ``paddle.pir_utils.OldIrGuard()``
(or ``FLAGS_enable_pir_api=0``) to get the legacy format.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from modelseal.errors import LoaderError, MissingDependencyError


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


def create_predictor(
    program: Any, params: Any, *, program_name: str = "model.pdmodel", threads: int | None = None
) -> Any:
    """A predictor whose program and parameters come from memory, never from files."""
    if program_name.lower().endswith(".json"):
        raise LoaderError(
            f"{program_name} is a PIR program, which PaddlePaddle cannot load from memory; "
            "re-export the model in the legacy format (paddle.jit.save inside "
            "paddle.pir_utils.OldIrGuard(), giving .pdmodel + .pdiparams) and seal that"
        )
    inference = _inference()
    config = inference.Config()
    # set_model_buffer takes bytes (not memoryview) with exact lengths: a short
    # params length loads silently with wrong weights, so lengths come from len().
    prog = bytes(memoryview(program).cast("B"))
    par = bytes(memoryview(params).cast("B"))
    config.set_model_buffer(prog, len(prog), par, len(par))
    config.disable_gpu()
    config.disable_glog_info()
    if threads:
        config.set_cpu_math_library_num_threads(threads)
    try:
        return inference.create_predictor(config)
    except Exception as exc:  # paddle raises untyped errors (ValueError, RuntimeError, ...)
        raise LoaderError(f"PaddlePaddle could not create a predictor: {exc}") from None
