"""Non-HSM cryptography: the one home of ``cryptography`` and of the service's own MACs and formats.

What lives here: checking the token's signatures on the generic curves independently (``signatures``:
P-256, Ed25519), the bytes an approver signs and the Ed25519 signing and checking of them
(``approver_signatures``: the server verifies, the CLI signs with the approver's local key), and the
webhook body MAC (``webhook_hmac``). The AEAD envelope that seals secret values under a per-version data
key (AES-256-GCM, format version and key id in front, the record bound in as associated data) belongs
here too when the secrets issue adds it: the DEK is unwrapped by the HSM, the sealing is done here.

What must never happen here: no PKCS#11 (keys that live in the token stay in ``signer.hsm``), no
Ethereum-specific recovery (keccak and secp256k1 recovery stay in ``signer.eth``), no I/O, no clock
reads (time is an argument), and no key material, secret, MAC or signature input in an exception
message or a log line: errors carry a stable code and a fixed text. This package sits low (only
``signer.errors`` below it) and this file imports nothing, so the REST client can import one submodule
without pulling in the server.
"""
