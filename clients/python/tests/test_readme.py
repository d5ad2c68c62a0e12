"""The README's notebook walkthrough runs as written: every ```python block of
clients/python/README.md, in order, as one script from the repository's root, against
this session's team."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def test_the_walkthrough_runs_as_written(stack, tmp_path):
    code = blocks()
    assert len(code) >= 8, "the walkthrough lost its python blocks"
    script = tmp_path / "walkthrough.py"  # a file: torch.jit.script reads the class's source
    script.write_text("\n\n".join(code), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("KILN_PROFILE", "KILN_ADMIN_TOKEN")}
    env.update(KILN_API_URL=stack.url, KILN_TOKEN=stack.tokens["maintainer"], XDG_CONFIG_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"the walkthrough failed:\n{done.stdout}\n{done.stderr}"
    out = done.stdout
    assert "succeeded 4001" in out
    assert "answered by version" in out
    assert "validation_failed (422)" in out and "hyperparameters.epochs" in out
