"""The whole-job pipeline: :func:`run_compression` (:mod:`service.pipeline.run`), its stages
(:mod:`~service.pipeline.stages`), progress (:mod:`~service.pipeline.progress`), the report
(:mod:`~service.pipeline.report`) and its HTML rendering (:mod:`~service.pipeline.report_html`,
:mod:`~service.pipeline.charts`, ``templates/report.html``)."""

from service.pipeline.run import run_compression

__all__ = ["run_compression"]
