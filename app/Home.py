"""Copy Suppression Explorer: the Streamlit entry point (``streamlit run app/Home.py``).

It draws the frame shared by every page (page config, artifact picker and info in the sidebar) and hands over to
``st.navigation``; the pages live in ``app/views``.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import state  # noqa: E402

st.set_page_config(page_title="Copy Suppression Explorer", page_icon=":material/visibility_off:", layout="wide")

PAGES = [
    st.Page("views/home.py", title="Home", icon=":material/home:", url_path="overview", default=True),
    st.Page("views/circuits.py", title="OV and QK circuits", icon=":material/hub:", url_path="circuits"),
    st.Page("views/browse.py", title="Browse Examples", icon=":material/search:", url_path="browse"),
    st.Page("views/live.py", title="Test Your Own Examples", icon=":material/edit:", url_path="test-your-own"),
    st.Page("views/cspa.py", title="CSPA", icon=":material/scatter_plot:", url_path="cspa"),
    st.Page("views/semantic.py", title="Semantic similarity", icon=":material/join:", url_path="semantic"),
    st.Page("views/pairs.py", title="Prompt pairs", icon=":material/compare_arrows:", url_path="pairs"),
    st.Page("views/survey.py", title="Head survey", icon=":material/grid_view:", url_path="survey"),
]


def _home_alias() -> None:
    """/home is the Home page too (the default page itself lives at /)."""
    st.switch_page(PAGES[0])


PAGES.append(st.Page(_home_alias, title="Home", url_path="home", visibility="hidden"))
nav = st.navigation(PAGES)
arts, error = state.current()
st.session_state["cse_arts"] = arts
st.session_state["cse_arts_error"] = error
if arts is not None:
    state.sidebar_info(arts)
state.sidebar_build_note()
nav.run()
