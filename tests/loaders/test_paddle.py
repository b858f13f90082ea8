"""PaddlePaddle runs in a subprocess: it and PyTorch each bring their own
OpenMP/MKL runtimes, and keeping them out of one process keeps the suite honest
about what a real deployment (one framework per service) does."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, warnings
    os.environ["GLOG_minloglevel"] = "2"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No ccache found")
        import paddle
    import numpy as np
    from paddle.static import InputSpec
    import modelseal

    work = sys.argv[1]
    paddle.seed(0)

    class Net(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.fc = paddle.nn.Linear(16, 3)

        def forward(self, x):
            return paddle.nn.functional.softmax(self.fc(x), axis=-1)

    net = Net()
    net.eval()
    x = np.linspace(-1, 1, 32, dtype="float32").reshape(2, 16)
    expected = net(paddle.to_tensor(x)).numpy()
    spec = [InputSpec(shape=[None, 16], dtype="float32", name="x")]
    with paddle.pir_utils.OldIrGuard():
        paddle.jit.save(net, os.path.join(work, "legacy", "model"), input_spec=spec)
    paddle.jit.save(net, os.path.join(work, "pir", "model"), input_spec=spec)

    key = modelseal.seal(os.path.join(work, "legacy"), os.path.join(work, "legacy.mseal"))
    hint = modelseal.inspect(os.path.join(work, "legacy.mseal")).framework
    # the plaintext model leaves the disk before loading: the predictor cannot read it
    import shutil
    shutil.rmtree(os.path.join(work, "legacy"))
    predictor = modelseal.load(os.path.join(work, "legacy.mseal"), key=key)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(x)
    predictor.run()
    got = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()

    modelseal.seal(os.path.join(work, "pir"), os.path.join(work, "pir.mseal"), key=key)
    try:
        modelseal.load(os.path.join(work, "pir.mseal"), key=key)
        pir = "loaded"
    except modelseal.LoaderError as exc:
        pir = str(exc)
    print(json.dumps({"hint": hint, "max_diff": float(np.abs(got - expected).max()), "pir": pir}))
    """
)


def test_paddle_predictor_from_memory(tmp_path: Path) -> None:
    script = tmp_path / "paddle_roundtrip.py"  # paddle.jit.save reads the source of Net
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["hint"] == "paddle"
    assert result["max_diff"] < 1e-6
    assert "PIR program" in result["pir"] and "OldIrGuard" in result["pir"]
