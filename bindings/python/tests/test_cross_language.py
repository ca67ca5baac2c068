"""Python, C and the Rust CLI on one bus, each a real process.

* A Python publisher, a C subscriber, a Python subscriber and `shmbus sub` on one reliable
  bus: all receive the same messages, in the same total order, byte for byte.
* A C publisher and a Python subscriber on a lossy bus: delivered + lost = published, and
  every delivered message is the one its sequence number names.

The C side is `bindings/c/tests/c/peer.c` (message i: its index in 8 bytes, then a pattern
of i; 8 to 307 bytes), compiled here against libshmbus. The binaries come from
$SHMBUS_C_PEER and $SHMBUS_CLI, else the repository's target directory (built by
`cargo build --release -p bus-c -p bus-cli`). With $SHMBUS_REQUIRE_CROSS=1 (the test script
sets it) a missing binary fails the test instead of skipping it.
"""

import base64
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import time

import pytest

import shmbus

ROOT = pathlib.Path(__file__).resolve().parents[3]
TIMEOUT = 120  # seconds: the watchdog of every child


def missing(what):
    if os.environ.get("SHMBUS_REQUIRE_CROSS") == "1":
        pytest.fail(f"{what} (SHMBUS_REQUIRE_CROSS=1)")
    pytest.skip(what)


def fill(i):
    """Message i of peer.c."""
    n = 8 + (i * 7919) % 300
    return struct.pack("<Q", i) + bytes((i + j) & 0xFF for j in range(8, n))


@pytest.fixture(scope="module")
def cli():
    p = os.environ.get("SHMBUS_CLI")
    if p:
        return p
    for build in ("release", "debug"):
        c = ROOT / "target" / build / "shmbus"
        if c.is_file():
            return str(c)
    missing("no shmbus CLI binary (cargo build --release -p bus-cli)")


@pytest.fixture(scope="module")
def c_peer(tmp_path_factory):
    p = os.environ.get("SHMBUS_C_PEER")
    if p:
        return p
    for build in ("release", "debug"):
        lib = ROOT / "target" / build
        if (lib / "libshmbus.so").is_file():
            break
    else:
        missing("no libshmbus.so (cargo build --release -p bus-c)")
    cc = shutil.which("cc") or missing("no C compiler")
    out = tmp_path_factory.mktemp("cpeer") / "peer"
    subprocess.run(
        [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2",
         "-I", str(ROOT / "bindings/c/include"), str(ROOT / "bindings/c/tests/c/peer.c"),
         "-L", str(lib), "-lshmbus", f"-Wl,-rpath,{lib}", "-o", str(out)],
        check=True,
        timeout=TIMEOUT,
    )
    return str(out)


def start(args):
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_ready(proc):
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"{proc.args}: {line!r} {proc.stderr.read()}"


def finish(proc):
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"watchdog: {proc.args} did not finish: {err}")
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}: {err}"
    return out


def test_python_publishes_to_c_python_and_the_cli_in_one_total_order(tmp_path, c_peer, cli):
    n = 20_000
    path = str(tmp_path / "x.bus")
    # 64 KiB: far smaller than the stream, so the publisher waits for the slowest reader
    # (reliable mode) over and over.
    bus = shmbus.Bus.create(path, capacity=1 << 16, max_message=1024)
    procs = []
    try:
        # Subscribers first (Oldest or Latest before anything is published: all see seq 0).
        c_sub = start([c_peer, "sub", path, str(n), "copy"])
        procs.append(c_sub)
        wait_ready(c_sub)
        c_ref = start([c_peer, "sub", path, str(n), "ref"])
        procs.append(c_ref)
        wait_ready(c_ref)
        # Its output goes to a file: a pipe nobody reads while we publish would fill and stop
        # it (and the reliable ring with it).
        cli_out = open(tmp_path / "cli.jsonl", "w+")
        cli_sub = subprocess.Popen(
            [cli, "sub", path, "--from", "oldest", "--count", str(n), "--format", "json",
             "--timeout", "100s"],
            stdout=cli_out, stderr=subprocess.PIPE, text=True)
        procs.append(cli_sub)
        py_sub = bus.subscribe(start="oldest")
        # Wait until the CLI's subscriber slot exists (it prints nothing before messages).
        for _ in range(1000):
            if len(bus.stats()["subscribers"]) >= 4:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the CLI subscriber never joined")
        pub = bus.publisher()
        got_py = []

        def drain():
            while True:
                try:
                    m = py_sub.try_recv()
                except shmbus.Empty:
                    return
                got_py.append((m.seq, m.data))

        for i in range(n):
            msg = fill(i)
            # A reliable ring waits for this process's own subscriber too: read while full.
            while True:
                try:
                    seq = pub.try_send(msg)
                    break
                except shmbus.Full:
                    drain()
            assert seq == i
            drain()
        while len(got_py) < n:
            m = py_sub.recv(timeout=30)
            got_py.append((m.seq, m.data))
        assert got_py == [(i, fill(i)) for i in range(n)]
        # The C subscribers check every message against fill(i) themselves, in order.
        finish(c_sub)
        finish(c_ref)
        finish(cli_sub)
        cli_out.seek(0)
        lines = cli_out.read().splitlines()
        assert len(lines) == n
        for i, line in enumerate(lines):
            j = json.loads(line)
            data = base64.b64decode(j["data_b64"]) if "data_b64" in j else j["data"].encode()
            assert (j["seq"], data) == (i, fill(i)), f"CLI line {i}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_c_publishes_lossy_and_python_accounts_every_message(tmp_path, c_peer):
    n = 200_000
    path = str(tmp_path / "l.bus")
    subprocess.run([c_peer, "create", path, "lossy"], check=True, timeout=TIMEOUT,
                   capture_output=True)
    bus = shmbus.Bus.open(path)
    sub = bus.subscribe(start="oldest")
    pub = start([c_peer, "pub", path, str(n)])
    delivered = lost = 0
    try:
        while delivered + lost < n:
            try:
                m = sub.recv(timeout=30)
            except shmbus.Lost as e:
                lost += e.count
                continue
            assert m.data == fill(m.seq), f"message {m.seq}"
            delivered += 1
            # Slow down now and then, so that the C publisher laps this reader.
            if delivered % 1000 == 0:
                sum(range(20_000))
        finish(pub)
    finally:
        if pub.poll() is None:
            pub.kill()
    assert delivered + lost == n
    print(f"delivered {delivered} + lost {lost} = {n}", file=sys.stderr)
