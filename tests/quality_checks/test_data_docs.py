"""The gate's Data Docs are GX's own pages, rendered once where a page cannot change."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from qc_samples import FAMILY_ROWS, TEST_BANDS, write_shard

from quality_checks import data_docs, gate
from quality_checks.gate import GateReport, gate_build, validate_path

#: what differs between two renderings of one page: times (folder names, stamps, sort
#: keys) and GX's random element and object ids
VOLATILE = [
    (re.compile(r"\d{8}T\d{6}\.\d{6}Z"), "RUNTIME"),
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(Z| UTC)"), "STAMP"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "UUID"),
    (re.compile(r"'_run_time_sort': [0-9.]+"), "'_run_time_sort': T"),
]


def normalised(text: str) -> str:
    for pattern, stand_in in VOLATILE:
        text = pattern.sub(stand_in, text)
    return text


def pages_of(report: GateReport) -> dict[str, str]:
    """Every HTML page of a build's site but the static assets, by normalised path."""
    assert report.data_docs_path
    docs = Path(report.data_docs_path).parent
    return {normalised(str(p.relative_to(docs))): normalised(p.read_text()) for p in docs.rglob("*.html") if "static" not in p.parts}


def a_failing_build(folder: Path, workdir: Path, build_id: str, **kwargs: Any) -> GateReport:
    """Two imed shards, one with a duplicated id: a screening run, one run per shard
    (one with unexpected values), the build checks and the modality mix."""
    good = write_shard(FAMILY_ROWS["imed"](), folder / "good.parquet")
    rows = FAMILY_ROWS["imed"]()
    rows[2]["sample_id"] = rows[0]["sample_id"]
    bad = write_shard(rows, folder / "bad.parquet")
    previous = write_shard(FAMILY_ROWS["imed"](), folder / "previous.parquet")
    return gate_build([good, bad], family="imed", workdir=str(workdir), build_id=build_id, severity_bands=TEST_BANDS,
                      cache_passed=False, previous=[previous], tolerances={"max_failed_shard_fraction": 0.5}, **kwargs)


def gx_default_site(docs_dir: str, shared_static_dir: str | None = None) -> dict[str, Any]:
    return {"class_name": "SiteBuilder", "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
            "site_section_builders": {"profiling": "0"}}


def test_pages_are_the_pages_gx_renders_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shared templates, reused suite pages and results kept as dicts: two builds in a row
    (the second reusing what the first rendered) give, page for page, what GX's default
    site and store give (up to times and random ids)."""
    ours = [a_failing_build(tmp_path / f"in{i}", tmp_path / f"ours{i}", "build-1") for i in range(2)]
    monkeypatch.setattr(gate, "site_config", gx_default_site)
    monkeypatch.setattr(gate, "keep_validation_results_as_dicts", lambda context: None)
    by_gx = a_failing_build(tmp_path / "in_gx", tmp_path / "gx", "build-1")

    expected = pages_of(by_gx)
    assert {"gate.html", "index.html"} <= expected.keys()
    assert sum("validations/" in name for name in expected) == 5  # the screening run, 2 shards, build, mix
    assert sum("expectations/" in name for name in expected) == 3
    failing = next(text for name, text in expected.items() if name.endswith("bad.parquet/RUNTIME/medcurate-shards.html"))
    assert re.search(r"values must be unique\.\s*2 unexpected values found", re.sub(r"<[^>]+>", " ", failing))
    for report in ours:
        assert report.passed and [os.path.basename(q) for q in report.quarantined] == ["bad.parquet"]
        assert 0 < report.data_docs_seconds < report.seconds
        assert pages_of(report) == expected


def test_suite_pages_and_templates_are_reused_by_the_next_process(tmp_path: Path) -> None:
    """A nightly build is a process of its own: the second process on a machine compiles
    no template and renders no suite page, and its site has every page."""
    child = textwrap.dedent(f"""
        import json, sys
        import jinja2
        sys.path[:0] = {[str(Path(__file__).parent), os.getcwd()]!r}
        from qc_samples import FAMILY_ROWS, TEST_BANDS, write_shard
        from quality_checks.gate import gate_build
        from great_expectations.render.renderer import ExpectationSuitePageRenderer
        counts = {{"compiled": 0, "suite_pages": 0}}
        compile_, render = jinja2.Environment.compile, ExpectationSuitePageRenderer.render
        def counting_compile(self, *a, **k):
            counts["compiled"] += 1
            return compile_(self, *a, **k)
        def counting_render(self, *a, **k):
            counts["suite_pages"] += 1
            return render(self, *a, **k)
        jinja2.Environment.compile, ExpectationSuitePageRenderer.render = counting_compile, counting_render
        from pathlib import Path
        shard = write_shard(FAMILY_ROWS["imed"](), Path(sys.argv[1]) / "in" / "imed.parquet")
        report = gate_build([shard], family="imed", workdir=sys.argv[1], build_id="b", severity_bands=TEST_BANDS)
        counts["passed"] = report.passed
        print(json.dumps(counts))
    """)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "GX_ANALYTICS_ENABLED": "false"}

    def one_process(name: str) -> dict[str, Any]:
        done = subprocess.run([sys.executable, "-c", child, str(tmp_path / name)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, second = one_process("first"), one_process("second")
    assert first["passed"] and second["passed"]
    assert first["compiled"] > 10 and first["suite_pages"] == 2  # the shard suite and the build suite
    assert second == {"compiled": 0, "suite_pages": 0, "passed": True}
    cached = tmp_path / "cache" / "medcurate" / "data_docs"
    assert len(list((cached / "suite_pages").glob("*.html"))) == 2 and len(list((cached / "jinja").iterdir())) > 10
    site = [tmp_path / name / "runs" / "b" / "data_docs" for name in ("first", "second")]
    suite_pages = [sorted(p.relative_to(s / "expectations") for p in (s / "expectations").rglob("*.html")) for s in site]
    assert suite_pages[0] == suite_pages[1] and len(suite_pages[0]) == 2
    for page in suite_pages[0]:
        assert normalised((site[0] / "expectations" / page).read_text()) == normalised((site[1] / "expectations" / page).read_text())


def test_a_changed_suite_gets_a_page_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A suite page is reused only for the same suite: another bound renders a new page,
    which shows it; a cache folder that cannot be written only costs time."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(not_a_folder / "cache"))  # under a file: every write fails
    shard = write_shard(FAMILY_ROWS["imed"](), tmp_path / "in" / "imed.parquet")

    def shard_suite_page(build_id: str, max_text_length: int) -> str:
        report = gate_build([shard], family="imed", workdir=str(tmp_path / "work"), build_id=build_id, severity_bands=TEST_BANDS,
                            cache_passed=False, tolerances={"max_text_length": max_text_length})
        assert report.passed and report.data_docs_path
        docs = Path(report.data_docs_path).parent
        return next((docs / "expectations").rglob("v1+imed/v1.html")).read_text()

    assert "7654" not in shard_suite_page("a", 8000)
    pages_before = dict(data_docs._SUITE_PAGES)
    changed = shard_suite_page("b", 7654)
    assert "7654" in changed
    # the shard and build suites: both carry the tolerances in their meta
    assert len(data_docs._SUITE_PAGES) == len(pages_before) + 2
    assert not (not_a_folder / "cache").exists()


def static_files(site: Path) -> dict[str, bytes]:
    return {str(p.relative_to(site / "static")): p.read_bytes() for p in (site / "static").rglob("*") if p.is_file()}


def test_static_assets_are_gx_own_files_stored_once_per_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every site has GX's static assets, byte for byte; in one workdir they are hard
    links to one copy, and where links cannot be made they are GX's own copies."""
    import great_expectations

    gx_static = Path(great_expectations.__file__).parent / "render" / "view" / "static"
    expected = {str(p.relative_to(gx_static)): p.read_bytes() for p in gx_static.rglob("*") if p.is_file() and p.name != ".DS_Store"}
    assert sum(len(b) for b in expected.values()) > 1_000_000  # what each site would copy
    shard = write_shard(FAMILY_ROWS["imed"](), tmp_path / "in" / "imed.parquet")

    def site(workdir: Path, build_id: str) -> Path:
        report = gate_build([shard], family="imed", workdir=str(workdir), build_id=build_id, severity_bands=TEST_BANDS)
        assert report.passed and report.data_docs_path
        return Path(report.data_docs_path).parent

    sites = [site(tmp_path / "work", build) for build in ("a", "b")]
    for one in sites:
        assert static_files(one) == expected
    css = [one / "static" / "styles" / "data_docs_default_styles.css" for one in sites]
    assert css[0].stat().st_ino == css[1].stat().st_ino and css[0].stat().st_nlink == 3  # two sites + the shared copy
    assert (tmp_path / "work" / "cache" / "data_docs_static" / f"gx-{great_expectations.__version__}").is_dir()

    made, link = [], os.link

    def links_until_the_third(source: str, target: str) -> None:
        if len(made) == 2:
            raise OSError(18, "Invalid cross-device link")
        made.append(link(source, target))

    monkeypatch.setattr(os, "link", links_until_the_third)
    copied = site(tmp_path / "work", "c")
    assert static_files(copied) == expected
    assert all(p.stat().st_nlink == 1 for p in (copied / "static").rglob("*") if p.is_file())  # none left linked
    assert css[0].stat().st_nlink == 3


def test_views_of_a_kind_share_one_environment(tmp_path: Path) -> None:
    """GX makes new views for every site build; ours hand later ones the first one's Jinja
    environment (its loaded templates), per kind of view and custom folders."""
    data_docs.site_config(str(tmp_path))  # defines the classes GX loads by name
    page_view, index_view = (getattr(data_docs, name) for name in ("CachedTemplatesPageView", "CachedTemplatesIndexPageView"))
    pages, indexes = [page_view() for _ in range(2)], [index_view() for _ in range(2)]
    assert pages[0].env is pages[1].env and indexes[0].env is indexes[1].env
    assert pages[0].env is not indexes[0].env
    assert page_view(custom_styles_directory=str(tmp_path)).env is not pages[0].env
    assert pages[1].env.bytecode_cache is pages[0].env.bytecode_cache is not None


def test_the_gate_context_has_its_own_site_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """GX's ephemeral context would add a default site in a temporary folder it never
    writes, and say so at INFO in every build's log; the gate's context has its own site."""
    import logging

    with caplog.at_level(logging.INFO, logger="great_expectations"):
        session = gate._GxSession(str(tmp_path / "docs"))
    assert list(session.context.variables.data_docs_sites or {}) == ["medcurate_build"]
    assert not [r for r in caplog.records if "temporary directory" in r.getMessage()]
    assert gate._GxSession(None).context.variables.data_docs_sites in (None, {})


def test_a_suite_page_key_ignores_ids_and_nothing_else() -> None:
    suite = {"name": "s", "id": "1", "meta": {}, "notes": None,
             "expectations": [{"type": "expect_column_to_exist", "kwargs": {"column": "a"}, "id": "x", "_id": "y"}]}
    same = {**suite, "id": "2", "expectations": [{**suite["expectations"][0], "id": "z", "_id": "w"}]}
    other = {**suite, "expectations": [{**suite["expectations"][0], "kwargs": {"column": "b"}}]}
    key = data_docs.suite_page_key(suite, None, True)
    assert data_docs.suite_page_key(same, None, True) == key
    assert data_docs.suite_page_key(other, None, True) != key
    assert data_docs.suite_page_key(suite, None, False) != key


@pytest.mark.parametrize("name", ["scan #2 (final).parquet", "50%?.parquet", "back\\slash.parquet"])
def test_gate_page_links_reach_pages_of_shards_with_odd_names(tmp_path: Path, name: str) -> None:
    """``medcurate validate`` takes anyone's files: a '#', '?', '%', space or backslash in a
    shard's name must still give ``gate.html`` a link that leads to that shard's own page."""
    from urllib.parse import unquote, urlsplit

    rows = FAMILY_ROWS["imed"]()
    rows[2]["sample_id"] = rows[0]["sample_id"]  # not clean: the shard gets its own run, named after the file
    shard = write_shard(rows, tmp_path / "in" / name)
    report = validate_path(shard, family="imed", docs_dir=str(tmp_path / "docs"), severity_bands=TEST_BANDS)
    assert not report.passed
    page = (tmp_path / "docs" / "gate.html").read_text()
    links = [unquote(urlsplit(href).path) for href in re.findall(r'href="([^"]+)"', page) if "validations/" in href]
    own = [link for link in links if f"_{name.replace(chr(92), '_')}/" in link]  # GX takes no '\\' in a key
    assert len(own) == 1, links
    assert (tmp_path / "docs" / own[0]).is_file()
    assert all((tmp_path / "docs" / link).is_file() for link in links)
