"""The aarch64 check compares a board's decodes with a stored x86 reference
(benchmarks/edge_check.py). When a shipped model changes, the reference must be rewritten with
it, or every board would be told it computes something else: this machine must pass it first."""

from __future__ import annotations

import edge_check


def test_this_machine_matches_the_stored_reference_for_every_shipped_model() -> None:
    reference = edge_check.read_npz(edge_check.REFERENCE)
    codes = {name: reference[f"{name}.z"] for name in edge_check.CODES}
    for name, z in codes.items():
        assert z.shape[1] == edge_check._load(name).latent_dim, (
            f"{name} changed: run python benchmarks/edge_check.py --write-reference"
        )
    images = {f"{name}.image": image for name, image in edge_check.decode_all(codes).items()}
    assert edge_check.compare(reference, images)
