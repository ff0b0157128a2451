"""The ``visual`` step: multitask EfficientNetB0 image vectors of the catalog (paper 000 §3.1, A.5; DESIGN §7).

``prepare`` finds the catalog's listing images (skipping the step, with the reason, when the
lake has no catalog or no images); ``train`` builds one dataset per task, trains the model in
two phases with the balanced multitask sampler and saves the embedding model with its label
vocabularies; ``infer`` runs batch inference over every listing with a readable image, also
with a model saved on an earlier day (retrain cadence). The driver then writes
``vectors.parquet`` and fails the step when the vectors do not separate fine taxonomies or
cluster by taxonomy and color.

The tasks are (paper A.5.1): listing image -> top-level taxonomy, listing image -> fine
taxonomy, listing image -> seller-input primary color (null for some listings, so its
dataset is smaller). A review-photo task (user photos -> fine taxonomy) is one more
:class:`TaskData` whose rows point at extra images appended to the loader's paths; the
synthetic marketplace has no review photos, so it is not built here.
"""
from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np

from components.lake import Lake, fs
from components.representations import store
from components.representations.config import VisualConfig
from components.representations.driver import Representation, run_representation
from components.representations.store import Vectors
from components.representations.visual.images import ImageLoader, existing, resolve_uri
from components.representations.visual.sampler import MultiTaskSampler, TaskData
from components.step import StepError, StepResult

MODEL_FILE = "embedding.keras"
SETTINGS_FILE = "visual.json"
LISTING_TASKS = (("top_taxonomy", "top_taxonomy"), ("fine_taxonomy", "taxonomy_id"), ("primary_color", "primary_color"))
"""(task/head name, catalog column with its label) of the listing-image tasks (paper 000 A.5.1 tasks 1-3)."""
BACKBONE = ("Keras EfficientNetB0 (include_top=False) cut after block7a_project_bn; its top_conv (1280) replaced "
            "by Conv2D(embedding_dim, 1x1) + BatchNorm + swish + global average pooling")


def weights_label(weights_path: str | None) -> str:
    return f"imagenet: {weights_path}" if weights_path else "random init"


class VisualRepresentation(Representation):
    """Listing image -> ``embedding_dim`` vector from the multitask classifier's conv block."""

    name = "visual"
    gap_columns = ("taxonomy_id",)
    purity_columns = ("taxonomy_id", "primary_color")

    def __init__(self):
        self.cfg: VisualConfig | None = None
        self.seed = 0
        self.ids = np.array([], dtype=object)
        self.paths: list[str] = []
        self.labels: dict[str, np.ndarray] = {}
        self.facts: dict = {}
        self.settings: dict | None = None

    # -- inputs -----------------------------------------------------------------------------------------------
    def prepare(self, config, date: dt.date, lake: Lake, progress=print) -> str | None:
        self.cfg, self.seed = config.representations.visual, int(config.seed)
        table = store.catalog(lake, date)
        if table is None:
            return f"no validated catalog (listings) for {date}: visual vectors need listing images"
        uris = np.array(table.column("image_uri").to_pylist(), dtype=object)
        with_uri = np.array([bool(u) for u in uris], dtype=bool)
        if not with_uri.any():
            return f"no listing in the catalog of {date} has an image_uri: the catalog comes without images"
        paths = np.array([resolve_uri(lake, u) for u in uris[with_uri]], dtype=object)
        present = existing(paths)
        if not present.any():
            return (f"none of the {len(paths)} listing images of {date} exist (for example {paths[0]}): "
                    "the images are missing from the lake")
        keep = np.flatnonzero(with_uri)[present]
        self.ids = np.array(table.column("listing_id").to_pylist(), dtype=object)[keep]
        self.paths = paths[present].tolist()
        self.labels = {column: np.array(table.column(column).to_pylist(), dtype=object)[keep]
                       for _, column in LISTING_TASKS}
        self.facts = {"catalog_listings": table.num_rows, "listings_with_images": len(keep),
                      "listings_without_image_uri": int((~with_uri).sum()), "images_missing": int((~present).sum())}
        progress(f"  visual: {len(keep)} of {table.num_rows} listings have an image"
                 + (f" ({self.facts['images_missing']} image files missing)" if self.facts["images_missing"] else ""))
        return None

    def tasks(self) -> list[TaskData]:
        """One dataset per task: the listings with that label (tasks without any example are left out)."""
        rows = np.arange(len(self.ids))
        tasks = [TaskData.from_values(name, rows, self.labels[column]) for name, column in LISTING_TASKS]
        return [t for t in tasks if len(t.rows) and t.n_classes >= 2]

    # -- training ---------------------------------------------------------------------------------------------
    def train(self, model_dir: str, progress=print) -> dict:
        import keras

        from components.representations.visual import model as vm
        from components.representations.visual import trainer

        cfg = self.cfg
        tasks = self.tasks()
        if not tasks:
            raise StepError("visual: no task has labels with at least two classes among listings with images "
                            "(top_taxonomy, taxonomy_id, primary_color); cannot train the multitask model")
        keras.utils.set_random_seed(self.seed)
        embedding = vm.build_embedding_model(cfg)
        model = vm.build_training_model(embedding, {t.name: t.n_classes for t in tasks}, cfg, self.seed)
        sampler = MultiTaskSampler(tasks, cfg.batch_size, cfg.samples_per_task, self.seed)
        loader = ImageLoader(self.paths, cfg.image_size)
        datasets = ", ".join(f"{t.name} ({len(t.rows)} images, {t.n_classes} classes)" for t in tasks)
        progress(f"  visual: training on {datasets}; "
                 f"{weights_label(cfg.weights_path)}, {cfg.image_size}px, batches of {sampler.per_task} per task")
        backbone_layers = len(vm.backbone_of(embedding).layers)
        warning = None
        if not cfg.weights_path and cfg.phase2_epochs and cfg.unfreeze_last < backbone_layers:
            warning = (f"random init with only the last {cfg.unfreeze_last} of {backbone_layers} backbone layers "
                       "trained: the frozen random layers below have untrained BatchNorm statistics, so their "
                       "activations shrink about tenfold per stage and the vectors may fail the quality checks; "
                       f"set unfreeze_last: "
                       f"{backbone_layers} when no ImageNet weights file is available")
            progress(f"  visual: warning: {warning}")
        metrics = trainer.train(model, embedding, sampler, loader, cfg, progress)
        metrics["backbone_layers"] = backbone_layers
        if warning:
            metrics["warning"] = warning
        self.settings = {
            "image_size": cfg.image_size, "embedding_dim": cfg.embedding_dim,
            "weights": weights_label(cfg.weights_path), "seed": self.seed,
            "tasks": {t.name: list(t.classes) for t in tasks},
            "task_examples": {t.name: len(t.rows) for t in tasks},
            "config": cfg.model_dump(),
        }
        with fs.local_dir(model_dir, "w") as local:
            embedding.save(os.path.join(local, MODEL_FILE))
            with open(os.path.join(local, SETTINGS_FILE), "w") as f:
                json.dump(self.settings, f, indent=2)
        return metrics

    # -- inference --------------------------------------------------------------------------------------------
    def infer(self, model_dir: str, progress=print) -> Vectors:
        import keras

        from components.representations.visual import trainer

        with fs.local_dir(model_dir, "r") as local:
            model_file, settings_file = os.path.join(local, MODEL_FILE), os.path.join(local, SETTINGS_FILE)
            if not (os.path.exists(model_file) and os.path.exists(settings_file)):
                raise StepError(f"visual: {model_dir} has no {MODEL_FILE} and {SETTINGS_FILE}; it was not written by "
                                "this step's trainer. Rerun the step with --force to retrain")
            with open(settings_file) as f:
                self.settings = json.load(f)
            embedding = keras.models.load_model(model_file, compile=False)
        size = int(self.settings["image_size"])
        loader = ImageLoader(self.paths, size)
        matrix, ok, timing = trainer.embed(embedding, loader, np.arange(len(self.paths)), self.cfg.inference_batch,
                                           progress)
        self.facts["unreadable_images"] = int((~ok).sum())
        self.facts["inference"] = timing
        return Vectors(self.ids[ok], matrix[ok])

    def describe(self) -> dict:
        settings = self.settings or {}
        out = {"backbone": BACKBONE, **self.facts}
        if settings:
            out.update({"weights": settings["weights"], "image_size": settings["image_size"],
                        "embedding_dim": settings["embedding_dim"],
                        "tasks": {name: len(classes) for name, classes in settings["tasks"].items()},
                        "task_examples": settings["task_examples"]})
        return out


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    """The DAG step: visual vectors of the catalog of ``date`` (``config.representations.visual``, ``config.seed``)."""
    return run_representation(config, date, lake, VisualRepresentation(), progress)
