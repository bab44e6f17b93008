"""The store's contract: one module per table family (``signer/store/tables/*``, ``signer/store/ledger.py``).

Every test takes the ``store`` fixture (tests/dbfixtures.py), so it runs on SQLite and on PostgreSQL;
with ``SIGNER_TEST_PG_URL`` set but unreachable the PostgreSQL cases fail rather than skip. A family's
file uses that family and only the rows its foreign keys need, so a table can be read and tested on its
own: ``pytest tests/store/contract/test_keys.py``.
"""
