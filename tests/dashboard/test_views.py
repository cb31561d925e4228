"""The researcher's views in real headless Chromium: one head on two prompts side by side, the
per-query hover (top keys, next-token probabilities), and the Lens page (logit lens, DLA heatmap,
click a head to open it). What the page shows is checked against the library's own result.

Screenshots land in test-artifacts/screenshots/ (head-two-prompts, head-hover, lens).
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from selenium.webdriver.common.action_chains import ActionChains

from tests.dashboard.test_browser import click_heatmap_cell, query, wait_for, wait_url

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a real model and a real Chromium

PROMPT_1 = "The cat sat on the mat. The cat sat on the"
PROMPT_2 = "Alice met Bob in Paris. Alice met Bob in"

FIGURE = "document.querySelector(arguments[0] + ' .js-plotly-plot')"


def figure_data(browser, graph_id: str):
    return browser.execute_script(f"""
        const gd = {FIGURE};
        return gd.data.map(t => ({{name: t.name, zmin: t.zmin, zmax: t.zmax, y: t.y,
                                   text: t.name === 'queries' ? t.text : null}}));""",
                                  f"#{graph_id}")


def test_one_head_on_two_prompts_side_by_side_with_hover(dashboard, browser, screenshot, smollm2):
    from interp.patterns import attention_pattern, query_summaries

    base, _ = dashboard
    browser.get(f"{base}/head?layer=5&head=2&prompt={quote(PROMPT_1)}&prompt2={quote(PROMPT_2)}")
    wait_for(browser, "#head-pattern .heatmaplayer")
    wait_for(browser, "#head-pattern-b .heatmaplayer")
    a, b = figure_data(browser, "head-pattern"), figure_data(browser, "head-pattern-b")
    # Same colour scale: attention 0..1 in both patterns.
    assert [(t["zmin"], t["zmax"]) for t in (a[0], b[0])] == [(0, 1), (0, 1)]
    box_a, box_b = (browser.execute_script(f"return {FIGURE}.getBoundingClientRect().toJSON()",
                                           f"#{g}") for g in ("head-pattern", "head-pattern-b"))
    # Beside each other: B starts right of A, and their rows overlap (A has a sinks line above).
    assert box_b["left"] >= box_a["right"] - 1 and box_b["top"] < box_a["bottom"]
    screenshot(browser, "head-two-prompts")

    # The hover column: one text per query row, matching the library's summaries.
    for data, text in ((a, PROMPT_1), (b, PROMPT_2)):
        strip = next(t for t in data if t["name"] == "queries")
        pattern = attention_pattern(smollm2, text, layer=5, next_tokens=5)
        rows = query_summaries(pattern, head=2, k_keys=4)
        assert len(strip["text"]) == pattern.n_tokens
        last = strip["text"][-1]
        best_key = rows[-1]["top_keys"][0]
        assert f"{best_key['weight']:.3f}" in last and "top keys" in last
        assert f"{rows[-1]['next'][0]['prob']:.3f}" in last and "next token" in last

    # A real mouse over the last query's cell of the column shows that text.
    x, y = browser.execute_script(f"""
        const gd = {FIGURE};
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
        const strip = gd.data.find(t => t.name === 'queries');
        return [box.left + xa.l2p(xa.d2l('next ▸')), box.top + ya.l2p(ya.d2l(strip.y[strip.y.length - 1]))];
    """, "#head-pattern")
    actions = ActionChains(browser)
    actions.w3c_actions.pointer_action.move_to_location(int(x), int(y))
    actions.perform()
    hover = wait_for(browser, "#head-pattern .hovertext", "next token", timeout=15)
    assert "top keys" in hover.text
    screenshot(browser, "head-hover")


def test_lens_page_draws_dla_and_logit_lens_and_opens_a_head(dashboard, browser, screenshot, smollm2):
    from interp.lens import logit_lens_and_dla

    base, _ = dashboard
    browser.get(f"{base}/lens")
    wait_for(browser, "#lens-dla .heatmaplayer")
    wait_for(browser, "#lens-line .scatterlayer")
    result = logit_lens_and_dla(smollm2, "When Mary and John went to the store, John gave a drink to",
                                " Mary", " John")
    assert wait_for(browser, "#lens-final").text == f"{result.final_metric:+.3f}"
    assert f"= {sum(result.components().values()):+.3f}" in wait_for(browser, "#lens-check").text
    best = result.top_heads(1)[0]
    assert f"L{best['layer']}.H{best['head']}" in wait_for(browser, "#lens-top-table tbody tr").text
    lens_trace = browser.execute_script(f"return {FIGURE}.data[0].y", "#lens-line")
    assert lens_trace[-1] == pytest.approx(float(result.lens_logprob[-1]), abs=1e-3)
    screenshot(browser, "lens")

    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                           wait_for(browser, "#lens-dla"))
    click_heatmap_cell(browser, "lens-dla", best["layer"], best["head"])
    url = wait_url(browser, lambda u: u.path == "/head")
    assert (query(url)["layer"], query(url)["head"]) == (str(best["layer"]), str(best["head"]))
    assert "Mary" in query(url)["prompt"]
    wait_for(browser, "#head-pattern .heatmaplayer")


def test_lens_page_refuses_a_multi_token_target(dashboard, browser):
    base, _ = dashboard
    browser.get(f"{base}/lens?prompt={quote('The capital of France is')}&target=Parisiennes123")
    assert "target token" in wait_for(browser, "#lens-error").text
