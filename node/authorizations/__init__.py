"""Authorizations: one source of truth for "may GRANTEE see SUBJECT for SCOPE on DAY".

A subject's authorization is a signed record (``KIND_AUTHORIZATION``) in its origin's
log (platforms.md: "authorizations are records too"): ``credex authorization grant``
signs one through the node's ledger and ``end`` revokes it, so it reaches every region
by the normal path, and a record of that kind taken in from any origin counts the
same. Checks, reports and streams all ask :mod:`.held`, which reads the records the
node holds; nothing else grants leave.
"""
