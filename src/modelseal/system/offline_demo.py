"""The offline demo (``modelseal demo``, ``make demo``): seal, load and license by hand.

The whole system (control plane, platform deployment, gateway) is ``modelseal
up``; this one shows the library and the offline licensing flow with no
server at all, in one work directory: seal a small torch model, load it from
memory, read one tensor row lazily, watch tampering and a wrong key refused,
issue a license bound to this device offline and run the model under the
guard. Needs the ``torch`` and ``safetensors`` extras.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Final

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import save_file

import modelseal
from modelseal.errors import OutputError

#: Written into the work directory so a second run may empty it, and nothing else is emptied.
MARKER: Final = ".modelseal-demo"


def _prepare(work: Path) -> None:
    """Empty ``work`` if it holds a previous demo; refuse a directory that holds anything else."""
    if work.exists():
        if any(work.iterdir()) and not (work / MARKER).exists():
            raise OutputError(
                f"{work} is not empty and holds no previous demo; choose another --work-dir"
            )
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / MARKER).write_text("made by modelseal demo; emptied on its next run\n")


class TinyClassifier(torch.nn.Module):
    """A small MLP: enough weights to span several chunks, fast on a CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(64, 512),
            torch.nn.ReLU(),
            torch.nn.Linear(512, 512),
            torch.nn.ReLU(),
            torch.nn.Linear(512, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)


def run(work: Path, console: Console) -> int:
    """Run the demo in ``work`` (emptied first if it holds a previous demo); 0 when all held."""
    _prepare(work)

    def step(title: str) -> None:
        # a plain heading, not a rule: the CLI's console is wide when not on a terminal
        console.print(f"\n[bold]== {title}[/bold]", highlight=False)

    torch.manual_seed(0)

    step("1. vendor: build and save a model")
    model = TinyClassifier().eval()
    plain = work / "classifier.safetensors"
    save_file(model.state_dict(), str(plain))
    console.print(
        f"{plain.name}: {plain.stat().st_size / 1e6:.2f} MB, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters"
    )

    step("2. vendor: seal it (AES-256-GCM, 64 KiB chunks)")
    sealed = work / "classifier.mseal"
    key = modelseal.seal(plain, sealed, model_id="demo/classifier", chunk_size=1 << 16)
    key.save(work / "classifier.key")
    header = modelseal.inspect(sealed)
    console.print(f"{sealed.name}: {header.chunk_count} chunks, key id {key.key_id}")
    console.print("the file holds no readable weights:", b"net.0.weight" not in sealed.read_bytes())

    step("3. customer: load from memory and run")
    started = time.perf_counter()
    state = modelseal.load(sealed, key=work / "classifier.key", framework="torch")
    loaded = TinyClassifier().eval()
    loaded.load_state_dict(state)
    console.print(f"loaded {len(state)} tensors in {(time.perf_counter() - started) * 1e3:.1f} ms")
    x = torch.randn(4, 64)
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    table = Table("sample", "predicted class", "confidence", "same as unsealed")
    for i in range(4):
        table.add_row(
            str(i),
            str(int(got[i].argmax())),
            f"{float(got[i].max()):.3f}",
            str(bool(torch.equal(expected[i], got[i]))),
        )
    console.print(table)
    if not torch.equal(expected, got):
        console.print("[red]outputs differ from the unsealed model")
        return 1

    step("4. lazy read: one tensor row, only the chunks it spans")
    with modelseal.open(sealed, key=key) as m:
        row = m.safetensors().get_slice("net.2.weight", framework="torch")[7]
    unsealed = model.state_dict()["net.2.weight"][7]
    console.print("row 7 of net.2.weight matches:", bool(torch.equal(row, unsealed)))

    step("5. attacker: flip one byte, try a wrong key")
    tampered = work / "tampered.mseal"
    data = bytearray(sealed.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    for label, path, k in (
        ("flipped byte", tampered, key),
        ("wrong key", sealed, modelseal.ContentKey.generate()),
    ):
        try:
            modelseal.load(path, key=k, framework="torch")
            console.print(f"[red]{label}: loaded?!")
            return 1
        except modelseal.ModelsealError as exc:
            console.print(f"{label}: refused with {type(exc).__name__}: {exc}")

    step("6. vendor: signing keys; customer: device activation request")
    from modelseal.crypto import generate_private_key
    from modelseal.device import collect, make_request
    from modelseal.guard import Guard, NotLicensedError
    from modelseal.license import TrustStore, issue_license

    vendor = generate_private_key("ed25519")
    vendor.save(work / "vendor.pem")
    vendor.public_key().save(work / "vendor.pub")
    device = collect()
    console.print(f"this device: {device.strength_report().summary()}")
    request = make_request(device, label="demo box")
    request.save(work / "request.json")

    step("7. vendor: issue a license bound to this device (offline)")
    issued = issue_license(
        signing_key=vendor,
        issuer="demo-vendor",
        customer="ACME Hospital",
        audience=["demo/classifier"],
        request=request,
        content_keys=[(key, "demo/classifier")],
        features=["classify"],
        max_calls=1000,
    )
    (work / "license.jwt").write_text(issued.token)
    (work / "request.json").unlink()  # it holds per-component secrets: delete after activation
    for warning in issued.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(
        f"license {issued.claims.jti}: {len(issued.token)} bytes, features "
        f"{list(issued.claims.entitlements)}, 1000 calls, content key delivered"
    )

    step("8. customer: load with the license (no key file) and run, guarded")
    (work / "classifier.key").unlink()  # the customer never had it
    guard = Guard(
        work / "license.jwt",
        TrustStore.load(work / "vendor.pub"),
        audience="demo/classifier",
        state_dir=work / "state",
    )
    state = guard.load(sealed, framework="torch")
    licensed = TinyClassifier().eval()
    licensed.load_state_dict(state)
    guard.check("classify")
    with torch.no_grad():
        same = torch.equal(licensed(x), expected)
    console.print(f"feature 'classify': allowed; outputs identical: {same}")
    try:
        guard.check("explain")
        console.print("[red]feature 'explain' was allowed?!")
        return 1
    except NotLicensedError as exc:
        console.print(f"feature 'explain': refused ({exc}); audit reason: {exc.reason}")
    console.print(f"calls used: {guard.usage()}; audit log: {guard.audit_path}")
    guard.close()

    console.print("\n[bold green]demo complete[/bold green]")
    return 0


__all__ = ["MARKER", "TinyClassifier", "run"]
