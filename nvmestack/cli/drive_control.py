"""Changing a drive's namespaces whether or not a VM is using it.

``nvmestack drive namespace add|remove DRIVE ...`` changes the drive
directory's subsystem.  One process uses a drive at a time (its lock file),
so there are two ways to the subsystem, with one meaning:

- the drive is free: the command takes the lock, loads the drive, changes
  it and closes it (saved, marked clean), like any other command on a drive;
- the drive is served (``nvmestack vfio-user``): the server owns the lock
  and listens on the drive's control socket (``DRIVE/.control.sock``,
  :class:`ControlServer`); the command sends its request there and the
  server changes its live subsystem.  A namespace added is attached to the
  running controller, which raises the Namespace Attribute Changed notice
  (an Asynchronous Event with the Changed Namespace List log), so the
  guest's driver rescans and finds it; the drive's configuration is saved
  before the answer comes back.

Both ways run the same functions (:func:`apply`) on a
:class:`~nvmestack.target.subsystem.Subsystem` bound to its directory.

The control socket speaks one JSON object per line each way (a local
protocol of this command line, not a wire format of any specification):
``{"op": "namespace-add", "size": BYTES, "block_size": 512,
"metadata_size": 0, "pi": 0, "nsid": null}`` -> ``{"nsid": N, "nblocks": B,
"block_size": 512}``; ``{"op": "namespace-remove", "nsid": N}`` ->
``{"nsid": N}``; a refused request -> ``{"error": "one line"}``.  The
socket is the owner's only (the drive directory is 0700, the socket 0600).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import threading
from typing import Any

from ..target import persist
from ..target.namespace import DEFAULT_LBA_FORMATS, Namespace
from .common import CliError
from .devices import DriveInUse, DriveLock, is_drive

__all__ = ["CONTROL_SOCKET", "ControlServer", "apply", "control_path", "on_drive"]

log = logging.getLogger(__name__)

CONTROL_SOCKET = ".control.sock"
MAX_REQUEST = 64 << 10
"""Longest request line the server reads."""
TIMEOUT = 30.0
"""Seconds either side waits for the other's line (a namespace's files are
made and the configuration saved in between)."""


class ControlError(Exception):
    """A request the subsystem refuses; the message is the one line the user sees."""


def control_path(drive: str) -> str:
    return os.path.join(os.path.abspath(drive), CONTROL_SOCKET)


@contextlib.contextmanager
def _reachable(path: str):
    """A name for the UNIX socket ``path`` that fits sockaddr_un (108 bytes):
    itself, or the same file through a descriptor of its directory."""
    if len(os.fsencode(path)) < 100:
        yield path
        return
    fd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# the operations


def _format_index(block_size: int, metadata_size: int) -> int:
    from .drive import _format_index as index

    try:
        return index(block_size, metadata_size)
    except CliError as exc:
        raise ControlError(str(exc)) from None


def _int(request: dict, key: str, default: Any = ..., lo: int = 0, hi: int = (1 << 64) - 1) -> Any:
    value = request.get(key, default)
    if value is ...:
        raise ControlError(f"{key} is required")
    if value is None and default is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ControlError(f"{key} must be an integer from {lo} to {hi}, not {value!r}")
    return value


def namespace_add(subsys, *, size: int, block_size: int = 512, metadata_size: int = 0, pi: int = 0,
                  nsid: int | None = None) -> Namespace:
    """Add a namespace of ``size`` bytes attached to every controller (as
    ``drive create`` makes them); the subsystem raises the Namespace
    Attribute Changed notice on each and its persistence saves."""
    index = _format_index(block_size, metadata_size)
    if size <= 0 or size % block_size:
        raise ControlError(f"namespace size {size} is not a positive multiple of the {block_size}-byte block")
    if pi not in (0, 1, 2, 3):
        raise ControlError(f"protection information type {pi}: expected 0 to 3")
    if pi and metadata_size < 8:
        raise ControlError("protection information needs 8 or more bytes of metadata per block")
    with subsys.lock:
        if nsid is None:
            nsid = subsys.free_nsid()
            if nsid is None:
                raise ControlError(f"no free namespace ID (the drive holds {subsys.max_namespaces})")
        elif not 1 <= nsid <= subsys.max_namespaces:
            raise ControlError(f"namespace ID {nsid}: expected 1 to {subsys.max_namespaces}")
        elif nsid in subsys.namespaces:
            raise ControlError(f"namespace {nsid} exists")
        if size > subsys.unallocated_capacity():
            raise ControlError(f"{size} bytes do not fit: {subsys.unallocated_capacity()} of the drive's "
                               f"{subsys.capacity} bytes are unallocated")
        ns = Namespace(nsid, size // block_size, lba_format=index, formats=DEFAULT_LBA_FORMATS, pi_type=pi,
                       backends=subsys.namespace_backends(nsid))
        try:
            subsys.add_namespace(ns, attach=True)
        except ValueError as exc:
            ns.close()
            raise ControlError(str(exc)) from None
    return ns


def namespace_remove(subsys, nsid: int) -> None:
    """Remove namespace ``nsid`` (its data goes); attached controllers get
    the Namespace Attribute Changed notice."""
    from ..target.admin_mgmt import operations

    if nsid not in subsys.namespaces:
        raise ControlError(f"no namespace {nsid}")
    operations(subsys).namespace_removed(nsid)
    try:
        subsys.remove_namespace(nsid)
    except KeyError:
        raise ControlError(f"no namespace {nsid}") from None


def apply(subsys, request: Any) -> dict:
    """Run one request (the JSON object of the control protocol) on ``subsys``."""
    if not isinstance(request, dict):
        raise ControlError("a request is a JSON object")
    op = request.get("op")
    if op == "namespace-add":
        ns = namespace_add(subsys, size=_int(request, "size", lo=1),
                           block_size=_int(request, "block_size", 512, hi=1 << 20),
                           metadata_size=_int(request, "metadata_size", 0, hi=1 << 16),
                           pi=_int(request, "pi", 0, hi=3), nsid=_int(request, "nsid", None, lo=1, hi=0xFFFFFFFE))
        return {"nsid": ns.nsid, "nblocks": ns.nblocks, "block_size": ns.block_size}
    if op == "namespace-remove":
        nsid = _int(request, "nsid", lo=1, hi=0xFFFFFFFE)
        namespace_remove(subsys, nsid)
        return {"nsid": nsid}
    raise ControlError(f"unknown operation {op!r}")


# ---------------------------------------------------------------------------
# the server side (in nvmestack vfio-user)


class ControlServer:
    """Listens on ``DRIVE/.control.sock`` for the life of a served drive and
    runs each request on ``subsystem`` (one at a time, on its own thread:
    the subsystem's lock and the controllers' event posting are what any
    other thread uses)."""

    def __init__(self, subsystem, drive: str):
        self.subsystem = subsystem
        self.path = control_path(drive)
        self.requests = 0
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # left by a server that was killed (we hold the drive's lock)
            old = os.umask(0o177)
            try:
                with _reachable(self.path) as name:
                    self._listener.bind(name)
            finally:
                os.umask(old)
            self._listener.listen(4)
        except OSError as exc:
            self._listener.close()
            raise CliError(f"{self.path}: cannot listen for drive commands: {exc}") from None
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="drive-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "listen")
        sel.register(self._stop_r, selectors.EVENT_READ, "stop")
        try:
            while True:
                events = [key.data for key, _ in sel.select()]
                if "stop" in events:
                    return
                try:
                    conn, _ = self._listener.accept()
                except OSError:
                    continue
                with conn:
                    try:
                        self._answer(conn)
                    except Exception:  # noqa: BLE001 - one bad client never ends the server
                        log.exception("drive control request")
        finally:
            sel.close()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(TIMEOUT)
        try:
            line = _read_line(conn)
        except (OSError, ControlError) as exc:
            with contextlib.suppress(OSError):
                conn.sendall(_line({"error": f"bad request: {exc}"}))
            return
        try:
            request = json.loads(line)
        except ValueError as exc:
            reply = {"error": f"bad request: not JSON ({exc})"}
        else:
            try:
                reply = apply(self.subsystem, request)
                self.requests += 1
                log.info("drive control: %s -> %s", request, reply)
            except ControlError as exc:
                reply = {"error": str(exc)}
            except (OSError, ValueError) as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(OSError):
            conn.sendall(_line(reply))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        self._thread.join(TIMEOUT)
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _line(obj: dict) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _read_line(conn: socket.socket) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        data = conn.recv(4096)
        if not data:
            break
        buf += data
        if len(buf) > MAX_REQUEST:
            raise ControlError(f"a line longer than {MAX_REQUEST} bytes")
    return bytes(buf).split(b"\n", 1)[0]


# ---------------------------------------------------------------------------
# the command side


def _ask_server(drive: str, request: dict) -> dict:
    path = control_path(drive)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        try:
            with _reachable(path) as name:
                sock.connect(name)
        except (FileNotFoundError, ConnectionRefusedError):
            raise CliError(f"{drive}: drive is in use by another process (one that takes no drive commands)") from None
        except OSError as exc:
            raise CliError(f"{path}: {exc}") from None
        try:
            sock.sendall(_line(request))
            line = _read_line(sock)
        except (OSError, ControlError) as exc:
            raise CliError(f"{drive}: the server of the drive did not answer: {exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(line)
    except ValueError:
        raise CliError(f"{drive}: the server of the drive answered {line[:80]!r}") from None
    if not isinstance(reply, dict):
        raise CliError(f"{drive}: the server of the drive answered {line[:80]!r}")
    return reply


def on_drive(drive: str, request: dict) -> tuple[dict, bool]:
    """Run ``request`` on the drive directory ``drive``: in this process
    when the drive is free, else through its server's control socket.
    Returns (the answer, whether a server applied it); a refusal is a
    :class:`CliError`."""
    if not is_drive(drive):
        raise CliError(f"{drive}: not a drive directory (see 'nvmestack drive create')")
    drive = os.path.abspath(drive)
    try:
        lock = DriveLock(drive)
    except DriveInUse:
        reply = _ask_server(drive, request)
        served = True
    else:
        try:
            try:
                subsys = persist.load(drive)
            except (OSError, ValueError) as exc:
                raise CliError(str(exc)) from None
            try:
                reply = apply(subsys, request)
            except ControlError as exc:
                reply = {"error": str(exc)}
            except (OSError, ValueError) as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                subsys.close()
        finally:
            lock.release()
        served = False
    if "error" in reply:
        raise CliError(f"{drive}: {reply['error']}")
    return reply, served
