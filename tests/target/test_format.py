"""Format NVM: every LBA format and PI type, metadata settings, secure
erase settings, NSID FFFFFFFFh, the error statuses and the namespace
attribute changed notice."""

import pytest

from nvmestack.spec.admin import FormatNvm
from nvmestack.spec.features import FeatureId
from nvmestack.spec.identify import IdentifyController
from nvmestack.spec.log import LogPageId
from nvmestack.spec.status import CommandSpecificStatus as CS
from nvmestack.spec.status import GenericStatus as GS
from nvmestack.target import Namespace
from nvmestack.target.admin_mgmt import fill_identify_controller
from nvmestack.target.namespace import DEFAULT_LBA_FORMATS

from .conftest import assert_status, status

NSID_ALL = 0xFFFFFFFF
NOTICE_NS_CHANGED = (2, 0x00, LogPageId.CHANGED_NS)


def fmt(ctrl, nsid=1, **fields):
    return ctrl.submit(FormatNvm(nsid=nsid, **fields))


@pytest.mark.parametrize("lbaf", range(len(DEFAULT_LBA_FORMATS)))
@pytest.mark.parametrize("pi", [0, 1, 2, 3])
def test_each_lba_format_and_pi_type(subsystem, ctrl, ns, lbaf, pi):
    spec = DEFAULT_LBA_FORMATS[lbaf]
    size = ns.size_bytes
    ns.data.write_bytes(0, b"\xAA" * 4096)
    ns.uncorrectable.add(3)
    req = fmt(ctrl, lbaf=lbaf, pi=pi, pil=True, mset=True)
    if pi and spec.metadata_size < 8:
        assert_status(req, CS.INVALID_FORMAT)
        assert ns.lba_format == 0 and ns.data.read_bytes(0, 4) == b"\xAA" * 4
        return
    assert status(req).ok
    assert ns.lba_format == lbaf and ns.block_size == spec.data_size and ns.metadata_size == spec.metadata_size
    assert ns.pi_type == pi and ns.pi_first == bool(pi) and ns.extended
    assert ns.nblocks == size // spec.data_size
    assert ns.data.read_bytes(0, 4096) == bytes(4096)  # erased
    assert not ns.uncorrectable
    idns = ns.identify()
    assert idns.lba_format_index == lbaf and idns.dps_pi_type == pi and idns.flbas_extended
    assert idns.nsze == ns.nblocks


def test_separate_metadata_and_pi_last(ctrl, ns):
    assert status(fmt(ctrl, lbaf=5, pi=2, pil=False, mset=False)).ok
    assert not ns.extended and ns.pi_type == 2 and not ns.pi_first
    assert ns.meta is not None and ns.meta.size == ns.nblocks * 16


def test_pil_ignored_without_pi(ctrl, ns):
    assert status(fmt(ctrl, lbaf=1, pi=0, pil=True)).ok
    assert ns.pi_type == 0 and not ns.pi_first


def test_lbaf_upper_bits(ctrl, ns):
    # LBAF is LBAFU:LBAFL; 16 and above name formats this namespace lacks.
    assert_status(fmt(ctrl, lbaf=16 + 3), CS.INVALID_FORMAT)
    assert_status(fmt(ctrl, lbaf=6), CS.INVALID_FORMAT)
    assert ns.lba_format == 0
    wide = tuple(DEFAULT_LBA_FORMATS) * 3  # 18 formats: index 17 is 4096+16
    big = Namespace(2, 64, formats=wide)
    ctrl.subsystem.add_namespace(big)
    assert status(fmt(ctrl, nsid=2, lbaf=17)).ok
    assert big.lba_format == 17 and big.block_size == 4096 and big.metadata_size == 16


def test_reserved_pi_type_is_invalid_field(ctrl, ns):
    assert_status(fmt(ctrl, lbaf=1, pi=4), GS.INVALID_FIELD)
    assert_status(fmt(ctrl, lbaf=1, pi=7), GS.INVALID_FIELD)


@pytest.mark.parametrize("ses", [0, 1])
def test_secure_erase_settings(ctrl, ns, ses):
    ns.data.write_bytes(512, b"secret")
    assert status(fmt(ctrl, lbaf=0, ses=ses)).ok
    assert ns.data.read_bytes(512, 6) == bytes(6)


def test_crypto_erase_and_reserved_ses(ctrl, ns):
    ns.data.write_bytes(0, b"keep")
    assert_status(fmt(ctrl, ses=2), GS.INVALID_FIELD)  # FNA: no cryptographic erase
    assert_status(fmt(ctrl, ses=3), GS.INVALID_FIELD)
    assert ns.data.read_bytes(0, 4) == b"keep"
    idc = IdentifyController()
    fill_identify_controller(ctrl, idc)
    assert not idc.fna_crypto_erase and not idc.fna_format_all


def test_inactive_or_invalid_namespace(subsystem, ctrl):
    # Not a valid NSID: Invalid Namespace or Format; valid but not active
    # here (unallocated, or allocated and not attached): Invalid Field.
    assert_status(fmt(ctrl, nsid=0), GS.INVALID_NAMESPACE_OR_FORMAT)
    assert_status(fmt(ctrl, nsid=subsystem.max_namespaces + 1), GS.INVALID_NAMESPACE_OR_FORMAT)
    assert_status(fmt(ctrl, nsid=9), GS.INVALID_FIELD)
    hidden = Namespace(2, 64)
    subsystem.add_namespace(hidden, attach=False)
    assert_status(fmt(ctrl, nsid=2), GS.INVALID_FIELD)


def test_broadcast_formats_every_active_namespace(subsystem, ctrl, ns):
    second = subsystem.add_namespace(Namespace(2, 1024))
    hidden = Namespace(3, 64)
    subsystem.add_namespace(hidden, attach=False)
    hidden.data.write_bytes(0, b"x")
    assert status(fmt(ctrl, nsid=NSID_ALL, lbaf=3)).ok
    assert ns.block_size == 4096 and second.block_size == 4096
    assert hidden.block_size == 512 and hidden.data.read_bytes(0, 1) == b"x"


def test_broadcast_checks_every_namespace_first(subsystem, ctrl, ns):
    subsystem.add_namespace(Namespace(2, 64, formats=DEFAULT_LBA_FORMATS[:2]))
    assert_status(fmt(ctrl, nsid=NSID_ALL, lbaf=4), CS.INVALID_FORMAT)
    assert ns.lba_format == 0  # nothing formatted


def test_namespace_changed_notice(subsystem, ctrl, ns):
    ctrl.features.current[FeatureId.ASYNC_EVENT] = 1 << 8
    ctrl.changed_namespaces.clear()
    ctrl.pending_events.clear()
    assert status(fmt(ctrl, lbaf=3)).ok
    assert ctrl.changed_namespaces == {1}
    assert NOTICE_NS_CHANGED in ctrl.pending_events


def test_format_waits_for_the_namespace_lock(ctrl, ns):
    import threading

    ns.lock.acquire()
    done = threading.Event()
    t = threading.Thread(target=lambda: (fmt(ctrl, lbaf=3), done.set()))
    t.start()
    assert not done.wait(0.1)  # held off by the atomic command holding the lock
    assert ns.lba_format == 0
    ns.lock.release()
    assert done.wait(5)
    t.join()
    assert ns.lba_format == 3
