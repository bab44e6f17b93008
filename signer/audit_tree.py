"""The audit log's Merkle tree (RFC 6962 / RFC 9162 hashing): roots, inclusion and consistency proofs.

Pure code (``hashlib`` only, no I/O), shared by the service that builds checkpoints and by an auditor's
offline verifier. Leaf ``i`` is audit event ``seq = i + 1``: ``leaf = SHA-256(0x00 || event)`` over the
event's canonical bytes, ``node = SHA-256(0x01 || left || right)``; the tree of ``n`` leaves splits at
the largest power of two below ``n`` (RFC 6962 MTH).

What is stored to make proofs cheap is every *perfect* subtree, aligned on its own size: node
``(level, index)`` is the hash of leaves ``[index << level, (index + 1) << level)``. ``TreeBuilder``
appends leaves and reports each such node once it is complete (about two per leaf); any root and any
proof for a size up to the built one is then computed from O(log² n) of them through a ``NodeGetter``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "NodeGetter",
    "TreeBuilder",
    "consistency_nodes",
    "consistency_proof",
    "inclusion_nodes",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "range_hash",
    "root_from_edge",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]

EMPTY_ROOT = hashlib.sha256(b"").digest()

# (level, index) -> the hash of the perfect subtree over leaves [index << level, (index + 1) << level).
NodeGetter = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_size(name: str, value: int) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")


def range_hash(start: int, end: int, get: NodeGetter) -> bytes:
    """MTH of leaves ``[start, end)`` (non-empty), from stored perfect nodes where it can."""
    n = end - start
    if n < 1:
        raise ValueError("an empty range has no subtree hash")
    if n & (n - 1) == 0 and start % n == 0:
        level = n.bit_length() - 1
        return get(level, start >> level)
    k = _split(n)
    return node_hash(range_hash(start, start + k, get), range_hash(start + k, end, get))


def tree_root(size: int, get: NodeGetter) -> bytes:
    """The root of the tree over the first ``size`` leaves (``EMPTY_ROOT`` for none)."""
    _check_size("size", size)
    return EMPTY_ROOT if size == 0 else range_hash(0, size, get)


def _ranges_for_inclusion(index: int, start: int, end: int, out: list[tuple[int, int]]) -> None:
    # RFC 6962 PATH(m, D[start:end]), iteratively from the root down; the proof lists leaf-first.
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start = start + k
    out.reverse()


def inclusion_nodes(index: int, size: int) -> list[tuple[int, int]]:
    """The subtree ranges ``[a, b)`` whose hashes form the inclusion proof of leaf ``index``."""
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise ValueError("the leaf index must be below the tree size")
    out: list[tuple[int, int]] = []
    _ranges_for_inclusion(index, 0, size, out)
    return out


def inclusion_proof(index: int, size: int, get: NodeGetter) -> list[bytes]:
    """RFC 6962 audit path of leaf ``index`` in the tree of ``size`` leaves."""
    return [range_hash(a, b, get) for a, b in inclusion_nodes(index, size)]


def consistency_nodes(first: int, second: int) -> list[tuple[int, int]]:
    """The subtree ranges whose hashes form the consistency proof from ``first`` to ``second`` leaves."""
    _check_size("first", first)
    _check_size("second", second)
    if first > second:
        raise ValueError("the first size must not exceed the second")
    if first == 0 or first == second:
        return []
    # RFC 6962 SUBPROOF(m, D[0:n], true), iteratively; the proof lists from the bottom up.
    out: list[tuple[int, int]] = []
    start, end, m, whole = 0, second, first, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        out.append((start, end))
    out.reverse()
    return out


def consistency_proof(first: int, second: int, get: NodeGetter) -> list[bytes]:
    """RFC 6962 consistency proof that the tree of ``first`` leaves is a prefix of that of ``second``."""
    return [range_hash(a, b, get) for a, b in consistency_nodes(first, second)]


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` put ``leaf`` (a leaf hash) at ``index`` under ``root``?"""
    if type(index) is not int or type(size) is not int or not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is tree (``first``, ``first_root``) a prefix of (``second``, ``second_root``)?"""
    if type(first) is not int or type(second) is not int or not 0 <= first <= second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof and first_root == EMPTY_ROOT
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


def root_from_edge(edge: Sequence[bytes]) -> bytes:
    """The root from a tree's right edge (its perfect subtrees, largest first)."""
    if not edge:
        return EMPTY_ROOT
    h = edge[-1]
    for left in reversed(edge[:-1]):
        h = node_hash(left, h)
    return h


class TreeBuilder:
    """Appends leaves to a tree known by its size and right edge, reporting each completed perfect node.

    The right edge (a compact range over ``[0, size)``) is one hash per set bit of ``size``, largest
    subtree first; keep it with a checkpoint and building resumes from there.
    """

    __slots__ = ("_edge", "_size")

    def __init__(self, size: int = 0, edge: Iterable[bytes] = ()) -> None:
        _check_size("size", size)
        self._edge = list(edge)
        if len(self._edge) != size.bit_count():
            raise ValueError("the right edge must hold one hash per set bit of the size")
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    @property
    def edge(self) -> list[bytes]:
        return list(self._edge)

    def root(self) -> bytes:
        return root_from_edge(self._edge)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; returns the nodes ``(level, index, hash)`` it completes, the leaf first."""
        index = self._size
        h = leaf
        nodes = [(0, index, h)]
        level = 0
        while (index >> level) & 1:
            h = node_hash(self._edge.pop(), h)
            level += 1
            nodes.append((level, index >> level, h))
        self._edge.append(h)
        self._size += 1
        return nodes
