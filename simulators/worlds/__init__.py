"""Simulated worlds: hidden synthesis -> material responses. A world's samples satisfy the sample
contracts of the techniques it offers (simulators.saxs.SasSample, simulators.pd.PdSample,
simulators.pdf.PdfSample)."""
