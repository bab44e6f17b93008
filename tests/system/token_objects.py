"""The private keys on an installation's token, read in a process of its own with python-pkcs11 alone.

``python -m tests.system.token_objects`` with the installation's environment (``SOFTHSM2_CONF``,
``SIGNER_DATA_DIR``) prints the ``CKA_LABEL`` of every private key on the token ``signer``, one a line:
an independent look at the token (not through ``signer.hsm``), for the test that destroy removes the
private key. SoftHSM reads its configuration once per process, hence the process of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pkcs11
from pkcs11 import Attribute, ObjectClass

from signer.config import default_module_path


def private_key_labels(env: Mapping[str, str], tree: Path) -> set[str]:
    """The labels of the private keys on the token of the installation ``env`` describes, read by a
    process of its own started in ``tree`` (the checkout)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.system.token_objects"],
        env=dict(env),
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(done.stdout.splitlines())


def main() -> None:
    pin = (Path(os.environ["SIGNER_DATA_DIR"]) / "hsm-user-pin").read_text(encoding="utf-8").strip()
    token = pkcs11.lib(default_module_path()).get_token(token_label="signer")
    with token.open(user_pin=pin) as session:
        for key in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}):
            print(key[Attribute.LABEL])


if __name__ == "__main__":
    main()
