"""A real `agent-mesh supervisor` process for end-to-end tests: its config written to a temp dir,
its log (stderr) in a file the test reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support import wait_until


class SupervisorProc:
    def __init__(
        self,
        tmp: Path,
        settings: dict[str, Any],
        *,
        env: dict[str, str] | None = None,
        unset: tuple[str, ...] = (),
        args: tuple[str, ...] = (),
    ) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        settings = {"memory": {"path": str(tmp / "decisions.db")}} | settings
        self.config_path = tmp / "supervisor.yaml"
        self.config_path.write_text(yaml.safe_dump({"supervisor": settings}))
        self.log_path = tmp / "supervisor.log"
        self.env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SupervisorProc:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agent_mesh",
                    "supervisor",
                    "--config",
                    str(self.config_path),
                    *self.args,
                ],
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def count(self, text: str) -> int:
        return self.log().count(text)

    def wait_log(self, text: str, timeout: float = 20, count: int = 1) -> None:
        def seen() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None and self.count(text) < count:
                raise AssertionError(f"supervisor exited {self.proc.returncode}:\n{self.log()}")
            return self.count(text) >= count

        try:
            wait_until(seen, timeout, f"{text!r} in the supervisor's log", interval=0.05)
        except AssertionError:
            raise AssertionError(f"no {text!r} in the supervisor's log:\n{self.log()}") from None

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "agent_mesh",
                "supervisor",
                *args,
                "--config",
                str(self.config_path),
            ],
            check=False,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode
