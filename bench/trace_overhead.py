"""Cost of the host tracer's hooks per command: Tracer.setup + Tracer.complete
with tracing off, on (ring only), on with a listener, and on with a text
sink, against an empty function call as the reference.  Prints figures;
asserts nothing.

    .venv/bin/python bench/trace_overhead.py [--calls N]
"""

from __future__ import annotations

import argparse
import io
import time

from nvmestack.host.trace import Tracer
from nvmestack.spec.nvm import Read
from nvmestack.spec.status import SUCCESS


class Request:
    """The attributes the tracer reads (see nvmestack/host/trace.py)."""

    __slots__ = ("cmd", "qid", "cid", "meta", "status", "result", "submitted_at")

    def __init__(self) -> None:
        self.cmd = Read(nsid=1, slba=8, nblocks=8, cid=12)
        self.qid = 1
        self.cid = 12
        self.meta = None
        self.status = SUCCESS
        self.result = 0
        self.submitted_at = time.perf_counter()


def per_call_ns(tracer: Tracer, req: Request, calls: int) -> float:
    """Nanoseconds for one setup() plus one complete()."""
    setup, complete = tracer.setup, tracer.complete
    start = time.perf_counter_ns()
    for _ in range(calls):
        setup(req)
        complete(req)
    return (time.perf_counter_ns() - start) / calls


def empty_call_ns(req: Request, calls: int) -> float:
    def hook(r: Request) -> None:
        return None

    start = time.perf_counter_ns()
    for _ in range(calls):
        hook(req)
        hook(req)
    return (time.perf_counter_ns() - start) / calls


def measure(calls: int) -> list[tuple[str, float]]:
    """(case, ns per setup+complete pair) for each case."""
    req = Request()
    rows = [("two empty function calls (reference)", empty_call_ns(req, calls))]
    rows.append(("tracer off", per_call_ns(Tracer(enabled=False), req, calls)))
    rows.append(("tracer on: ring + histograms", per_call_ns(Tracer(), req, calls)))
    with_listener = Tracer()
    with_listener.add_listener(lambda event: None)
    rows.append(("tracer on + a listener", per_call_ns(with_listener, req, calls)))
    sink = Tracer(sink=io.StringIO())
    rows.append(("tracer on + text sink (formats lines)", per_call_ns(sink, req, calls)))
    sink.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    print(f"{'case':<42} {'ns per command':>15}")
    for name, ns in measure(args.calls):
        print(f"{name:<42} {ns:>15,.0f}")


if __name__ == "__main__":
    main()
