"""`scaling-cli report` (scaling_cli/html_report.py): one HTML file that holds every figure and
law `fit` produced, references nothing outside itself, and renders in a real browser.

The laws part runs on a synthetic table through `scaling-cli fit` (every main law fits); the
plan/status/curves part on a real two-run store. The browser test uses headless Chromium from
Debian's packages (.ci/run installs it) and skips only where no Chromium can be found."""

from __future__ import annotations

import base64
import html as html_lib
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from scaling_cli.cli import main
from scaling_cli.fit import synthetic
from scaling_cli.fit.artifact import read_report
from scaling_cli.predict import predict

FAST = ["--n-boot", "20", "--grid-size", "2"]


class Page(HTMLParser):
    """Everything the tests look at: ids, images, every URL-valued attribute, inline styles."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.images: list[dict] = []
        self.urls: list[str] = []
        self.tags: list[str] = []
        self.styles: list[str] = []
        self._in_style = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs)
        self.urls += [v for k, v in attrs.items() if k in ("src", "href", "action", "srcset", "poster", "data") and v]
        if "style" in attrs:
            self.styles.append(attrs["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


@pytest.fixture(scope="module")
def fitted_table(tmp_path_factory) -> Path:
    """A synthetic IsoFLOP + LR-sweep table fitted once: <tmp>/runs.csv and <tmp>/runs_fit/."""
    tmp = tmp_path_factory.mktemp("report")
    iso = synthetic.isoflop_runs(budgets=(1e17, 1e18, 1e19), sizes_per_budget=6, seed=0).assign(lr=1e-3, status="done")
    path = tmp / "runs.csv"
    pd.concat([iso, synthetic.lr_sweep_runs(seed=1)], ignore_index=True).to_csv(path, index=False)
    assert main(["fit", str(path), *FAST]) == 0
    return path


def report(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["report", *args])
    return code, capsys.readouterr().err


def assert_self_contained(page: Page) -> None:
    assert page.urls and all(u.startswith(("data:", "#")) for u in page.urls), [u[:40] for u in page.urls]
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
    assert not any("url(" in s or "@import" in s for s in page.styles)


def test_report_holds_every_figure_and_law_of_the_fit_and_nothing_external(fitted_table, tmp_path, capsys):
    out = tmp_path / "report.html"
    code, _ = report(capsys, str(fitted_table), "-o", str(out), "--params", "7e9", "--tokens", "1.4T")
    assert code == 0
    page = Page(out.read_text())
    assert_self_contained(page)
    fit_dir = fitted_table.with_name("runs_fit")
    pngs = sorted(p.name for p in fit_dir.glob("*.png"))
    assert len(pngs) >= 4  # loss_vs_compute, isoflop, lr_sweep, fitted_vs_observed
    embedded = {img["data-file"]: img["src"] for img in page.images if "data-file" in img}
    assert sorted(embedded) == pngs
    for name, src in embedded.items():  # the very bytes `fit` wrote
        assert base64.b64decode(src.split(",", 1)[1]) == (fit_dir / name).read_bytes()
    fit = read_report(str(fit_dir))
    assert {f"law-{name}" for name in fit["laws"]} <= page.ids
    for key in ("holdout", "diagnostics", "data", "stability", "downstream", "options"):
        assert f"fit-{key}" in page.ids
    expected = predict(fit, params=7e9, tokens=1.4e12)
    html = out.read_text()
    assert f"{expected['loss']:.4g}" in html and "compute-optimal N" in html
    selected = fit["selection"]
    assert html_lib.escape(f"{selected['loss_law']} ({selected['reason']})") in html  # the selected law, with its reason


def test_fit_outputs_added_later_show_up_without_code_changes(fitted_table, tmp_path, capsys):
    """Other laws, plots and fit.json sections land in `fit` all the time: the page renders what is there."""
    fit_dir = tmp_path / "fit"
    shutil.copytree(fitted_table.with_name("runs_fit"), fit_dir)
    shutil.copy(fit_dir / "isoflop.png", fit_dir / "zz_new_plot.png")
    fit = json.loads((fit_dir / "fit.json").read_text())
    fit["laws"]["my_law"] = {"law": "my_law", "status": "ok", "form": "L = a N^-b",
                             "params": {"a": 3.5, "b": 0.25}, "intervals": {"a": [3.0, 4.0], "b": [0.2, 0.3]}}
    fit["backtest_by_size"] = {"chinchilla": {"rmse_log": 0.0123, "coverage": 0.9}, "my_law": {"rmse_log": 0.0456}}
    (fit_dir / "fit.json").write_text(json.dumps(fit))
    out = tmp_path / "report.html"
    assert report(capsys, str(fitted_table), "--fit", str(fit_dir), "-o", str(out))[0] == 0
    page = Page(out.read_text())
    assert "zz_new_plot.png" in {img.get("data-file") for img in page.images}
    assert {"law-my_law", "fit-backtest_by_size"} <= page.ids
    html = out.read_text()
    assert "L = a N^-b" in html and "[0.2, 0.3]" in html and "0.0456" in html


def test_report_of_a_store_shows_plan_status_and_curves_and_runs_the_fit(tiny_overrides, tmp_path, capsys):
    assert main(["sweep", "--no-progress", *tiny_overrides, "sweep.grid={train.seed:[0,1]}"]) == 0
    store = tmp_path / "runs"
    out = tmp_path / "store.html"
    code, err = report(capsys, str(store), "-o", str(out))
    assert code == 0 and "running `scaling-cli fit" in err
    html = out.read_text()
    page = Page(html)
    assert_self_contained(page)
    for run_id in (p.name for p in store.iterdir() if not p.name.startswith("_")):
        assert run_id in html
    assert "2 done" in html
    (curves,) = [img for img in page.images if img.get("alt") == "training curves"]
    assert len(base64.b64decode(curves["src"].split(",", 1)[1])) > 5000
    # two runs are too few for the parametric law: the page says why instead of showing numbers
    assert "could not fit" in html and "class=\"reason\"" in html


def test_bad_report_input_is_one_line_and_exit_2(tmp_path, capsys):
    code, err = report(capsys, str(tmp_path / "nowhere"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no such store or table" in err
    code, err = report(capsys, str(tmp_path), "--tokens", "1e9")
    assert code == 2 and "--tokens needs --params" in err


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_renders_in_headless_chromium(fitted_table, tmp_path, capsys):
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")
    from PIL import Image

    out = tmp_path / "report.html"
    assert report(capsys, str(fitted_table), "-o", str(out), "--params", "7e9")[0] == 0
    shot = tmp_path / "shot.png"
    # No network at all: a page that needed anything from outside would render without it.
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400",
                    "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                    f"--screenshot={shot}", out.as_uri()], check=True, capture_output=True, timeout=120)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2400)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # text, tables and embedded figures, not a blank page
    background = max(colours)[1]
    inked = sum(count for count, colour in colours if colour != background)
    assert inked > 0.1 * 1280 * 2400
    # the top of the page (title, run table) is drawn, not only the figures further down
    top = image.crop((0, 0, 1280, 300)).getcolors(maxcolors=1 << 20)
    assert len(top) > 20
