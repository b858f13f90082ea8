"""Done-when of issue #10, with real processes: a sealed ONNX model -> ``modelseal serve``
with an envelope key -> ``modelseal gateway`` -> ``tritonclient.http`` (an unmodified
client from PyPI) predicts the plain model's output and reads the model's metadata."""

from __future__ import annotations

import numpy as np
import pytest

from tests.gateway.conftest import Stack
from tests.serve._deployment import MODEL_ID

httpclient = pytest.importorskip("tritonclient.http")


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_through_the_gateway(stack: Stack, binary: bool) -> None:
    url = stack.gateway.url.removeprefix("http://") + "/demo"
    auth = {"Authorization": f"Bearer {stack.keys['alice']}"}
    client = httpclient.InferenceServerClient(url=url)
    try:
        assert client.is_server_live(headers=auth)
        assert client.is_model_ready(MODEL_ID, headers=auth)
        meta = client.get_model_metadata(MODEL_ID, headers=auth)
        assert meta["name"] == MODEL_ID
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
        assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
        x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("y", binary_data=binary)
        result = client.infer(MODEL_ID, [inp], outputs=[out], headers=auth, request_id="e2e-1")
        np.testing.assert_allclose(result.as_numpy("y"), stack.dep.expected(x), rtol=1e-6)
        assert result.get_response()["id"] == "e2e-1"
        # without a key the client gets the gateway's 401 as its exception
        with pytest.raises(httpclient.InferenceServerException, match="API key"):
            client.infer(MODEL_ID, [inp])
    finally:
        client.close()


def test_tritonclient_against_the_service_directly_cannot_read_it(stack: Stack) -> None:
    client = httpclient.InferenceServerClient(url=stack.serve.url.removeprefix("http://"))
    try:
        with pytest.raises(Exception):  # noqa: B017, PT011 - any failure: it sees only ciphertext
            client.get_model_metadata(MODEL_ID)
    finally:
        client.close()
