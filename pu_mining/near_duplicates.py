"""Dropping near-duplicates from a ranked selection: an item whose pool embedding has cosine >= a threshold with a
positive (the user's own images must not be mined back) or with a better-ranked item (repeats add no information
to a transfer set)."""

from __future__ import annotations

import numpy as np

from pu_mining.pool import Pool

__all__ = ["remove_near_duplicates"]


def remove_near_duplicates(
    pool: Pool, ranked_ids: np.ndarray, positive_embeddings: np.ndarray, threshold: float
) -> tuple[np.ndarray, int, int]:
    """``ranked_ids`` without items whose embedding has cosine >= ``threshold`` with a positive or with an item
    ranked before them. Neighbours come from the pool index; cosines are recomputed exactly."""
    if len(ranked_ids) == 0:
        return ranked_ids, 0, 0
    index = pool.index()
    rank = np.full(len(pool), -1, dtype=np.int64)
    rank[ranked_ids] = np.arange(len(ranked_ids))
    drop = np.zeros(len(ranked_ids), dtype=bool)
    _, near_positive = index.search(positive_embeddings, 16)
    for row, neighbours in enumerate(near_positive):
        neighbours = neighbours[(neighbours >= 0) & (rank[np.maximum(neighbours, 0)] >= 0)]
        if len(neighbours):
            cosines = pool.embeddings(neighbours) @ positive_embeddings[row]
            drop[rank[neighbours[cosines >= threshold]]] = True
    of_positives = int(drop.sum())
    within = 0
    embeddings = pool.embeddings(ranked_ids)
    _, neighbour_ids = index.search(embeddings, 8)
    for position, neighbours in enumerate(neighbour_ids):
        if drop[position]:
            continue
        neighbour_rank = rank[np.maximum(neighbours, 0)]
        earlier = neighbours[(neighbours >= 0) & (neighbour_rank >= 0) & (neighbour_rank < position)]
        earlier = earlier[~drop[rank[earlier]]]
        if len(earlier) and float((pool.embeddings(earlier) @ embeddings[position]).max()) >= threshold:
            drop[position] = True
            within += 1
    return ranked_ids[~drop], of_positives, within
