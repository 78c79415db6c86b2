"""One real-browser test: Debian's Chromium driven by Playwright against a running app on toy artifacts."""

import re
from pathlib import Path

import pytest

from deploy.page_walk import ARGS, CHROMIUM

from .app_helpers import _serve

TIER = "browser"  # this file's test tier (tests/conftest.py); a test marked otherwise is in that tier

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")


@pytest.fixture
def server(toy_artifacts):
    yield from _serve(toy_artifacts)


@pytest.fixture
def logged_server(toy_artifacts, tmp_path):
    """(url, log file) of a server whose output is kept."""
    log = tmp_path / "server.log"
    for url in _serve(toy_artifacts, log):
        yield url, log


@pytest.fixture
def survey_server(survey_env):
    yield from _serve(survey_env)


@pytest.fixture
def two_head_server(two_head_artifacts):
    yield from _serve(two_head_artifacts)


def test_browse_and_live_in_chromium(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(server + "/browse?seq=2&pos=10&head=1.2")
        expect(page.get_by_role("heading", name="Browse Examples")).to_be_visible(timeout=60_000)
        strip = page.locator(".cse-strip").first
        expect(strip).to_be_visible(timeout=60_000)
        assert strip.locator(".cse-tok").count() == 48
        expect(page.get_by_text("Position 10").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(tmp_path / "browse.png"), full_page=True)

        page.goto(server + "/test-your-own")
        expect(page.get_by_role("heading", name="Test Your Own Examples")).to_be_visible(timeout=60_000)
        page.get_by_role("textbox", name="Prompt").fill("The kanosa of the teri is kanosa. A kanosa was in the teri.")
        page.get_by_role("button", name="Analyse").click()
        live_strip = page.locator(".cse-strip").first
        expect(live_strip).to_be_visible(timeout=90_000)
        assert live_strip.locator(".cse-tok").count() > 10
        assert "kanosa" in live_strip.inner_text()
        page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
        browser.close()


SCATTER_POINT = """() => { const gd = document.querySelector('.js-plotly-plot'); const fd = gd._fullData[0];
 const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis; let best = 0;
 for (let i = 0; i < fd.x.length; i++) if (Math.abs(fd.x[i]) > Math.abs(fd.x[best])) best = i;
 const r = gd.getBoundingClientRect();
 return [r.x + xa._offset + xa.l2p(fd.x[best]), r.y + ya._offset + ya.l2p(fd.y[best])]; }"""


# page-link labels whose text is wider than their box (cut with an ellipsis)
CUT_LABELS = """() => [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stPageLink"] *')]
 .filter(e => e.children.length === 0 && e.textContent.trim() && e.scrollWidth > e.clientWidth + 1)
 .map(e => e.textContent)"""


def test_click_flows_in_chromium(server, tmp_path):
    """Short prompt, scatter click lands on the hovered token, token click keeps the sidebar, /home."""
    import re

    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        # a prompt of a few tokens: no slider error, every tab renders
        page.goto(server + "/test-your-own")
        page.get_by_role("textbox", name="Prompt").fill("kape")
        page.get_by_role("button", name="Analyse").click()
        expect(page.locator(".cse-strip").first).to_be_visible(timeout=90_000)
        page.get_by_role("tab", name="Attention").click()
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=30_000)
        page.get_by_role("tab", name="Download").click()
        expect(page.get_by_role("button", name="Download CSV")).to_be_visible(timeout=30_000)
        assert page.get_by_text("StreamlitInvalidMinMaxError").count() == 0

        # the CSPA scatter: the link names the point that was hovered
        page.goto(server + "/cspa")
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)
        x, y = page.evaluate(SCATTER_POINT)
        page.mouse.move(x, y)
        page.wait_for_timeout(800)
        hover = page.locator(".js-plotly-plot").first.locator(".hoverlayer").text_content()
        seq, pos = re.search(r"seq (\d+), pos (\d+)", hover).groups()
        page.mouse.click(x, y)
        expect(page.get_by_text(f"Open sequence {seq}, position {pos} in Browse Examples")).to_be_visible(
            timeout=30_000
        )

        # clicking a token keeps the sidebar's choices
        page.goto(server + "/browse?seq=2&pos=10&head=1.2")
        expect(page.locator(".cse-strip").first).to_be_visible(timeout=60_000)
        page.get_by_text("both", exact=True).click()
        expect(page.get_by_role("radio", name="both")).to_be_checked(timeout=30_000)
        page.wait_for_timeout(1000)
        page.evaluate("() => { window.__cse_no_reload = 1; }")
        page.locator(".cse-strip .cse-tok").nth(5).click()
        expect(page.get_by_text("Position 5").first).to_be_visible(timeout=60_000)
        expect(page.get_by_role("radio", name="both")).to_be_checked(timeout=30_000)
        assert "browse_effect=both" in page.url
        page.wait_for_timeout(500)
        assert "pos=5" in page.url  # the URL follows the selection…
        assert page.evaluate("() => window.__cse_no_reload") == 1  # …without reloading the page

        # /home is the Home page
        page.goto(server + "/home")
        expect(page.get_by_role("heading", name="Copy Suppression Explorer")).to_be_visible(timeout=60_000)
        assert page.get_by_text("Page not found").count() == 0
        links = page.locator('[data-testid="stMain"] [data-testid="stPageLink"]')
        expect(links.first).to_be_visible(timeout=30_000)
        names = [t.strip().splitlines()[-1] for t in links.all_inner_texts()]  # after the icon's ligature name
        assert "Test Your Own Examples" in names, names  # the whole label, not "Test Your Own Example"
        page.evaluate("() => document.fonts.ready")
        for _ in range(20):  # a label mid-layout (fonts, columns still settling) is not a cut one: wait for it
            cut = page.evaluate(CUT_LABELS)
            if not cut:
                break
            page.wait_for_timeout(500)
        assert cut == [], cut
        page.screenshot(path=str(tmp_path / "home.png"), full_page=True)
        browser.close()


SURVEY_POINT = """() => { const gd = document.querySelector('.js-plotly-plot');
 const i = gd._fullData.findIndex(t => t.name === 'toy (synthetic)'); const fd = gd._fullData[i];
 const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis; let best = 0;
 for (let j = 0; j < fd.x.length; j++) if (fd.x[j] > fd.x[best]) best = j;
 const r = gd.getBoundingClientRect();
 return [r.x + xa._offset + xa.l2p(fd.x[best]), r.y + ya._offset + ya.l2p(fd.y[best])]; }"""


def test_survey_page_click_opens_the_head_in_chromium(survey_server, tmp_path):
    """The scatter renders both surveys; clicking the toy's best OV head (the planted 1.2) links to Browse."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(survey_server + "/survey")
        expect(page.get_by_role("heading", name="Head survey")).to_be_visible(timeout=60_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)
        x, y = page.evaluate(SURVEY_POINT)
        page.mouse.move(x, y)
        page.wait_for_timeout(800)
        hover = page.locator(".js-plotly-plot").first.locator(".hoverlayer").text_content()
        assert "toy [1.2]" in hover
        page.screenshot(path=str(tmp_path / "survey.png"), full_page=True)
        page.mouse.click(x, y)
        link = page.get_by_text("Open head 1.2 in Browse Examples")
        expect(link).to_be_visible(timeout=30_000)
        link.click()
        expect(page.get_by_role("heading", name="Browse Examples")).to_be_visible(timeout=60_000)
        assert "head=1.2" in page.url
        browser.close()


HEAD_CELL = """([layer, head]) => { const gd = [...document.querySelectorAll('.js-plotly-plot')].find(
 g => g._fullData.length > 1 && g._fullData[1].type === 'scatter' && g._fullData[0].type === 'heatmap');
 const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis; const r = gd.getBoundingClientRect();
 return [r.x + xa._offset + xa.l2p(head), r.y + ya._offset + ya.l2p(layer)]; }"""
TABLE_OVERFLOW = """() => { const s = document.querySelector('[data-testid="stDataFrame"] .dvn-scroller');
 return s.scrollWidth - s.clientWidth; }"""


def test_prompt_pairs_page_in_chromium(logged_server, tmp_path):
    """Heatmaps render; clicking a cell of the heads heatmap selects that head; the prompts table fits at 1,400 px;
    a set the toy's tokenizer cannot build says why and cannot be analysed."""
    from playwright.sync_api import expect, sync_playwright

    server, log = logged_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(server + "/pairs")
        expect(page.get_by_role("heading", name="Prompt pairs")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("unavailable: this tokenizer has 0 single-token English first names")).to_be_visible(
            timeout=30_000
        )
        page.get_by_text("IOI (generated)", exact=True).click()
        expect(page.get_by_text("IOI (generated) cannot be analysed here")).to_be_visible(timeout=30_000)
        expect(page.get_by_role("button", name="Analyse")).to_be_disabled()
        page.get_by_text("repeated tokens (synthetic text)", exact=True).click()
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Analyse").click()
        expect(page.get_by_role("heading", name="Heads")).to_be_visible(timeout=120_000)
        page.locator(".js-plotly-plot").nth(2).wait_for(timeout=60_000)
        cells = page.evaluate("() => document.querySelectorAll('.js-plotly-plot')[2]._fullData[0].z.length")
        assert cells == 3  # the toy's three layers
        expect(page.get_by_role("heading", name="Patching")).to_be_visible(timeout=60_000)
        page.wait_for_timeout(1500)
        assert page.evaluate(TABLE_OVERFLOW) <= 0  # all six columns in view, no horizontal scrolling
        box = page.locator('input[aria-label^="Head to inspect"]')
        assert box.input_value().startswith("1.2")  # the most negative head first
        page.locator(".js-plotly-plot").nth(2).scroll_into_view_if_needed()
        page.wait_for_timeout(800)
        page.mouse.click(*page.evaluate(HEAD_CELL, [0, 2]))
        expect(box).to_have_value(re.compile(r"^0\.2 "), timeout=30_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(tmp_path / "pairs.png"), full_page=True)
        browser.close()
    assert "Traceback" not in log.read_text()


def test_circuits_vocabulary_pill_opens_the_token_without_a_warning_in_chromium(logged_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    server, log = logged_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(server + "/circuits")
        expect(page.get_by_role("heading", name="OV and QK circuits")).to_be_visible(timeout=60_000)
        page.get_by_text("Search the vocabulary").click()
        page.get_by_role("textbox", name="Tokens containing").fill("kan")
        page.get_by_role("textbox", name="Tokens containing").press("Enter")
        pill = page.locator('[data-testid="stButtonGroup"] button').first
        expect(pill).to_be_visible(timeout=30_000)
        name = pill.inner_text().strip()
        assert "kan" in name, name
        pill.click()
        token_box = page.get_by_role("textbox", name=re.compile(r"^Token \("))
        expect(token_box).to_have_value(name.strip("'"), timeout=30_000)
        page.wait_for_timeout(1500)
        browser.close()
    text = log.read_text()
    assert "Session State API" not in text and "Traceback" not in text, text[-2000:]


def _sidebar_head(page) -> str:
    """The head the sidebar's Head box shows."""
    return page.locator('[data-testid="stSidebar"] input[aria-label="Head"]').first.input_value()


def test_pages_restore_from_their_url_in_chromium(two_head_server, survey_server, tmp_path):
    """Browse, CSPA and the circuits page open on the head, sequence, position, token and controls a link names
    (the second head, not the default first), and write a changed value back into the URL; the survey opens on
    its link's axes."""
    from urllib.parse import parse_qs, urlparse

    from playwright.sync_api import expect, sync_playwright

    def query(page) -> dict:
        return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        server = two_head_server
        page.goto(server + "/browse?seq=3&pos=7&head=0.1&browse_effect=both")
        expect(page.get_by_text("Position 7").first).to_be_visible(timeout=60_000)
        assert _sidebar_head(page) == "0.1"
        expect(page.get_by_role("radio", name="both")).to_be_checked(timeout=30_000)
        expect(page.get_by_role("spinbutton", name="Sequence")).to_have_value("3", timeout=30_000)
        page.get_by_role("spinbutton", name="Token position").fill("9")
        page.get_by_role("spinbutton", name="Token position").press("Enter")
        expect(page.get_by_text("Position 9").first).to_be_visible(timeout=30_000)
        page.wait_for_timeout(500)
        assert query(page) | {"seq": "3", "pos": "9", "head": "0.1", "browse_effect": "both"} == query(page)

        # the details tab a link names is the one open; a token link keeps it
        page.goto(server + "/browse?seq=3&pos=7&head=0.1&tab=source")
        expect(page.get_by_role("tab", name="As a source")).to_have_attribute("aria-selected", "true", timeout=60_000)
        href = page.locator(".cse-strip a.cse-tok").nth(4).get_attribute("href")
        assert "tab=source" in href and "head=0.1" in href

        # hostile values: shown as text, cut, and never a link
        evil = "[x](http://127.0.0.1:9/evil)"
        page.goto(server + f"/browse?seq={evil}&head=www.evil.example&pos=" + "9" * 5000)
        expect(page.get_by_text("Ignored the link's seq").first).to_be_visible(timeout=60_000)
        warnings = page.locator('[data-testid="stAlert"]').all_inner_texts()
        assert len(warnings) >= 3 and max(len(w) for w in warnings) < 200, warnings
        assert page.locator('a[href*="evil"], a[href*="127.0.0.1:9"]').count() == 0

        page.goto(server + "/test-your-own?prompt=The%20kanosa%20of%20the%20teri%20is%20kanosa.")
        expect(page.locator(".cse-strip").first).to_be_visible(timeout=90_000)
        assert "kanosa" in page.locator(".cse-strip").first.inner_text()
        assert page.get_by_role("textbox", name="Prompt").input_value() == "The kanosa of the teri is kanosa."

        page.goto(server + "/cspa?head=0.1")
        expect(page.get_by_role("heading", name="Copy-suppression-preserving ablation (CSPA)")).to_be_visible(
            timeout=60_000
        )
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        assert _sidebar_head(page) == "0.1" and query(page)["head"] == "0.1"

        page.goto(server + "/circuits?head=0.1&token=%20kanosa&focus=destination")
        expect(page.get_by_text("' kanosa' itself is number").first).to_be_visible(timeout=60_000)
        assert _sidebar_head(page) == "0.1"
        expect(page.get_by_role("textbox", name="Token (include")).to_have_value(" kanosa", timeout=30_000)
        expect(page.get_by_role("radio", name="destination")).to_be_checked(timeout=30_000)
        page.screenshot(path=str(tmp_path / "circuits.png"), full_page=True)

        page.goto(survey_server + "/survey?x=qk_top10&y=induction")
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        titles = page.evaluate(
            "() => { const l = document.querySelector('.js-plotly-plot')._fullLayout; "
            "return [l.xaxis.title.text, l.yaxis.title.text]; }"
        )
        assert titles == ["QK: own token in top 10", "induction"]
        assert query(page)["x"] == "qk_top10" and query(page)["y"] == "induction"
        page.goto(survey_server + "/survey?survey=survey-toy&head=1.2")
        expect(page.get_by_text("toy · head 1.2")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Open head 1.2 in Browse Examples")).to_be_visible(timeout=30_000)
        browser.close()
