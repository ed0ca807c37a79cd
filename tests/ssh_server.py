"""A throwaway SSH server for the fleet tests: ``python ssh_server.py PORT HOME HOST_KEY AUTHORIZED_KEYS``.

One "device" on loopback: commands run with /bin/sh as the current user with HOME set to the device's own folder,
and SFTP reaches the file system, as sshd would give them; only the authorized key is let in.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncssh


def main() -> None:
    port, home, host_key, authorized = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    env = dict(os.environ, HOME=home)

    async def handle(process: asyncssh.SSHServerProcess) -> None:
        done = await asyncio.get_running_loop().run_in_executor(None, lambda: subprocess.run(
            ["/bin/sh", "-c", process.command or "true"], capture_output=True, env=env, cwd=home))
        process.stdout.write(done.stdout.decode(errors="replace"))
        process.stderr.write(done.stderr.decode(errors="replace"))
        process.exit(done.returncode)

    async def serve() -> None:
        await asyncssh.listen("127.0.0.1", int(port), server_host_keys=[host_key], authorized_client_keys=authorized,
                              process_factory=handle, sftp_factory=True, allow_scp=False)
        print("listening", flush=True)
        await asyncio.Future()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
