"""Herald's Alembic environment: ``env.py`` and the ordered revisions in ``versions/``.

Kept inside the package so an installed Herald (the image) migrates its own database
without an ``alembic.ini``: ``projections.migrations`` configures Alembic in code and
runs it on the caller's connection. A new schema change is a new file in ``versions/``
(``python -m projections.migrations revision "what changes"`` writes it from the models).
"""
