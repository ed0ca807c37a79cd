"""``unet-bench remote``: one pack benchmarked on many devices at once over SSH, one table.

For every host, in parallel: connect (known_hosts checked; a new host key refused unless
``accept_new_host_keys``, a changed one always), check its Python (3.10–3.13), create or reuse a venv in a cache
folder on the device keyed by the wheel's sha256, the device's Python and the extra, install the device side from a wheel built from
this checkout (copied over: the device needs no access to this project), copy the pack only if the device does
not hold one with its sha256 (copied to a temporary name, then renamed: a copy cut short is never used), run
``unet-bench run`` there, fetch the JSON. A host that cannot be reached, refuses the key, lacks Python, fails to
install, runs out of disk or times out becomes one ``HostOutcome`` with the reason; the others go on.

SSH through asyncssh (imported inside the functions: ``pip install 'unet-export[fleet]'``), keys from the agent or
``identity``; no password is asked for or stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from exporter.contracts.bench_json import BenchResult
from exporter.contracts.checks import ContractError
from exporter.errors import UserError
from exporter.fileio import sha256_file

PYTHONS = ((3, 10), (3, 13))  # the device side's range (pyproject.toml)
HOST_SPEC = re.compile(r"^(?:(?P<label>[A-Za-z0-9][A-Za-z0-9_.-]{0,40})=)?(?:(?P<user>[A-Za-z0-9_.-]+)@)?"
                       r"(?P<host>[A-Za-z0-9_.-]+|\[[0-9a-fA-F:]+\])(?::(?P<port>\d{1,5}))?$")
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01: a wheel built twice from the same files is the same bytes


@dataclass(frozen=True)
class Host:
    """One device: ``label=user@host:port`` (label: the host; user: the SSH default; port: 22)."""

    label: str
    host: str
    user: str | None = None
    port: int = 22

    @classmethod
    def parse(cls, text: str, where: str = "--host") -> Host:
        match = HOST_SPEC.match(text.strip())
        if not match or (match["port"] and not 0 < int(match["port"]) < 65536):
            raise UserError(f"{where}: expected LABEL=USER@HOST[:PORT] (an IPv6 address in brackets: [fe80::1]), "
                            f"got {text.strip()[:80]!r}")
        host = match["host"].strip("[]")
        return cls(match["label"] or host, host, match["user"], int(match["port"] or 22))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}{'' if self.port == 22 else f':{self.port}'}"


def read_hosts(path: str | Path) -> list[Host]:
    """A hosts file: one ``label=user@host[:port]`` a line; blank lines and ``#`` comments skipped."""
    from exporter.fileio import read_lines

    path = Path(path)
    lines = read_lines(path, "hosts file")
    numbered = [(n, Host.parse(line, f"{path} line {n}")) for n, line in enumerate(lines, 1)
                if line.strip() and not line.strip().startswith("#")]
    if not numbered:
        raise UserError(f"{path}: no hosts (one label=user@host[:port] a line)")
    first: dict[str, int] = {}
    for n, host in numbered:
        if host.label in first:
            raise UserError(f"{path} line {n}: the label {host.label!r} is given twice (first on line "
                            f"{first[host.label]}); name each host (label=user@host)")
        first[host.label] = n
    hosts = [host for _, host in numbered]
    return hosts


def unique_labels(hosts: list[Host], where: str = "--host") -> list[Host]:
    """The hosts, refused when two share a label (their results would overwrite each other); ``where`` names
    where they came from."""
    labels = [h.label for h in hosts]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise UserError(f"{where}: the label {twice[0]!r} is given twice; name each host (label=user@host)")
    return hosts


@dataclass(frozen=True)
class FleetOptions:
    """How the fleet is reached and what runs there."""

    extra: str = "litert"  # the runtime extra installed on every device
    python: str = "python3"  # the device's interpreter
    cache: str = "~/.cache/unet-bench"  # on the device: wheels, venvs, packs, results
    identity: str | None = None  # a private key file (default: the SSH agent's keys and ~/.ssh's)
    known_hosts: str | None = None  # default ~/.ssh/known_hosts
    accept_new_host_keys: bool = False
    connect_timeout: float = 30.0
    timeout: float = 3600.0  # seconds for one host, everything included
    run_args: tuple[str, ...] = ()  # unet-bench run options, passed through
    wheelhouse: str | None = None  # wheels of numpy, click and the runtime for the devices (no package index there)


@dataclass
class HostOutcome:
    """What one host gave: its bench result, or why it gave none."""

    host: Host
    result: BenchResult | None = None
    reason: str | None = None
    seconds: float = 0.0
    steps: list[str] = field(default_factory=list)  # what was done there (installed, copied, reused)

    @property
    def ok(self) -> bool:
        return self.result is not None

    def to_dict(self) -> dict:
        return {"label": self.host.label, "host": str(self.host), "status": "ok" if self.ok else "failed",
                "reason": self.reason, "seconds": round(self.seconds, 1), "steps": self.steps,
                "result": self.result.to_dict() if self.result else None}


def build_wheel(out_dir: str | Path) -> Path:
    """The device side as a wheel built from this checkout, the same bytes for the same files (so the
    device-side cache, keyed by its sha256, is reused); UserError where there is no checkout to build from."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise UserError(f"{root}: not a checkout of unet-export (no pyproject.toml): give --wheel FILE")
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="unet-wheel-") as source:  # setuptools writes build/ into its source
        for name in ("pyproject.toml", "README.md"):
            shutil.copyfile(root / name, Path(source) / name)
        shutil.copytree(root / "exporter", Path(source) / "exporter", ignore=shutil.ignore_patterns("__pycache__"))
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH)
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out_dir),
                               source], capture_output=True, text=True, timeout=600, env=env)
    if done.returncode != 0:
        raise UserError(f"{root}: building the wheel failed ({done.stderr.strip().splitlines()[-1:]})")
    return max(out_dir.glob("unet_export-*.whl"), key=lambda p: p.stat().st_mtime)


class HostLines:
    """Progress as one line per host, redrawn in place on a terminal (``[pi4] installing …``); in a log or a pipe,
    each message on a line of its own as it comes."""

    def __init__(self, hosts: list[Host], stream=None, live: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.lines = {host.label: "waiting" for host in hosts}
        self.drawn = False

    def __call__(self, message: str) -> None:
        label, _, text = message[1:].partition("] ")
        if not self.live or not message.startswith("[") or label not in self.lines:
            print(message, file=self.stream, flush=True)
            return
        self.lines[label] = text
        if self.drawn:
            self.stream.write(f"\x1b[{len(self.lines)}F")  # back to the first host's line
        width = max(20, shutil.get_terminal_size().columns - 1)
        for name, line in self.lines.items():
            self.stream.write("\x1b[2K" + f"[{name}] {line}"[:width] + "\n")
        self.stream.flush()
        self.drawn = True


class _Failed(Exception):
    """One step on one host failed; the message is the row's reason."""


def run_fleet(pack: Path, hosts: list[Host], wheel: Path, options: FleetOptions,
              progress: Callable[[str], None] | None = None) -> list[HostOutcome]:
    """Benchmark ``pack`` on every host at once; an outcome per host, in the order given."""
    progress = progress or (lambda message: None)
    pack_sha, wheel_sha = sha256_file(pack), sha256_file(wheel)

    async def everyone() -> list[HostOutcome]:
        return list(await asyncio.gather(*(_host(h, pack, pack_sha, wheel, wheel_sha, options, progress)
                                            for h in hosts)))

    return asyncio.run(everyone())


async def _host(host: Host, pack: Path, pack_sha: str, wheel: Path, wheel_sha: str, options: FleetOptions,
                progress: Callable[[str], None]) -> HostOutcome:
    """One host, start to end, bounded by ``options.timeout``; failures become the outcome's reason."""
    outcome, started = HostOutcome(host), time.perf_counter()

    def say(message: str) -> None:
        outcome.steps.append(message)
        progress(f"[{host.label}] {message}")

    try:
        outcome.result = await asyncio.wait_for(_session(host, pack, pack_sha, wheel, wheel_sha, options, say,
                                                         time.monotonic() + options.timeout), options.timeout)
    except asyncio.TimeoutError:
        outcome.reason = f"timed out after {options.timeout:.0f}s"
    except _Failed as exc:
        outcome.reason = str(exc)
    except Exception as exc:  # asyncssh's errors, OSError (refused, unreachable, no route): the row says which
        outcome.reason = _why(exc)
    outcome.seconds = time.perf_counter() - started
    progress(f"[{host.label}] " + (f"done in {outcome.seconds:.0f}s" if outcome.ok else f"failed: {outcome.reason}"))
    return outcome


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}"[:300]


async def _session(host: Host, pack: Path, pack_sha: str, wheel: Path, wheel_sha: str, options: FleetOptions,
                   say: Callable[[str], None], deadline: float) -> BenchResult:
    conn = await _connect(host, options)
    async with conn:
        remote = _Remote(conn, options, deadline)
        version = await remote.python_version()
        say(f"connected to {host}; Python {version[0]}.{version[1]}")
        cache = await remote.home_cache()
        venv = await remote.venv(cache, wheel, wheel_sha, version, say)
        packed = await remote.pack(cache, pack, pack_sha, say)
        say("running unet-bench")
        return await remote.bench(cache, venv, packed, host.label)


async def _connect(host: Host, options: FleetOptions):
    """An SSH connection with the host key checked against known_hosts (``_KnownHosts``)."""
    import asyncssh

    known = Path(options.known_hosts or "~/.ssh/known_hosts").expanduser()
    if not known.exists():  # an empty file, not asyncssh's fallback to the default one
        known.parent.mkdir(parents=True, exist_ok=True)
        known.touch()

    checker = _KnownHosts(known)

    class Client(asyncssh.SSHClient):
        def validate_host_public_key(self, name, addr, port, key) -> bool:
            return checker.accept(host, addr, key, options.accept_new_host_keys)

    keys = [options.identity] if options.identity else ()
    try:
        conn, _ = await asyncio.wait_for(asyncssh.create_connection(
            Client, host.host, host.port, username=host.user, known_hosts=str(known),
            client_keys=keys or (), agent_path=None if options.identity else (), password=None,
            kbdint_auth=False, connect_timeout=options.connect_timeout, keepalive_interval=15,
            keepalive_count_max=3), options.connect_timeout + 5)  # keepalives: a dead link ends, not hangs
    except asyncssh.HostKeyNotVerifiable as exc:
        if checker.changed:
            raise _Failed(f"host key of {host} not accepted ({exc}): {known} lists {checker.changed} with another "
                          "key: it CHANGED (another machine at this address, or someone in between); remove the "
                          "old line (ssh-keygen -R) only if you expected the change") from None
        raise _Failed(f"host key of {host} not accepted ({exc}): it is not in {known}; check it, then add it "
                      "or pass --accept-new-host-keys") from None
    except (TimeoutError, asyncio.TimeoutError):  # asyncssh's connect_timeout, or ours around it (one class from 3.11)
        raise _Failed(f"{host}: no answer within {options.connect_timeout:.0f}s") from None
    except asyncssh.PermissionDenied:
        raise _Failed(f"{host} refused the key ({options.identity or 'agent and ~/.ssh keys'})") from None
    return conn


@dataclass
class _KnownHosts:
    """known_hosts as the fleet uses it: a host it lists must show the listed key (asyncssh checks that); an
    unlisted host's key is refused, or with ``accept_new`` accepted and appended."""

    path: Path
    changed: str = ""  # the name known_hosts lists the host under with another key (set when that refused a key)

    def accept(self, host: Host, addr: str, key, accept_new: bool) -> bool:
        import asyncssh

        name = host.host if host.port == 22 else f"[{host.host}]:{host.port}"
        trusted, ca_keys, *_ = asyncssh.match_known_hosts(str(self.path), host.host, addr, host.port)
        if any(t.public_data == key.public_data for t in trusted):  # recorded since the connection read the file
            return True  # (another label on the same device, accepted a moment ago)
        if trusted or ca_keys:  # a host listed with another key: a changed key, never accepted
            self.changed = name if host.port == 22 else f"{name} (or {host.host}: an entry without a port counts " \
                                                         "for every port)"
            return False
        if not accept_new:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(f"{name} {key.export_public_key().decode().strip()}\n")
        return True


class _Remote:
    """The commands run on one device, each a POSIX shell line."""

    def __init__(self, conn, options: FleetOptions, deadline: float) -> None:
        self.conn, self.options, self.deadline = conn, options, deadline

    async def sh(self, command: str, what: str) -> str:
        result = await self.conn.run(command, check=False)
        if result.exit_status != 0:
            said = (result.stderr or result.stdout or "").strip().splitlines()
            raise _Failed(f"{what} failed (exit {result.exit_status}): {said[-1][:200] if said else 'no output'}")
        return result.stdout or ""

    async def python_version(self) -> tuple[int, int]:
        out = await self.sh(f"{shlex.quote(self.options.python)} -c 'import sys; print(*sys.version_info[:2])'",
                            f"{self.options.python} (is Python installed?)")
        version = tuple(int(v) for v in out.split()[:2])
        if not PYTHONS[0] <= version <= PYTHONS[1]:
            raise _Failed(f"Python {version[0]}.{version[1]} here; the device side needs 3.10 to 3.13")
        return version

    async def home_cache(self) -> str:
        """The cache folder, made, as an absolute path (``~`` expanded on the device)."""
        cache = self.options.cache
        expr = f'"$HOME"{shlex.quote(cache[1:])}' if cache.startswith("~") else shlex.quote(cache)
        out = await self.sh(f"c={expr}; mkdir -p \"$c/wheels\" \"$c/venvs\" \"$c/packs\" \"$c/results\" && echo \"$c\"",
                            "making the cache folder")
        return out.strip()

    async def put(self, local: Path, remote: str) -> None:
        """``local`` to ``remote`` through a temporary name: a copy cut short is never under the final name."""
        partial = f"{remote}.{uuid.uuid4().hex[:12]}.partial"  # two labels on one device do not share it
        folder, name = remote.rsplit("/", 1)
        stale = max(2, int(self.options.timeout // 60) + 1)  # older than any run still under way: a dead run's
        await self.conn.run(f"find {shlex.quote(folder)} -maxdepth 1 -name {shlex.quote(name + '.*.partial')} "
                            f"-mmin +{stale} -exec rm -f {{}} +", check=False)
        async with self.conn.start_sftp_client() as sftp:
            try:
                await sftp.put(str(local), partial)
                await sftp.posix_rename(partial, remote)
            except BaseException:  # a full disk, a cut connection: the partial copy does not stay to fill the disk
                try:
                    await asyncio.wait_for(sftp.remove(partial), 10)
                except BaseException:  # noqa: BLE001 - the link may be gone: a later put removes it once stale
                    pass
                raise

    async def venv(self, cache: str, wheel: Path, wheel_sha: str, version: tuple[int, int],
                   say: Callable[[str], None]) -> str:
        extra = re.sub(r"[^A-Za-z0-9_,-]", "", self.options.extra)
        venv = f"{cache}/venvs/{wheel_sha[:16]}-py{version[0]}.{version[1]}-{extra or 'none'}"
        if (await self.conn.run(f"test -f {shlex.quote(venv)}/.ready", check=False)).exit_status == 0:
            say(f"reusing the venv of wheel {wheel_sha[:12]} [{extra}]")
            return venv
        remote_wheel = f"{cache}/wheels/{wheel.name}"
        await self.put(wheel, remote_wheel)
        offline = await self.wheelhouse(cache, say)
        say(f"installing unet-export (wheel {wheel_sha[:12]}) with [{extra}]"
            + (" from the wheelhouse" if offline else ""))
        spec = shlex.quote(f"{remote_wheel}[{extra}]" if extra else remote_wheel)
        q = shlex.quote(venv)
        index = f"--no-index --find-links {shlex.quote(offline)} " if offline else ""
        await self.sh(f"rm -rf {q} && {shlex.quote(self.options.python)} -m venv {q} && "
                      f"{q}/bin/python -m pip install --quiet --disable-pip-version-check {index}{spec} && "
                      f"touch {q}/.ready", "installing the device side")
        return venv

    async def wheelhouse(self, cache: str, say: Callable[[str], None]) -> str | None:
        """``options.wheelhouse``'s wheels in the device's cache (each copied unless one of its name and size is
        there already); the folder pip installs from with no package index, or None."""
        import asyncssh

        if not self.options.wheelhouse:
            return None
        remote = f"{cache}/wheelhouse"
        await self.sh(f"mkdir -p {shlex.quote(remote)}", "making the wheelhouse folder")
        missing = []
        async with self.conn.start_sftp_client() as sftp:
            for local in wheelhouse_wheels(self.options.wheelhouse):
                try:
                    if (await sftp.stat(f"{remote}/{local.name}")).size == local.stat().st_size:
                        continue
                except asyncssh.SFTPNoSuchFile:
                    pass
                missing.append(local)
        if missing:
            say(f"copying {len(missing)} wheel(s) of the wheelhouse ({sum(w.stat().st_size for w in missing) / 1e6:.1f} MB)")
        for local in missing:
            await self.put(local, f"{remote}/{local.name}")
        return remote

    async def pack(self, cache: str, pack: Path, pack_sha: str, say: Callable[[str], None]) -> str:
        remote = f"{cache}/packs/{pack_sha}.pack"
        q = shlex.quote(remote)
        check = f"test -f {q} && {shlex.quote(self.options.python)} -c " + shlex.quote(
            "import hashlib, sys; h = hashlib.sha256(); f = open(sys.argv[1], 'rb');"
            "[h.update(b) for b in iter(lambda: f.read(1 << 20), b'')]; print(h.hexdigest())") + f" {q}"
        held = await self.conn.run(check, check=False)
        if held.exit_status == 0 and (held.stdout or "").strip() == pack_sha:
            say(f"reusing the pack already there ({pack_sha[:12]})")
            return remote
        say(f"copying the pack ({pack.stat().st_size / 1e6:.1f} MB)")
        await self.put(pack, remote)
        return remote

    async def bench(self, cache: str, venv: str, pack: str, label: str) -> BenchResult:
        import asyncssh

        out = f"{cache}/results/{label}-{os.getpid()}-{time.time_ns()}.json"
        args = " ".join(shlex.quote(a) for a in (*self.options.run_args, "--label", label, "--json", out))
        # bounded on the device too, by the time this host has left: a run this side gave up on (its timeout)
        # stops there then, not an hour later (GNU, BusyBox and BSD timeout take -k; without one, unbounded)
        left = max(1, int(self.deadline - time.monotonic()) + 1)
        bound = f"timeout -k 10 {left} " if (
            await self.conn.run("timeout -k 1 5 true", check=False)).exit_status == 0 else ""
        result = await self.conn.run(f"{bound}{shlex.quote(venv)}/bin/unet-bench run {shlex.quote(pack)} {args}",
                                     check=False)
        said = (result.stderr or "").strip().splitlines()
        if result.exit_status not in (0, 1):  # 1: a gate the run options asked for; judged here again anyway
            raise _Failed(f"unet-bench run failed (exit {result.exit_status}): {said[-1][:200] if said else ''}")
        async with self.conn.start_sftp_client() as sftp:
            try:
                async with sftp.open(out, "rb") as fh:
                    data = await fh.read()
            except asyncssh.SFTPNoSuchFile:  # exit 1 from a crash, not a gate
                raise _Failed(f"unet-bench run wrote no results (exit {result.exit_status}): "
                              f"{said[-1][:200] if said else 'no output'}") from None
            await sftp.remove(out)
        try:
            return BenchResult.from_dict(json.loads(data))
        except (ValueError, ContractError) as exc:
            raise _Failed(f"the device's bench JSON is not one ({exc})") from None


def wheelhouse_wheels(folder: str | Path) -> list[Path]:
    """The wheels in a wheelhouse folder; UserError when it holds none."""
    wheels = sorted(Path(folder).glob("*.whl"))
    if not wheels:
        raise UserError(f"{folder}: no wheels (*.whl) in the wheelhouse; fill it with pip download (README, "
                        "\"Benchmark a fleet\")")
    return wheels


def check_available() -> None:
    """asyncssh is there (the fleet's one extra), or a one-line UserError saying how to get it."""
    from exporter.runtimes.base import module_missing

    if module_missing("asyncssh"):
        raise UserError("remote: asyncssh is not installed: pip install 'unet-export[fleet]'")


@dataclass(frozen=True)
class FleetReport:
    """Every host's outcome as one table (the ``compare`` pairing across the hosts that ran), the hosts that did
    not, and the gate: each host's rows judged by ``exporter.drift``."""

    outcomes: tuple[HostOutcome, ...]
    budget: object  # exporter.drift.Budget

    def _table(self) -> str:
        from exporter.bench.compare import compare

        ran = [(o.host.label, o.result) for o in self.outcomes if o.ok]
        if not ran:
            return "(no host ran)"
        try:
            return compare(ran)
        except UserError as exc:  # every row skipped or failed on every host: the outcomes still say why
            return f"(no table: {exc})"

    def _failed(self) -> list[str]:
        return [f"{o.host.label} ({o.host}): {o.reason}" for o in self.outcomes if not o.ok]

    def text(self) -> str:
        return "\n".join([self._table(), *(f"failed: {line}" for line in self._failed())])

    def markdown(self) -> str:
        lines = ["# unet-bench fleet", "", "| host | address | status | seconds | why |", "|---|---|---|---:|---|"]
        lines += [f"| {o.host.label} | {o.host} | {'ok' if o.ok else 'failed'} | {o.seconds:.0f} | "
                  f"{(o.reason or '').replace('|', '/')} |" for o in self.outcomes]
        return "\n".join([*lines, "", "```", self._table(), "```", ""])

    def to_dict(self) -> dict:
        return {"fleet": [o.to_dict() for o in self.outcomes]}

    def write(self, json_path=None, markdown_path=None) -> list[Path]:
        from exporter.fileio import write_json_atomic, write_text_atomic

        written = []
        if json_path:
            written.append(Path(write_json_atomic(json_path, self.to_dict())))
        if markdown_path:
            written.append(Path(write_text_atomic(markdown_path, self.markdown())))
        return written

    def check(self, all_hosts: bool) -> None:
        """UserError (exit 2) when ``all_hosts`` and a host did not run, or when no host ran; CheckFailed (exit 1)
        naming the rows over the budget on every host that did."""
        from exporter import drift
        from exporter.errors import CheckFailed

        failed = self._failed()
        if failed and (all_hosts or len(failed) == len(self.outcomes)):  # nothing measured never passes a gate
            raise UserError(f"{len(failed)} of {len(self.outcomes)} hosts did not run: {'; '.join(failed)}"[:600])
        over = []
        for o in self.outcomes:
            if o.ok and self.budget.is_set:
                try:
                    drift.check(o.result, self.budget)
                except CheckFailed as exc:
                    over.append(f"{o.host.label}: {exc}")
        if over:
            raise CheckFailed("; ".join(over)[:1000])
