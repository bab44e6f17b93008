"""Services: the operations the API offers, each deciding, acting and auditing in one place.

Handlers call exactly one service method per request. Services own the clock and the database
transactions; they ask ``policy`` for decisions, ``signer.hsm`` for signatures, ``signer.eth`` for
encoding, and record every decision and change through ``signer.store`` in the same transaction as the
change itself.
"""
