"""The MCP conformance suite (@modelcontextprotocol/conformance, its server scenarios) through a
real mesh's `/mcp`.

    python scripts/mcp_conformance.py --work DIR [--reference DIR] [--suite-version 0.1.16]

The mesh runs in transparent mode (the upstream's own tool names, which the scenarios call) in
front of one upstream:
- `--reference DIR`: the suite's own reference server, `examples/servers/typescript` of
  github.com/modelcontextprotocol/conformance at the suite's version (its tools are what the
  scenarios call: all of them can pass); installed with npm in DIR, run with `npx tsx`, reached
  over Streamable HTTP;
- else server-everything (node_modules): the scenarios that need the reference server's tools
  fail the same way with and without the mesh; the others pass.
WORK gets `node@22` (the suite needs Node >= 22) and the suite from npm, and the results
(`WORK/results`). Exit status: the suite's. Needs `npm ci` and network access to npm.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench_mesh import EVERYTHING, MeshProcess, free_port


def npm_install(where: Path, *packages: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", *packages],
        cwd=where,
        check=True,
    )


def start_reference(directory: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    if not (directory / "node_modules").exists():
        npm_install(directory)
    port = free_port()
    server = subprocess.Popen(
        ["npx", "tsx", "everything-server.ts"],
        cwd=directory,
        env={**env, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
        except urllib.error.HTTPError:
            return server, url  # it answers (a bare GET is refused): up
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"the reference server in {directory} did not start")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--work", type=Path, required=True, help="npm installs and results go here")
    ap.add_argument("--reference", type=Path, help="the suite's examples/servers/typescript")
    ap.add_argument("--suite-version", default="0.1.16")
    args = ap.parse_args()
    work = args.work.resolve()
    if not (work / "node_modules" / ".bin" / "conformance").exists():
        npm_install(work, "node@22", f"@modelcontextprotocol/conformance@{args.suite_version}")
    env = {**os.environ, "PATH": f"{work / 'node_modules' / '.bin'}:{os.environ['PATH']}"}
    server: subprocess.Popen[bytes] | None = None
    if args.reference is not None:
        server, url = start_reference(args.reference.resolve(), env)
        upstream: dict[str, object] = {"name": "ref", "transport": "http", "url": url}
    else:
        upstream = {"name": "everything", "command": str(EVERYTHING), "args": ["stdio"]}
    extra = {
        "mcp_servers": [{**upstream, "prefix": ""}],  # transparent: the scenarios' tool names
        "policies": [{"name": "all", "agent": "*", "rules": [{"tools": ["*"], "action": "allow"}]}],
    }
    tmp = Path(tempfile.mkdtemp(prefix="conformance-mesh-"))
    mesh = MeshProcess(tmp, 1, 1, extra)
    try:
        mesh.start()
        url = f"http://127.0.0.1:{mesh.port}/mcp"
        command = ["conformance", "server", "--url", url, "-o", str(work / "results")]
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        mesh.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if server is not None:
            os.killpg(server.pid, 15)


if __name__ == "__main__":
    sys.exit(main())
