"""The labelling job: catalogue Parquet in, one label row per song out, with Ray Data.

    plan (catalogue checked, anti-join against the version's committed rows) -> featurise (CPU tasks)
    -> Predictor (actor pool; GPU actors where the cluster has GPUs) -> label rows (labeler.inference.label_rows)
    -> commit Parquet parts (layout) -> completion record (summary)

One module per part: `config` (the run's knobs), `resources` (how wide it runs), `plan` (what to
label), `featurise` (the CPU stage), `layout` (where rows go, staging and fenced commits), `summary`
(what the run did, the completion record), `plot` and `driver` (label_catalogue); `labeler label`'s flags are
jobs/commands/label.py. What the job shares with Serve lives outside this package (labeler.bundle.info,
labeler.inference.label_rows), so Serve never imports the batch driver.
"""

from labeler.label_job.config import LabelJobConfig
from labeler.label_job.driver import label_catalogue
from labeler.label_job.layout import OutputLayout
from labeler.label_job.resources import Resources, resolve_resources
from labeler.label_job.summary import LabelSummary

__all__ = ["LabelJobConfig", "LabelSummary", "OutputLayout", "Resources", "label_catalogue", "resolve_resources"]
