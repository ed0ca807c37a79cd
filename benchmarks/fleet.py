"""What `unet-bench remote` costs on a fleet: two SSH "devices" on loopback (tests/ssh_server.py: asyncssh servers
with their own home folders), a cold run (wheel built, venvs made, the runtime installed, the pack copied) and a warm
one (venv and pack reused), per host: seconds and the steps taken.

    .venv/bin/python benchmarks/fleet.py PACK [--extra litert] [--runtimes litert]

Uses the package index (or pip's cache) for the devices' installs, like make test-fleet. Both "devices" share this
machine's cores: the seconds are this machine's, not a board's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    import asyncssh

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pack", type=Path)
    parser.add_argument("--extra", default="litert")
    parser.add_argument("--runtimes", default="litert")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="unet-fleet-bench-") as tmp:
        tmp = Path(tmp)
        user, host = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
        user.write_private_key(tmp / "id")
        host.write_private_key(tmp / "host_key")
        user.write_public_key(tmp / "authorized")
        servers, specs = [], []
        try:
            for label in ("a", "b"):
                port, home = _port(), tmp / label
                home.mkdir()
                proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "ssh_server.py"), str(port), str(home),
                                         str(tmp / "host_key"), str(tmp / "authorized")], stdout=subprocess.PIPE,
                                        text=True, start_new_session=True)
                servers.append(proc)
                assert proc.stdout.readline().strip() == "listening"
                specs += ["--host", f"{label}={os.environ.get('USER', 'root')}@127.0.0.1:{port}"]
            for run in ("cold", "warm"):
                out = tmp / f"{run}.json"
                started = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "exporter.cli.bench", "remote", str(args.pack), *specs,
                                       "--identity", str(tmp / "id"), "--known-hosts", str(tmp / "known_hosts"),
                                       "--accept-new-host-keys", "--python", sys.executable, "--extra", args.extra,
                                       "--runtimes", args.runtimes, "--threads", "1", "--json", str(out)],
                                      capture_output=True, text=True, cwd=ROOT)
                wall = time.perf_counter() - started
                if done.returncode != 0:
                    sys.exit(f"{run} run failed (exit {done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
                print(f"## {run} run: {wall:.1f} s for both hosts")
                for h in json.loads(out.read_text())["fleet"]:
                    ok = sum(r["status"] == "ok" for r in h["result"]["results"]) if h["result"] else 0
                    print(f"- {h['label']}: {h['status']}, {h['seconds']:.1f} s, {ok} ok rows; steps: "
                          + "; ".join(s for s in h["steps"] if not s.startswith("connected")))
            print(done.stdout.split("\n[", 1)[0] if not done.stdout.startswith("[") else
                  "\n".join(line for line in done.stdout.splitlines() if not line.startswith("[")))
        finally:
            for proc in servers:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


if __name__ == "__main__":
    main()
