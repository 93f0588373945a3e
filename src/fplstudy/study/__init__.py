"""The study: params, the worker pool, provenance, tables, findings, statistics, scale, dropout sweep."""
