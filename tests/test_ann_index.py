"""FAISS IVF indexes of listings with active campaigns (paper 000 A.5.2): recall, filtering, determinism, skips."""
from __future__ import annotations

import datetime as dt
import io
import posixpath
import time

import numpy as np
import pyarrow as pa
import pytest

from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem

from components.lake import Lake, fs, parquet
from components.lake.commit import mark_success
from components.representations import ann_index, store
from components.step import StepError
from components.validate.step import validated_dir
from pipelines.config import PipelineConfig

faiss = pytest.importorskip("faiss")

DATE = dt.date(2026, 3, 4)
N, DIM, CLUSTERS = 4000, 32, 40


def _catalog(lake: Lake, ids, active, campaign) -> None:
    directory = validated_dir(lake, "listings", DATE)
    parquet.write_table(pa.table({"listing_id": pa.array(list(ids), pa.string()),
                                  "taxonomy_path": pa.array(["a.b"] * len(ids), pa.string()),
                                  "is_active": pa.array(active), "has_active_campaign": pa.array(campaign)}),
                        fs.join(directory, "part-0.parquet"))
    mark_success(directory)


class MemoryStore(FileSystem):
    """An object store in memory (``memstore://bucket/key``) with GCS semantics: no directories,
    ``exists`` only for whole objects, a write becomes visible when its stream closes."""

    objects: dict[str, bytes] = {}

    @classmethod
    def scheme(cls):
        return "memstore"

    def join(self, basepath, *paths):
        return posixpath.join(basepath.rstrip("/"), *(p.strip("/") for p in paths))

    def split(self, path):
        head, tail = posixpath.split(path)
        return head, tail

    def mkdirs(self, path):
        pass

    def has_dirs(self):
        return False

    def _list(self, prefix):
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield FileMetadata(key, len(self.objects[key]), 0.0)

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        objects = self.objects

        class Upload(io.BytesIO):
            def close(self):
                if not self.closed:
                    objects[path] = self.getvalue()
                super().close()

        return Upload()

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        if path not in self.objects:
            raise BeamIOError("open failed", {path: FileNotFoundError(path)})
        return io.BytesIO(self.objects[path])

    def copy(self, sources, destinations):
        for s, d in zip(sources, destinations):
            self.objects[d] = self.objects[s]

    def rename(self, sources, destinations):
        for s, d in zip(sources, destinations):
            self.objects[d] = self.objects.pop(s)

    def exists(self, path):
        return path in self.objects

    def size(self, path):
        return len(self.objects[path])

    def last_updated(self, path):
        return time.time()

    def checksum(self, path):
        return str(hash(self.objects[path]))

    def metadata(self, path):
        return FileMetadata(path, len(self.objects[path]), 0.0)

    def delete(self, paths):
        for path in paths:
            for key in [k for k in self.objects if k == path or k.startswith(path.rstrip("/") + "/")]:
                del self.objects[key]


@pytest.fixture
def memory_store():
    yield MemoryStore
    MemoryStore.objects.clear()


@pytest.fixture
def lake(lake_and_ads):
    return lake_and_ads[0]


@pytest.fixture
def lake_and_ads(tmp_path):
    return _make_lake(str(tmp_path / "lake"))


def _make_lake(root: str):
    """A catalog of N listings, ~half with an active campaign; clustered visual vectors for all but a few;
    and the ids that must be indexed."""
    rng = np.random.default_rng(11)
    lake = Lake(root)
    ids = np.array([f"L{i:07d}" for i in range(N)], dtype=object)
    active = rng.random(N) < 0.9
    campaign = rng.random(N) < 0.55  # flagged without being active: must not be indexed
    _catalog(lake, ids, active, campaign)
    centers = rng.normal(size=(CLUSTERS, DIM))
    matrix = centers[rng.integers(0, CLUSTERS, N)] + 0.6 * rng.normal(size=(N, DIM))
    has_vector = rng.random(N) < 0.97
    extra = np.array([f"X{i}" for i in range(30)], dtype=object)  # vectors of listings not in the catalog
    vectors = store.Vectors(np.concatenate([ids[has_vector], extra]),
                            np.concatenate([matrix[has_vector], rng.normal(size=(30, DIM))]))
    store.write_vectors(store.vectors_path(lake, DATE, "visual"), vectors)
    return lake, set(ids[active & campaign & has_vector])


def _config(**ann):
    return PipelineConfig.model_validate({"representations": {"ann_index": {"representations": ["visual", "air"],
                                                                            **ann}}})


def test_recall_at_the_default_nprobe_and_it_matches_a_recomputation(lake):
    cfg = _config(recall_queries=100_000)  # more than the catalog: every catalog listing with a vector is a query
    result = ann_index.run(cfg, DATE, lake, progress=lambda _: None)
    report = result.metrics["indexes"]["visual"]
    assert report["nprobe"] == 16 and report["k"] == 10
    assert report["nlist"] == min(round(4 * np.sqrt(report["n"])), report["n"] // 39)
    assert report["recall_at_k"] >= 0.9

    index, ids = ann_index.load_index(lake, DATE, "visual")
    assert index.nprobe == 16 and index.ntotal == report["n"]
    vectors = store.load_representation(lake, DATE, "visual")
    queries = ann_index.normalize(vectors.matrix[[i.startswith("L") for i in vectors.ids]])
    assert report["queries"] == len(queries)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(ann_index.normalize(vectors.take(ids)))
    _, approx_rows = index.search(queries, 10)
    _, exact_rows = exact.search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx_rows, exact_rows)])
    assert report["recall_at_k"] == pytest.approx(recall, abs=1e-6)


def test_only_listings_with_an_active_campaign_are_indexed(lake_and_ads):
    lake, expected = lake_and_ads
    result = ann_index.run(_config(recall_queries=200), DATE, lake, progress=lambda _: None)
    _, ids = ann_index.load_index(lake, DATE, "visual")
    assert set(ids) == expected and len(ids) == len(expected)
    assert list(ids) == sorted(ids)
    assert result.row_counts["visual"] == len(expected)
    vectors = store.load_representation(lake, DATE, "visual")
    index, _ = ann_index.load_index(lake, DATE, "visual")
    _, top = index.search(ann_index.normalize(vectors.take(ids[:5])), 1)
    assert [ids[r] for r in top[:, 0]] == list(ids[:5])  # each indexed listing is its own nearest neighbour


def test_rebuilding_gives_byte_identical_files_whatever_the_threads(lake):
    cfg = _config(recall_queries=200)
    first = ann_index.run(cfg, DATE, lake, progress=lambda _: None)
    data = fs.read_bytes(ann_index.index_path(lake, DATE, "visual"))
    ids = fs.read_bytes(ann_index.ids_path(lake, DATE, "visual"))
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1 if threads > 1 else 2)
    try:
        second = ann_index.run(cfg, DATE, lake, progress=lambda _: None)
    finally:
        faiss.omp_set_num_threads(threads)
    assert fs.read_bytes(ann_index.index_path(lake, DATE, "visual")) == data
    assert fs.read_bytes(ann_index.ids_path(lake, DATE, "visual")) == ids
    assert first.metrics["indexes"]["visual"]["sha256"] == second.metrics["indexes"]["visual"]["sha256"]
    assert first.metrics["indexes"]["visual"]["recall_at_k"] == second.metrics["indexes"]["visual"]["recall_at_k"]


def test_skips_missing_vectors_and_a_missing_catalog(lake, tmp_path):
    result = ann_index.run(_config(recall_queries=200), DATE, lake, progress=lambda _: None)
    assert set(result.metrics["indexes"]) == {"visual"}
    assert "air" in result.metrics["skipped"]
    assert any(n.startswith("skipped air:") for n in result.notes)
    assert not fs.exists(ann_index.index_path(lake, DATE, "air"))

    events_only = Lake(str(tmp_path / "events-only"))
    store.write_vectors(store.vectors_path(events_only, DATE, "visual"),
                        store.load_representation(lake, DATE, "visual"))
    result = ann_index.run(_config(), DATE, events_only, progress=lambda _: None)
    assert result.metrics["indexes"] == {} and set(result.metrics["skipped"]) == {"visual", "air"}
    assert all("no validated catalog" in n for n in result.notes)

    result = ann_index.run(_config(enabled=False), DATE, lake, progress=lambda _: None)
    assert result.metrics["indexes"] == {} and "disabled" in result.metrics["skipped"]["visual"]


def test_too_low_recall_fails_and_says_to_raise_nprobe(lake):
    with pytest.raises(StepError, match="raise representations.ann_index.nprobe"):
        ann_index.run(_config(nprobe=1, nlist=80, min_recall=0.999, recall_queries=300), DATE, lake,
                      progress=lambda _: None)


def test_nlist_keeps_39_training_points_per_centroid():
    assert ann_index.default_nlist(100_000) == round(4 * np.sqrt(100_000))
    assert ann_index.default_nlist(3000) == 3000 // 39
    assert ann_index.default_nlist(10) == 1
    assert ann_index.default_nlist(100_000, nlist=50) == 50


def test_an_object_store_root_gets_the_same_index(lake, memory_store):
    cfg = _config(recall_queries=200)
    local = ann_index.run(cfg, DATE, lake, progress=lambda _: None)
    remote_lake, _ = _make_lake("memstore://bucket/lake")
    remote = ann_index.run(cfg, DATE, remote_lake, progress=lambda _: None)
    path = ann_index.index_path(remote_lake, DATE, "visual")
    assert path in memory_store.objects and path.startswith("memstore://")
    assert memory_store.objects[path] == fs.read_bytes(ann_index.index_path(lake, DATE, "visual"))
    assert remote.metrics["indexes"]["visual"]["recall_at_k"] == local.metrics["indexes"]["visual"]["recall_at_k"]
    index, ids = ann_index.load_index(remote_lake, DATE, "visual")
    assert index.ntotal == len(ids) == remote.row_counts["visual"]
