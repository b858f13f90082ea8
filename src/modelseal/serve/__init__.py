"""The model service (docs/serve.md): a sealed model behind the Open Inference Protocol.

``modelseal serve MODEL.mseal --license L --trust vendor.pub`` verifies the
license, decrypts the model in memory, and answers KServe v2 requests; with
``--envelope-key`` every model-route response leaves sealed for the gateway.
Needs the ``serve`` extra (uvicorn, prometheus-client), imported lazily.
"""

from modelseal.serve.config import ServeConfig
from modelseal.serve.handlers import (
    Handler,
    HandlerError,
    OnnxHandler,
    TorchScriptHandler,
    check_inputs,
    default_handler,
    import_handler,
)
from modelseal.serve.protocol import InferenceRequestError, TensorSpec

__all__ = [
    "Handler",
    "HandlerError",
    "InferenceRequestError",
    "OnnxHandler",
    "ServeConfig",
    "TensorSpec",
    "TorchScriptHandler",
    "check_inputs",
    "default_handler",
    "import_handler",
]
