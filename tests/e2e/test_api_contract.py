"""The REST API keeps its contract under fuzzing: schemathesis, from the mesh's own
`/openapi.json`, against a running mesh — every phase (examples, coverage, fuzzing, stateful),
every check (no server error, status codes, content types and bodies conforming to the document,
negative data refused, valid data accepted, 405 with Allow). Bounded: a fixed number of examples
and a seed. scripts/fuzz-api runs the same for longer."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.mesh import Mesh, running
from tests.support import npm_server

HERE = Path(__file__).parent
EXAMPLES = 8  # per operation and phase
SEED = 15


def config(demo: Path) -> dict[str, Any]:
    return {
        "approval": {
            "timeout_seconds": 1
        },  # a fuzzed call that needs approval is not waited on long
        "mcp_servers": [{"name": "fs", "command": npm_server("filesystem"), "args": [str(demo)]}],
        "policies": [
            {
                "name": "claude",
                "agent": "claude",
                "rules": [
                    {"tools": ["fs.read_*", "fs.list_*", "fs.get_*"], "action": "allow"},
                    {"tools": ["fs.write_file"], "action": "human_approval"},
                    {"tools": ["fs.*"], "action": "deny"},
                ],
            },
            {"name": "default", "agent": "*", "rules": [{"tools": ["*"], "action": "deny"}]},
        ],
    }


def schemathesis(url: str, examples: int, seed: int, report: Path, *extra: str) -> list[str]:
    """The command line (also scripts/fuzz-api's)."""
    return [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--exclude-path",
        "/ui/events",  # a stream that stays open: nothing to fuzz
        "--request-timeout",
        "15",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        *extra,
    ]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    demo = tmp_path_factory.mktemp("demo")
    (demo / "a.txt").write_text("alpha")
    with running(Mesh(tmp_path_factory.mktemp("mesh"), config(demo))) as m:
        yield m


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(
    mesh: Mesh, tmp_path: Path
) -> None:
    run = subprocess.run(
        schemathesis(mesh.url, EXAMPLES, SEED, tmp_path / "junit.xml"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=280,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    assert "Test Phases:" in run.stdout and "Stateful" in run.stdout, run.stdout[-3_000:]
    # The mesh answered all of it and is still healthy, with no internal error counted.
    health = mesh.http.get("/health").json()
    assert health["status"] == "ok" and health["internal_errors"] == 0, health


def main(argv: list[str]) -> int:
    """scripts/fuzz-api [URL] [EXAMPLES] [SEED]: the same run, longer (default 200 examples)."""
    import tempfile

    url = argv[0] if argv and argv[0].startswith("http") else None
    numbers = [int(a) for a in argv if not a.startswith("http")]
    examples = numbers[0] if numbers else 200
    seed = numbers[1] if len(numbers) > 1 else SEED
    with tempfile.TemporaryDirectory() as tmp:
        mesh = None
        if url is None:
            (Path(tmp) / "demo").mkdir()
            mesh = Mesh(Path(tmp), config(Path(tmp) / "demo")).start(timeout=60)
            url = mesh.url
        try:
            return subprocess.run(
                schemathesis(url, examples, seed, Path(tmp) / "junit.xml"), check=False
            ).returncode
        finally:
            if mesh is not None:
                mesh.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
