"""Python and the Rust CLI on one bus (the same file format, one protocol implementation).

Uses the `shmbus` binary named by $SHMBUS_CLI, else the repository's target/debug or
target/release build; skipped when there is none (build it with `cargo build -p bus-cli`).
"""

import json
import os
import pathlib
import shutil
import struct
import subprocess

import pytest

import shmbus

ROOT = pathlib.Path(__file__).resolve().parents[3]


def cli():
    if os.environ.get("SHMBUS_CLI"):
        return os.environ["SHMBUS_CLI"]
    for build in ("debug", "release"):
        p = ROOT / "target" / build / "shmbus"
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which("shmbus") or pytest.skip("no shmbus CLI binary (cargo build -p bus-cli)")


def test_python_publishes_and_the_cli_subscribes(path):
    bus = shmbus.Bus.create(path, capacity=1 << 16)
    pub = bus.publisher()
    sent = [(pub.send(b"msg %d" % i), b"msg %d" % i) for i in range(50)]
    out = subprocess.run(
        [cli(), "sub", path, "--from", "oldest", "--count", "50", "--format", "json", "--timeout", "10s"],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    got = [json.loads(line) for line in out.splitlines()]
    assert [(g["seq"], g["data"].encode()) for g in got] == sent


def test_the_cli_publishes_and_python_subscribes(path):
    bus = shmbus.Bus.create(path, capacity=1 << 20)  # holds all 1000: read after the CLI exits
    sub = bus.subscribe()
    subprocess.run(
        [cli(), "pub", path, "--count", "1000", "--size", "64", "--timeout", "10s"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    for i in range(1000):
        m = sub.recv(timeout=5)
        assert m.seq == i and len(m.data) == 64
        assert struct.unpack_from("<Q", m.data)[0] == i
