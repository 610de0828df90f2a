"""Jobs without HTTP: :mod:`~service.jobs.service` (uploads, the one submission path, listing, cancel, delete),
:mod:`~service.jobs.checks` (upload checks), :mod:`~service.jobs.queue` (Huey), :mod:`~service.jobs.worker`
(running a job), :mod:`~service.jobs.monitor` (lease and progress) and :mod:`~service.jobs.reaper` (lost workers)."""
