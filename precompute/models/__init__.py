"""Models: loading and weight processing (``loading``), head checks and outputs (``heads``), the LayerNorm maths
(``norm``), re-running blocks after a head (``blocks``), locally built tokenizers (``tokenizers``), the synthetic toy
model (``toy``) and giving memory back (``memory``). Importing this package imports nothing heavy."""
