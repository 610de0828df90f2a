"""The pool index at scale: FAISS kinds on up to 1M real-derived embeddings, and the embedder's speed.

Usage::

    python -m bench.bench_faiss                        # 1,000,000 vectors (about 7 minutes on 2 cores, 11 GiB RAM)
    python -m bench.bench_faiss --vectors 100000       # quick run
    python -m bench.bench_faiss --embedder-speed 32,64,96,128,224   # embedder images/s and kNN accuracy only
    python -m bench.bench_faiss --projection-dims 64,128,256,384 --queries 500   # what the projection costs

Vectors (target: 1M vectors, >= 1,000 queries/s at recall@100 >= 0.95 on 2 cores):

- the whole benchmark pool (76,997 images, ``../shared/BENCHMARK.md``) embedded with the default embedder
  (:func:`pu_mining.embedder.load_embedder`), cached in ``bench/artifacts/`` under the embedder's fingerprint;
- up to ``--vectors``: replicas of the pool's embeddings plus Gaussian noise, renormalised. The noise has the real
  embeddings' own covariance (``tau * Sigma``; noise in directions real images never vary in would be removed by
  the index's projection and make the test easy), scaled so that its expected norm equals the median distance
  from a real embedding to its nearest real neighbour: a replica is about as far from its source as the source's
  nearest real neighbour, so replicas interleave with real neighbours instead of forming clumps of duplicates
  (which would make top-100 lists easy);
- queries: 1,000 Fashion-MNIST *test* images (none is in the pool), embedded the same way.

Each kind is built with :func:`pu_mining.vector_index.build_index` as the service would: ``flat`` at full
dimension (the exact reference) and in the index's reduced space, ``ivf`` and ``hnsw`` with the projection to
``--reduce-dim`` (default 256) that ``build_index`` applies. Reported: build time, index file size, RSS growth
while building, queries/s for a batch of ``--queries`` queries at k = 100 (``--threads`` threads), recall@100
against exact search in the index's own space (all queries; this is the ANN's own error) and against exact
1,280-d search (the first ``--exact-queries`` queries only: exact search over 1M x 1,280 is heavy; this adds the
projection's loss). The memory-mapped reload of each approximate index is timed too.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from pu_mining.benchmark_pool import build_benchmark_pool
from pu_mining.embedder import DEFAULT_RESOLUTION, Embedder, load_embedder
from pu_mining.sources import fashion_mnist
from pu_mining.vector_index import VectorIndex, build_index, default_nlist

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
K = 100


# --------------------------------------------------------------------------------------------------------- helpers


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_name() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def available_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def cached_embeddings(embedder: Embedder, what: str, images: np.ndarray, verbose: bool = True) -> np.ndarray:
    """``embedder(images)``, cached in ``bench/artifacts/`` under the fingerprint and the images' hash."""
    key = hashlib.sha256(embedder.fingerprint.encode() + hashlib.sha256(images.tobytes()).digest()).hexdigest()[:16]
    path = ARTIFACTS / f"embeddings_{what}_{key}.npy"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        return np.load(path)
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if verbose and (done == total or done % (40 * 256) == 0):
            print(f"  {what}: embedded {done:,}/{total:,} ({done / (time.perf_counter() - start):.0f} images/s)")

    vectors = embedder(images, progress=progress)
    seconds = time.perf_counter() - start
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    meta = {"fingerprint": embedder.fingerprint, "images": len(images), "seconds": seconds}
    meta_path.write_text(json.dumps(meta, indent=1))
    return vectors


def noise_scale(real: np.ndarray, probes: int = 1000) -> float:
    """Median distance from a real embedding to its nearest other real embedding (exact, on ``probes`` rows)."""
    rows = np.random.default_rng(0).choice(len(real), min(probes, len(real)), replace=False)
    index = faiss.IndexFlatIP(real.shape[1])
    index.add(real)
    scores, _ = index.search(real[rows], 2)
    return float(np.median(np.sqrt(np.maximum(0.0, 2.0 - 2.0 * scores[:, 1]))))


def synthesize(real: np.ndarray, n_vectors: int, radius: float, chunk: int = 50_000) -> np.ndarray:
    """The real vectors, then noisy renormalised replicas of them (cycling through the real ones) up to
    ``n_vectors``; the noise is Gaussian with the real vectors' covariance scaled to expected norm ``radius``."""
    n_real, dim = real.shape
    out = np.empty((n_vectors, dim), dtype=np.float32)
    out[: min(n_real, n_vectors)] = real[:n_vectors]
    if n_vectors <= n_real:
        return out
    covariance = np.cov(real.astype(np.float64), rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    tau = radius / np.sqrt(eigenvalues.sum())
    factor = (eigenvectors * np.sqrt(eigenvalues)).T.astype(np.float32) * np.float32(tau)  # z @ factor ~ N(0, t^2 S)
    rng = np.random.default_rng(1)
    for start in range(n_real, n_vectors, chunk):
        stop = min(start + chunk, n_vectors)
        base = real[np.arange(start, stop) % n_real]
        noisy = base + rng.standard_normal((stop - start, dim), dtype=np.float32) @ factor
        out[start:stop] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top-k ids that were found (the ``-1`` of missing results never match)."""
    return float(np.mean([np.intersect1d(f, t).size / t.size for f, t in zip(found, truth, strict=True)]))


def timed_search(index: VectorIndex, queries: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    """Best-of-``repeats`` queries/s of one batch search (after a small warm-up batch), and the ids found."""
    index.search(queries[:50], K)
    best, ids = float("inf"), np.empty(0)
    for _ in range(repeats):
        start = time.perf_counter()
        _, ids = index.search(queries, K)
        best = min(best, time.perf_counter() - start)
    return len(queries) / best, ids


def file_size(index: VectorIndex, folder: str) -> tuple[int, str]:
    path = os.path.join(folder, f"{index.kind}_{index.index_dim}.faiss")
    index.save(path)
    return os.path.getsize(path), path


# --------------------------------------------------------------------------------------------------------- runs


def faiss_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, threads {args.threads}")
    print(f"memory available at start: {available_gib():.1f} GiB")
    embedder = load_embedder(resolution=args.resolution, num_threads=args.threads)
    pool = build_benchmark_pool()
    real = cached_embeddings(embedder, "pool", pool.images)
    test_images, _ = fashion_mnist("test")
    queries = cached_embeddings(embedder, "fmnist_test", test_images)[: args.queries]
    del pool
    radius = noise_scale(real)
    print(f"real embeddings {real.shape}, median nearest-neighbour distance {radius:.3f} (the noise's norm)")
    t0 = time.perf_counter()
    vectors = synthesize(real, args.vectors, radius)
    print(f"synthesized {len(vectors):,} x {vectors.shape[1]} in {time.perf_counter() - t0:.0f} s")
    exact_queries = queries[: args.exact_queries]
    results: dict[str, Any] = {
        "vectors": len(vectors),
        "dim": int(vectors.shape[1]),
        "queries": len(queries),
        "exact_queries": len(exact_queries),
        "noise_norm": radius,
        "threads": args.threads,
        "rows": [],
    }
    folder = tempfile.mkdtemp(prefix="bench_faiss_")

    def row(name: str, build_s: float, size: int, rss: float, qps: float, r_index: float, r_full: float) -> None:
        entry = {
            "index": name,
            "build_s": build_s,
            "size_mib": size / 2**20,
            "rss_mib": rss,
            "qps": qps,
            "recall_index_space": r_index,
            "recall_full_dim": r_full,
        }
        results["rows"].append(entry)
        print(
            f"| {name} | {build_s:.1f} | {size / 2**20:,.0f} | {rss:,.0f} | {qps:,.0f} "
            f"| {r_index:.3f} | {r_full:.3f} |",
            flush=True,
        )

    print("\n| index | build s | file MiB | RSS +MiB | queries/s | recall@100 (index space) | recall@100 (1280-d) |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    # exact, full dimension: the reference for recall against 1280-d (on the exact-query subset)
    before, t0 = rss_mib(), time.perf_counter()
    flat = build_index(vectors, kind="flat", reduce_dim=None)
    build_s, rss = time.perf_counter() - t0, rss_mib() - before
    qps, truth_full = timed_search(flat, exact_queries, 1)
    row(f"flat {flat.index_dim}-d (exact)", build_s, flat.ntotal * flat.index_dim * 4, rss, qps, 1.0, 1.0)
    del flat
    gc.collect()

    # exact in the reduced space: the reference for the ANN's own recall
    reduce_dim = args.reduce_dim or None
    before, t0 = rss_mib(), time.perf_counter()
    reference = build_index(vectors, kind="flat", reduce_dim=reduce_dim)
    build_s, rss = time.perf_counter() - t0, rss_mib() - before
    size, _ = file_size(reference, folder)
    qps, truth_index = timed_search(reference, queries, 1)
    row(
        f"flat {reference.index_dim}-d (exact in index space)",
        build_s,
        size,
        rss,
        qps,
        1.0,
        recall(truth_index[: len(exact_queries)], truth_full),
    )
    results["projection_energy"] = reference.metadata()["projection_energy"]
    del reference
    gc.collect()

    def sweep(index: VectorIndex, name: str, build_s: float, rss: float, setting: str, values: list[int]) -> None:
        size, path = file_size(index, folder)
        for value in values:
            index.set_search_params(**{setting: value})
            qps, found = timed_search(index, queries, args.repeats)
            row(
                f"{name} {setting}={value}",
                build_s,
                size,
                rss,
                qps,
                recall(found, truth_index),
                recall(found[: len(exact_queries)], truth_full),
            )
        t0 = time.perf_counter()
        mapped = VectorIndex.load(path, mmap=True)
        load_s = time.perf_counter() - t0
        mapped.set_search_params(**{setting: values[len(values) // 2]})
        qps, found = timed_search(mapped, queries, args.repeats)
        print(
            f"|   {name} memory-mapped reload ({load_s:.2f} s), {setting}={values[len(values) // 2]} | | | | "
            f"{qps:,.0f} | {recall(found, truth_index):.3f} | |"
        )
        results["rows"].append({"index": f"{name} mmap", "load_s": load_s, "qps": qps})
        os.unlink(path)

    if "ivf" in args.kinds:
        nlist = default_nlist(len(vectors))
        before, t0 = rss_mib(), time.perf_counter()
        ivf = build_index(vectors, kind="ivf", reduce_dim=reduce_dim, nlist=nlist)
        build_s, rss = time.perf_counter() - t0, rss_mib() - before
        sweep(ivf, f"ivf{nlist} {ivf.index_dim}-d", build_s, rss, "nprobe", args.nprobe)
        del ivf
        gc.collect()
    if "hnsw" in args.kinds:
        before, t0 = rss_mib(), time.perf_counter()
        hnsw = build_index(vectors, kind="hnsw", reduce_dim=reduce_dim, m=args.m, ef_construction=args.ef_construction)
        build_s, rss = time.perf_counter() - t0, rss_mib() - before
        sweep(hnsw, f"hnsw M={args.m} efC={args.ef_construction} {hnsw.index_dim}-d", build_s, rss, "ef_search",
              args.ef_search)  # fmt: skip
        del hnsw
        gc.collect()
    results["wall_s"] = time.perf_counter() - started
    print(f"\nwall time {results['wall_s']:.0f} s; memory available at the end: {available_gib():.1f} GiB")
    return results


def embedder_speed(args: argparse.Namespace) -> dict[str, Any]:
    """Images/s of the default embedder at several resolutions on real Fashion-MNIST images, and 10-NN accuracy
    of Fashion-MNIST test images (10 classes) against 3,000 training images, cosine."""
    torch.set_num_threads(args.threads)
    train_images, train_labels = fashion_mnist("train")
    test_images, test_labels = fashion_mnist("test")
    rows = np.random.default_rng(0).choice(len(train_images), 3000, replace=False)
    reference_images, reference_labels = train_images[rows], train_labels[rows]
    probe_images, probe_labels = test_images[:1000], test_labels[:1000]
    out: dict[str, Any] = {"threads": args.threads, "rows": []}
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, threads {args.threads}")
    print("| resolution | backend | images/s | 10-NN accuracy | pool (76,997) at this rate |")
    print("|---:|---|---:|---:|---:|")
    for resolution in args.embedder_speed:
        for backend in args.backends:
            embedder = load_embedder(resolution=resolution, num_threads=args.threads, backend=backend)
            embedder(train_images[:64])  # warm-up
            count = 4000 if backend == "onnxruntime" else 256
            start = time.perf_counter()
            reference = embedder(reference_images[: count - 1000] if count < 4000 else reference_images)
            probes = embedder(probe_images[: min(1000, count)])
            rate = (len(reference) + len(probes)) / (time.perf_counter() - start)
            accuracy = float("nan")
            if backend == "onnxruntime":
                neighbours = np.argsort(-(probes @ reference.T), axis=1)[:, :10]
                votes = reference_labels[neighbours]
                predicted = np.array([np.bincount(v, minlength=10).argmax() for v in votes])
                accuracy = float((predicted == probe_labels).mean())
            out["rows"].append({"resolution": resolution, "backend": backend, "rate": rate, "knn_accuracy": accuracy})
            print(f"| {resolution} | {backend} | {rate:,.0f} | {accuracy:.3f} | {76_997 / rate / 60:.1f} min |",
                  flush=True)  # fmt: skip
    return out


def projection_fidelity(args: argparse.Namespace) -> dict[str, Any]:
    """What the index's projection costs on the real pool: for each dimension, the energy kept and recall@100 of
    exact search in the projected space against exact 1,280-d search, for ``--queries`` Fashion-MNIST test images;
    and how close the neighbours found are to the exact ones in true (1,280-d) cosine."""
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    embedder = load_embedder(resolution=args.resolution, num_threads=args.threads)
    real = cached_embeddings(embedder, "pool", build_benchmark_pool().images)
    queries = cached_embeddings(embedder, "fmnist_test", fashion_mnist("test")[0])[: args.queries]
    full = VectorIndex(real.shape[1], "flat")
    full.add(real)
    true_scores, truth = full.search(queries, K)
    out: dict[str, Any] = {"queries": len(queries), "rows": []}
    print(f"real pool {real.shape}, {len(queries)} Fashion-MNIST test queries, exact search at both dimensions")
    print("| projection | energy kept | recall@100 vs exact 1,280-d | mean true cosine found / exact "
          "| found within 0.01 of the exact 100th |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for dim in args.projection_dims:
        index = build_index(real, kind="flat", reduce_dim=dim)
        _, found = index.search(queries, K)
        cosines = np.einsum("qd,qkd->qk", queries, real[found])
        row = {
            "dim": dim,
            "energy": index.metadata()["projection_energy"],
            "recall": recall(found, truth),
            "mean_cosine_found": float(cosines.mean()),
            "mean_cosine_exact": float(true_scores.mean()),
            "within_0.01": float(np.mean(cosines >= true_scores[:, -1:] - 0.01)),
        }
        out["rows"].append(row)
        print(f"| {dim}-d | {row['energy']:.3f} | {row['recall']:.3f} | {row['mean_cosine_found']:.4f} / "
              f"{row['mean_cosine_exact']:.4f} | {row['within_0.01']:.3f} |", flush=True)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--exact-queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed searches per setting (best is reported)")
    parser.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION)
    parser.add_argument("--reduce-dim", type=int, default=256, help="0: no projection")
    parser.add_argument("--kinds", default="ivf,hnsw")
    parser.add_argument("--nprobe", default="8,16,32,64")
    parser.add_argument("--ef-search", default="100,128,192,256")
    parser.add_argument("--m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=64)
    parser.add_argument("--embedder-speed", default="", help="comma-separated resolutions: run that part only")
    parser.add_argument("--backends", default="onnxruntime", help="for --embedder-speed: onnxruntime,torch")
    parser.add_argument("--projection-dims", default="", help="comma-separated dimensions: run that part only")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.kinds = [kind for kind in args.kinds.split(",") if kind]
    args.nprobe = [int(v) for v in args.nprobe.split(",")]
    args.ef_search = [int(v) for v in args.ef_search.split(",")]
    args.backends = args.backends.split(",")
    if args.projection_dims:
        args.projection_dims = [int(v) for v in args.projection_dims.split(",")]
        results = projection_fidelity(args)
    elif args.embedder_speed:
        args.embedder_speed = [int(v) for v in args.embedder_speed.split(",")]
        results = embedder_speed(args)
    else:
        results = faiss_benchmark(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
