"""The gate's GX Data Docs: the site's configuration, the views and section builder it
renders through, and ``gate.html``, the static summary that links every validation page.

GX renders every page. What is ours is only that a build does not redo work an earlier
build of this process or machine already did, which GX's site builder redoes for every
``build_data_docs`` call (measured in docs/benchmarks.md, "Quality gate"):

* **Templates compile once per machine.** GX makes new views, each with a new Jinja
  environment, for every call, and every environment compiled GX's ~50 templates again:
  two thirds of a warm build's Data Docs time, and ~0.1 s of a process's first build
  (every nightly run is a process of its own). The views here share one environment per
  process, whose compiled templates are kept in memory and, through Jinja's bytecode
  cache, under ``$XDG_CACHE_HOME/medcurate/data_docs/jinja`` for the next process.
* **An unchanged suite's page is rendered once per machine.** Suites are declared in
  code; a build renders the same two or three suite pages as the build before, which
  differ only in a time-stamped cache-buster on GX's remote logo. The page of a suite
  already rendered (same expectations, kwargs, ``mostly``, meta; GX version) is reused.
* **The static assets are stored once per workdir.** Every site holds GX's 4 MB of CSS,
  fonts and scripts; GX copies them into each build's site (~20 MB a night for five
  nightly datasets, kept with every run). They are hard links to one copy under
  ``<workdir>/cache/data_docs_static`` instead, where the filesystem allows it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from typing import Any

import fsspec

from curation.hash_cache import user_cache_dir

logger = logging.getLogger(__name__)

#: module and class names GX's site builder loads our views and section builder by
#: (``module_name`` / ``class_name`` in the site config: GX's own extension point)
_PAGE_VIEW = "CachedTemplatesPageView"
_INDEX_VIEW = "CachedTemplatesIndexPageView"
_SUITE_SECTION = "ReusedSuitePagesSectionBuilder"
_SITE_BUILDER = "LinkedStaticAssetsSiteBuilder"

#: part of every cached suite page's key: change it when a change here changes a page
SUITE_PAGES_VERSION = "1"

#: this process's compiled templates (Jinja bucket key -> bytecode) and rendered suite
#: pages (:func:`suite_page_key` -> HTML); both also kept under :func:`cache_dir`
_COMPILED_TEMPLATES: dict[str, bytes] = {}
_SUITE_PAGES: dict[str, str] = {}


def cache_dir() -> str:
    """Where compiled templates and rendered suite pages are kept between processes
    (safe to delete; an unwritable folder only leaves the caches to the process)."""
    return user_cache_dir("data_docs")


def site_config(docs_dir: str, shared_static_dir: str | None = None) -> dict[str, Any]:
    """The Data Docs site of one gate run: suite and validation pages rendered through
    the shared-template views, suite pages through ``ReusedSuitePagesSectionBuilder``;
    no profiling section (the gate never profiles). With ``shared_static_dir`` (a local
    folder), the static assets are hard links to one copy there (:func:`link_static_assets`)."""
    _register_gx_classes()
    page_view = {"module_name": __name__, "class_name": _PAGE_VIEW}
    return {
        "module_name": __name__,
        "class_name": _SITE_BUILDER,
        "shared_static_dir": shared_static_dir,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
        "site_index_builder": {
            "class_name": "DefaultSiteIndexBuilder",
            "view": {"module_name": __name__, "class_name": _INDEX_VIEW},
        },
        "site_section_builders": {
            "expectations": {"module_name": __name__, "class_name": _SUITE_SECTION, "view": page_view},
            "validations": {"view": page_view},
            "profiling": "0",
        },
    }


def _read_cached(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _write_cached(path: str, data: bytes) -> None:
    """Best effort: a temporary name, then a rename (a reader never sees half a file);
    a cache that cannot be written is only a slower next process."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        logger.debug("Data Docs cache not written (%s): %s", path, exc)
        with contextlib.suppress(OSError):
            os.remove(tmp)


def link_static_assets(site_dir: str, shared_static_dir: str) -> bool:
    """Fill ``<site_dir>/static`` with hard links to one copy of GX's static assets in
    ``shared_static_dir`` (made on first use, per GX version). False, leaving GX to copy
    them, where a link cannot be made (another device, a filesystem without hard links).

    The assets are the same for every site of a GX version and no page writes to them,
    so sharing their bytes changes nothing a reader sees; a site moved or archived
    elsewhere takes its files along like any other (a hard link is a file)."""
    import great_expectations

    source = os.path.join(os.path.dirname(great_expectations.__file__), "render", "view", "static")
    shared = os.path.join(shared_static_dir, f"gx-{great_expectations.__version__}")
    try:
        if not os.path.isdir(shared):
            tmp = f"{shared}.tmp-{uuid.uuid4().hex}"
            shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(".DS_Store"))
            try:
                os.rename(tmp, shared)
            except OSError:  # another build made it first
                shutil.rmtree(tmp, ignore_errors=True)
        for folder, _, files in os.walk(shared):
            target = os.path.join(site_dir, "static", os.path.relpath(folder, shared))
            os.makedirs(target, exist_ok=True)
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(target, name))
                os.link(os.path.join(folder, name), os.path.join(target, name))
    except OSError as exc:
        logger.debug("Data Docs static assets copied, not linked (%s): %s", site_dir, exc)
        # GX's copy writes into existing files: a link made before the failure would
        # have it write through to the shared copy
        shutil.rmtree(os.path.join(site_dir, "static"), ignore_errors=True)
        return False
    return True


def suite_page_key(suite: dict[str, Any], data_context_id: Any, show_how_to_buttons: bool) -> str:
    """What a suite page shows depends on: the suite without its ids (GX gives the suite
    and each expectation a new random id in each context; the page shows none), GX's
    version (its renderers and templates), and the two site options the view is given."""
    import great_expectations

    ids = ("id", "_id")
    content = {k: v for k, v in suite.items() if k not in ids}
    content["expectations"] = [{k: v for k, v in e.items() if k not in ids} for e in suite.get("expectations", [])]
    text = json.dumps(
        [content, great_expectations.__version__, SUITE_PAGES_VERSION, str(data_context_id), show_how_to_buttons],
        sort_keys=True, default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _register_gx_classes() -> None:
    """Define, once per process, the views and the section builder the site config names.
    They subclass GX, so they are made after GX is imported, not at module import."""
    if _PAGE_VIEW in globals():
        return
    import jinja2
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.data_context.types.resource_identifiers import SiteSectionIdentifier
    from great_expectations.render.renderer.site_builder import (
        DefaultSiteSectionBuilder,
        SiteBuilder,
    )
    from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView

    class MachineBytecodeCache(jinja2.BytecodeCache):
        """Compiled templates in memory for this process, and on disk for the next one.
        Jinja keys them by template name and file, and a bucket drops bytecode whose
        template source or Python version differs, so a changed template recompiles."""

        def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            code = _COMPILED_TEMPLATES.get(bucket.key) or _read_cached(os.path.join(cache_dir(), "jinja", bucket.key))
            if code is not None:
                bucket.bytecode_from_string(code)  # resets itself if stale

        def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            code = bucket.bytecode_to_string()
            _COMPILED_TEMPLATES[bucket.key] = code
            _write_cached(os.path.join(cache_dir(), "jinja", bucket.key), code)

    bytecode = MachineBytecodeCache()
    first_views: dict[tuple[type, str | None, str | None], Any] = {}

    class SharedEnvironment:
        """Every view of a kind gets the environment of the first (a view's state is its
        environment and its two folders; GX binds the environment's filters to the view
        that made it, which renders the same), with the bytecode cache above."""

        env: Any

        def __init__(self, custom_styles_directory: str | None = None, custom_views_directory: str | None = None):
            key = (type(self), custom_styles_directory, custom_views_directory)
            first = first_views.get(key)
            if first is None:
                super().__init__(custom_styles_directory, custom_views_directory)  # type: ignore[call-arg]
                self.env.bytecode_cache = bytecode
                first_views[key] = self
            else:
                self.custom_styles_directory, self.custom_views_directory = custom_styles_directory, custom_views_directory
                self.env = first.env

    class CachedTemplatesPageView(SharedEnvironment, DefaultJinjaPageView):  # type: ignore[misc]
        pass

    class CachedTemplatesIndexPageView(SharedEnvironment, DefaultJinjaIndexPageView):  # type: ignore[misc]
        pass

    class ReusedSuitePagesSectionBuilder(DefaultSiteSectionBuilder):  # type: ignore[misc]
        """GX's section builder for suite pages, rendering a page only for a suite no
        earlier build rendered (:func:`suite_page_key`); the page is otherwise GX's,
        made by the same renderer and view calls as ``DefaultSiteSectionBuilder.build``."""

        def build(self, resource_identifiers: Any = None) -> None:
            for key in self.source_store.list_keys():
                if resource_identifiers and key not in resource_identifiers:
                    continue
                suite = self.source_store.get(key)
                page_key = suite_page_key(suite, self.data_context_id, self.show_how_to_buttons)
                path = os.path.join(cache_dir(), "suite_pages", f"{page_key}.html")
                page = _SUITE_PAGES.get(page_key)
                if page is None and (cached := _read_cached(path)) is not None:
                    page = cached.decode()
                if page is None:
                    try:
                        html = self.view_class.render(
                            self.renderer_class.render(ExpectationSuite(**suite)),
                            data_context_id=self.data_context_id, show_how_to_buttons=self.show_how_to_buttons,
                        )
                    except Exception:  # GX's builder logs a page it cannot render and goes on
                        logger.exception("Data Docs: the page of suite %s could not be rendered", key.name)
                        continue
                    page = html
                    _write_cached(path, page.encode())
                _SUITE_PAGES[page_key] = page
                self.target_store.set(SiteSectionIdentifier(site_section_name=self.name, resource_identifier=key), page)

    class LinkedStaticAssetsSiteBuilder(SiteBuilder):  # type: ignore[misc]
        """GX's site builder, with the static assets linked rather than copied where
        ``shared_static_dir`` is given and the filesystem allows (:func:`link_static_assets`)."""

        # GX passes a builder only the runtime values its ``__init__`` names: name them all
        def __init__(  # noqa: PLR0913
            self, data_context: Any, store_backend: dict[str, Any], site_name: str | None = None,
            site_index_builder: Any = None, show_how_to_buttons: bool = True, site_section_builders: Any = None,
            runtime_environment: Any = None, cloud_mode: bool = False, shared_static_dir: str | None = None,
            **kwargs: Any,
        ):
            super().__init__(
                data_context, store_backend, site_name=site_name, site_index_builder=site_index_builder,
                show_how_to_buttons=show_how_to_buttons, site_section_builders=site_section_builders,
                runtime_environment=runtime_environment, cloud_mode=cloud_mode, **kwargs,
            )
            if shared_static_dir is None:
                return
            site_dir, copy_by_gx = store_backend["base_directory"], self.target_store.copy_static_assets

            def link_or_copy(static_assets_source_dir: str | None = None) -> None:
                # GX's copy recurses into sub-folders through this attribute, with the folder
                if static_assets_source_dir is not None or not link_static_assets(site_dir, shared_static_dir):
                    copy_by_gx(static_assets_source_dir)

            self.target_store.copy_static_assets = link_or_copy  # type: ignore[method-assign]

    globals()[_SITE_BUILDER] = LinkedStaticAssetsSiteBuilder
    globals()[_INDEX_VIEW] = CachedTemplatesIndexPageView
    globals()[_PAGE_VIEW] = CachedTemplatesPageView
    globals()[_SUITE_SECTION] = ReusedSuitePagesSectionBuilder


def write_gate_page(
    docs_dir: str, title: str, verdict: str, failures: list[str], runs: list[tuple[str, str, str, bool]]
) -> None:
    """``gate.html``: the decision, the failed expectations and a table linking each
    validation page (GX's own index lists runs with JavaScript from CDNs, so it shows no
    table offline; the per-validation pages are static HTML)."""
    from html import escape
    from urllib.parse import quote

    fs, root = fsspec.core.url_to_fs(docs_dir)
    pages = [p for p in fs.glob(f"{root}/validations/**/*.html")]
    rows = []
    for label, scope, suite, success in runs:
        page = next((p for p in pages if f"/{label}/" in p), None)  # .../<run name>/<run time>/<batch>.html
        # a path made a URL: a '#', '?' or '%' in a shard's name is part of the file name
        link = escape(quote(os.path.relpath(page, root), safe="/+")) if page else ""
        status = "passed" if success else "FAILED"
        cell = f'<a href="{link}">{escape(suite)}</a>' if link else escape(suite)
        rows.append(f"<tr class='{status.lower()}'><td>{escape(scope)}</td><td>{cell}</td><td>{status}</td></tr>")
    items = "".join(f"<li>{escape(f)}</li>" for f in failures) or "<li>none</li>"
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>" + escape(title) + "</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px}"
        "table{border-collapse:collapse}.failed{background:#fdd}.passed{background:#dfd}</style></head><body>"
        f"<h1>{escape(title)}</h1><h2>Decision: {escape(verdict)}</h2>"
        f"<h2>Failed expectations</h2><ul>{items}</ul>"
        "<h2>Validations</h2><table><tr><th>scope</th><th>suite</th><th>result</th></tr>"
        + "".join(rows)
        + "</table><p><a href='index.html'>Great Expectations Data Docs index</a></p></body></html>"
    )
    with fs.open(f"{root}/gate.html", "w") as handle:
        handle.write(html)
