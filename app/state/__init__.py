"""The app's state layer: which artifacts are open (``artifacts``), how they are named (``labels``), the URL's
parameters (``url``) and the page registry (``pages``). Pages read shared state only through these functions."""

from app.state.artifacts import (ENV_VAR, building, candidate_runs, choose, chosen, default_dir,  # noqa: F401
                                 configured_source, current, empty_state, open_source, page_artifacts,
                                 page_tokenizer, sidebar_build_note, sidebar_info, sources, wait_for)
from app.state.labels import dataset_label, model_label, what_these_are  # noqa: F401
from app.state.url import head_picker  # noqa: F401
from app.state import pages, url  # noqa: F401
