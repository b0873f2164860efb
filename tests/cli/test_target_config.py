"""``nvmestack target ...``: editing the configuration file (checked, locked,
written atomically; bad changes refused with one line and the file left as
it was), and a running ``serve`` (``serve.Server`` in the test process)
applying the changes: namespaces appear and vanish on a connected host after
the Namespace Attribute Changed event, subsystems and ports come and go,
allowed hosts decide Connect."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import threading
import time

import pytest

from nvmestack.cli.serve import DEFAULT_NQN, Server, default_config
from nvmestack.host import ControllerDeadError
from nvmestack.host.core import CtrlState
from nvmestack.host.tcp import connect, discover_log
from nvmestack.spec.fabrics import DISCOVERY_NQN
from nvmestack.spec.nvm import Read, Write

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:5e1f0c3a-1111-2222-3333-444455556666"
OTHER_HOST = "nqn.2014-08.org.nvmexpress:uuid:5e1f0c3a-9999-2222-3333-444455556666"
NQN_A = "nqn.2026-11.io.nvmestack:cfg-a"
NQN_B = "nqn.2026-11.io.nvmestack:cfg-b"
WAIT = 20.0  # seconds a change may take to show (it normally takes well under one)


def wait_for(predicate, what: str):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def target(cli, data_dir):
    """``target(...)`` = ``cli("target", ..., "--data-dir", DATA)``."""

    def run(*args):
        return cli("target", *args, "--data-dir", data_dir)

    return run


def config_of(data_dir) -> dict:
    return json.loads((data_dir / "target.json").read_text())


def refused(result, needle: str, path=None, before: bytes | None = None) -> None:
    """A refused change: exit 1, one line on stderr saying why, the file as it was."""
    assert result.rc == 1, result
    assert needle in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    if path is not None:
        assert path.read_bytes() == before


# ---------------------------------------------------------------------------
# editing the file


def test_show_is_the_embedded_default_until_something_is_written(target, data_dir):
    r = target("show")
    assert r.rc == 0
    assert f"o- {DEFAULT_NQN} [allow_any_host=1, model=nvmestack]" in r.out
    assert "o- 1: tcp 127.0.0.1:4420 [all subsystems]" in r.out
    assert "o- 2: tcp 127.0.0.1:8009 [discovery only]" in r.out
    assert "o- 1 [1 GiB, 2097152 blocks of 512 bytes, " in r.out and "(not written yet)" in r.out
    assert target("show", "-o", "json").json() == default_config()
    assert not (data_dir / "target.json").exists()
    assert target("show", "-o", "binary").rc == 1


def test_namespace_add_and_remove(target, data_dir, tmp_path):
    r = target("namespace", "add", "--size", "64M")
    assert r.rc == 0, r.err
    assert r.out.startswith(f"namespace 2 added to {DEFAULT_NQN}: 64 MiB (131072 blocks of 512 bytes)")
    path = data_dir / "target.json"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # an ordinary file (not mkstemp's 0600)
    config = config_of(data_dir)
    (ns1, ns2), = [s["namespaces"] for s in config["subsystems"]]
    assert ns1 == default_config()["subsystems"][0]["namespaces"][0]
    assert ns2["nsid"] == 2 and ns2["nblocks"] == 131072 and "format" not in ns2
    assert {"nguid", "eui64", "uuid"} <= set(ns2["device"]) and "path" not in ns2["device"]
    # 4096-byte blocks, a chosen NSID, a file of its own (created by serve at that size).
    image = tmp_path / "disk.img"
    assert target("namespace", "add", "-n", "7", "--size", "1M", "-b", "4096", "--path", image).rc == 0
    ns7 = config_of(data_dir)["subsystems"][0]["namespaces"][2]
    assert ns7["nsid"] == 7 and ns7["nblocks"] == 256 and ns7["format"] == {"lba_format": 3}
    assert ns7["device"]["path"] == str(image)
    # A file that exists is taken over only when asked to (--existing); it gives the size.
    other = tmp_path / "other.img"
    other.write_bytes(bytes(8192))
    before = path.read_bytes()
    refused(target("namespace", "add", "--path", other), "give --existing", path, before)
    assert target("namespace", "add", "--path", other, "--existing").rc == 0
    assert config_of(data_dir)["subsystems"][0]["namespaces"][3]["nblocks"] == 16
    assert target("show", "-o", "json").json() == config_of(data_dir)

    before = path.read_bytes()
    refused(target("namespace", "add", "--size", "1000"), "multiple of the 512-byte block size", path, before)
    refused(target("namespace", "add", "--size", "1M", "-n", "2"), "has a namespace 2 already", path, before)
    refused(target("namespace", "add", "--size", "1M", "-b", "1024"), "block size 1024", path, before)
    refused(target("namespace", "add"), "--size", path, before)
    refused(target("namespace", "add", "--path", tmp_path / "missing.img"), "no such file", path, before)
    refused(target("namespace", "add", "--path", other, "--size", "1M", "--existing"), "has 8192 bytes", path, before)
    refused(target("namespace", "add", "--path", image, "--size", "1M"), "already the file of namespace 7",
            path, before)
    refused(target("namespace", "add", "--size", "1M", "--nqn", NQN_A), f"no subsystem {NQN_A}", path, before)
    refused(target("namespace", "add", "--size", "1M", "-n", "1025"), "1..1024", path, before)
    refused(target("namespace", "remove", "-n", "9"), "has no namespace 9", path, before)
    refused(target("namespace", "add", "--size", "lots"), "expected a number", path, before)

    r = target("namespace", "remove", "-n", "2")
    assert r.rc == 0 and "its data goes with it" in r.out
    r = target("namespace", "remove", "-n", "7")
    assert r.rc == 0 and f"its file {image} stays" in r.out
    assert [n["nsid"] for n in config_of(data_dir)["subsystems"][0]["namespaces"]] == [1, 3]


def test_namespace_add_skips_namespaces_a_host_created(target, data_dir):
    # The subsystem's directory says nsid 2 exists (made by a host with create-ns while serve ran).
    sub_dir = data_dir / "nqn.2026-11.io.nvmestack_default"
    sub_dir.mkdir(parents=True)
    (sub_dir / "config.json").write_text(json.dumps(
        {"version": 1, "subsystems": [{"nqn": DEFAULT_NQN, "namespaces": [{"nsid": 1, "nblocks": 8},
                                                                         {"nsid": 2, "nblocks": 8}]}]}))
    assert target("namespace", "add", "--size", "1M").out.startswith("namespace 3 added")
    refused(target("namespace", "add", "--size", "1M", "-n", "2"), "a host created")


def test_subsystems_ports_and_hosts(target, data_dir):
    assert target("subsystem", "add", NQN_A, "--serial", "SERIAL-A", "--model", "model a").rc == 0
    r = target("subsystem", "add", NQN_B, "--no-allow-any-host")
    assert r.rc == 0 and r.out.strip() == f"subsystem {NQN_B} added"
    subs = {s["nqn"]: s for s in config_of(data_dir)["subsystems"]}
    assert subs[NQN_A]["attr"] == {"allow_any_host": True, "serial": "SERIAL-A", "model": "model a"}
    assert subs[NQN_B]["attr"] == {"allow_any_host": False} and subs[NQN_B]["namespaces"] == []
    path = data_dir / "target.json"
    before = path.read_bytes()
    refused(target("subsystem", "add", NQN_A), "exists", path, before)
    refused(target("subsystem", "add", "bad\tname"), "not a usable subsystem NQN", path, before)
    refused(target("subsystem", "add", DISCOVERY_NQN), "discovery", path, before)
    refused(target("subsystem", "add", "nqn.2026-11.io.nvmestack::cfg-a"), "would share the directory", path, before)
    refused(target("subsystem", "add", "nqn.2026-11.io.x:y", "--serial", "S" * 21), "1 to 20", path, before)
    refused(target("subsystem", "set", NQN_A), "nothing to set", path, before)
    refused(target("namespace", "add", "--size", "1M"), "several subsystems", path, before)

    assert target("subsystem", "set", NQN_A, "--no-allow-any-host", "--model", "model A2").rc == 0
    assert config_of(data_dir)["subsystems"][1]["attr"]["model"] == "model A2"

    # Hosts: adding one turns allow_any_host off (as Linux's nvmet requires).
    r = target("host", "add", "--nqn", DEFAULT_NQN, HOSTNQN)
    assert r.rc == 0 and "allow_any_host is now off" in r.out
    default = config_of(data_dir)["subsystems"][0]
    assert default["allowed_hosts"] == [HOSTNQN] and default["attr"]["allow_any_host"] is False
    before = path.read_bytes()
    refused(target("host", "add", "--nqn", DEFAULT_NQN, "not-an-nqn"), "not a valid host NQN", path, before)
    refused(target("host", "remove", "--nqn", DEFAULT_NQN, OTHER_HOST), "not an allowed host", path, before)
    r = target("host", "remove", "--nqn", DEFAULT_NQN, HOSTNQN)
    assert r.rc == 0 and "no host may connect now" in r.out
    assert config_of(data_dir)["subsystems"][0]["allowed_hosts"] == []

    # Ports: the default ones are kept when one is added.
    r = target("port", "add", "-s", "5000", "--nqn", NQN_A)
    assert r.rc == 0 and r.out.strip() == f"port 3 added: tcp 127.0.0.1:5000 ({NQN_A})"
    assert target("port", "add", "-a", "::1", "-s", "5001", "--discovery-only", "--portid", "9").rc == 0
    ports = {p["portid"]: p for p in config_of(data_dir)["ports"]}
    assert sorted(ports) == [1, 2, 3, 9]
    assert ports[3] == {"portid": 3, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
                                              "trsvcid": "5000"}, "subsystems": [NQN_A]}
    assert ports[9]["addr"]["adrfam"] == "ipv6" and ports[9]["subsystems"] == []
    before = path.read_bytes()
    refused(target("port", "add", "-s", "5000"), "taken by ports[2]", path, before)
    refused(target("port", "add", "-s", "5002", "--portid", "3"), "port 3 exists", path, before)
    refused(target("port", "add", "-s", "5002", "-t", "rdma"), "only tcp", path, before)
    refused(target("port", "add", "-s", "5002", "-a", "localhost"), "not an IPv4 or IPv6 address", path, before)
    refused(target("port", "add", "-s", "70000"), "not a TCP port", path, before)
    refused(target("port", "add", "-s", "5002", "--nqn", "nqn.2026-11.io.x:none"), "no subsystem", path, before)
    refused(target("port", "remove", "4"), "no port 4", path, before)
    refused(target("port", "link", "3", "nqn.2026-11.io.x:none"), "no subsystem", path, before)
    refused(target("port", "unlink", "3", NQN_B), "does not expose", path, before)

    assert target("port", "link", "3", NQN_B).rc == 0
    assert config_of(data_dir)["ports"][2]["subsystems"] == [NQN_A, NQN_B]
    assert "exposes every subsystem already" in target("port", "link", "1", NQN_B).out
    assert target("port", "unlink", "1", NQN_B).rc == 0  # "all" becomes the others
    assert config_of(data_dir)["ports"][0]["subsystems"] == [DEFAULT_NQN, NQN_A]
    # Removing a subsystem takes it off the ports.
    r = target("subsystem", "remove", NQN_A)
    assert r.rc == 0 and "is deleted" in r.out
    config = config_of(data_dir)
    assert [s["nqn"] for s in config["subsystems"]] == [DEFAULT_NQN, NQN_B]
    assert config["ports"][0]["subsystems"] == [DEFAULT_NQN] and config["ports"][2]["subsystems"] == [NQN_B]
    assert target("port", "remove", "9").rc == 0
    assert [p["portid"] for p in config_of(data_dir)["ports"]] == [1, 2, 3]
    text = target("show").out
    assert f"| o- 3: tcp 127.0.0.1:5000 [{NQN_B}]" in text and f"o- {NQN_B} [allow_any_host=0]" in text


def test_save_restore_and_clear(target, data_dir, tmp_path):
    assert target("namespace", "add", "--size", "2M").rc == 0
    assert target("subsystem", "add", NQN_A, "--host", HOSTNQN).rc == 0
    assert target("port", "add", "-s", "5000").rc == 0
    saved = tmp_path / "saved.json"
    r = target("save", saved)
    assert r.rc == 0 and saved.exists()
    whole = config_of(data_dir)
    assert json.loads(saved.read_text()) == whole
    assert target("save", "-").json() == whole

    assert target("clear").rc == 0
    assert config_of(data_dir) == {"ports": [], "subsystems": []}
    assert "o- 1:" not in target("show").out

    assert target("restore", saved).rc == 0
    assert config_of(data_dir) == whole  # the round trip is exact

    # A bad file is refused, naming what is wrong; the configuration stays.
    path = data_dir / "target.json"
    before = path.read_bytes()
    bad = tmp_path / "bad.json"
    for content, needle in (
        ("{not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        (json.dumps({"subsystems": [{"nqn": "x" * 224}]}), "not a usable subsystem NQN"),
        (json.dumps({"subsystems": [{"nqn": NQN_A, "namespaces": [{"nsid": 1}]}]}), "missing 'nblocks'"),
        (json.dumps({"subsystems": [{"nqn": NQN_A, "namespaces": [{"nsid": 1, "nblocks": 8}, {"nsid": 1,
                                                                                               "nblocks": 8}]}]}),
         "appears twice"),
        (json.dumps({"subsystems": [], "ports": [{"addr": {"trsvcid": "4420"}, "subsystems": [NQN_A]}]}),
         "unknown subsystems"),
        (json.dumps({"subsystems": [], "ports": [{"portid": 1, "addr": {}}, {"portid": 1, "addr": {}}]}),
         "portid 1 is used twice"),
    ):
        bad.write_text(content)
        refused(target("restore", bad), needle, path, before)
    refused(target("restore", tmp_path / "nothing.json"), "no such file", path, before)

    # nvmetcli's own format: string attributes, top-level hosts, referrals, a disabled namespace; relative
    # paths are relative to the restored file.
    (tmp_path / "imgs").mkdir()
    nvmetcli = {
        "hosts": [{"nqn": HOSTNQN}],
        "ports": [{"addr": {"adrfam": "ipv4", "traddr": "127.0.0.1", "treq": "not specified", "trsvcid": "4420",
                            "trtype": "tcp"}, "portid": 1, "referrals": [], "subsystems": [NQN_B]}],
        "subsystems": [{"allowed_hosts": [HOSTNQN], "attr": {"allow_any_host": "0", "serial": "abc", "version": "1.3"},
                        "namespaces": [{"device": {"path": "imgs/b.img",
                                                   "nguid": "00000000-0000-0000-0000-000000000000"},
                                        "enable": 1, "nsid": 1, "nblocks": 16},
                                       {"device": {"path": "/dev/null"}, "enable": 0, "nsid": 2}],
                        "nqn": NQN_B}],
    }
    source = tmp_path / "nvmetcli.json"
    source.write_text(json.dumps(nvmetcli))
    assert target("restore", source).rc == 0, target("restore", source).err
    restored = config_of(data_dir)
    assert restored["subsystems"][0]["namespaces"][0]["device"]["path"] == str(tmp_path / "imgs" / "b.img")
    text = target("show").out
    assert f"o- {NQN_B} [allow_any_host=0, serial=abc]" in text and "disabled" in text


def test_an_edit_waits_for_the_lock(target, data_dir):
    assert target("namespace", "add", "--size", "1M").rc == 0
    fd = os.open(data_dir / ".target.json.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    results = []
    editor = threading.Thread(target=lambda: results.append(target("namespace", "add", "--size", "1M")))
    try:
        editor.start()
        editor.join(0.5)
        assert editor.is_alive() and not results  # blocked on the lock
        assert len(config_of(data_dir)["subsystems"][0]["namespaces"]) == 2
    finally:
        os.close(fd)
    editor.join(WAIT)
    assert results and results[0].rc == 0
    assert len(config_of(data_dir)["subsystems"][0]["namespaces"]) == 3


def test_a_broken_file_is_reported_not_replaced(target, data_dir):
    data_dir.mkdir()
    path = data_dir / "target.json"
    path.write_text('{"subsystems": [{"nqn": ""}]}')
    before = path.read_bytes()
    refused(target("namespace", "add", "--size", "1M"), "not a usable subsystem NQN", path, before)
    refused(target("show"), "not a usable subsystem NQN")
    path.write_text("{")
    before = path.read_bytes()
    refused(target("subsystem", "add", NQN_A), "not valid JSON", path, before)
    r = target("show")
    assert r.rc == 1 and "not valid JSON" in r.err


# ---------------------------------------------------------------------------
# a running serve picks the changes up


@pytest.fixture
def served(tmp_path):
    """A serve (in this process) of a configuration file with one subsystem
    (NQN_A, one 1 MiB namespace) on an ephemeral port, watching its file."""
    path = tmp_path / "target.json"
    path.write_text(json.dumps({
        "ports": [{"portid": 1, "addr": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "0"}}],
        "subsystems": [{"nqn": NQN_A, "attr": {"serial": "LIVE-A"}, "namespaces": [{"nsid": 1, "nblocks": 2048}]}],
    }))
    servers = []

    def start():
        server = Server(json.loads(path.read_text()), str(tmp_path / "data"), config_path=str(path))
        server.changes = []
        server.on_change = server.changes.append
        server.start()
        server.watch(0.05)
        server.path = path
        server.port = lambda portid=1: int(server._ports[portid][1].trsvcid)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def hosts():
    ctrls = []

    def attach(port, nqn=NQN_A, hostnqn=HOSTNQN, **options):
        options.setdefault("io_queues", 1)
        options.setdefault("ctrl_loss_tmo", 0)  # a controller whose connection closes is dead at once
        options.setdefault("reconnect_delay", 0.05)
        ctrl = connect("127.0.0.1", port, nqn, hostnqn=hostnqn, **options)
        ctrls.append(ctrl)
        return ctrl

    yield attach
    for ctrl in ctrls:
        try:
            ctrl.shutdown()
        except Exception:
            pass


def ns_events(ctrl) -> list[list[int]]:
    return [e.nsids for e in list(ctrl.events) if e.type == 2 and e.info == 0]


def test_serve_applies_namespace_add_and_remove(served, hosts, cli, tmp_path):
    server = served()
    ctrl = hosts(server.port())
    assert sorted(ctrl.namespaces) == [1]
    sub = server.subsystems[0]

    image = tmp_path / "ns2.img"
    r = cli("target", "namespace", "add", "--config", server.path, "--size", "1M", "--path", image)
    assert r.rc == 0, r.err
    wait_for(lambda: 2 in ctrl.namespaces, "namespace 2 on the host")
    assert [2] in ns_events(ctrl)  # the Namespace Attribute Changed event, its log page read
    assert ctrl.namespaces[2].identify.nsze == 2048
    assert bytes(ctrl.namespaces[2].identify.nguid) == bytes(sub.namespaces[2].nguid)
    wait_for(lambda: f"namespace 2 of {NQN_A} added (1 MiB)" in server.changes, "the change reported")

    # Data written through the host to the new namespace is in its file after the namespace goes.
    pattern = os.urandom(4096)
    buf = ctrl.alloc_buffer(4096)
    buf[:] = pattern
    ctrl.execute(Write(nsid=2, slba=8, nblocks=8), buf, qid=1)
    r = cli("target", "namespace", "remove", "--config", server.path, "-n", "2")
    assert r.rc == 0, r.err
    wait_for(lambda: 2 not in ctrl.namespaces, "namespace 2 gone from the host")
    assert 2 not in sub.namespaces
    assert ns_events(ctrl).count([2]) == 2
    with open(image, "rb") as f:
        f.seek(8 * 512)
        assert f.read(4096) == pattern
    # The first namespace still works.
    ctrl.execute(Write(nsid=1, slba=0, nblocks=8), buf, qid=1)
    out = ctrl.alloc_buffer(4096)
    ctrl.execute(Read(nsid=1, slba=0, nblocks=8), out, qid=1)
    assert bytes(out) == pattern


def test_serve_keeps_running_configuration_when_a_change_cannot_be_applied(served, hosts, cli):
    server = served()
    ctrl = hosts(server.port())
    good = server.path.read_text()
    server.path.write_text("{broken")
    server.request_reload()
    assert server.poll(force=True) is None
    # A host created namespace 2 meanwhile (Namespace Management); the file then adds one with that NSID.
    from nvmestack.target.namespace import Namespace

    server.subsystems[0].add_namespace(Namespace(2, 64))
    config = json.loads(good)
    config["subsystems"][0]["namespaces"].append({"nsid": 2, "nblocks": 128})
    config["subsystems"].append({"nqn": NQN_B, "namespaces": [{"nsid": 1, "nblocks": 8}]})
    server.path.write_text(json.dumps(config))
    assert server.poll(force=True) is None  # refused as a whole: NQN_B was not added either
    assert [s.nqn for s in server.subsystems] == [NQN_A]
    assert server.subsystems[0].namespaces[2].nblocks == 64
    assert NQN_B not in server.target.subsystems
    # A good change afterwards is applied.
    server.subsystems[0].remove_namespace(2)
    r = cli("target", "namespace", "add", "--config", server.path, "--nqn", NQN_A, "--size", "64K", "-n", "3")
    assert r.rc == 0, r.err
    wait_for(lambda: 3 in ctrl.namespaces, "namespace 3 on the host")
    assert NQN_B in server.target.subsystems and 2 in server.subsystems[0].namespaces


def test_serve_applies_subsystems_ports_and_hosts(served, hosts, cli):
    server = served()
    config = ("--config", server.path)
    genctr = server.target.genctr

    # A new subsystem that only one host may use.
    assert cli("target", "subsystem", "add", NQN_B, "--host", OTHER_HOST, *config).rc == 0
    assert cli("target", "namespace", "add", "--nqn", NQN_B, "--size", "1M", *config).rc == 0
    wait_for(lambda: NQN_B in server.target.subsystems and server.subsystems[-1].namespaces, "subsystem B")
    assert server.target.genctr > genctr
    ctrl_b = hosts(server.port(), NQN_B, hostnqn=OTHER_HOST)
    assert sorted(ctrl_b.namespaces) == [1]
    with pytest.raises(ControllerDeadError, match="Invalid Parameters"):
        hosts(server.port(), NQN_B)

    # Allowing our host: Connect is accepted, the discovery log changed.
    before = discover_log("127.0.0.1", server.port(), HOSTNQN)
    assert [e.subnqn for e in before.entries if e.subtype == 2] == [NQN_A]
    assert cli("target", "host", "add", "--nqn", NQN_B, HOSTNQN, *config).rc == 0
    wait_for(lambda: HOSTNQN in server.subsystems[-1].allowed_hosts, "host allowed")
    after = discover_log("127.0.0.1", server.port(), HOSTNQN)
    assert after.genctr != before.genctr
    assert sorted(e.subnqn for e in after.entries if e.subtype == 2) == [NQN_A, NQN_B]
    assert hosts(server.port(), NQN_B).namespaces
    assert cli("target", "host", "remove", "--nqn", NQN_B, HOSTNQN, *config).rc == 0
    wait_for(lambda: HOSTNQN not in server.subsystems[-1].allowed_hosts, "host removed")
    with pytest.raises(ControllerDeadError, match="Invalid Parameters"):
        hosts(server.port(), NQN_B)

    # A new port exposing only B.
    assert cli("target", "port", "add", "-s", "0", "--nqn", NQN_B, *config).rc == 0
    wait_for(lambda: 2 in server._ports, "port 2")
    port2 = server.port(2)
    assert port2 != server.port()
    assert hosts(port2, NQN_B, hostnqn=OTHER_HOST).namespaces
    with pytest.raises(ControllerDeadError, match="Invalid Parameters"):
        hosts(port2, NQN_A)
    entries = discover_log("127.0.0.1", port2, OTHER_HOST).entries
    assert sorted((e.subnqn, e.trsvcid.strip()) for e in entries if e.subtype == 2) == sorted(
        [(NQN_A, str(server.port())), (NQN_B, str(server.port())), (NQN_B, str(port2))])

    # Removing the subsystem closes its controllers' connections.
    ctrl_a = hosts(server.port())
    assert cli("target", "subsystem", "remove", NQN_B, *config).rc == 0
    wait_for(lambda: ctrl_b.state == CtrlState.DEAD, "B's controller gone")
    assert NQN_B not in server.target.subsystems
    assert ctrl_a.state == CtrlState.LIVE
    with pytest.raises(ControllerDeadError):
        hosts(server.port(), NQN_B, hostnqn=OTHER_HOST)
    # Removing the port stops it listening.
    assert cli("target", "port", "remove", "2", *config).rc == 0
    wait_for(lambda: 2 not in server._ports, "port 2 removed")
    with pytest.raises(ControllerDeadError, match="cannot connect"):
        hosts(port2, NQN_A)
    wait_for(lambda: server.changes[-1].startswith("port 2 removed"), "the change reported")


def test_a_restart_keeps_what_was_applied_live(served, hosts, cli):
    server = served()
    assert cli("target", "namespace", "add", "--config", server.path, "--size", "1M").rc == 0
    wait_for(lambda: 2 in server.subsystems[0].namespaces, "namespace 2")
    ctrl = hosts(server.port())
    ids = {nsid: bytes(ns.identify.nguid) for nsid, ns in ctrl.namespaces.items()}
    ctrl.shutdown()
    server.close()
    again = served()
    ctrl = hosts(again.port())
    assert {nsid: bytes(ns.identify.nguid) for nsid, ns in ctrl.namespaces.items()} == ids
    assert ctrl.identify.sn.strip() == "LIVE-A"


def test_a_change_made_while_stopped_keeps_the_identity_of_what_stays(served, cli, tmp_path):
    server = served()
    path = server.path
    config = json.loads(path.read_text())
    del config["subsystems"][0]["attr"]["serial"]  # left to chance: generated once, then kept
    path.write_text(json.dumps(config))
    wait_for(lambda: "serial changed" in " ".join(server.changes), "the change noticed")
    server.close()
    first = served()
    sub = first.subsystems[0]
    serial, nguid = sub.serial, bytes(sub.namespaces[1].nguid)
    first.close()
    # Stopped: a namespace is added; the file's entry now differs from the one applied (the file wins).
    assert cli("target", "namespace", "add", "--config", path, "--size", "64K").rc == 0
    again = served()
    sub = again.subsystems[0]
    assert sorted(sub.namespaces) == [1, 2]
    assert sub.serial == serial and bytes(sub.namespaces[1].nguid) == nguid
