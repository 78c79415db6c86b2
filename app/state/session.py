"""A page's own values for the session (its widgets' values, results it keeps between reruns): the one way pages
reach Streamlit's session state. Each page owns the keys that start with its prefix (``browse_``, ``_browse_``…),
so one page cannot read or overwrite another's by accident."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import streamlit as st


class PageState(MutableMapping[str, Any]):
    """``st.session_state`` seen through one page's prefix: a key outside it is a KeyError naming the prefix."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def _own(self, key: str) -> str:
        if not _starts(key, self.prefix):
            raise KeyError(f"{key!r} is not one of this page's keys ({self.prefix}_… or _{self.prefix}_…)")
        return key

    def __getitem__(self, key: str) -> Any:
        return st.session_state[self._own(key)]

    def __setitem__(self, key: str, value: Any) -> None:
        st.session_state[self._own(key)] = value

    def __delitem__(self, key: str) -> None:
        del st.session_state[self._own(key)]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._own(key) in st.session_state

    def get(self, key: str, default: Any = None) -> Any:
        return st.session_state.get(self._own(key), default)

    def pop(self, key: str, *default: Any) -> Any:
        return st.session_state.pop(self._own(key), *default)

    def __iter__(self) -> Iterator[str]:
        return (k for k in list(st.session_state.keys()) if isinstance(k, str) and _starts(k, self.prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _starts(key: str, prefix: str) -> bool:
    return key.startswith(prefix + "_") or key.startswith("_" + prefix + "_")


def page_state(prefix: str) -> PageState:
    """The session values of the page whose keys start with ``prefix``."""
    return PageState(prefix)
