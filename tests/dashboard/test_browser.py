"""Headless Chromium on the dashboard: every view of the toy experiment's report renders, the picker pages
through a 120-prompt set and filters it, the static export opens from disk, and the page's series math
equals the library's. A full-page screenshot per view goes to test-artifacts/dashboard/.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); without them the tests
skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.dashboard_inputs import (
    LONG_ROW,
    NEEDLE_ROW,
    TRAITS,
    label_of,
    prompt_text,
    synthetic_experiment,
)
from tests.pipeline.test_stages import invoke
from trait_interp.dashboard.server import address, make_server
from trait_interp.dashboard.site import export_site, read_data
from trait_interp.monitoring.dynamics import smooth, velocity

ARTIFACTS = REPO / "test-artifacts" / "dashboard"
WIDTH = 1400


def _chromium() -> tuple[str | None, str | None]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    return browser, shutil.which("chromedriver")


@pytest.fixture(scope="module")
def driver():
    browser, chromedriver = _chromium()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        browser = None
    if not (browser and chromedriver):
        why = "needs Debian's chromium and chromium-driver and the selenium package (installed by .ci/run)"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI=true but the browser test cannot run: it {why}")
        pytest.skip(f"headless browser test {why}")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},1000", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(chromedriver), options=options)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield chrome
    chrome.quit()


def serve(folder: Path):
    server = make_server(folder, port=0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def toy(reproduced_toy):
    """The toy experiment's report (built by the session's `dvc repro` of the reduced toy project), served.

    Read only: the pages and their data are served as they are, never written."""
    report = reproduced_toy[0] / "experiments/toy/report"
    server = serve(report)
    yield address(server), report
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A report of a synthetic 120-prompt set, served."""
    root = tmp_path_factory.mktemp("big")
    synthetic = synthetic_experiment(root / "exp", n_prompts=120)
    result = invoke(*synthetic.args(root / "report"))
    assert result.exit_code == 0, result.output
    server = serve(root / "report")
    yield address(server), root / "report"
    server.shutdown()
    server.server_close()


def open_view(driver, url: str, view: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}#{view}" if "#" not in url else url)
    driver.refresh()  # a hash-only change would not reload the page
    WebDriverWait(driver, 20).until(lambda d: d.find_element("id", "view").get_attribute("data-rendered") == view,
                                    f"{view} never rendered: {page_errors(driver)}")
    assert not page_errors(driver)


def pick(driver, index: int, prompt_id: str) -> None:
    """Click the index-th prompt of the list and wait for its tokens (loaded from its own data file)."""
    from selenium.webdriver.support.ui import WebDriverWait

    css(driver, "button.prompt-item")[index].click()
    WebDriverWait(driver, 20).until(
        lambda d: d.find_element("css selector", "section.detail").get_attribute("data-prompt") == prompt_id,
        f"prompt {prompt_id} never shown: {page_errors(driver)}")


def page_errors(driver) -> list[str]:
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    shown = [e.text for e in driver.find_elements("css selector", "#view .error")]
    return errors + shown


def screenshot(driver, name: str) -> Path:
    """The whole page (not just the window) as test-artifacts/dashboard/<name>.png."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": int(height), "deviceScaleFactor": 1, "mobile": False})
    path = ARTIFACTS / f"{name}.png"
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert path.stat().st_size > 10_000
    return path


def css(driver, selector: str):
    return driver.find_elements("css selector", selector)


def path_points(d: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"[ML](-?[\d.]+) (-?[\d.]+)", d)]


def assert_real_line(path, min_points: int, distinct_values: int = 2) -> None:
    """A drawn series: enough vertices, spread along x, and as many heights as the data has values (up to 2)."""
    points = path_points(path.get_attribute("d"))
    assert len(points) >= min_points, path.get_attribute("d")
    xs, ys = {p[0] for p in points}, {p[1] for p in points}
    assert len(xs) >= min_points and len(ys) >= min(2, distinct_values)


def data(report: Path, key: str):
    return read_data(report / "data" / f"{key}.js")[1]


def test_extraction_view_draws_a_heatmap_cell_per_layer_and_method(driver, toy):
    url, report = toy
    open_view(driver, url, "extraction")
    expected = data(report, "extraction/0")
    maps = css(driver, "svg.heatmap")
    assert len(maps) == 2  # accuracy and Cohen's d
    site = "residual" if "residual" in expected["sites"] else expected["sites"][0]  # the view's default site
    shown = [row for row in expected["rows"] if row[0] == site]
    for svg, column in zip(maps, (3, 4)):  # val_accuracy, cohens_d
        cells = svg.find_elements("css selector", "rect.cell")
        assert len(cells) == len(expected["methods"]) * len(expected["layers"])
        # coloured by value, not one flat colour: as many shades as distinct values (up to 3) on the
        # page's scale, where accuracy at or below chance (0.5) is all white
        values = {max(row[column], 0.5) if column == 3 else row[column] for row in shown if row[column] is not None}
        assert len({c.get_attribute("fill") for c in cells}) >= min(3, len(values))
    best = css(driver, "section:nth-of-type(2) table.data tbody tr")
    assert len(best) == len(expected["best"]) and expected["best"][0]["method"] in best[0].text
    screenshot(driver, "extraction")


def test_steering_view_draws_curves_threshold_best_and_answers(driver, toy):
    url, report = toy
    open_view(driver, url, "steering")
    expected = data(report, "steering/0")
    charts = css(driver, "svg.line-chart")
    assert len(charts) == 2
    for chart, score in zip(charts, ("trait_mean", "coherence_mean")):
        (line,) = chart.find_elements("css selector", "path.series")
        values = {round(c[score], 1) for c in expected["configs"] if c[score] is not None}
        assert_real_line(line, len(expected["configs"]), len(values))  # the baseline and every step
        assert chart.find_elements("css selector", "g.mark circle")  # the chosen best step
    threshold = charts[1].find_element("css selector", "g.hline.threshold line")
    assert f"min coherence {expected['min_coherence']:g}" in charts[1].text
    assert float(threshold.get_attribute("y1")) > 0
    steering = [json.loads(line) for line in (
        report.parents[0] / "steering/toy-instruct/responses/behavior/refusal.jsonl").read_text().splitlines()]
    questions = {r["question_index"] for r in steering}
    rows = css(driver, "table.answers tbody tr")
    assert len(rows) == len(questions)
    best = next(c for c in expected["configs"] if c["best"]) if any(c["best"] for c in expected["configs"]) else None
    if best is not None:
        answer = expected["answers"][best["id"]][0]["response"]
        assert rows[0].find_element("css selector", "td.answer .text").get_attribute("textContent") == answer
    screenshot(driver, "steering")


def test_dynamics_view_shades_every_token_and_its_options_change_the_lines(driver, toy):
    from selenium.webdriver.support.ui import Select

    url, report = toy
    open_view(driver, url, "dynamics")
    responses = [json.loads(line) for line in
                 (report.parents[0] / "inference/toy-instruct/mixed_requests/responses.jsonl").read_text().splitlines()]
    row = 2
    pick(driver, row, responses[row]["prompt_id"])
    detail = css(driver, "section.detail")[0]
    tokens = css(driver, ".tokens .tok")
    assert len(tokens) == len(responses[row]["response_tokens"]) > 0
    assert [t.get_attribute("textContent") for t in tokens] == responses[row]["response_tokens"]
    assert len({t.value_of_css_property("background-color") for t in tokens}) >= 3
    assert detail.find_element("css selector", ".prompt-text").text == responses[row]["prompt"].strip()
    index = data(report, "sets/0/prompts")
    layer = Select(css(driver, "select.layer")[0]).first_selected_option.text
    lines = css(driver, "section.detail svg.line-chart path.series")
    assert len(lines) == len([s for s in index["series"] if str(s["layer"]) == layer])
    for line in lines:
        assert_real_line(line, len(tokens) - 1)

    def shape() -> list[str]:
        return [p.get_attribute("d") for p in css(driver, "section.detail svg.line-chart path.series")]

    before = shape()
    css(driver, "input.centered")[0].click()  # off: raw projections, midpoints no longer subtracted
    uncentered = shape()
    assert uncentered != before
    assert index["cleaning"]["available"], "the toy projections carry the massive-dim parts"
    Select(css(driver, "select.clean")[0]).select_by_value(index["cleaning"]["available"][-1])
    cleaned = shape()
    assert cleaned != uncentered
    window = css(driver, "input.window")[0]
    window.clear()
    window.send_keys("4\n")
    driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", window)
    smoothed = shape()
    assert smoothed != cleaned
    css(driver, "input.velocity")[0].click()
    assert shape() != smoothed
    css(driver, "input.velocity")[0].click()
    css(driver, "input.centered")[0].click()
    trait_box = css(driver, ".trait-boxes input")[0]
    trait_box.click()  # hide one trait from the chart
    assert len(css(driver, "section.detail svg.line-chart path.series")) == len(lines) - 1
    trait_box.click()
    screenshot(driver, "dynamics")


def test_model_diff_view_draws_effect_cosine_and_clauses(driver, toy):
    url, report = toy
    open_view(driver, url, "model_diff")
    expected = data(report, "model_diff")
    assert len(css(driver, "table.paired tbody tr")) == len(expected["paired"])
    cosine = css(driver, "svg.line-chart")[1]
    lines = cosine.find_elements("css selector", "path.series")
    assert len(lines) == len({c["trait"] for c in expected["cosines"]})
    for line in lines:
        assert_real_line(line, len({c["layer"] for c in expected["cosines"]}))
    clauses = css(driver, "ol.clauses li")
    trait = next(iter(expected["clauses"]))
    top = next(iter(expected["clauses"][trait].values()))
    assert len(clauses) == len(top["increase"]) + len(top["decrease"]) > 0
    screenshot(driver, "model_diff")


def test_sweep_view_draws_a_heatmap_per_method_outlines_coherent_cells_and_shows_a_cells_answers(driver, toy, big):
    for url, report, name in ((*toy, "sweep"), (*big, "sweep_synthetic")):
        open_view(driver, url, "sweep")
        expected = data(report, "sweep/0")
        n_cells = len(expected["rows"]) * len(expected["ratios"])
        for method in expected["methods"]:
            grid = expected["grids"][method]
            maps = css(driver, f"div.charts[data-method='{method}'] svg.heatmap")
            assert len(maps) == 2  # trait delta and coherence
            for svg in maps:
                assert len(svg.find_elements("css selector", "rect.cell")) == n_cells
                outlined = svg.find_elements("css selector", "rect.cell.outlined")
                assert len(outlined) == sum(v is True for row in grid["coherent"] for v in row)
        rows = css(driver, "table.comparison tbody tr")
        assert [r.find_element("css selector", "td").text for r in rows] == expected["methods"]
        # a click on a cell shows that configuration's answers beside the baseline's
        method = expected["methods"][-1]
        cell = css(driver, f"div.charts[data-method='{method}'] svg.heatmap rect.cell")[n_cells - 1]
        cell.click()
        from selenium.webdriver.support.ui import WebDriverWait

        config = expected["grids"][method]["config"][-1][-1]
        answers = data(report, expected["answers"][-1])[str(config)]
        WebDriverWait(driver, 20).until(
            lambda d: d.find_element("id", "view").get_attribute("data-rendered") == "sweep"
            and css(d, "rect.cell.selected")
            and css(d, "table.sweep-answers td.answer .text")[0].get_attribute("textContent") == answers[0]["response"],
            f"the clicked cell's answers never showed: {page_errors(driver)}")
        assert len(css(driver, "table.sweep-answers tbody tr")) == len(answers)
        assert len(css(driver, "rect.cell.selected")) == 2  # the same cell in both maps
        screenshot(driver, name)


@pytest.fixture(scope="module")
def own_layers(tmp_path_factory):
    """A report whose two traits were projected at different layers (layer: best), served."""
    root = tmp_path_factory.mktemp("own-layers")
    synthetic = synthetic_experiment(root / "exp", n_prompts=12, own_layers={TRAITS[0]: (1,), TRAITS[1]: (3,)})
    result = invoke(*synthetic.args(root / "report"))
    assert result.exit_code == 0, result.output
    server = serve(root / "report")
    yield address(server), root / "report"
    server.shutdown()
    server.server_close()


def test_dynamics_view_charts_traits_at_their_own_layers(driver, own_layers, big):
    from selenium.webdriver.support.ui import Select

    url, report = own_layers
    open_view(driver, url, "dynamics")
    pick(driver, 2, "3")
    layer = Select(css(driver, "select.layer")[0])
    assert [o.get_attribute("value") for o in layer.options] == ["own", "1", "3"]
    assert layer.first_selected_option.get_attribute("value") == "own"  # no layer has both traits
    assert f"{TRAITS[0]} L1" in layer.first_selected_option.text and f"{TRAITS[1]} L3" in layer.first_selected_option.text
    lines = css(driver, "section.detail svg.line-chart path.series")
    assert len(lines) == 2
    legend = [t.get_attribute("textContent") for t in css(driver, "section.detail svg.line-chart g.legend text")]
    assert legend == [f"{TRAITS[0]} (L1)", f"{TRAITS[1]} (L3)"]
    title = css(driver, "section.detail svg.line-chart")[0].get_attribute("textContent")
    assert "each trait at its own layer" in title
    screenshot(driver, "dynamics_own_layers")
    layer.select_by_value("3")
    assert len(css(driver, "section.detail svg.line-chart path.series")) == 1
    open_view(driver, url, "model_diff")
    assert len(css(driver, "table.paired tbody tr")) == 2
    # every trait at the same layers: the layer control is as it was, no "own" option
    url, _ = big
    open_view(driver, url, "dynamics")
    assert [o.get_attribute("value") for o in Select(css(driver, "select.layer")[0]).options] == ["1", "2"]


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """A report with a gated intervention's answers (tests/dashboard_inputs.py), served."""
    root = tmp_path_factory.mktemp("gated")
    synthetic = synthetic_experiment(root / "exp", n_prompts=6, intervention=True)
    result = invoke(*synthetic.args(root / "report"))
    assert result.exit_code == 0, result.output
    server = serve(root / "report")
    yield address(server), root / "report"
    server.shutdown()
    server.server_close()


def test_dynamics_view_marks_the_tokens_where_the_gate_fired(driver, gated):
    from selenium.webdriver.support.ui import Select

    url, report = gated
    open_view(driver, url, "dynamics")
    sets = Select(css(driver, "select.set")[0])
    assert "refusal_gate (gated)" in sets.options[1].text
    sets.select_by_value("1")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(lambda d: d.find_element("id", "view").get_attribute("data-rendered") == "dynamics")
    index = data(report, "sets/1/prompts")
    row = 4
    pick(driver, row, index["prompts"][row]["id"])
    tokens = data(report, index["prompts"][row]["file"])
    marked = [int("fired" in t.get_attribute("class").split()) for t in css(driver, ".tokens .tok")]
    assert marked == [x or 0 for x in tokens["fired"][0]] and any(marked)
    steered = [int("steered" in t.get_attribute("class").split()) for t in css(driver, ".tokens .tok")]
    assert steered == [x or 0 for x in tokens["steered"][0]]
    assert css(driver, ".intervention-info")[0].text.startswith("Intervention refusal_gate (gated)")
    assert len(css(driver, "section.detail svg.line-chart .hline.threshold")) == 1  # the gate's threshold
    dots = css(driver, "section.detail svg.line-chart circle.point")
    assert len(dots) == sum(marked)  # a dot on the line at every token where the gate fired
    screenshot(driver, "dynamics_gate")


def test_picker_pages_through_120_prompts_filters_and_shows_full_text(driver, big):
    from selenium.webdriver.support.ui import Select

    url, report = big
    open_view(driver, url, "dynamics")

    def summary() -> dict[str, int]:
        node = css(driver, ".picker .summary")[0]
        return {k: int(node.get_attribute(f"data-{k}")) for k in ("filtered", "page", "pages")}

    assert summary() == {"filtered": 120, "page": 1, "pages": 3}
    assert len(css(driver, "button.prompt-item")) == 50
    screenshot(driver, "picker")
    css(driver, ".pager .next")[0].click()
    assert summary()["page"] == 2 and css(driver, "button.prompt-item")[0].get_attribute("data-id") == "51"
    css(driver, ".pager .next")[0].click()
    assert summary()["page"] == 3 and len(css(driver, "button.prompt-item")) == 20
    assert not css(driver, ".pager .next")[0].is_enabled()
    # a judge-label filter, then a note filter on top of it
    Select(driver.find_element("css selector", "select[data-filter=refused]")).select_by_value("yes")
    yes = [r for r in range(120) if label_of(r) == "yes"]
    assert summary() == {"filtered": len(yes), "page": 1, "pages": 1}
    assert {b.get_attribute("data-id") for b in css(driver, "button.prompt-item")} == {str(r + 1) for r in yes}
    Select(driver.find_element("css selector", "select[data-filter=note]")).select_by_value("fiction")
    both = [r for r in yes if r % 4 == 1]
    assert summary()["filtered"] == len(both) and len(css(driver, "button.prompt-item")) == len(both)
    screenshot(driver, "picker_filtered")
    css(driver, ".filters button.clear")[0].click()
    assert summary()["filtered"] == 120
    search = css(driver, "input.search")[0]
    search.send_keys("zanzibar")
    assert summary()["filtered"] == 1
    assert css(driver, "button.prompt-item")[0].get_attribute("data-id") == str(NEEDLE_ROW + 1)
    search.clear()
    search.send_keys("END-OF-PROMPT")
    assert summary()["filtered"] == 1
    pick(driver, 0, str(LONG_ROW + 1))
    text = css(driver, "section.detail .prompt-text")[0]
    assert text.get_attribute("textContent") == prompt_text(LONG_ROW)  # every character, nothing cut
    assert text.value_of_css_property("max-height") == "none"
    assert text.value_of_css_property("overflow-y") == "visible"
    assert driver.execute_script("return arguments[0].scrollHeight <= arguments[0].clientHeight + 1", text)
    assert text.size["height"] > 60 * 15  # 61 lines, laid out in full on the page
    assert len(css(driver, ".tokens .tok")) == data(report, f"sets/0/p{LONG_ROW}")["tokens"].__len__()
    screenshot(driver, "picker_full_prompt")


def test_static_export_opens_from_disk(driver, toy, tmp_path):
    _, report = toy
    index = export_site(report, tmp_path / "static")
    open_view(driver, index.as_uri() + "#dynamics", "dynamics")
    first = data(report, "sets/0/p0")
    pick(driver, 0, first["id"])
    assert len(css(driver, ".tokens .tok")) == len(first["tokens"])
    open_view(driver, index.as_uri() + "#steering", "steering")
    assert css(driver, "svg.line-chart path.series")


def test_the_pages_series_math_equals_the_library(driver, big):
    url, _ = big
    open_view(driver, url, "dynamics")
    rng = np.random.default_rng(0)
    for n, window in ((1, 1), (7, 3), (30, 5), (12, 20)):
        x = rng.normal(size=n).round(4).tolist()
        got = driver.execute_script("return [TI.dynamics.smooth(arguments[0], arguments[1]),"
                                    " TI.dynamics.velocity(TI.dynamics.smooth(arguments[0], arguments[1]))]", x, window)
        assert got[0] == pytest.approx(smooth(x, window).tolist(), abs=1e-9)
        expected = velocity(smooth(x, window))
        assert got[1][-1] is None and got[1][:-1] == pytest.approx(expected[:-1].tolist(), abs=1e-9)
    file = {"values": [[1.0, 2.0, 4.0]], "massive": {"top_k": [[0.5, -0.5, 1.0]]}}
    series = {"midpoint": 0.25}
    got = driver.execute_script("return TI.dynamics.values(arguments[0], 0, arguments[1], arguments[2])",
                                file, series, {"clean": "top_k", "centered": True})
    assert got == pytest.approx([0.25, 2.25, 2.75])  # raw - massive part - train midpoint
