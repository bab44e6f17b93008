"""One module per table family: what each owns is the first paragraph of its module.

A family is a pair of small classes, ``...Reads`` bound to anything that satisfies ``tx.Statements``
(a reader or a writer) and ``...Writes`` bound to a ``tx.WriteStatements`` (a writer). A family imports
only ``signer.store.tx``, ``schema``, ``records``, ``checks`` and ``driver``: never another family, never
the commit path. Row -> record conversion lives with the table it reads.
"""
