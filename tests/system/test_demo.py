"""``modelseal demo``: the offline library demo stays available from the CLI (and ``make demo``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def demo(work: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelseal", "demo", "--work-dir", str(work)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HOME": str(work.parent)},
        check=False,
    )


def test_the_demo_runs_every_step_and_again_in_the_same_folder(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    for _ in range(2):  # the second run empties the folder it made itself
        done = demo(work)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        out = done.stdout
        assert "demo complete" in out
        assert "refused with ChunkIntegrityError" in out
        assert "refused with WrongKeyError" in out
        assert "outputs identical: True" in out
        assert "audit reason: feature_missing" in out
    # the customer never kept the content key
    assert not (work / "classifier.key").exists()
    assert (work / "license.jwt").exists()


def test_a_folder_the_demo_did_not_make_is_not_emptied(tmp_path: Path) -> None:
    work = tmp_path / "mine"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    done = demo(work)
    assert done.returncode == 8, done.stdout + done.stderr
    assert "choose another --work-dir" in done.stderr
    assert (work / "thesis.tex").read_text() == "years of work"
