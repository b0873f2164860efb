"""Workload generation over the host block layer (``nvmestack bench``):
:mod:`nvmestack.bench.workload` runs fio-like jobs on a
:class:`~nvmestack.host.block.BlockDevice` and reports IOPS, bandwidth and
latency percentiles as text and as fio-shaped JSON."""

from .workload import Job, JobResult, VerifyError, run_jobs, summary_text

__all__ = ["Job", "JobResult", "VerifyError", "run_jobs", "summary_text"]
