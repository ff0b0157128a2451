"""The ``air`` step: multimodal AIR listing vectors (paper 000 §3.2, A.6; DESIGN §7).

A pseudo-two-tower (one :class:`~components.representations.air.tower.AirTower` for source
and candidate, so every weight is shared) over ``[visual | title, tags, taxonomy text |
numeric]`` (``features.py``) is trained on co-clicked listing pairs (``pairs.py``) with an
in-batch softmax over the batch's cosine-similarity matrix and sampled negatives
(``loss.py``); Adam(lr, 0.9, 0.999, 1e-7). The model directory holds the tower
(``tower.keras``) and the feature layout with its normalization statistics
(``features.json``), so a later day that reuses the model (retrain cadence) encodes its
catalog exactly as the training day did. Every catalog listing gets a 256-d unit vector.

Skipped (with the reason in the manifest) without a catalog (events-only logs), without any
usable co-clicked pair, or when neither visual nor text vectors exist for the day; with one
of the two missing the model trains without it and the manifest says so.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import time

import numpy as np

from components.lake import Lake, fs
from components.representations.air import features as feats
from components.representations.air.pairs import both_directions, coclick_path, read_pairs, split_heldout, to_rows, \
    top_pairs
from components.representations.driver import Representation, run_representation
from components.representations.store import Vectors, catalog, fields_path, load_representation, read_fields, \
    vectors_path
from components.step import StepError, StepResult

TOWER_FILE = "tower.keras"
HELDOUT_FRACTION = 0.05


class AirRepresentation(Representation):
    name = "air"
    gap_columns = ("taxonomy_id",)
    purity_columns = ("taxonomy_id",)

    def prepare(self, config, date: dt.date, lake: Lake, progress) -> str | None:
        self.cfg = config.representations.air
        self.seed = int(config.seed)
        self.date = date
        self.facts: dict = {}
        self.catalog = catalog(lake, date)
        if self.catalog is None or self.catalog.num_rows == 0:
            return (f"no catalog snapshot for {date} (events-only logs): AIR encodes each listing's image, text "
                    "and numeric features, so it has nothing to encode")
        self.visual = load_representation(lake, date, "visual")
        self.fields = read_fields(fields_path(lake, date))
        self.facts["inputs"] = {"visual": vectors_path(lake, date, "visual") if self.visual is not None else None,
                                "text_fields": fields_path(lake, date) if self.fields is not None else None,
                                "coclick": coclick_path(lake, date)}
        if self.visual is None and self.fields is None:
            return (f"neither visual vectors ({vectors_path(lake, date, 'visual')}) nor text field vectors "
                    f"({fields_path(lake, date)}) exist for {date}; AIR needs at least one content modality")
        missing = {"visual": "the visual step wrote no vectors (no images, or it was skipped)",
                   "text": "the text_vectors step wrote no field vectors (no titles, or it was skipped)"}
        self.facts["missing_today"] = {m: why for m, why in missing.items()
                                       if (self.visual if m == "visual" else self.fields) is None}
        table = read_pairs(coclick_path(lake, date))
        selected = top_pairs(table, self.cfg.max_pairs)
        self.pairs = to_rows(selected, self.catalog.column("listing_id"))
        self.pairs.counts = {"in_corpus": table.num_rows, **self.pairs.counts}
        if self.pairs.counts["kept"] == 0:
            return (f"no usable co-clicked pair for {date}: {table.num_rows} pairs in {coclick_path(lake, date)}, "
                    f"{self.pairs.counts['dropped_not_in_catalog']} of the {selected.num_rows} selected have a listing "
                    f"missing from the catalog and {self.pairs.counts['dropped_self_pairs']} pair a listing "
                    "with itself")
        progress(f"  {self.pairs.counts['kept']:,} co-clicked pairs of {table.num_rows:,} "
                 f"({self.pairs.counts['dropped_not_in_catalog']:,} dropped: listing not in the catalog); "
                 f"inputs: {', '.join(m for m in ('visual', 'text') if m not in self.facts['missing_today'])}")
        return None

    def train(self, model_dir: str, progress) -> dict:
        import keras  # TensorFlow loads only when the step trains or infers

        from components.representations.air.tower import AirTower
        from components.representations.air.train import RECALL_K, embed, fit, in_batch_recall

        cfg, t0 = self.cfg, time.perf_counter()
        keras.utils.set_random_seed(self.seed)
        spec = feats.fit_spec(self.catalog, self.date, self.visual, self.fields)
        matrix, _ = feats.build_matrix(spec, self.catalog, self.date, self.visual, self.fields)
        (train_a, train_b), (held_a, held_b) = split_heldout(self.pairs, HELDOUT_FRACTION, self.seed)
        source, candidate = both_directions(train_a, train_b)
        tower = AirTower(hidden=cfg.hidden, dim=cfg.dim, name="air_tower")
        tower.build((None, spec.input_dim))
        progress(f"  AIR tower {spec.input_dim} -> {' -> '.join(map(str, [*cfg.hidden, cfg.dim]))} "
                 f"({tower.count_params():,} weights; inputs {' | '.join(spec.modalities)}), {len(source):,} directed "
                 f"pairs, batch {cfg.batch_size}, {cfg.sampled_negatives} sampled negatives, {cfg.epochs} epochs")
        before = in_batch_recall(embed(tower, matrix), held_a, held_b, cfg.batch_size)
        history = fit(tower, matrix, source, candidate, cfg, self.seed, progress)
        after = in_batch_recall(embed(tower, matrix), held_a, held_b, cfg.batch_size)
        progress(f"  held-out in-batch recall@{RECALL_K}: {before['recall']} before, {after['recall']} after "
                 f"(chance {after['chance']})")
        with fs.local_dir(model_dir, "w") as local:
            listing = keras.Input((spec.input_dim,), name="listing_features")
            keras.Model(listing, tower(listing), name="air").save(os.path.join(local, TOWER_FILE))
            with open(os.path.join(local, feats.SPEC_FILE), "w") as f:
                f.write(spec.to_json())
        seconds = time.perf_counter() - t0
        return {"pairs": self.pairs.counts, "train_pairs": len(train_a), "heldout_pairs": len(held_a),
                "directed_train_pairs": len(source), **history,
                f"heldout_recall_at_{RECALL_K}": {"before": before["recall"], "after": after["recall"],
                                                  "chance": after["chance"], "pairs": after["pairs"],
                                                  "batch": after["batch"]},
                "weights": int(tower.count_params()), "seconds": round(seconds, 2)}

    def infer(self, model_dir: str, progress) -> Vectors:
        import keras

        import components.representations.air.tower  # noqa: F401 - registers AirTower for loading
        from components.representations.air.train import embed

        with fs.local_dir(model_dir, "r") as local:
            for name in (TOWER_FILE, feats.SPEC_FILE):
                if not os.path.exists(os.path.join(local, name)):
                    raise StepError(f"air: {fs.join(model_dir, name)} is missing; the model directory is incomplete "
                                    "(rerun the air step with --force to retrain)")
            model = keras.saving.load_model(os.path.join(local, TOWER_FILE))
            with open(os.path.join(local, feats.SPEC_FILE)) as f:
                spec = feats.FeatureSpec.from_json(f.read())
        matrix, coverage = feats.build_matrix(spec, self.catalog, self.date, self.visual, self.fields)
        vectors = embed(model, matrix)
        ids = np.array(self.catalog.column("listing_id").to_pylist(), dtype=object)
        progress(f"  {len(ids):,} listings encoded ({vectors.shape[1]}-d)")
        not_trained = [m for m in ("visual", "text") if m not in spec.modalities]
        self.facts.update({
            "model_inputs": spec.modalities, "input_dim": spec.input_dim, "coverage": coverage,
            "missing_modalities": {m: "absent on the training day; the model has no columns for it"
                                   for m in not_trained}
            | {m: f"trained with it but today {why}; its columns are zeros with their has_* indicators at 0"
               for m, why in self.facts.get("missing_today", {}).items() if m not in not_trained},
            "vectors_sha256": hashlib.sha256(np.ascontiguousarray(vectors).tobytes()).hexdigest()[:16],
        })
        return Vectors(ids, vectors)

    def describe(self) -> dict:
        return dict(self.facts)


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    return run_representation(config, date, lake, AirRepresentation(), progress)
