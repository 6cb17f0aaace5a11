"""Versioned datasets for training jobs: ``open_catalog()`` is the entry point."""

from catalogs.catalog import CatalogError, DatasetCatalog, PublishResult, VersionInfo, open_catalog

__all__ = ["CatalogError", "DatasetCatalog", "PublishResult", "VersionInfo", "open_catalog"]
