"""The Prompt pairs analysis's defaults that the app reads without importing torch."""

# activation patching of the cells attribution patching ranks first (AtP): the page's default, chosen so SmolLM2's
# IOI default (8 pairs) finishes within a minute on two cores (BENCHMARKS.md §9)
DEFAULT_TOP_CELLS = 512
