"""Merkle trees over a block's events (RFC 9162 §2.1, SHA-256), by pymerkle.

A leaf is an event's stored JSON, byte for byte, as the AuditEvent read serves
it: a resident holding their event, its inclusion path and the block's signed
statement can check, with any RFC 9162 implementation and the region's
published key, that the event is in the sealed chain."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from pymerkle import InmemoryTree, MerkleProof, verify_inclusion
from pymerkle.proof import InvalidProof

ALGORITHM = "sha256"


def _tree(leaves: Sequence[bytes]) -> InmemoryTree:
    tree = InmemoryTree(algorithm=ALGORITHM)
    tree.append_entries(list(leaves))
    return tree


def leaf_hash(leaf: bytes) -> str:
    return hashlib.sha256(b"\x00" + leaf).hexdigest()


def root(leaves: Sequence[bytes]) -> str:
    """The tree head of the leaves in order (at least one)."""
    return bytes(_tree(leaves).get_root()).hex()


def inclusion(leaves: Sequence[bytes], index: int) -> dict[str, Any]:
    """The audit path of leaf ``index`` (0-based) in the tree of ``leaves``:
    pymerkle's serialised proof (its ``metadata.index`` counts from 1)."""
    proof: dict[str, Any] = _tree(leaves).prove_inclusion(index + 1, len(leaves)).serialize()
    return proof


def included(leaf: bytes, proof: dict[str, Any], tree_root: str) -> bool:
    """Does ``proof`` take ``leaf`` to ``tree_root``? Only an RFC 9162 SHA-256 path
    (the proof's own metadata may not choose another hash or drop the prefixes)."""
    metadata = proof.get("metadata") if isinstance(proof, dict) else None
    if not isinstance(metadata, dict) or metadata.get("algorithm") != ALGORITHM:
        return False
    if metadata.get("security") is not True:
        return False
    try:
        verify_inclusion(bytes.fromhex(leaf_hash(leaf)), bytes.fromhex(tree_root),
                         MerkleProof.deserialize(proof))  # fmt: skip
    except (InvalidProof, ValueError, KeyError, TypeError):
        return False
    return True
