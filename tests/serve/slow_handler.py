"""A handler that takes its time: for graceful-shutdown and gateway-timeout tests."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from modelseal.serve import OnnxHandler


class SlowOnnx(OnnxHandler):
    """Sleeps ``x[0, 0]`` seconds (at most 5) before answering."""

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        time.sleep(min(5.0, max(0.0, float(inputs["x"].reshape(-1)[0]))))
        return super().predict(inputs)
