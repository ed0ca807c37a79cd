"""unet-bench remote on loopback: two "devices" (two SSH servers of asyncssh on 127.0.0.1, each with its own home
folder), real key authentication and host-key checks, a real wheel installed into a real venv on each, one
killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from exporter.cli.bench import cli as bench_cli
from exporter.errors import UserError
from exporter.fleet import FleetReport, Host, HostOutcome, read_hosts

pytestmark = pytest.mark.slow  # builds a wheel, fills two venvs from the package index
HERE = Path(__file__).parent
LOOPBACK = os.environ.get("UNET_FLEET") == "1"
loopback_only = pytest.mark.skipif(not LOOPBACK, reason="SSH devices on loopback, venvs from the package index or a "
                                                         "wheelhouse (~4 min): make test-fleet (UNET_FLEET=1)")
FAST = ["--runtimes", "litert", "--warmup", "0", "--min-runs", "1", "--min-seconds", "0", "--threads", "1"]


def test_hosts_are_parsed_and_checked(tmp_path):
    assert Host.parse("pi4=pi@10.0.0.7") == Host("pi4", "10.0.0.7", "pi", 22)
    assert Host.parse("jetson=ubuntu@jetson.local:2222") == Host("jetson", "jetson.local", "ubuntu", 2222)
    assert Host.parse("box.lan") == Host("box.lan", "box.lan")
    v6 = Host.parse("lab=pi@[fe80::1]:2222")
    assert v6 == Host("lab", "fe80::1", "pi", 2222) and str(v6) == "pi@[fe80::1]:2222"
    for unbracketed in ("pi@fe80::1", "2001:db8::7", "::1"):  # never read as host 'fe80:' port 1
        with pytest.raises(UserError, match="IPv6 address in brackets"):
            Host.parse(unbracketed)
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# the lab\npi4=pi@10.0.0.7\n\njetson=ubuntu@jetson.local:2222\n")
    assert [h.label for h in read_hosts(hosts)] == ["pi4", "jetson"]
    hosts.write_text("pi4=pi@10.0.0.7\nnot a host!\n")
    result = CliRunner().invoke(bench_cli, ["remote", str(hosts), "--hosts", str(hosts)])
    assert result.exit_code == 2 and f"{hosts} line 2" in result.output and result.output.count("\n") == 1
    twice = CliRunner().invoke(bench_cli, ["remote", str(hosts), "--host", "a=x@h", "--host", "a=y@h"])
    assert twice.exit_code == 2 and "label 'a' is given twice" in twice.output


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Device:
    """One SSH server on loopback with a home folder of its own."""

    def __init__(self, root: Path, keys: dict, offline: bool = False) -> None:
        self.home, self.port, self.keys, self.offline = root, _port(), keys, offline
        root.mkdir(parents=True, exist_ok=True)
        self.proc = None

    def start(self) -> None:
        env = dict(os.environ, PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")))
        if self.offline:  # no package index reachable from this "device"
            env.update(PIP_INDEX_URL=f"http://127.0.0.1:{_port()}/simple", PIP_RETRIES="0", PIP_TIMEOUT="2")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "ssh_server.py"), str(self.port), str(self.home),
                                      self.keys["host"], self.keys["authorized"]], stdout=subprocess.PIPE, text=True,
                                     env=env, start_new_session=True)
        assert self.proc.stdout.readline().strip() == "listening"

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the server and the bench it was running
        self.proc.wait()

    def spec(self, label: str) -> str:
        return f"{label}={os.environ.get('USER', 'root')}@127.0.0.1:{self.port}"


@pytest.fixture
def keys(tmp_path) -> dict:
    import asyncssh

    user, host = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    paths = {"user": tmp_path / "id_ed25519", "host": tmp_path / "host_key", "authorized": tmp_path / "authorized"}
    user.write_private_key(paths["user"])
    host.write_private_key(paths["host"])
    user.write_public_key(paths["authorized"])
    return {name: str(path) for name, path in paths.items()}


@loopback_only
def test_a_two_device_fleet_with_one_killed_mid_run_then_both_again(exported_run, keys, tmp_path):
    _, pack = exported_run
    a, b = Device(tmp_path / "device_a", keys), Device(tmp_path / "device_b", keys)
    a.start()
    b.start()
    known = tmp_path / "known_hosts"
    base = [sys.executable, "-m", "exporter.cli.bench", "remote", str(pack), "--identity", keys["user"],
            "--known-hosts", str(known), "--python", sys.executable, *FAST]
    try:
        refused = subprocess.run([*base, "--host", a.spec("a")], capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2 and "host key of" in refused.stdout and "not accepted" in refused.stdout
        assert known.read_text() == ""  # nothing accepted without asking

        first = subprocess.Popen([*base, "--host", a.spec("a"), "--host", b.spec("b"), "--accept-new-host-keys",
                                  "--json", str(tmp_path / "fleet.json"), "--markdown", str(tmp_path / "fleet.md")],
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        for line in first.stdout:  # b is killed while it benches
            if line.startswith("[b] running unet-bench"):
                b.kill()
                break
        out, err = first.communicate(timeout=600)
        assert first.returncode == 0, out[-3000:] + err[-3000:]
        fleet = {h["label"]: h for h in json.loads((tmp_path / "fleet.json").read_text())["fleet"]}
        assert fleet["a"]["status"] == "ok" and fleet["b"]["status"] == "failed" and fleet["b"]["reason"]
        assert any(r["status"] == "ok" for r in fleet["a"]["result"]["results"])
        assert "failed: b (" in out and len(known.read_text().splitlines()) == 2
        table = (tmp_path / "fleet.md").read_text()
        assert f"| a | {a.spec('a').split('=')[1]} | ok |" in table and f"| b | {b.spec('b').split('=')[1]} | failed |" in table
        assert "Runs: a\n" in table and "| unet_int8_uint8io_argmax.tflite" in table  # the compare table: a alone

        # a pack cut short on b under its final name and a partial one: neither is used, the pack is copied again
        (cached,) = (b.home / ".cache" / "unet-bench" / "packs").glob("*.pack")
        cached.write_bytes(cached.read_bytes()[:100])
        dead = cached.parent / f"{cached.name}.999.partial"  # a copy of a run that died two hours ago
        dead.write_bytes(b"junk")
        os.utime(dead, (time.time() - 7200, time.time() - 7200))
        b.start()
        again = subprocess.run([*base, "--host", a.spec("a"), "--host", b.spec("b"), "--all-hosts", "--json",
                                str(tmp_path / "again.json")], capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        steps = {h["label"]: h["steps"] for h in json.loads((tmp_path / "again.json").read_text())["fleet"]}
        assert any(s.startswith("reusing the venv") for s in steps["a"])
        assert any(s.startswith("reusing the pack") for s in steps["a"])
        assert any(s.startswith("copying the pack") for s in steps["b"])
        assert cached.stat().st_size == pack.stat().st_size and not dead.exists()
    finally:
        for device in (a, b):
            if device.proc and device.proc.poll() is None:
                device.kill()


@loopback_only
def test_a_device_without_a_package_index_installs_from_the_wheelhouse(exported_run, keys, tmp_path):
    _, pack = exported_run
    wheelhouse = tmp_path / "wheelhouse"
    download = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:", "-d",
                               str(wheelhouse), "numpy>=2.0", "click>=8.1", "ai-edge-litert>=2.3"],
                              capture_output=True, text=True, timeout=600)
    assert download.returncode == 0, download.stderr[-2000:]
    device = Device(tmp_path / "offline", keys, offline=True)
    device.start()
    base = [sys.executable, "-m", "exporter.cli.bench", "remote", str(pack), "--identity", keys["user"],
            "--known-hosts", str(tmp_path / "known_hosts"), "--accept-new-host-keys", "--python", sys.executable,
            "--host", device.spec("offline"), "--extra", "litert", *FAST]
    try:
        no_index = subprocess.run(base, capture_output=True, text=True, timeout=600)
        assert no_index.returncode == 2 and "installing the device side failed" in no_index.stdout, no_index.stdout
        offline = subprocess.run([*base, "--wheelhouse", str(wheelhouse), "--json", str(tmp_path / "fleet.json")],
                                 capture_output=True, text=True, timeout=600)
        assert offline.returncode == 0, offline.stdout[-3000:] + offline.stderr[-3000:]
        (host,) = json.loads((tmp_path / "fleet.json").read_text())["fleet"]
        assert any(s.endswith("from the wheelhouse") for s in host["steps"]) and host["status"] == "ok"
        assert any(r["status"] == "ok" for r in host["result"]["results"])
    finally:
        if device.proc and device.proc.poll() is None:
            device.kill()


def test_a_changed_host_key_is_refused_and_named_and_a_silent_host_times_out(exported_run, keys, tmp_path):
    import asyncssh

    from exporter.fleet import FleetOptions, run_fleet

    _, pack = exported_run
    device = Device(tmp_path / "device", keys)
    device.start()
    known = tmp_path / "known_hosts"
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    known.write_text(f"[127.0.0.1]:{device.port} {other}\n")  # recorded before the "device" got a new key
    try:
        result = CliRunner().invoke(bench_cli, ["remote", str(pack), "--host", device.spec("moved"), "--wheel",
                                                str(pack), "--identity", keys["user"], "--known-hosts", str(known),
                                                "--accept-new-host-keys"])
    finally:
        device.kill()
    assert result.exit_code == 2 and "it CHANGED" in result.output and "ssh-keygen -R" in result.output
    assert known.read_text() == f"[127.0.0.1]:{device.port} {other}\n"  # never replaced, even when asked to accept

    with socket.socket() as silent:  # accepts the connection, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        host = Host("silent", "127.0.0.1", "u", silent.getsockname()[1])
        started = time.monotonic()
        (outcome,) = run_fleet(pack, [host], pack, FleetOptions(identity=keys["user"], known_hosts=str(known),
                                                                 connect_timeout=1))
    assert outcome.reason == f"{host}: no answer within 1s" and time.monotonic() - started < 30


def test_an_unreachable_host_is_a_row_and_all_hosts_makes_it_exit_2(exported_run, keys, tmp_path):
    _, pack = exported_run
    start = time.monotonic()
    result = CliRunner().invoke(bench_cli, ["remote", str(pack), "--host", f"gone=u@127.0.0.1:{_port()}", "--wheel",
                                            str(pack), "--identity", keys["user"], "--known-hosts",
                                            str(tmp_path / "kh"), "--all-hosts"])
    assert result.exit_code == 2, result.output
    assert "1 of 1 hosts did not run: gone (u@127.0.0.1:" in result.output and "refused" in result.output.lower()
    assert time.monotonic() - start < 60


def test_progress_is_one_line_per_host_on_a_terminal_and_every_message_in_a_log():
    import io

    from exporter.fleet import HostLines

    hosts = [Host.parse("pi4=pi@10.0.0.7"), Host.parse("pi5=pi@10.0.0.8")]
    screen = io.StringIO()
    live = HostLines(hosts, screen, live=True)
    for message in ("[pi4] connected", "[pi5] connected", "[pi4] running unet-bench", "[pi5] failed: timed out"):
        live(message)
    frames = screen.getvalue().split("\x1b[2F")  # each redraw goes back to the first host's line
    assert len(frames) == 4 and frames[-1] == "\x1b[2K[pi4] running unet-bench\n\x1b[2K[pi5] failed: timed out\n"
    log = io.StringIO()
    HostLines(hosts, log, live=False)("[pi4] connected")
    assert log.getvalue() == "[pi4] connected\n"


def test_a_fleet_with_no_measured_row_still_writes_its_report_and_nothing_measured_never_passes(tmp_path):
    from exporter import drift
    from exporter.contracts.bench_json import BenchResult

    skipped = BenchResult.from_dict({"environment": {"cpu": "Cortex-A72"}, "results": [
        {"artifact": "unet.onnx", "format": "onnx", "runtime": "onnxruntime", "device": "cpu", "status": "skipped",
         "reason": "onnxruntime is not installed"}]})
    pi, gone = Host.parse("pi=pi@10.0.0.7"), Host.parse("gone=u@10.0.0.8")
    report = FleetReport((HostOutcome(pi, skipped), HostOutcome(gone, reason="no answer within 30s")),
                         drift.Budget(1.0, 0.98))
    assert "(no table: " in report.text() and "failed: gone (u@10.0.0.8): no answer" in report.text()
    written = report.write(tmp_path / "fleet.json", tmp_path / "fleet.md")
    assert [p.name for p in written] == ["fleet.json", "fleet.md"] and "| pi | pi@10.0.0.7 | ok |" in written[1].read_text()
    report.check(all_hosts=False)  # one host ran (its rows were skipped: the table says so)
    with pytest.raises(UserError, match="1 of 2 hosts did not run"):
        report.check(all_hosts=True)
    nobody = FleetReport((HostOutcome(gone, reason="no answer within 30s"),), drift.Budget(1.0, 0.98))
    with pytest.raises(UserError, match="1 of 1 hosts did not run"):
        nobody.check(all_hosts=False)  # a gate with nothing measured does not pass
