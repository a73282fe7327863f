"""The dashboard: compact view data built from pipeline tables, a static site, and a safe server.

- ``extraction``, ``steering``, ``monitoring``, ``model_diff``: pure functions turning the tables the
  stages wrote (DataFrames, dicts) into the small JSON-able dicts each page draws. Nothing here
  reads activations; per-token data is the projection table's, one small file per prompt.
- ``site``: writes the site (``web/`` assets + ``data/<key>.js``) atomically. Each data file is one
  JSON value wrapped as ``TI.receive("<key>", <json>);`` so pages load it with a ``<script>`` tag
  from ``http://`` and from ``file://`` alike (browsers block ``fetch()`` on ``file://``).
- ``server``: serves one built folder on 127.0.0.1 (no listings, no dotfiles, 404 for any path
  that escapes the folder, symlinks included).
"""
