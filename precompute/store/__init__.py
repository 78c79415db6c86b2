"""Storage: atomic files (``files``), the manifest and its validation (``manifest``), ``verify``, the lazy reader
(``reader``, numpy only), the per-sequence record (``records``, ``record_arrays``) and the Hub (``hub``). Field
names come from ``precompute.schema``. Importing this package imports nothing heavy."""
