"""Every expected failure of every `labeler` command is one line that says what to do, exit status 2.

The table runs the real commands in this process (cli.main) on real files: missing and unreadable
inputs, bad flags, a tampered bundle, a busy output (a lease held by another run), and S3 without
credentials against the moto server. `--debug` adds the traceback; a bug (not an expected failure)
exits 1 and names the log that holds its traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import cli
from labeler.runtime.errors import explain

pytestmark = pytest.mark.usefixtures("log_dir")


@pytest.fixture(autouse=True)
def log_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MOOD_LABELER_LOG_DIR", str(tmp_path / "logs"))
    return tmp_path / "logs"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A valid catalogue and manifest, garbage 'Parquet', a bundle and two tampered copies of it."""
    from tests.helpers import make_bundle

    root = tmp_path_factory.mktemp("errors")
    catalogue = root / "catalogue.parquet"
    pq.write_table(pa.table({"song_id": ["a", "b"], "audio_uri": [None, None], "lyrics": ["la la", "oh"]}), catalogue)
    manifest = root / "manifest.parquet"
    pq.write_table(pa.table({
        "song_id": ["a", "b"], "dataset": ["synth", "synth"], "audio_uri": pa.array([None, None], pa.string()),
        "lyrics": ["la la", "oh"], "valence": [0.5, -0.5], "arousal": [0.5, -0.5],
        "quadrant": pa.array([1, 3], pa.int8()), "fold": pa.array([0, 1], pa.int8())}), manifest)
    manifest3 = root / "manifest3.parquet"  # three folds: what train needs before it looks at anything else
    pq.write_table(pa.table({
        "song_id": ["a", "b", "c"], "dataset": ["synth"] * 3, "audio_uri": pa.array([None] * 3, pa.string()),
        "lyrics": ["la la", "oh", "hey"], "valence": [0.5, -0.5, 0.5], "arousal": [0.5, -0.5, -0.5],
        "quadrant": pa.array([1, 3, 4], pa.int8()), "fold": pa.array([0, 1, 2], pa.int8())}), manifest3)
    garbage = root / "garbage.parquet"
    garbage.write_bytes(b"this is not a parquet file\n" * 10)
    bundle = Path(make_bundle(root))
    bad_json = root / "bundle-bad-json"
    shutil.copytree(bundle, bad_json)
    (bad_json / "config.json").write_text("{ not json")
    tampered = root / "bundle-tampered"
    shutil.copytree(bundle, tampered)
    weights = tampered / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    not_a_folder = root / "a-file"
    not_a_folder.write_text("x")
    return {"root": root, "catalogue": str(catalogue), "manifest": str(manifest), "manifest3": str(manifest3), "garbage": str(garbage), "bundle": str(bundle),
            "bad_json": str(bad_json), "tampered": str(tampered), "file": str(not_a_folder)}


# (command args with {placeholders}, a text the one line must hold)
CASES = {
    # bad flags: one line naming --help, for every command
    **{f"{name}-bad-flag": ([name, "--no-such-flag"], f"(see `labeler {name} --help`)") for name in cli.COMMANDS},
    "demo-unknown-flag": (["demo", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    "label-missing-flag": (["label", "--catalogue", "{catalogue}"], "the following arguments are required"),
    # missing inputs
    "label-missing-catalogue": (["label", "--catalogue", "{root}/nope.parquet", "--bundle", "{bundle}", "--output", "{out}"], "not found"),
    "label-missing-bundle": (["label", "--catalogue", "{catalogue}", "--bundle", "{root}/nope", "--output", "{out}"], "config.json not found"),
    "featurise-missing-catalogue": (["featurise", "--catalogue", "{root}/nope.parquet", "--output", "{out}"], "does not exist"),
    "train-missing-manifest": (["train", "--manifest", "{root}/nope.parquet", "--output", "{out}"], "not found: "),
    "evaluate-missing-manifest": (["evaluate", "--bundle", "{bundle}", "--manifest", "{root}/nope.parquet"], "not found"),
    "evaluate-missing-bundle": (["evaluate", "--bundle", "{root}/nope", "--manifest", "{manifest}"], "config.json not found"),
    "prepare-missing-folder": (["prepare", "--dataset", "4q={root}/nope", "--output", "{out}/m.parquet"], "nope"),
    "serve-missing-bundle": (["serve", "--bundle", "{root}/nope"], "config.json not found"),
    "recipe-missing-data": (["recipe", "--data", "{root}/nope", "--output", "{out}"], "is not a folder"),
    "demo-workdir-is-a-file": (["demo", "--workdir", "{file}/demo"], "{file}"),
    "synth-output-is-a-file": (["synth", "--songs", "2", "--output", "{file}/synth"], "{file}"),
    # unreadable inputs
    "label-garbage-catalogue": (["label", "--catalogue", "{garbage}", "--bundle", "{bundle}", "--output", "{out}"], "Parquet"),
    "train-garbage-manifest": (["train", "--manifest", "{garbage}", "--output", "{out}"], "Parquet"),
    "featurise-garbage-catalogue": (["featurise", "--catalogue", "{garbage}", "--output", "{out}"], "Parquet"),
    # bad or tampered bundles
    "label-bundle-bad-json": (["label", "--catalogue", "{catalogue}", "--bundle", "{bad_json}", "--output", "{out}"], "not valid JSON"),
    "label-tampered-weights": (["label", "--catalogue", "{catalogue}", "--bundle", "{tampered}", "--output", "{out}"], "sha256"),
    "serve-tampered-weights": (["serve", "--bundle", "{tampered}"], "sha256"),
    "evaluate-tampered-weights": (["evaluate", "--bundle", "{tampered}", "--manifest", "{manifest}"], "sha256"),
    "serve-bundle-bad-json": (["serve", "--bundle", "{bad_json}"], "not valid JSON"),
    # bad values
    "demo-too-few-songs": (["demo", "--songs", "3", "--workdir", "{out}"], "songs must be at least 20"),
    "recipe-no-datasets": (["recipe", "--output", "{out}"], "no datasets"),
    # a flag the bundle cannot honour: --tags needs a MusiCNN audio branch, this bundle's is Cnn6
    "label-tags-without-musicnn": (["label", "--catalogue", "{catalogue}", "--bundle", "{bundle}", "--output", "{out}",
                                   "--tags"], "is Cnn6, which has no tag layer"),
    "serve-tags-without-musicnn": (["serve", "--bundle", "{bundle}", "--tags"], "is Cnn6, which has no tag layer"),
    "train-lexical-source-missing": (["train", "--manifest", "{manifest3}", "--output", "{out}", "--lexical-source",
                                     "{root}/nope.parquet"], "not a readable Parquet manifest"),
    "train-lexical-source-unstacked": (["train", "--manifest", "{manifest3}", "--output", "{out}", "--lexical-source",
                                        "{manifest3}", "--set", "lexical=false"], "needs a stacked lyrics branch"),
    "label-bad-batch": (["label", "--catalogue", "{catalogue}", "--bundle", "{bundle}", "--output", "{out}",
                        "--rows-per-part", "0"], "rows_per_part must be a positive integer"),
}


def _fill(args: list[str], files: dict, out: Path) -> list[str]:
    return [a.format(out=out, **files) for a in args]


def _one_line_error(capsys, command: str, code: int) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"labeler {command}: error: "), lines[0]
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_expected_failure_is_one_line(case, files, tmp_path, capsys):
    args, expected = CASES[case]
    args = _fill(args, files, tmp_path / "out")
    line = _one_line_error(capsys, args[0], cli.main(args))
    assert expected.format(out=tmp_path / "out", **files) in line


def test_busy_output_names_the_run_holding_it(files, tmp_path, capsys):
    from labeler.bundle.info import read_bundle_info
    from labeler.io.lease import Lease
    from labeler.label_job import OutputLayout

    out = tmp_path / "labels"
    layout = OutputLayout(str(out), read_bundle_info(files["bundle"]).model_version)
    with Lease(layout.lease_dir, "the-other-run", 120):
        line = _one_line_error(capsys, "label", cli.main(
            ["label", "--catalogue", files["catalogue"], "--bundle", files["bundle"], "--output", str(out)]))
    assert "the-other-run" in line and "another --output" in line


def test_s3_without_credentials(s3_server, s3_bucket, files, tmp_path, capsys, monkeypatch):
    import s3fs

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        for command in (["label", "--catalogue", f"{s3_bucket}/catalogue.parquet", "--bundle", files["bundle"],
                         "--output", str(tmp_path / "o")],
                        ["train", "--manifest", f"{s3_bucket}/manifest.parquet", "--output", str(tmp_path / "t")]):
            line = _one_line_error(capsys, command[0], cli.main(command))
            assert "no usable AWS credentials" in line and "AWS_ACCESS_KEY_ID" in line
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def test_debug_adds_the_traceback(files, tmp_path, capsys):
    assert cli.main(["train", "--debug", "--manifest", str(tmp_path / "nope.parquet"), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("labeler train: error: not found: ")


def test_a_bug_exits_1_and_names_the_log(monkeypatch, tmp_path, capsys, log_dir):
    import jobs.commands.synth

    def broken(args):
        raise KeyError("surprise")

    monkeypatch.setattr(jobs.commands.synth, "run_cli", broken)
    assert cli.main(["synth", "--output", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("labeler synth: internal error: KeyError") and str(log_dir) in err
    logged = "".join(p.read_text() for p in log_dir.glob("synth-*.log"))
    assert "Traceback" in logged and "surprise" in logged


def test_explain_s3_access_denied_and_refused_keys():
    from botocore.exceptions import ClientError

    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "GetObject")
    assert explain(denied).startswith("access denied by S3")
    refused = ClientError({"Error": {"Code": "InvalidAccessKeyId", "Message": "no such key"}}, "ListObjectsV2")
    assert "refused the AWS credentials" in explain(refused)
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = PermissionError(13, "Permission denied", "/data/x.parquet")
    assert explain(wrapped).startswith("permission denied: /data/x.parquet")
    assert explain(KeyError("a bug")) is None
    assert json.dumps(explain(FileNotFoundError("/x/y.parquet"))) == '"not found: /x/y.parquet (check the path)"'


def test_an_aws_profile_that_does_not_exist_is_a_user_error(s3_server, s3_bucket, files, tmp_path, capsys, monkeypatch):
    import s3fs
    from botocore.exceptions import ProfileNotFound

    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        line = _one_line_error(capsys, "label", cli.main(
            ["label", "--catalogue", f"{s3_bucket}/catalogue.parquet", "--bundle", files["bundle"],
             "--output", str(tmp_path / "o")]))
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    assert "AWS profile 'no-such-profile' not found" in line and "AWS_PROFILE" in line
    assert explain(ProfileNotFound(profile="x")).startswith("AWS profile 'x' not found")
