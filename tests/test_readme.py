"""The examples in README.md run as written."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

README = (Path(__file__).parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def block(containing: str) -> str:
    (found,) = [b for b in BLOCKS if containing in b]
    return found


def test_quick_start_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(block('sp.dump(ckpt, "ckpt.sp")'), scope)
    np.testing.assert_array_equal(
        scope["back"]["weights"]["layer3"], scope["ckpt"]["weights"]["layer3"]
    )
    assert not scope["mapped"]["weights"]["layer0"].flags.writeable


def test_pipe_example_runs(capfd: pytest.CaptureFixture[str]) -> None:
    exec(block("subprocess.Popen"), {})
    assert capfd.readouterr().out.split() == ["0", "0", "1", "1000000", "2", "2000000"]


def test_server_example_receives_from_clients(capsys: pytest.CaptureFixture[str]) -> None:
    scope: dict[str, Any] = {}
    exec(block("asyncio.start_server"), scope)

    async def run() -> None:
        server = await asyncio.start_server(scope["handle"], "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        await scope["send"](
            [{"step": step, "w": np.zeros(10_000)} for step in range(3)], port
        )
        await asyncio.sleep(0.2)
        server.close()
        await server.wait_closed()

    asyncio.run(asyncio.wait_for(run(), 30))
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()] == [
        "0",
        "1",
        "2",
    ]
