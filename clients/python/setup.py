"""Packages the client's modules from the repository's signer/ tree (two levels up), nothing else.

setuptools refuses package directories outside the project, so ``build_py`` copies the listed modules
from the tree into the wheel itself: the files are the server's, never a copy kept here.
"""

import shutil
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parents[2]
# The modules signer.client and signer.cli_api.standalone import, and nothing of the server; ``policy`` is pure
# standard library (names, canonical JSON for the offline audit check).
MODULES = {
    "signer": [
        *("__init__", "client", "errors", "secret_value", "secret_refs"),
        *("audit", "audit_note", "audit_tree", "audit_verify"),
    ],
    "signer/crypto": ["__init__", "approver_signatures", "signatures"],
    "signer/cli_api": [p.stem for p in sorted((ROOT / "signer" / "cli_api").glob("*.py"))],
    "policy": [p.stem for p in sorted((ROOT / "policy").glob("*.py"))],
}


class BuildClient(build_py):
    def run(self) -> None:
        for folder, names in MODULES.items():
            target = Path(self.build_lib, folder)
            target.mkdir(parents=True, exist_ok=True)
            for name in names:
                shutil.copyfile(ROOT / folder / f"{name}.py", target / f"{name}.py")
        for typed in ("signer", "policy"):
            shutil.copyfile(ROOT / typed / "py.typed", Path(self.build_lib, typed, "py.typed"))


class ClientDistribution(Distribution):
    def has_pure_modules(self) -> bool:  # what build_py copies is not found by setuptools
        return True


setup(packages=[], distclass=ClientDistribution, cmdclass={"build_py": BuildClient})
