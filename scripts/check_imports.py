"""Each dangerous dependency has one home: fail if any other module imports it.

import-linter checks the layers between our own packages; this checks third-party homes, which it
cannot express without listing every module. ``policy/`` may import only the standard library.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HOMES = {
    "pkcs11": ("signer/hsm/",),
    "eth_account": ("signer/eth/",),
    "eth_keys": ("signer/eth/",),
    "eth_utils": ("signer/eth/",),
    "eth_abi": ("signer/eth/",),
    "rlp": ("signer/eth/",),
    "coincurve": ("signer/eth/",),
    "Crypto": ("signer/eth/",),
    "sqlalchemy": ("signer/store/",),
    "alembic": ("signer/store/",),
    "aiosqlite": ("signer/store/",),
    "asyncpg": ("signer/store/",),
    # ...and the OpenBao KV v2 backend's client (secrets held by reference).
    "aiohttp": ("signer/app.py", "signer/http/", "signer/services/secret_backends/openbao.py"),
    # AWS Secrets Manager (secrets held by reference): SigV4 and the API, in one module.
    "boto3": ("signer/services/secret_backends/aws.py",),
    "botocore": ("signer/services/secret_backends/aws.py",),
    # The command line: server commands in signer/cli.py, API commands by resource in signer/cli_api/.
    "click": ("signer/cli.py", "signer/cli_api/"),
    # Non-HSM cryptography has one floor (signer/crypto/: signatures, approver signatures, webhook MAC,
    # and the secrets' AEAD envelope when it comes).
    "cryptography": ("signer/crypto/",),
    "nacl": ("signer/crypto/",),
    "prometheus_client": ("signer/metrics.py",),
}


def imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def main() -> int:
    problems: list[str] = []
    stdlib = set(sys.stdlib_module_names)
    for path in sorted([*ROOT.glob("signer/**/*.py"), *ROOT.glob("policy/**/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        names = imported(ast.parse(path.read_text(encoding="utf-8"), rel))
        for name in names:
            for dep, homes in HOMES.items():
                if (name == dep or name.startswith(dep + ".")) and not rel.startswith(homes):
                    problems.append(f"{rel}: imports {name}, whose only home is {', '.join(homes)}")
            if rel.startswith("policy/"):
                top = name.split(".")[0]
                if top not in stdlib and top != "policy" and top != "__future__":
                    problems.append(f"{rel}: policy/ may import only the standard library, not {name}")
    for line in sorted(set(problems)):
        print(line)
    print(f"import homes: {len(set(problems))} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
