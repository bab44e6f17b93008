// The console's only script: sign a vote in the browser before its form is sent.
// Ed25519 with WebCrypto (the private key is typed into this page and never leaves it), or secp256k1
// through an injected wallet (EIP-191 personal_sign). The signed bytes are the ones the CLI signs:
// "signer-approval:v1:<id>:<approve|reject>:<digest>". Without this script the forms still work,
// unsigned.
"use strict";
(function () {
  const box = document.getElementById("sign-box");
  if (!box) {
    return;
  }
  const status = document.getElementById("sign-status");
  const toHex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  const fromHex = (text) => new Uint8Array(text.match(/../g).map((pair) => parseInt(pair, 16)));
  // PKCS#8 wrapping of a raw 32-byte Ed25519 seed (RFC 8410).
  const PKCS8_ED25519 = "302e020100300506032b657004220420";

  async function signEd25519(message) {
    const seed = document.getElementById("ed25519-seed").value.trim().replace(/^0x/i, "");
    if (!/^[0-9a-fA-F]{64}$/.test(seed)) {
      throw new Error("The Ed25519 private key must be 64 hex digits.");
    }
    const key = await crypto.subtle.importKey("pkcs8", fromHex(PKCS8_ED25519 + seed), { name: "Ed25519" }, false, ["sign"]);
    return toHex(await crypto.subtle.sign({ name: "Ed25519" }, key, message));
  }

  async function signWallet(message) {
    if (!window.ethereum || typeof window.ethereum.request !== "function") {
      throw new Error("No browser wallet is available to sign with.");
    }
    const accounts = await window.ethereum.request({ method: "eth_requestAccounts" });
    const signature = await window.ethereum.request({ method: "personal_sign", params: ["0x" + toHex(message), accounts[0]] });
    return String(signature).replace(/^0x/i, "");
  }

  document.querySelectorAll("form.vote").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      const field = form.querySelector("input[name=signature]");
      if (!document.getElementById("sign-vote").checked || field.value) {
        return;
      }
      event.preventDefault();
      status.textContent = "";
      const text = ["signer-approval", "v1", box.dataset.approval, form.dataset.decision, box.dataset.digest].join(":");
      const message = new TextEncoder().encode(text);
      try {
        field.value = box.dataset.scheme === "ed25519" ? await signEd25519(message) : await signWallet(message);
      } catch (error) {
        status.textContent = "Not signed: " + (error && error.message ? error.message : String(error));
        return;
      }
      form.submit();
    });
  });
}());
