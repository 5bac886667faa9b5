"""A second host without containers: a network namespace with its own veth address,
running Debian's sshd, reached over real SSH. Only addresses created here are used."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
REMOTE_PYTHON = "/usr/bin/python3"


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=60)


def ensure_packages() -> None:
    """Install what a fresh Debian CI machine may lack: sshd, ip, and for the remote
    Python the venv module and a requirement parser (Ansible's pip module needs one)."""
    need = []
    if not Path(SSHD).exists():
        need.append("openssh-server")
    if not (shutil.which("ssh") and shutil.which("ssh-keygen") and shutil.which("ssh-keyscan")):
        need.append("openssh-client")
    if not shutil.which("ip"):
        need.append("iproute2")
    if subprocess.run([REMOTE_PYTHON, "-c", "import ensurepip"],
                      capture_output=True).returncode:
        need.append("python3-venv")
    if subprocess.run([REMOTE_PYTHON, "-c", "import pkg_resources"],
                      capture_output=True).returncode and subprocess.run(
            [REMOTE_PYTHON, "-c", "import packaging.requirements"],
            capture_output=True).returncode:
        need.append("python3-setuptools")
    if not need:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *need]
    if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=900)
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=900)


@dataclass(frozen=True)
class Node:
    namespace: str
    address: str
    client_key: Path
    host_key_pub: Path


def _free_subnet() -> int:
    used = _run("ip", "-4", "-o", "addr", "show").stdout
    start = os.getpid() % 240
    for i in range(240):
        n = (start + i) % 240 + 10
        if f"10.213.{n}." not in used:
            return n
    raise RuntimeError("no free 10.213.x.0/30 subnet")


@contextmanager
def ssh_node(workdir: Path) -> Iterator[Node]:
    """Namespace, veth pair, sshd; torn down in reverse even when a step or test fails."""
    ensure_packages()
    pid = os.getpid()
    ns, host_if, node_if = f"aplprov{pid}", f"apv{pid}h", f"apv{pid}n"
    n = _free_subnet()
    host_ip, node_ip = f"10.213.{n}.1", f"10.213.{n}.2"
    workdir.mkdir(parents=True, exist_ok=True)
    sshd = None
    try:
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if)
        _run("ip", "link", "set", node_if, "netns", ns)
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{node_ip}/30", "dev", node_if)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", node_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        for name in ("hostkey", "client"):
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                 "-f", str(workdir / name))
        shutil.copy(workdir / "client.pub", workdir / "authorized_keys")
        cfg = workdir / "sshd_config"
        cfg.write_text("\n".join([
            "Port 22", f"ListenAddress {node_ip}", f"HostKey {workdir / 'hostkey'}",
            f"PidFile {workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {workdir / 'authorized_keys'}", "StrictModes no",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no",
            "Subsystem sftp internal-sftp", "LogLevel VERBOSE", ""]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
        log = (workdir / "sshd.log").open("w")
        sshd = subprocess.Popen(["ip", "netns", "exec", ns, SSHD, "-D", "-e", "-f", str(cfg)],
                                stdout=log, stderr=subprocess.STDOUT)
        _wait_port(node_ip, 22, sshd, workdir / "sshd.log")
        yield Node(ns, node_ip, workdir / "client", workdir / "hostkey.pub")
    finally:
        if sshd is not None:
            sshd.terminate()
            try:
                sshd.wait(5)
            except subprocess.TimeoutExpired:
                sshd.kill()
                sshd.wait(5)
        # Session processes sshd started inside the namespace, if any are left.
        for p in _run("ip", "netns", "pids", ns, check=False).stdout.split():
            try:
                os.kill(int(p), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        _run("ip", "netns", "del", ns, check=False)
        _run("ip", "link", "del", host_if, check=False)  # gone with the peer normally


def _wait_port(address: str, port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on {address}:{port}")
