"""Crystal structures of the powder-diffraction phase library, built in code from textbook
crystallography (lattice parameters, space group in the Bilbao/ITA default setting, Wyckoff
positions of the asymmetric unit). Structure factors come from Dans_Diffraction.

Sources of the structural parameters (room temperature, X-ray/neutron refinements):

* CeO2 fluorite, Fm-3m, a = 5.411 Å (ICSD 72155 style; Ce 4a, O 8c).
* NiO rock salt, Fm-3m, a = 4.1771 Å.
* PdO, P4_2/mmc, a = 3.043, c = 5.336 Å (Waser et al. 1953; Pd 2c, O 2e).
* ZnO wurtzite, P6_3mc, a = 3.2498, c = 5.2066 Å, u = 0.3819 (Kisi & Elcombe 1989).
* TiO2 anatase, I4_1/amd (origin 2), a = 3.7852, c = 9.5139 Å, O z = 0.0833 (Horn et al. 1972).
* TiO2 rutile, P4_2/mnm, a = 4.5937, c = 2.9587 Å, O x = 0.3048 (Burdett et al. 1987).
* TiO2 brookite, Pbca, a = 9.184, b = 5.447, c = 5.145 Å (Meagher & Lager 1979).
* m-ZrO2 baddeleyite, P2_1/c, a = 5.1507, b = 5.2028, c = 5.3156 Å, β = 99.194° (Howard et al. 1988).
* t-ZrO2, P4_2/nmc, a = 3.596, c = 5.184 Å (primitive cell; O z = 0.2044 in origin choice 1),
  written out in P1 from the fluorite parent so that no setting ambiguity can creep in.
* α-Al2O3 corundum, R-3c (hexagonal axes), a = 4.7589, c = 12.991 Å (Lewis et al. 1982).
* α-Fe2O3 hematite, R-3c, a = 5.0356, c = 13.7489 Å (Blake et al. 1966).
* Co3O4 spinel, Fd-3m (origin 2), a = 8.0837 Å, O u = 0.2631 (Co 8a tetrahedral, 16d octahedral).

Outside the library (used to test the "phase not in library" flag): hexagonal A-type Ce2O3
(P-3m1, a = 3.891, c = 6.059 Å), SrTiO3 perovskite (Pm-3m, a = 3.905 Å), CuO tenorite (C2/c),
Y2O3 bixbyite (Ia-3, a = 10.604 Å).
"""
