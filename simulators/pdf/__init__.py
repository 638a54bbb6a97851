"""Total scattering (pair distribution function) physics of metal nanoclusters: the sample
contract, the forward model (`physics`: clusters built with ase, pair-distance tables transformed
in reciprocal space, artefacts of real measurements, G(r) in the PDFgetX3 convention), the
labelled training/held-out sets (`dataset`) and the simulated total-scattering instrument
(`instrument`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from simulators.pdf.physics import ClusterComponent, Shell


@runtime_checkable
class PdfSample(Protocol):
    """What a total-scattering instrument needs from a sample: its cluster components (motif,
    element, number of atoms or shape, lattice expansion, ADP and atom fraction each; see
    `simulators.pdf.physics.ClusterComponent`) and an optional ligand or oxide shell
    (`simulators.pdf.physics.Shell`, None for bare clusters). A world offers PDF by making samples
    with these attributes."""

    sample_id: str

    @property
    def components(self) -> list["ClusterComponent"]: ...

    @property
    def shell(self) -> "Shell | None": ...
