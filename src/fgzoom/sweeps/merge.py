"""One sweep from several parts: a sweep run in parts (on several machines or sessions), each part a sweep
folder or a ``results.csv`` kept under ``docs/``, merged job by job."""

from __future__ import annotations

import logging

from fgzoom.sweeps.runs import NO_METRICS, NOT_STARTED, OK, Run, job_key, mark_other_overrides

log = logging.getLogger("fgzoom.summarize")

_STATUS_RANK = {OK: 0, NO_METRICS: 1, NOT_STARTED: 2}


def merge_runs(sources: list[list[Run]]) -> list[Run]:
    """The runs of several sweeps of one experiment as one sweep (e.g. a sweep run in parts, on several
    machines or sessions, each part's ``results.csv`` kept under ``docs/``). A job is identified by its
    overrides; where several sources hold it, a finished run beats a failed one, which beats one never
    started; of two finished runs the first source's is kept (a warning names the job when their
    ``test/acc`` differ). ``other`` is worked out again over the merged runs."""
    merged: dict[tuple, Run] = {}
    unkeyed: list[Run] = []
    for runs in sources:
        for run in runs:
            if not run.overrides:
                unkeyed.append(run)
                continue
            key = job_key(run.overrides)
            kept = merged.get(key)
            if kept is None or _STATUS_RANK[run.status] < _STATUS_RANK[kept.status]:
                merged[key] = run
            elif run.status == kept.status == OK and run.metrics.get("test/acc") != kept.metrics.get("test/acc"):
                log.warning(
                    "%s: finished in two sources with test/acc %s and %s; keeping the first",
                    " ".join(run.overrides), kept.metrics.get("test/acc"), run.metrics.get("test/acc"),
                )
    runs = [*merged.values(), *unkeyed]
    mark_other_overrides(runs)
    return runs
