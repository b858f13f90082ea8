"""The service in process: OIP routes, handlers, the Guard per request, envelopes on
every response, metrics. Real license for this machine, real ONNX Runtime."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from safetensors.numpy import save_file

import modelseal
from modelseal.crypto import generate_private_key
from modelseal.device import collect, make_request
from modelseal.envelope import MEDIA_TYPE, EnvelopeOpener
from modelseal.errors import LoaderError
from modelseal.license import issue_license
from modelseal.serve import HandlerError, ServeConfig, import_handler
from modelseal.serve.server import build_app
from tests.serve._deployment import MODEL_ID, Deployment, make_deployment

INFER = f"/v2/models/{MODEL_ID}/infer"


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return make_deployment(tmp_path_factory.mktemp("dep"), features=("classify",))


def config(dep: Deployment, tmp_path: Path, **kw: Any) -> ServeConfig:
    args: dict[str, Any] = dict(
        model=str(dep.model),
        license=str(dep.license),
        trust=(str(dep.trust),),
        state_dir=str(tmp_path / "state"),
    )
    args.update(kw)
    return ServeConfig(**args)


def call(app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            return await client.request(method, path, **kw)

    return asyncio.run(go())


def infer_body(x: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": x.reshape(-1).tolist(),
            }
        ]
    }


def test_oip_routes_with_the_built_in_onnx_handler(dep: Deployment, tmp_path: Path) -> None:
    app, _ = build_app(config(dep, tmp_path))
    assert call(app, "GET", "/v2/health/live").status_code == 200
    assert call(app, "GET", "/v2/health/ready").status_code == 200
    assert json.loads(call(app, "GET", "/v2").content)["extensions"] == ["binary_tensor_data"]
    meta = call(app, "GET", f"/v2/models/{MODEL_ID}").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    assert call(app, "GET", f"/v2/models/{MODEL_ID}/versions/1").json() == meta
    assert call(app, "GET", f"/v2/models/{MODEL_ID}/ready").status_code == 200
    x = np.array([[1, 2, 3, 4], [0.5, 0, -1, 2]], np.float32)
    r = call(app, "POST", INFER, json={"id": "q1", **infer_body(x)})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == "q1"
    assert doc["model_name"] == MODEL_ID
    y = np.array(doc["outputs"][0]["data"], np.float32).reshape(doc["outputs"][0]["shape"])
    np.testing.assert_allclose(y, dep.expected(x), rtol=1e-6)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "match"),
    [
        (
            "POST",
            INFER,
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 5], "data": [0] * 5}]},
            400,
            "shape",
        ),
        (
            "POST",
            INFER,
            {"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}]},
            400,
            "missing input",
        ),
        (
            "POST",
            INFER,
            {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1, 4], "data": ["a"] * 4}]},
            400,
            "takes FP32",
        ),
        ("POST", "/v2/models/other/infer", {"inputs": []}, 404, "unknown model"),
        ("GET", INFER, None, 405, "POST"),
        ("GET", f"/v2/models/{MODEL_ID}/versions/7", None, 404, "version"),
        ("GET", "/nothing", None, 404, "no route"),
    ],
)
def test_bad_requests_get_clear_errors(
    dep: Deployment, tmp_path: Path, method: str, path: str, body: Any, status: int, match: str
) -> None:
    app, _ = build_app(config(dep, tmp_path))
    r = call(app, method, path, json=body) if body is not None else call(app, method, path)
    assert r.status_code == status
    assert match in r.json()["error"]


def test_body_limit(dep: Deployment, tmp_path: Path) -> None:
    app, _ = build_app(config(dep, tmp_path, max_body=100))
    r = call(app, "POST", INFER, json=infer_body(np.zeros((20, 4), np.float32)))
    assert r.status_code == 413


def test_every_response_is_an_envelope_including_errors_and_refusals(
    dep: Deployment, tmp_path: Path
) -> None:
    gateway = generate_private_key("sm2")
    pub = tmp_path / "gw.pub"
    gateway.public_key().save(pub)
    app, _ = build_app(
        config(
            dep,
            tmp_path,
            envelope_key=str(pub),
            features={f"/v2/models/{MODEL_ID}/ready": "premium"},
        )
    )
    opener = EnvelopeOpener(gateway)
    x = np.ones((1, 4), np.float32)
    cases = [
        ("POST", INFER, infer_body(x), 200),
        ("POST", INFER, {"inputs": "nope"}, 400),
        ("GET", "/v2/models/unknown", None, 404),
        ("GET", f"/v2/models/{MODEL_ID}/versions/1/ready", None, 403),  # feature not licensed
        ("GET", "/v2/health/ready", None, 200),
    ]
    for i, (method, path, body, status) in enumerate(cases):
        rid = f"req-{i}"
        headers = {"X-Modelseal-Request-Id": rid}
        r = call(app, method, path, json=body, headers=headers)
        assert r.status_code == status, path
        assert r.headers["content-type"] == MEDIA_TYPE
        assert b"error" not in r.content and b'"outputs"' not in r.content
        opened = opener.open(r.content, request_id=rid)
        assert opened.status == status
        if status == 200 and path == INFER:
            out = json.loads(opened.body)["outputs"][0]
            np.testing.assert_allclose(
                np.array(out["data"], np.float32), dep.expected(x)[0], rtol=1e-6
            )
        elif status != 200:
            assert "error" in json.loads(opened.body)
    bad = call(app, "GET", "/v2/health/live", headers={"X-Modelseal-Request-Id": "bad id!"})
    assert bad.status_code == 400
    assert b"request id" in opener.open(bad.content, request_id="").body
    metrics = call(app, "GET", "/metrics").text  # the scrape endpoint stays plain
    assert 'modelseal_serve_envelopes_total{model="acme/classifier"} 6.0' in metrics
    assert 'modelseal_serve_envelope_session_keys_total{model="acme/classifier"} 1.0' in metrics
    assert 'modelseal_serve_license_refusals_total{model="acme/classifier"} 1.0' in metrics
    assert 'route="infer",status="400"' in metrics
    assert "modelseal_serve_request_seconds_bucket" in metrics
    assert opener.unwraps == 1


def test_example_softmax_handler(dep: Deployment, tmp_path: Path) -> None:
    app, _ = build_app(
        config(dep, tmp_path, handler="modelseal.serve.examples:SoftmaxClassifier", name="clf")
    )
    meta = call(app, "GET", "/v2/models/clf").json()
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "label"]
    x = np.array([[1, 2, 3, 4]], np.float32)
    doc = call(app, "POST", "/v2/models/clf/infer", json=infer_body(x)).json()
    out = {o["name"]: np.array(o["data"]) for o in doc["outputs"]}
    logits = dep.expected(x)[0]
    p = np.exp(logits - logits.max())
    np.testing.assert_allclose(out["probabilities"], p / p.sum(), rtol=1e-5)
    assert out["label"].tolist() == [int(np.argmax(logits))]


def test_example_numpy_handler_on_a_sealed_state_dict(tmp_path: Path) -> None:
    w = np.arange(6, dtype=np.float32).reshape(3, 2)
    b = np.array([0.5, -1], np.float32)
    save_file({"weight": w, "bias": b}, str(tmp_path / "lin.safetensors"))
    cek = modelseal.seal(tmp_path / "lin.safetensors", tmp_path / "lin.mseal", model_id="acme/lin")
    vendor = generate_private_key("ed25519")
    vendor.public_key().save(tmp_path / "v.pub")
    (tmp_path / "l.jwt").write_text(
        issue_license(
            signing_key=vendor,
            issuer="acme",
            customer="c",
            audience=["acme/lin"],
            request=make_request(collect(), label="t"),
            content_keys=[(cek, "acme/lin")],
        ).token
    )
    app, _ = build_app(
        ServeConfig(
            model=str(tmp_path / "lin.mseal"),
            license=str(tmp_path / "l.jwt"),
            trust=(str(tmp_path / "v.pub"),),
            state_dir=str(tmp_path / "s"),
            handler="modelseal.serve.examples:NumpyLinear",
        )
    )
    x = np.array([[1, 1, 1]], np.float32)
    doc = call(app, "POST", "/v2/models/acme/lin/infer", json=infer_body(x)).json()
    assert doc["outputs"][0]["data"] == (x @ w + b).reshape(-1).tolist()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("nocolon", "pkg.module:Class"),
        ("no_such_module_xyz:H", "cannot import"),
        ("modelseal.serve.examples:Missing", "has no"),
        ("modelseal.serve.protocol:TensorSpec", "cannot construct|load"),
        ("json:JSONDecoder", "load\\(model\\) and predict"),
    ],
)
def test_bad_handlers_are_one_clear_error(spec: str, match: str) -> None:
    with pytest.raises(HandlerError, match=match):
        import_handler(spec)


def test_a_handler_that_does_not_fit_the_model_fails_at_start(
    dep: Deployment, tmp_path: Path
) -> None:
    with pytest.raises(HandlerError, match="safetensors"):
        build_app(config(dep, tmp_path, handler="modelseal.serve.examples:NumpyLinear"))


def test_torchscript_is_served_by_the_built_in_handler(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Affine(torch.nn.Module):  # type: ignore[misc]
        def forward(self, x, y):  # type: ignore[no-untyped-def]
            return x * 2 + y, x.sum(dim=1)

    traced = torch.jit.trace(Affine(), (torch.ones(2, 2), torch.ones(2, 2)))
    torch.jit.save(traced, str(tmp_path / "m.pt"))
    cek = modelseal.seal(
        tmp_path / "m.pt", tmp_path / "m.mseal", model_id="acme/ts", framework="torchscript"
    )
    vendor = generate_private_key("ed25519")
    vendor.public_key().save(tmp_path / "v.pub")
    (tmp_path / "l.jwt").write_text(
        issue_license(
            signing_key=vendor,
            issuer="acme",
            customer="c",
            audience=["acme/ts"],
            request=make_request(collect(), label="t"),
            content_keys=[(cek, "acme/ts")],
        ).token
    )
    base = dict(
        model=str(tmp_path / "m.mseal"),
        license=str(tmp_path / "l.jwt"),
        trust=(str(tmp_path / "v.pub"),),
        state_dir=str(tmp_path / "s"),
    )
    with pytest.raises(LoaderError, match="torchscript"):  # code runs only on request
        build_app(ServeConfig(**base))  # type: ignore[arg-type]
    app, _ = build_app(ServeConfig(**base, framework="torchscript"))  # type: ignore[arg-type]
    assert call(app, "GET", "/v2/models/acme/ts").json()["platform"] == "pytorch_torchscript"
    x = np.array([[1, 2], [3, 4]], np.float32)
    body = {
        "inputs": [
            {"name": "input__1", "datatype": "FP32", "shape": [2, 2], "data": [1, 1, 1, 1]},
            {
                "name": "input__0",
                "datatype": "FP32",
                "shape": [2, 2],
                "data": x.reshape(-1).tolist(),
            },
        ]
    }
    doc = call(app, "POST", "/v2/models/acme/ts/infer", json=body).json()
    out = {o["name"]: o["data"] for o in doc["outputs"]}
    assert out["output__0"] == (x * 2 + 1).reshape(-1).tolist()
    assert out["output__1"] == x.sum(axis=1).tolist()
    bad = call(app, "POST", "/v2/models/acme/ts/infer", json={"inputs": body["inputs"][:1]})
    assert bad.status_code == 400 and "rejected the input" in bad.json()["error"]


def test_a_license_for_another_product_does_not_serve_this_model(
    dep: Deployment, tmp_path: Path
) -> None:
    from modelseal.guard import NotLicensedError

    save_file(
        {"weight": np.ones((3, 2), np.float32), "bias": np.zeros(2, np.float32)},
        str(tmp_path / "o.safetensors"),
    )
    modelseal.seal(tmp_path / "o.safetensors", tmp_path / "o.mseal", model_id="acme/other")
    with pytest.raises(NotLicensedError):
        build_app(
            config(
                dep,
                tmp_path,
                model=str(tmp_path / "o.mseal"),
                handler="modelseal.serve.examples:NumpyLinear",
            )
        )


def test_feature_gate_holds_for_the_versioned_spelling_of_a_route(
    dep: Deployment, tmp_path: Path
) -> None:
    # review finding: --feature matched the raw path, so /versions/1/infer
    # reached a gated infer route with the feature missing
    app, _ = build_app(config(dep, tmp_path, features={INFER: "premium"}))
    x = np.ones((1, 4), np.float32)
    versioned = f"/v2/models/{MODEL_ID}/versions/1/infer"
    for path in (INFER, versioned):
        r = call(app, "POST", path, json=infer_body(x))
        assert r.status_code == 403, path
        assert "outputs" not in r.text
    assert call(app, "GET", f"/v2/models/{MODEL_ID}/versions/1").status_code == 200
    assert call(app, "GET", f"/v2/models/{MODEL_ID}/versions/7/infer").status_code == 404


def test_metadata_and_readiness_do_not_use_licensed_calls(tmp_path: Path) -> None:
    # review finding: every checked request was counted, so a client (or the
    # gateway's tritonclient) reading metadata spent the inference quota
    # 4 calls: loading the model at start is one (the Guard counts loads), 3 inferences
    limited = make_deployment(tmp_path / "limited", max_calls=4)
    app, _ = build_app(config(limited, tmp_path))
    x = np.array([[1, 2, 3, 4]], np.float32)
    for _ in range(10):
        assert call(app, "GET", f"/v2/models/{MODEL_ID}").status_code == 200
        assert call(app, "GET", f"/v2/models/{MODEL_ID}/ready").status_code == 200
        assert call(app, "GET", "/v2").status_code == 200
    for _ in range(3):
        assert call(app, "POST", INFER, json=infer_body(x)).status_code == 200
    refused = call(app, "POST", INFER, json=infer_body(x))
    assert refused.status_code == 403
    # versioned spelling of infer is the same route: counted (and refused) too
    assert (
        call(app, "POST", f"/v2/models/{MODEL_ID}/versions/1/infer", json=infer_body(x)).status_code
        == 403
    )
    # (once the quota is used up the Guard refuses everything until its next full
    # verification, metadata included: that is the Guard's policy, not counting)
