"""What the benches' smoke checks share: run one bench script in its ``--quick`` mode."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BENCH_DIR = Path(__file__).parent

RunBench = Callable[..., tuple[Any, str]]


@pytest.fixture
def run_bench(tmp_path: Path) -> RunBench:
    """Run ``bench/SCRIPT --quick ARGS --json FILE``; assert it succeeded and return the JSON and stdout."""

    def run(script: str, *args: str, timeout: float = 240) -> tuple[Any, str]:
        out = tmp_path / (Path(script).stem + ".json")
        proc = subprocess.run(
            [sys.executable, str(BENCH_DIR / script), "--quick", *args, "--json", str(out)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(out.read_text()), proc.stdout

    return run
