"""A QEMU guest with the real Linux NVMe/TCP host and target.

The guest runs Debian's kernel (nvme-tcp, nvmet-tcp, ext4 ...) from a busybox
initramfs with nvme-cli, fio and e2fsprogs; the host runs commands in it and
reaches its ports, and the guest reaches chosen ports on the host's loopback.
``build.py`` makes (and caches) the image, ``vm.py`` boots it; the command
line is ``python -m nvmestack.testing.vm`` (``build``, ``run``, ``shell``).

Needs the Debian packages in :data:`~nvmestack.testing.vm.build.PACKAGES`
(``./install.sh --test`` installs them) and, once, the network to fetch the
kernel package.
"""

from .build import (
    GUEST_HOSTNQN,
    PACKAGES,
    BuildError,
    Image,
    KernelUnavailable,
    ToolsMissing,
    cache_dir,
    ensure_image,
)
from .vm import (
    GUEST_ADDR,
    HOST_ADDR,
    VM,
    QemuUnavailable,
    VMError,
    die_with_parent,
    kvm_usable,
)

__all__ = [
    "GUEST_ADDR",
    "GUEST_HOSTNQN",
    "HOST_ADDR",
    "PACKAGES",
    "VM",
    "BuildError",
    "Image",
    "KernelUnavailable",
    "QemuUnavailable",
    "ToolsMissing",
    "VMError",
    "cache_dir",
    "die_with_parent",
    "ensure_image",
    "kvm_usable",
]
