"""Namespaces and their backing files (issue 12, item 8): no two namespaces
on one file, however the file is named (a symbolic or hard link, the
default file of another namespace), and a file that exists is taken over
only when asked to."""

from __future__ import annotations

import json
import os

import pytest

from nvmestack.cli.serve import DEFAULT_NQN, Server, ServeError
from nvmestack.target import persist

from .test_target_config import NQN_A, config_of, data_dir, refused, target  # noqa: F401 (fixtures)


def test_a_second_namespace_on_the_first_ones_file_is_refused(target, data_dir, tmp_path):
    image = tmp_path / "disk.img"
    assert target("namespace", "add", "--size", "1M", "--path", image).rc == 0
    path = data_dir / "target.json"
    before = path.read_bytes()
    # The same file again, through a symbolic link, through a hard link (once it exists).
    refused(target("namespace", "add", "--size", "1M", "--path", image), "already the file of namespace 2",
            path, before)
    link = tmp_path / "link.img"
    link.symlink_to(image)
    image.write_bytes(bytes(1 << 20))
    refused(target("namespace", "add", "--path", link, "--existing"), "already the file of namespace 2", path, before)
    hard = tmp_path / "hard.img"
    os.link(image, hard)
    refused(target("namespace", "add", "--path", hard, "--existing"), "already the file of namespace 2", path, before)
    # The default file of namespace 1 (in the subsystem's directory of the data directory).
    sub_dir = data_dir / "nqn.2026-11.io.nvmestack_default"
    refused(target("namespace", "add", "--size", "1G", "--path", sub_dir / "ns1.data"), "ns1.data", path, before)
    sub_dir.mkdir(parents=True)
    (sub_dir / "ns1.data").write_bytes(b"")
    os.truncate(sub_dir / "ns1.data", 1 << 30)
    (tmp_path / "ns1-link").symlink_to(sub_dir / "ns1.data")
    refused(target("namespace", "add", "--path", tmp_path / "ns1-link", "--existing"), "ns1", path, before)
    # A namespace's own files in the data directory are never another namespace's device.
    (sub_dir / "ns5.data").write_bytes(bytes(4096))
    refused(target("namespace", "add", "--path", sub_dir / "ns5.data", "--existing"), "a file serve keeps",
            path, before)


def test_an_existing_file_is_taken_over_only_when_asked(target, data_dir, tmp_path):
    precious = tmp_path / "precious.bin"
    precious.write_bytes(b"mine" * 1024)
    path = data_dir / "target.json"
    assert target("show").rc == 0
    before = path.read_bytes() if path.exists() else None
    r = target("namespace", "add", "--path", precious)
    assert r.rc == 1 and "--existing" in r.err and len(r.err.strip().splitlines()) == 1
    r = target("namespace", "add", "--path", precious, "--size", "4K")
    assert r.rc == 1 and "--existing" in r.err
    assert (path.read_bytes() if path.exists() else None) == before
    assert precious.read_bytes() == b"mine" * 1024
    r = target("namespace", "add", "--path", tmp_path / "absent.img", "--size", "4K", "--existing")
    assert r.rc == 1 and "no such file" in r.err
    r = target("namespace", "add", "--path", precious, "--existing")
    assert r.rc == 0, r.err
    assert config_of(data_dir)["subsystems"][0]["namespaces"][-1]["device"]["path"] == str(precious)


def test_serve_refuses_aliases_in_its_configuration(tmp_path):
    image = tmp_path / "a.img"
    image.write_bytes(bytes(1 << 20))
    (tmp_path / "b.img").symlink_to(image)

    def config(*namespaces, nqn2=None):
        subs = [{"nqn": NQN_A, "namespaces": list(namespaces)}]
        if nqn2:
            subs.append({"nqn": nqn2, "namespaces": [{"nsid": 1, "nblocks": 2048, "device": {"path": str(image)}}]})
        return {"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "0"}}], "subsystems": subs}

    cases = [
        config({"nsid": 1, "nblocks": 2048, "device": {"path": str(image)}},
               {"nsid": 2, "nblocks": 2048, "device": {"path": str(tmp_path / "b.img")}}),
        config({"nsid": 1, "nblocks": 2048, "device": {"path": str(image)}}, nqn2="nqn.2026-11.io.nvmestack:cfg-z"),
        config({"nsid": 1, "nblocks": 2048},
               {"nsid": 2, "nblocks": 2048, "device": {"path": str(tmp_path / "d" / "nqn.2026-11.io.nvmestack_cfg-a"
                                                                      / "ns1.data")}}),
    ]
    for case in cases:
        with pytest.raises(ServeError, match="already the file of namespace 1|a file serve keeps"):
            Server(case, str(tmp_path / "d")).close()
        assert not (tmp_path / "d").exists() or not any((tmp_path / "d").rglob("*.data"))


def test_a_saved_subsystem_with_two_namespaces_on_one_file_is_refused(tmp_path):
    d = tmp_path / "sub"
    d.mkdir()
    (d / "ns1.data").write_bytes(bytes(4096))
    os.symlink(d / "ns1.data", d / "alias.data")
    (d / persist.CONFIG_FILE).write_text(json.dumps({"subsystems": [{
        "nqn": DEFAULT_NQN,
        "namespaces": [{"nsid": 1, "nblocks": 8}, {"nsid": 2, "nblocks": 8, "device": {"path": "alias.data"}}]}]}))
    with pytest.raises(ValueError, match="already the file of namespace 1"):
        persist.load(d)
