"""The science: one analysis of a head (``analysis``, with its vocabulary stage in ``scoring``), CSPA (``cspa``),
OV/QK circuits (``circuits``, ``circuit_bars``) and semantic neighbours (``semantic``). Used alike by the
precompute job and the app's live mode. Importing this package imports nothing heavy."""
