// ethers v6's JsonRpcSigner pointed at the signer's JSON-RPC endpoint (bearer token in a header), with
// anvil as the chain: signs a transaction that anvil mines, a message and typed data that ethers verifies,
// and reports how a policy denial and an approval wait reach it. Prints one JSON object; the Python test judges it.
import { ethers } from "ethers";

const { SIGNER_RPC_URL, SIGNER_TOKEN, ANVIL_URL, SIGNER_ADDRESS, DENIED_CHAIN_ID } = process.env;
const node = new ethers.JsonRpcProvider(ANVIL_URL);
const { chainId } = await node.getNetwork();
const request = new ethers.FetchRequest(SIGNER_RPC_URL);
request.setHeader("Authorization", `Bearer ${SIGNER_TOKEN}`);
const network = ethers.Network.from(chainId);
const provider = new ethers.JsonRpcProvider(request, network, { staticNetwork: network });
const signer = new ethers.JsonRpcSigner(provider, SIGNER_ADDRESS);
const out = {};

out.accounts = await provider.send("eth_accounts", []);
const recipient = ethers.Wallet.createRandom().address;
const fees = await node.getFeeData();
const raw = await signer.signTransaction({
  type: 2, chainId, to: recipient, value: 12345n, gasLimit: 21000n,
  nonce: await node.getTransactionCount(SIGNER_ADDRESS),
  maxFeePerGas: fees.maxFeePerGas, maxPriorityFeePerGas: fees.maxPriorityFeePerGas,
});
out.recoveredFrom = ethers.Transaction.from(raw).from;
const receipt = await (await node.broadcastTransaction(raw)).wait();
out.receiptStatus = receipt.status;
out.recipientBalance = (await node.getBalance(recipient)).toString();

const domain = { name: "Ether Mail", version: "1", chainId, verifyingContract: "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC" };
const types = { Mail: [{ name: "from", type: "string" }, { name: "contents", type: "string" }] };
const value = { from: "Cow", contents: "Hello, Bob!" };
const typedSignature = await signer.signTypedData(domain, types, value);
out.typedDataSigner = ethers.verifyTypedData(domain, types, value, typedSignature);
out.messageSigner = ethers.verifyMessage("hello relayer", await signer.signMessage("hello relayer"));

try {
  await signer.signTransaction({ type: 2, chainId: BigInt(DENIED_CHAIN_ID), to: recipient, value: 1n, gasLimit: 21000n,
    nonce: 0, maxFeePerGas: 1n, maxPriorityFeePerGas: 1n });
  out.denied = null;
} catch (error) {
  const rpcError = error.error ?? error.info?.error ?? {};
  out.denied = { code: rpcError.code, message: rpcError.message, data: rpcError.data };
}
try {
  await signer.signTransaction({ type: 2, chainId, to: recipient, value: 10n ** 18n, gasLimit: 21000n,
    nonce: 0, maxFeePerGas: 1n, maxPriorityFeePerGas: 1n });
  out.waiting = null;
} catch (error) {
  const rpcError = error.error ?? error.info?.error ?? {};
  out.waiting = { code: rpcError.code, message: rpcError.message, data: rpcError.data };
}
console.log(JSON.stringify(out));
