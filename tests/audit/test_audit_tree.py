"""The Merkle tree module against a naive RFC 6962 implementation written straight from the RFC's text.

Roots, inclusion paths and consistency proofs built from stored perfect nodes must equal the naive
recursion's, every valid proof must verify, and any changed proof, size, index or root must not.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from signer.audit_tree import (
    EMPTY_ROOT,
    TreeBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_edge,
    tree_root,
    verify_consistency,
    verify_inclusion,
)


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = _k(n)
    return hashlib.sha256(b"\x01" + naive_mth(leaves[:k]) + naive_mth(leaves[k:])).digest()


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*naive_path(m, leaves[:k]), naive_mth(leaves[k:])]
    return [*naive_path(m - k, leaves[k:]), naive_mth(leaves[:k])]


def naive_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [naive_mth(leaves)]
    k = _k(n)
    if m <= k:
        return [*naive_subproof(m, leaves[:k], whole), naive_mth(leaves[k:])]
    return [*naive_subproof(m - k, leaves[k:], False), naive_mth(leaves[:k])]


def build(leaves: list[bytes]) -> tuple[TreeBuilder, dict[tuple[int, int], bytes]]:
    tree = TreeBuilder()
    nodes: dict[tuple[int, int], bytes] = {}
    for data in leaves:
        for level, index, digest in tree.append(leaf_hash(data)):
            assert (level, index) not in nodes
            nodes[(level, index)] = digest
    return tree, nodes


LEAVES = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@settings(max_examples=150, deadline=None)
@given(LEAVES)
def test_roots_equal_the_naive_mth_at_every_size(leaves: list[bytes]) -> None:
    tree, nodes = build(leaves)
    assert tree.root() == naive_mth(leaves)
    for size in range(len(leaves) + 1):
        assert tree_root(size, lambda lv, i: nodes[(lv, i)]) == naive_mth(leaves[:size])
    # About two nodes per leaf, never more.
    assert len(nodes) <= 2 * len(leaves)


@settings(max_examples=150, deadline=None)
@given(LEAVES, st.data())
def test_inclusion_proofs_equal_the_naive_path_and_verify(leaves: list[bytes], data: st.DataObject) -> None:
    _, nodes = build(leaves)
    size = data.draw(st.integers(1, len(leaves)))
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(index, size, lambda lv, i: nodes[(lv, i)])
    assert proof == naive_path(index, leaves[:size])
    root = naive_mth(leaves[:size])
    leaf = leaf_hash(leaves[index])
    assert verify_inclusion(index, size, leaf, proof, root)
    # Anything changed fails: another leaf, index, size, root, or a flipped proof byte.
    assert not verify_inclusion(index, size, leaf_hash(leaves[index] + b"x"), proof, root)
    if size > 1:
        other = (index + 1) % size
        assert not verify_inclusion(other, size, leaf, proof, root) or leaves[other] == leaves[index]
    assert not verify_inclusion(index, size, leaf, proof, node_hash(root, root))
    if proof:
        pos = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[pos] = bytes([bad[pos][0] ^ 1]) + bad[pos][1:]
        assert not verify_inclusion(index, size, leaf, bad, root)
        assert not verify_inclusion(index, size, leaf, proof[:-1], root)
        assert not verify_inclusion(index, size, leaf, [*proof, root], root)


@settings(max_examples=150, deadline=None)
@given(LEAVES, st.data())
def test_consistency_proofs_equal_the_naive_subproof_and_verify(
    leaves: list[bytes], data: st.DataObject
) -> None:
    _, nodes = build(leaves)
    second = data.draw(st.integers(1, len(leaves)))
    first = data.draw(st.integers(1, second))
    proof = consistency_proof(first, second, lambda lv, i: nodes[(lv, i)])
    expected = [] if first == second else naive_subproof(first, leaves[:second], True)
    assert proof == expected
    r1, r2 = naive_mth(leaves[:first]), naive_mth(leaves[:second])
    assert verify_consistency(first, second, r1, r2, proof)
    if first < second:
        # A rewritten history: the older tree with one leaf changed is not a prefix.
        pos = data.draw(st.integers(0, first - 1))
        rewritten = list(leaves[:first])
        rewritten[pos] = rewritten[pos] + b"!"
        assert not verify_consistency(first, second, naive_mth(rewritten), r2, proof)
        assert not verify_consistency(first, second, r1, node_hash(r2, r2), proof)
        assert not verify_consistency(first, second, r1, r2, proof[:-1])
        pos = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[pos] = bytes([bad[pos][0] ^ 1]) + bad[pos][1:]
        assert not verify_consistency(first, second, r1, r2, bad)


@given(LEAVES, st.data())
def test_builder_resumes_from_its_right_edge(leaves: list[bytes], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(leaves)))
    first, _ = build(leaves[:cut])
    resumed = TreeBuilder(first.size, first.edge)
    for item in leaves[cut:]:
        resumed.append(leaf_hash(item))
    assert resumed.root() == naive_mth(leaves)
    assert root_from_edge(first.edge) == naive_mth(leaves[:cut])


def test_rfc_6962_shapes_and_bounds() -> None:
    assert tree_root(0, lambda lv, i: b"") == EMPTY_ROOT
    assert verify_consistency(0, 5, EMPTY_ROOT, b"\x00" * 32, [])
    assert not verify_inclusion(3, 3, b"\x00" * 32, [], b"\x00" * 32)
    try:
        TreeBuilder(3, [b"\x00" * 32])
    except ValueError:
        pass
    else:
        raise AssertionError("a right edge of the wrong length was taken")
