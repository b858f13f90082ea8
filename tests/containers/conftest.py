"""Real OCI containers with podman: one cached base image, one small ONNX model image.

Where podman is not installed the container tests skip with that reason;
with ``MODELSEAL_REQUIRE_PODMAN=1`` (set by ``.ci/run``, which installs
podman, runc and debootstrap when missing) or ``CI`` set, a missing podman
is a failure instead. The base image comes from the cache
(``~/.cache/modelseal/images``, or ``MODELSEAL_IMAGE_CACHE``): only the
first run on a machine pays for debootstrap.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import modelseal
from modelseal.crypto import ContentKey, PrivateKey, generate_private_key
from modelseal.device.request import ActivationRequest
from modelseal.license import issue_license
from tests.serve._deployment import MODEL_ID


def podman_required() -> bool:
    return bool(os.environ.get("MODELSEAL_REQUIRE_PODMAN") or os.environ.get("CI"))


def need_podman() -> None:
    """Skip (or fail where podman is required) when podman cannot run containers here."""
    if shutil.which("podman") is None:
        message = "podman is not installed (apt-get install -y podman runc debootstrap)"
        if podman_required():
            pytest.fail(message + " but MODELSEAL_REQUIRE_PODMAN/CI requires it")
        pytest.skip(message)
    if os.geteuid() != 0:
        message = "the container tests use rootful podman and need root"
        if podman_required():
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class ModelImage:
    tag: str
    image_id: str
    digest: str
    root: Path
    model: Path
    vendor: PrivateKey
    cek: ContentKey
    gateway_pem: Path
    gateway_pub: Path
    weights: np.ndarray
    bias: np.ndarray
    build_seconds: float

    def expected(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.weights + self.bias).astype(np.float32)


def _sealed_classifier(root: Path) -> tuple[Path, ContentKey, np.ndarray, np.ndarray]:
    """y = x @ W + b as ONNX, sealed; the content key is kept to issue licenses later."""
    rng = np.random.default_rng(11)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["y"]),
        ],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save_model(proto, str(root / "model.onnx"))
    cek = modelseal.seal(root / "model.onnx", root / "model.mseal", model_id=MODEL_ID)
    (root / "model.onnx").unlink()
    return root / "model.mseal", cek, w, b


@pytest.fixture(scope="session")
def model_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelImage]:
    """The test classifier sealed and built into an image, once per session.

    Two xdist workers may both ask: a lock in the image cache makes the
    second wait and then find every layer but the model's cached.
    """
    need_podman()
    from modelseal.image.base import default_cache_dir
    from modelseal.image.build import ImageRecipe, build_image
    from modelseal.image.podman import Podman

    root = tmp_path_factory.mktemp("image")
    model, cek, w, b = _sealed_classifier(root)
    vendor = generate_private_key("ed25519")
    vendor.public_key().save(root / "vendor.pub")
    gateway = generate_private_key("sm2")
    gateway.save(root / "gateway-sm2.pem")
    gateway.public_key().save(root / "gateway-sm2.pub")
    cache = default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    recipe = ImageRecipe(
        # A tag of this process's own: each xdist worker seals its own model
        # (another content key), and must not re-tag the other's image.
        tag=f"localhost/modelseal-test/classifier:{os.getpid()}",
        model_file=model,
        trust_file=root / "vendor.pub",
        runtimes=("onnx",),
    )
    started = time.monotonic()
    with (cache / ".test-image.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = build_image(recipe, cache_dir=cache)
    yield ModelImage(
        built.tag,
        built.image_id,
        built.digest,
        root,
        model,
        vendor,
        cek,
        root / "gateway-sm2.pem",
        root / "gateway-sm2.pub",
        w,
        b,
        time.monotonic() - started,
    )
    # Only this model's layer is removed; the shared layers stay cached.
    Podman().run(["rmi", "--force", built.tag], check=False)


def license_for(image: ModelImage, request_json: str) -> str:
    request = ActivationRequest.from_bytes(request_json.encode())
    return issue_license(
        signing_key=image.vendor,
        issuer="acme",
        customer="hospital",
        audience=[MODEL_ID],
        request=request,
        content_keys=[(image.cek, MODEL_ID)],
        valid_for=timedelta(days=1),
        features=["classify"],
    ).token
