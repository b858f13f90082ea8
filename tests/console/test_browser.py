"""The console in Debian's Chromium (Playwright), against real processes on loopback.

A real control plane (SQLite, the ``local`` deploy backend) and a real
``modelseal gateway --controlplane``: a person logs in with TOTP (enrolling
first), issues a license, activates a device offline with a request file
made by the device CLI and verifies the downloaded license, deploys a model
through the wizard, makes an API key, gets a prediction through the gateway
with it, and sees the dashboard's numbers change. Over the whole run no
request leaves our origin and the browser reports no CSP violation.
Screenshots go to ``$MODELSEAL_TEST_ARTIFACTS`` (default tests/console/artifacts/).
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pyotp
import pytest

from modelseal.crypto import ContentKey
from tests.controlplane.platform.test_end_to_end import SPEC, _infer
from tests.serve._deployment import Server, free_port, make_deployment, run_cli

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("MODELSEAL_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")


def _browser_or_skip() -> Any:
    required = os.environ.get("MODELSEAL_REQUIRE_CHROMIUM") == "1"
    if not CHROMIUM.exists():
        if required:
            pytest.fail("MODELSEAL_REQUIRE_CHROMIUM=1 but /usr/bin/chromium is missing")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            pytest.fail("MODELSEAL_REQUIRE_CHROMIUM=1 but the playwright package is missing")
        pytest.skip("the playwright package is not installed (the dev extra)")
    from modelseal.controlplane.console.web import STATIC, VENDOR_FILES

    missing = [f for f in VENDOR_FILES if not (STATIC / "vendor" / f).is_file()]
    assert not missing, f"console assets missing ({missing}): run bash scripts/console-assets.sh"
    return sync_playwright


def _api(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(
        url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        data = resp.read()
        return json.loads(data) if data else None


def test_the_console_in_a_browser(tmp_path: Path) -> None:
    sync_playwright = _browser_or_skip()
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    dep = make_deployment(tmp_path / "model")
    data = tmp_path / "cp"
    (tmp_path / "admin.pw").write_text("correct horse battery staple\n")
    init = run_cli(
        "controlplane",
        "init",
        "--data-dir",
        data,
        "--vendor",
        "acme",
        "--token-out",
        tmp_path / "owner.token",
        "--admin-user",
        "olga",
        "--admin-password-file",
        tmp_path / "admin.pw",
        cwd=tmp_path,
    )
    assert init.returncode == 0, init.stderr
    owner_token = (tmp_path / "owner.token").read_text().strip()
    node_port = free_port()
    cp_port = free_port()
    os.environ["MODELSEAL_NODE_PORT_RANGE"] = f"{node_port}-{node_port}"
    try:
        cp = Server(
            ["controlplane", "--data-dir", str(data), "--port", str(cp_port)],
            cp_port,
            cwd=tmp_path,
            ready_path="/readyz",
        )
    finally:
        del os.environ["MODELSEAL_NODE_PORT_RANGE"]
    gateway: Server | None = None
    origin = cp.url
    requests: list[str] = []
    problems: list[str] = []
    shots = 0

    def shot(page: Any, name: str) -> None:
        nonlocal shots
        shots += 1
        page.screenshot(path=str(ARTIFACTS / f"{shots:02d}-{name}.png"), full_page=True)

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            context = browser.new_context(
                viewport={"width": 1366, "height": 768}, accept_downloads=True
            )
            context.on("request", lambda r: requests.append(r.url))
            page = context.new_page()
            page.set_default_timeout(20_000)
            nav = page.get_by_role("navigation")
            try:
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(str(e)))

                # --- first login: password, then TOTP enrolment -------------------------------
                page.goto(f"{origin}/console/")
                assert page.url == f"{origin}/console/login"
                page.get_by_label("Vendor").fill("acme")
                page.get_by_label("Username").fill("olga")
                page.get_by_label("Password").fill("correct horse battery staple")
                shot(page, "login")
                page.get_by_role("button", name="Log in").click()
                page.get_by_role("button", name="Start enrolment").click()
                secret = page.locator("#totp-secret").inner_text().strip()
                shot(page, "totp-enrolment")
                totp = pyotp.TOTP(secret)
                page.get_by_label("The six-digit code it shows now").fill(totp.now())
                page.get_by_role("button", name="Confirm").click()
                assert page.locator("#recovery-codes li").count() == 10
                page.get_by_role("link", name="Continue to the dashboard").click()
                # then out, and in again with a TOTP code (the next step's: each is good once)
                page.get_by_role("button", name="Log out").click()
                page.get_by_label("Vendor").fill("acme")
                page.get_by_label("Username").fill("olga")
                page.get_by_label("Password").fill("correct horse battery staple")
                page.get_by_label("TOTP code (or a recovery code)").fill(totp.at(time.time() + 30))
                page.get_by_role("button", name="Log in").click()
                page.wait_for_url(f"{origin}/console/")
                before = {
                    n: page.locator(f"#n-{n}").inner_text()
                    for n in ("licenses", "devices", "deployments", "api-keys")
                }
                assert before == {
                    "licenses": "0",
                    "devices": "0",
                    "deployments": "0",
                    "api-keys": "0",
                }
                # keyboard: the first Tab reaches the skip link, which moves focus to the content
                page.keyboard.press("Tab")
                assert page.evaluate("document.activeElement.textContent") == "Skip to content"
                shot(page, "dashboard-empty")

                # --- licensing: customer, plan, sealed model, order ---------------------------
                nav.get_by_role("link", exact=True, name="Customers").click()
                page.get_by_label("Name").fill("Acme Clinic")
                page.get_by_role("button", name="Add").click()
                nav.get_by_role("link", exact=True, name="Plans").click()
                page.get_by_label("Name").fill("pro")
                page.get_by_label("Days (subscriptions and trials)").fill("20")
                page.get_by_label("Max devices").fill("3")
                page.get_by_role("button", name="Add").click()
                assert page.locator("td", has_text="pro").count() == 1
                key = ContentKey.generate()
                (tmp_path / "ocr.key").write_text(json.dumps(key.to_jwk()))
                nav.get_by_role("link", exact=True, name="Sealed models").click()
                page.get_by_label("Model id (as sealed)").fill("acme/ocr")
                page.get_by_label(
                    "Content key file (JWK, from modelseal seal --key-out)"
                ).set_input_files(str(tmp_path / "ocr.key"))
                page.get_by_role("button", name="Register").click()
                assert page.locator(".notice").inner_text() == "Model registered."
                nav.get_by_role("link", exact=True, name="New order").click()
                page.get_by_label("Customer").select_option(label="Acme Clinic")
                page.get_by_label("Plan").select_option(label="pro")
                page.get_by_label("acme/ocr (acme/ocr)").check()
                page.get_by_role("button", name="Issue the license").click()
                license_key = page.locator("#license-key").inner_text().strip()
                license_id = page.locator("h1").inner_text().split()[-1]
                shot(page, "license-issued")

                # --- offline activation: the device CLI's request file, uploaded ---------------
                made = run_cli(
                    "device",
                    "activate",
                    "--key",
                    license_key,
                    "--request-out",
                    tmp_path / "request.json",
                    cwd=tmp_path,
                )
                assert made.returncode == 0, made.stderr
                nav.get_by_role("link", exact=True, name="Offline activation").click()
                page.get_by_label("License").select_option(license_id)
                page.get_by_label("Activation request file").set_input_files(
                    str(tmp_path / "request.json")
                )
                page.get_by_role("button", name="Activate").click()
                with page.expect_download() as got:
                    page.locator("#download-license").click()
                got.value.save_as(tmp_path / "license.jwt")
                shot(page, "activated")
                trust = _api(origin, owner_token, "GET", "/v1/keys/trust")
                (tmp_path / "trust.json").write_text(json.dumps(trust))
                verified = run_cli(
                    "license",
                    "verify",
                    tmp_path / "license.jwt",
                    "--trust",
                    tmp_path / "trust.json",
                    "--device",
                    cwd=tmp_path,
                )
                assert verified.returncode == 0, verified.stdout + verified.stderr
                # and the same license as a Kubernetes Secret, from the device's page
                page.locator("a", has_text="dev_").first.click()
                with page.expect_download() as got:
                    page.get_by_role("button", name="Download the Secret").click()
                assert "kind: Secret" in Path(got.value.path()).read_text()

                # --- platform: gateway key, config, the deploy wizard --------------------------
                nav.get_by_role("link", exact=True, name="Gateway routes").click()
                page.get_by_role("button", name="Make the gateway's key").click()
                assert page.locator("#gateway-kid").count() == 1
                nav.get_by_role("link", exact=True, name="Deployment configs").click()
                page.get_by_label("Name").fill("classifier-prod")
                page.get_by_label("or paste the YAML").fill(SPEC.format(root=dep.root))
                page.get_by_role("button", name="Store").click()
                assert page.locator(".notice").inner_text() == "Configuration stored."
                nav.get_by_role("link", exact=True, name="Deploy wizard").click()
                page.get_by_label("A stored deployment config").select_option(
                    label=("classifier-prod (models/classifier)")
                )
                # htmx fetched the recommendation for that config (a same-origin request)
                expect(page.locator("#recommended-ports")).to_have_text(str(node_port))
                assert any("/console/platform/deploy?config=" in u for u in requests)
                page.get_by_label("The license file the spec names (license.jwt)").set_input_files(
                    str(dep.license)
                )
                page.get_by_label(
                    "The vendor's trust file or public key (if the spec names one)"
                ).set_input_files(str(dep.trust))
                shot(page, "deploy-wizard")
                page.get_by_role("button", name="Deploy", exact=True).click()
                assert page.locator(".notice").inner_text() == "Deployed."
                # the status panel polls (htmx) until the replica is ready
                expect(page.locator("#deployment-ready")).to_have_text(
                    re.compile("^yes"), timeout=120_000
                )
                assert page.locator("#deployment-ports").inner_text() == str(node_port)
                shot(page, "deployment-ready")

                # --- an API key made in the console, a prediction through the gateway ----------
                nav.get_by_role("link", exact=True, name="API keys").click()
                page.get_by_label("Name").fill("radiology")
                page.get_by_label("classifier (/classifier)").check()
                page.get_by_role("button", name="Make the key").click()
                api_key = page.locator("#new-api-key").inner_text().strip()
                shot(page, "api-key")
                issuer = _api(
                    origin, owner_token, "POST", "/v1/tokens", {"name": "gateway", "role": "issuer"}
                )["token"]
                (tmp_path / "gw.token").write_text(issuer)
                gw_port = free_port()
                gateway = Server(
                    [
                        "gateway",
                        "--controlplane",
                        origin,
                        "--token-file",
                        str(tmp_path / "gw.token"),
                        "--controlplane-key",
                        "--poll-interval",
                        "0.3",
                        "--port",
                        str(gw_port),
                    ],
                    gw_port,
                    cwd=tmp_path,
                    ready_path="/healthz",
                )
                deadline = time.monotonic() + 30
                code, answer = _infer(gateway.url, api_key)
                while code != 200 and time.monotonic() < deadline:
                    time.sleep(0.3)
                    code, answer = _infer(gateway.url, api_key)
                assert code == 200, answer
                expected = dep.expected(np.array([[1, 2, 3, 4]], np.float32))[0]
                np.testing.assert_allclose(answer["outputs"][0]["data"], expected, rtol=1e-5)

                # --- the dashboard's numbers moved; its charts were drawn ----------------------
                nav.get_by_role("link", exact=True, name="Dashboard").click()
                after = {n: page.locator(f"#n-{n}").inner_text() for n in before}
                assert after == {
                    "licenses": "1",
                    "devices": "1",
                    "deployments": "1",
                    "api-keys": "1",
                }
                for chart in ("licenses", "activations", "heartbeats"):
                    assert page.locator(f"#chart-{chart}[data-drawn=true]").count() == 1
                shot(page, "dashboard-after")
            except Exception:
                shot(page, "failure")  # the page as it was: the first thing to look at
                raise
            browser.close()
    finally:
        if gateway is not None:
            gateway.stop()
        cp.stop()
        print(cp.output()[-20000:])  # shown by pytest when the test fails
    foreign = [
        u
        for u in requests
        if not u.startswith(origin + "/") and not u.startswith(("data:", "blob:"))
    ]
    assert not foreign, foreign
    assert not [p for p in problems if "Content Security Policy" in p], problems
    assert not problems, problems
    assert "Traceback" not in cp.output(), cp.output()[-3000:]
