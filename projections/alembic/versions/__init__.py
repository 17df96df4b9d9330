"""The revisions, oldest first: ``v0001`` to ``v0005`` match the old ledger's versions 1 to 5."""
