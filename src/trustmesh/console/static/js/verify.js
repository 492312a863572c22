// Verify ledger entries in the browser: RFC 9162 inclusion proofs and C2SP signed-note checkpoints.
//
// Nothing here trusts the server's own claims: the leaf hash is recomputed from the entry bytes
// (SHA-256(0x00 || bytes), RFC 6962 §2.1), the audit path is walked to a root (RFC 9162 §2.1.3.2),
// and that root must equal the one in a checkpoint whose Ed25519 note signature verifies under the
// log key (c2sp.org/signed-note, c2sp.org/tlog-checkpoint). The log key is pinned on first use.
// Every check throws VerifyError; a function that returns normally means "verified".

export class VerifyError extends Error {
  constructor(step, message) {
    super(message);
    this.step = step;
  }
}

const enc = new TextEncoder();

export function b64decode(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** RFC 6962 leaf hash: SHA-256(0x00 || entry). */
export async function leafHash(entryBytes) {
  return sha256(concat(new Uint8Array([0]), entryBytes));
}

/** RFC 6962 interior node hash: SHA-256(0x01 || left || right). */
export async function nodeHash(left, right) {
  return sha256(concat(new Uint8Array([1]), left, right));
}

/**
 * Walk an RFC 9162 §2.1.3.2 inclusion proof; return the root it leads to (and the steps, for display).
 * BigInt arithmetic: indices are uint64 on the wire.
 */
export async function rootFromInclusionProof(index, size, leaf, path) {
  let fn = BigInt(index);
  let sn = BigInt(size) - 1n;
  if (fn > sn) throw new VerifyError("proof", `leaf index ${index} is not below tree size ${size}`);
  if (leaf.length !== 32) throw new VerifyError("proof", "the leaf hash is not 32 bytes");
  let r = leaf;
  const steps = [];
  for (const p of path) {
    if (p.length !== 32) throw new VerifyError("proof", "a proof hash is not 32 bytes");
    if (sn === 0n) throw new VerifyError("proof", "the audit path is longer than the tree allows");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      steps.push({ side: "left", sibling: hex(p), result: hex(r) });
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = await nodeHash(r, p);
      steps.push({ side: "right", sibling: hex(p), result: hex(r) });
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new VerifyError("proof", "the audit path is shorter than the tree needs");
  return { root: r, steps };
}

/** Check that `leaf` is leaf `index` of the tree of `size` with root `root` (RFC 9162 §2.1.3.2); throw if not. */
export async function verifyInclusion(index, size, leaf, path, root) {
  if (root.length !== 32) throw new VerifyError("root", "the root hash is not 32 bytes");
  const walked = await rootFromInclusionProof(index, size, leaf, path);
  if (!equal(walked.root, root)) {
    throw new VerifyError("root", `the entry and its ${walked.steps.length}-hash audit path lead to ${hex(walked.root).slice(0, 16)}..., ` +
      `not the signed root ${hex(root).slice(0, 16)}...: the entry was altered or the proof is wrong`);
  }
  return walked;
}

/** Parse a verifier key `name+hexid+base64(0x01 || pubkey)` and check its key id. */
export async function parseVerifierKey(vkey) {
  // split on the first two "+" only: the base64 key may itself contain "+"
  const text = vkey.trim();
  const a = text.indexOf("+");
  const b = a < 0 ? -1 : text.indexOf("+", a + 1);
  if (a <= 0 || b < 0) throw new VerifyError("key", "the log key is not name+hash+key");
  const name = text.slice(0, a);
  const hexid = text.slice(a + 1, b);
  const blob = text.slice(b + 1);
  const raw = b64decode(blob);
  if (hexid.length !== 8 || raw.length !== 33) throw new VerifyError("key", "the log key has a bad hash or length");
  if (raw[0] !== 0x01) throw new VerifyError("key", `the log key is of type 0x${raw[0].toString(16)}, not Ed25519 (0x01)`);
  const id = (await sha256(concat(enc.encode(name), new Uint8Array([0x0a]), raw))).slice(0, 4);
  if (hex(id) !== hexid.toLowerCase()) throw new VerifyError("key", "the log key's hash does not match the key");
  return { name, keyId: id, publicKey: raw.slice(1) };
}

/** Split a signed note into its text (ending in a newline) and signature lines. */
export function parseNote(noteText) {
  if (!noteText.endsWith("\n")) throw new VerifyError("checkpoint", "the signed note does not end with a newline");
  const split = noteText.lastIndexOf("\n\n");
  if (split < 0) throw new VerifyError("checkpoint", "the signed note has no blank line before its signatures");
  const text = noteText.slice(0, split + 1);
  const sigs = noteText.slice(split + 2).split("\n").slice(0, -1).map((line) => {
    if (!line.startsWith("\u2014 ")) throw new VerifyError("checkpoint", `malformed signature line ${line.slice(0, 40)}`);
    const rest = line.slice(2);
    const space = rest.indexOf(" ");
    if (space <= 0) throw new VerifyError("checkpoint", "malformed signature line");
    const raw = b64decode(rest.slice(space + 1));
    if (raw.length < 5) throw new VerifyError("checkpoint", "a signature is too short");
    return { name: rest.slice(0, space), keyId: raw.slice(0, 4), signature: raw.slice(4) };
  });
  if (!sigs.length) throw new VerifyError("checkpoint", "the signed note has no signatures");
  return { text, sigs };
}

/** Parse a checkpoint body: origin, decimal size, base64 root hash, optional extension lines. */
export function parseCheckpointBody(text) {
  const lines = text.split("\n").slice(0, -1);
  if (lines.length < 3) throw new VerifyError("checkpoint", "the checkpoint needs origin, size and root lines");
  const [origin, sizeLine, rootLine] = lines;
  if (!/^(0|[1-9][0-9]{0,19})$/.test(sizeLine)) throw new VerifyError("checkpoint", "the checkpoint size is not a decimal");
  const root = b64decode(rootLine);
  if (root.length !== 32) throw new VerifyError("checkpoint", "the checkpoint root is not 32 bytes");
  return { origin, size: BigInt(sizeLine), root };
}

/** Check the log's Ed25519 signature on a checkpoint note (WebCrypto Ed25519); return its body. */
export async function verifyCheckpoint(noteText, vkey) {
  const key = await parseVerifierKey(vkey);
  const note = parseNote(noteText);
  const body = parseCheckpointBody(note.text);
  if (body.origin !== key.name) {
    throw new VerifyError("checkpoint", `checkpoint origin ${body.origin} is not the log key's name ${key.name}`);
  }
  const mine = note.sigs.filter((s) => s.name === key.name && equal(s.keyId, key.keyId));
  if (!mine.length) throw new VerifyError("signature", `the checkpoint carries no signature by ${key.name}`);
  let cryptoKey;
  try {
    cryptoKey = await crypto.subtle.importKey("raw", key.publicKey, { name: "Ed25519" }, false, ["verify"]);
  } catch (err) {
    throw new VerifyError("signature", `this browser cannot verify Ed25519 (${err.message})`);
  }
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, cryptoKey, mine[0].signature, enc.encode(note.text));
  if (!ok) throw new VerifyError("signature", "the checkpoint signature does not verify under the log key");
  return body;
}

/**
 * Verify one served entry: `{index, entry_b64, proof, checkpoint, log_key}` from /api/v1/ledger/entries/N.
 * `trustedKey` is the pinned log key. Returns a report; throws VerifyError at the first failure, with
 * `err.report` holding the steps that did pass.
 */
export async function verifyEntry(doc, trustedKey) {
  const report = { index: doc.index, steps: [] };
  const step = (name, detail) => report.steps.push({ name, ok: true, detail });
  try {
    if (trustedKey && trustedKey.trim() !== doc.log_key.trim()) {
      throw new VerifyError("key", "the server's log key is not the pinned key (pinned on first use; reset it only if you know why)");
    }
    const body = await verifyCheckpoint(doc.checkpoint, trustedKey || doc.log_key);
    step("checkpoint", `Ed25519 signature by ${doc.log_key.split("+")[0]} verifies; tree size ${body.size}`);
    const bytes = b64decode(doc.entry_b64);
    const leaf = await leafHash(bytes);
    report.leafHash = hex(leaf);
    step("leaf", `SHA-256(0x00 || ${bytes.length} entry bytes) = ${hex(leaf).slice(0, 16)}...`);
    const proof = doc.proof;
    if (BigInt(proof.treeSize) !== body.size) {
      throw new VerifyError("proof", `the proof is for size ${proof.treeSize}, the checkpoint for ${body.size}`);
    }
    if (proof.leafIdx !== doc.index) throw new VerifyError("proof", "the proof is for another leaf");
    report.checkpointRoot = hex(body.root);
    const path = proof.proof.map(b64decode);
    const { root, steps } = await rootFromInclusionProof(proof.leafIdx, proof.treeSize, leaf, path);
    report.pathSteps = steps;
    report.computedRoot = hex(root);
    await verifyInclusion(proof.leafIdx, proof.treeSize, leaf, path, body.root);
    step("inclusion", `${steps.length} hashes lead to the signed root ${hex(root).slice(0, 16)}...`);
    return report;
  } catch (err) {
    if (err instanceof VerifyError) err.report = report;
    throw err;
  }
}
