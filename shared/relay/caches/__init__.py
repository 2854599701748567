"""The GET side's pre-generated caches (PROTOCOL.md §11.6), built once and never changed.

A cache holds the objects of one endpoint whose local time falls in one window; once built, its
files never change, so a remote that took a cache never reads it again, and a generation builds
only what is new since the last. The pieces, each its own module::

    relay.caches.plan    which windows a generation covers, merges and retires (pure)
    relay.caches.files   a cache's signed files from the objects' stored bytes (pure)
    relay.caches.build   reading one window from the store and building its cache; the export

The gateway holding the builder lease runs the generations and keeps the caches in PostgreSQL
(``relay.db.caches``); every gateway replica serves them. ``mimrelay export-static`` writes the
same files to disk.
"""

__all__: list[str] = []  # the pieces are the submodules
