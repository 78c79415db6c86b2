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

from app import live_model, state  # noqa: E402

# the icon is a file of the app's own (a Material or emoji icon here would be fetched from a CDN by the browser)
ICON = ROOT / "app" / "static" / "icon.png"
st.set_page_config(page_title="Copy Suppression Explorer", page_icon=str(ICON), layout="wide")

PAGES = state.pages.build()


def _home_alias() -> None:
    """/home is the Home page too (the default page itself lives at /)."""
    st.switch_page(PAGES[0])


PAGES.append(st.Page(_home_alias, title="Home", url_path="home", visibility="hidden"))
nav = st.navigation(PAGES)
arts = state.choose()
if arts is not None:
    state.sidebar_info(arts)
    live_model.warm(arts)  # its model loads in the background: the first analysis waits only for the rest
state.sidebar_build_note()
nav.run()
