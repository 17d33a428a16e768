"""The labelling job: catalogue Parquet in, one label row per song out, with Ray Data.

    read_parquet (needed columns only) -> drop songs already labelled by this model version
    -> featurise audio + tokenise lyrics (CPU tasks) -> Predictor (actor pool; GPU actors where the
    cluster has GPUs) -> label rows (LABELS contract) -> commit Parquet parts -> completion record

The driver plans (labeler.label_job.plan, .resources), builds the Ray Data plan, takes the output
version's lease and checks the partition at the end (.summary); where the rows go and how parts are
committed is labeler.label_job.layout. Audio bytes are read on the workers only: the driver handles
URIs, song ids and the small per-part commit records.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from labeler.audio.config import MAX_AUDIO_SECONDS, uses_musicnn_frontend
from labeler.bundle.info import BundleInfo, read_bundle_info
from labeler.io import storage
from labeler.io.lease import Fence, Lease
from labeler.label_job.config import LabelJobConfig
from labeler.label_job.featurise import featurise_batch, featurise_memory_bytes
from labeler.label_job.layout import (
    OutputLayout,
    basename,
    check_same_optional_columns,
    commit_part,
    new_run_id,
    read_part_record,
    read_partition,
    report_stale_staging,
)
from labeler.label_job.plan import filter_ids, release_memory, todo_filter, validated_catalogue
from labeler.label_job.resources import Resources, resolve_resources
from labeler.label_job.resume import alive_nodes, run_with_resumes
from labeler.label_job.summary import LabelSummary, finish
from labeler.label_job.watchdog import Watchdog, stall_outcome, stalled, too_small_message, watching
from labeler.runtime.isolate import DEFAULT_RETRIES

log = logging.getLogger(__name__)


def recover_cwd() -> None:
    """Move off a working directory that no longer exists (and say so), so nothing after it fails on os.getcwd().

    Why: under `ray job submit --working-dir`, the driver runs inside Ray's copy of the working dir on
    the head node, and after a worker node was lost Ray removed that copy while the job still ran: the
    run had committed every row, then failed with a bare '[Errno 2] No such file or directory' (from
    os.getcwd()) and no completion record (issue #22). The driver needs nothing from its working dir by
    then (paths are absolute, code is imported).
    """
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    try:
        os.getcwd()
    except FileNotFoundError:
        fallback = tempfile.gettempdir()
        log.warning("this driver's working directory no longer exists (a Ray job's working_dir removed after a "
                    "lost node?); continuing in %s", fallback)
        os.chdir(fallback)


class PredictorStage:
    """labeler.inference.predict.Predictor as the job's actor class, imported inside the actor.

    Why not the Predictor class itself: handing it to Ray Data imports torch into the driver, which
    predicts nothing; at ten million catalogue rows the driver's memory is the job's limit
    (bench/bench_driver_scale.py), and torch alone is ~180 MB of it.
    """

    def __init__(self, progress_sink=None, **kwargs) -> None:
        from labeler.inference.predict import Predictor  # noqa: PLC0415

        self.progress_sink = progress_sink
        self.predictor = Predictor(**kwargs)

    def __call__(self, batch):
        from labeler.runtime.console import report  # noqa: PLC0415

        songs = len(batch["song_id"])
        out = self.predictor(batch)
        # Songs count as done once labelled, not once featurised: with MusiCNN or a --timeline the Predictor
        # is most of the work, and a line counted at featurising sat at 200/200 for the last third of a run.
        report(self.progress_sink, songs)
        return out


def build_dataset(catalogue_uri: str, columns: list[str], id_filter: tuple[pa.Array | None, bool], info: BundleInfo,
                  res: Resources, rows_per_part: int, staging_uri: str, partition_uri: str, embeddings: bool = False,
                  timeline_seconds: float | None = None, fence: Fence | None = None, progress_sink=None,
                  max_retries: int = DEFAULT_RETRIES, tags: bool = False, max_audio_seconds: float = MAX_AUDIO_SECONDS,
                  engine: str = "auto"):
    """The Ray Data plan; returns a dataset of per-part commit records (one row per committed part).

    `id_filter` is (ids, keep) from todo_filter: the rows to label are those whose song_id is in ids
    (keep) or not in them; (None, False) labels every row.

    Every task and actor is retried at most `max_retries` times when its process or node dies (Ray
    Data's default is forever: one poison track once hung a job for good). A track that crashes the
    featuriser never kills a task (featurise_batch isolates it), so what is left to retry is a lost
    node or an out-of-memory kill of the task itself; when retries run out the plan fails with Ray's
    error and commits nothing more (label_catalogue then resumes, see label_job.resume). No block is ever dropped (`max_errored_blocks` stays 0), and
    finish refuses to write the completion record unless every catalogue song has its row.
    A track whose header claims more than `max_audio_seconds` is refused by both the featuriser and the
    Predictor's timeline before it sizes any work (labeler.audio.check_header): a row error, not a crash.
    """
    import ray  # noqa: PLC0415

    retry: dict[str, Any] = {"max_retries": max_retries}
    fs, path = storage.filesystem(catalogue_uri)
    # ray_remote_args (deprecated in Ray 2.60, no named equivalent for max_retries yet): read tasks fuse with the
    # maps after them and take these args, so without it the fused read+featurise would retry forever.
    # A quarter CPU: reads are light, and a read task needing a whole CPU beside actors that hold the rest would wait.
    ds = ray.data.read_parquet(path, filesystem=fs, num_cpus=0.25, ray_remote_args=retry).select_columns(columns)
    ids, keep = id_filter
    if ids is not None:
        ds = ds.map_batches(
            filter_ids,  # type: ignore[arg-type]  # Ray types a map function as batch -> batch; the rest is fn_kwargs
            batch_format="pyarrow", fn_kwargs={"ids_ref": [ray.put(ids)], "keep": keep}, batch_size=None, **retry)
    ds = ds.repartition(target_num_rows_per_block=res.featurise_batch_size)
    ds = ds.map_batches(
        featurise_batch,  # type: ignore[arg-type]  # Ray types a map function as batch -> batch; the rest is fn_kwargs
        batch_format="numpy",
        batch_size=res.featurise_batch_size,
        num_cpus=res.featurise_cpus,
        memory=featurise_memory_bytes(info.featurizer if info.uses_audio else None, res.featurise_batch_size),
        fn_kwargs={
            "featurizer": info.featurizer if info.uses_audio else None,
            "tokenizer": info.tokenizer,
            "lyrics_json": json.dumps(info.lyrics, sort_keys=True),
            "keep_audio_uri": timeline_seconds is not None,
            "max_retries": max_retries,
            "max_audio_seconds": max_audio_seconds,
        },
        **retry,
    )
    actor_resources: dict[str, Any] = {"num_gpus": 1, "num_cpus": res.actor_cpus} if res.use_gpu else {"num_cpus": res.actor_cpus}
    ds = ds.map_batches(
        PredictorStage,
        fn_constructor_kwargs={"bundle_uri": info.uri, "batch_size": res.predict_batch_size, "num_threads": res.predictor_threads,
                               "embeddings": embeddings, "timeline_seconds": timeline_seconds, "tags": tags,
                               "expect_version": info.model_version, "progress_sink": progress_sink,
                               "max_audio_seconds": max_audio_seconds, "engine": engine},
        batch_format="numpy",
        batch_size=res.predict_batch_size,
        compute=ray.data.ActorPoolStrategy(min_size=res.min_actors, max_size=res.max_actors),
        max_restarts=max_retries,
        max_task_retries=max_retries,
        **actor_resources,
    )
    # Committing a part is one small write and a rename: it reserves no CPU, so it never waits behind
    # featurise tasks that hold every CPU (Ray Data otherwise warns that the job may hang).
    return ds.map_batches(
        commit_part,  # type: ignore[arg-type]  # Ray types a map function as batch -> batch; the rest is fn_kwargs
        batch_format="numpy",
        batch_size=rows_per_part,
        num_cpus=0,
        fn_kwargs={"info": info, "staging_uri": staging_uri, "partition_uri": partition_uri, "fence": fence},
        **retry,
    )


def demands(res: Resources, info: BundleInfo) -> dict[str, dict[str, float]]:
    """What one Predictor actor and one featurise task of the plan ask Ray for (named in a stall's error)."""
    actor = {"CPU": res.actor_cpus, "GPU": 1.0} if res.use_gpu else {"CPU": res.actor_cpus}
    memory = featurise_memory_bytes(info.featurizer if info.uses_audio else None, res.featurise_batch_size)
    return {"Predictor actor": actor, "featurise task": {"CPU": res.featurise_cpus, "memory": float(memory or 0)}}


def alive_resources() -> list[dict[str, float]]:
    """Each alive node's resources (CPU, GPU, memory, custom), as the GCS counts them now."""
    import ray  # noqa: PLC0415

    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def still_to_label(layout: OutputLayout, ids: pa.Array) -> tuple[int, tuple[pa.Array | None, bool]]:
    """(songs already labelled by this version, the id filter of those still to label): see plan.todo_filter."""
    done = read_partition(layout, ["song_id"]).column("song_id")  # chunked: is_in hashes it without a copy
    already, todo_ids, keep = todo_filter(ids, done)
    del done
    release_memory()
    return already, (todo_ids, keep)


def label_catalogue(catalogue_uri: str, bundle_uri: str, output_uri: str,
                    config: LabelJobConfig | None = None, console=None) -> LabelSummary:
    """Label every catalogue song that this bundle's model version has not labelled yet.

    The catalogue's contract and its song ids are checked before any work (SchemaError naming the
    columns). Returns the run's summary; raises RuntimeError, without writing the completion record,
    if the committed partition does not hold exactly one row per catalogue song, and
    labeler.io.lease.LeaseHeldError, before any work, while another run writes this output and version.
    With a `console` (labeler.runtime.console.Console), the run shows a progress line of songs done.
    """
    from labeler.runtime.console import Console  # noqa: PLC0415

    console = console or Console.silent()
    config = config or LabelJobConfig()
    started_at = datetime.now(UTC)
    catalogue_uri = storage.absolute_uri(catalogue_uri)
    output_uri = storage.absolute_uri(output_uri)
    # The whole bundle is verified first: a bad bundle fails here, before a lease, a file or Ray.
    info = read_bundle_info(bundle_uri, config.expect_version)
    columns, ids = validated_catalogue(catalogue_uri)
    if config.timeline_seconds is not None and not info.uses_audio:
        raise ValueError(f"--timeline labels windows of the audio, but bundle {storage.describe(info.uri)} "
                         f"is a {info.branch} model without an audio branch")
    if config.tags:
        info.tag_names()  # ValueError, before any work, for a bundle without a MusiCNN audio branch
    layout = OutputLayout(output_uri, info.model_version)
    run_id = new_run_id(started_at)
    # What is done is read under the lease: a run still committing would otherwise be relabelled.
    with Lease(layout.lease_dir, run_id, config.lease_seconds) as lease:
        check_same_optional_columns(layout, config)
        already, id_filter = still_to_label(layout, ids)
        summary = LabelSummary(
            catalogue_uri=catalogue_uri, output_uri=layout.output_uri, partition_uri=layout.partition_uri,
            model_id=info.model_id, model_version=info.model_version, run_id=run_id,
            catalogue_rows=len(ids), already_labelled=already,
        )
        todo = summary.catalogue_rows - summary.already_labelled
        log.info("catalogue %s: %d songs, %d already labelled by version %s, %d to label",
                 storage.describe(catalogue_uri), len(ids), summary.already_labelled, info.model_version, todo)
        if todo == 0 and storage.exists(layout.success_uri):
            return finish(layout, summary, ids, started_at, config.plot, lease=None)

        t0 = time.perf_counter()
        if todo:
            import ray  # noqa: PLC0415

            from labeler.runtime.session import ensure_ray as start_ray  # noqa: PLC0415

            start_ray(config.address)
            heavy = info.uses_audio and uses_musicnn_frontend(info.featurizer)

            def plan() -> Resources:
                """The plan for the cluster as it is now (at the start and again at every resume)."""
                alive = alive_resources()
                res = resolve_resources(config, ray.cluster_resources(), heavy_predictor=heavy, nodes=alive)
                log.info("resources on %d node(s): %s", len(alive), res)
                if summary.plan and res.describe() != summary.plan:
                    summary.replans += 1
                summary.plan = res.describe()
                return res

            res = plan()
            report_stale_staging(layout)
            storage.remove(layout.success_uri)  # the version is incomplete until this run finishes
            staging = layout.staging_uri(run_id)
            errors: Counter = Counter()
            audio_errors: Counter = Counter()
            with console.stage("label", total=todo, remote=True) as stage:

                parts_before = set(layout.part_uris())

                def add(record: dict) -> None:
                    summary.files.append(record["file"])
                    summary.written += int(record["rows"])
                    summary.labelled += int(record["labelled"])
                    errors.update(json.loads(record["errors"]))
                    audio_errors.update(json.loads(record["audio_errors"]))
                    log.info("committed %s (%d rows; %d/%d this run)", basename(record["file"]), record["rows"], summary.written, todo)

                def attempt(number: int) -> None:
                    filter_now = id_filter
                    if number:  # a resumed attempt labels what no attempt has committed yet: the partition is the truth
                        for uri in sorted(set(layout.part_uris()) - parts_before - set(summary.files)):
                            add(read_part_record(uri).to_pylist()[0])  # committed, but its record was lost with the plan
                        filter_now = still_to_label(layout, ids)[1]
                    planned = plan() if number else res
                    nodes_before = alive_nodes()
                    records = build_dataset(catalogue_uri, columns, filter_now, info, planned,
                                            config.rows_per_part, staging,
                                            layout.partition_uri, config.embeddings, config.timeline_seconds,
                                            fence=lease.fence, progress_sink=stage.sink, max_retries=config.max_retries,
                                            tags=config.tags, max_audio_seconds=config.max_audio_seconds,
                                            engine=config.engine)
                    # No silent wait (label_job.watchdog): nothing moves for stall_seconds -> re-plan or one-line error.
                    watchdog = Watchdog(config.stall_seconds, progress=lambda: (stage.done, summary.written))
                    try:
                        with watching(records, watchdog):
                            for record in records.iter_rows():
                                if lease.lost.is_set():
                                    lease.check_held()  # raises LeaseLostError: the commits are fenced off already
                                add(record)
                    except Exception as exc:
                        if not stalled(exc):
                            raise
                        raise stall_outcome(nodes_before, alive_nodes(), number < config.max_resumes, lambda: too_small_message(
                            config.stall_seconds, demands(planned, info), alive_resources(), ray.available_resources())) from exc

                def resuming(number: int, reason: str, exc: BaseException) -> None:
                    stage.event(f"the cluster failed ({reason}); resuming with the {todo - summary.written} songs "
                                f"still to label (resume {number} of {config.max_resumes})")

                summary.resumes = run_with_resumes(attempt, config.max_resumes, on_resume=resuming)
            summary.errors, summary.audio_errors = dict(errors), dict(audio_errors)
            recover_cwd()
            try:
                storage.remove(staging, recursive=True)
            except OSError as exc:  # housekeeping only: the next run reports a leftover staging directory
                log.warning("could not remove the staging directory %s: %s", staging, exc)
        summary.seconds = time.perf_counter() - t0
        return finish(layout, summary, ids, started_at, config.plot, lease=lease)
