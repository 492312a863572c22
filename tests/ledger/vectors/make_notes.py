"""Regenerate notes.json: signed-note cases (valid, invalid, edge) with what Go's note.Open says.

Keys come from fixed seeds, so the file is reproducible. Expectations are written by hand from the
rules of golang.org/x/mod/sumdb/note (note.go, Open and isValidName); tests/ledger/test_note_vectors.py
checks both trustmesh and Go against them. Run: python tests/ledger/vectors/make_notes.py
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trustmesh.ledger import Checkpoint, NoteSigner
from trustmesh.ledger._note import ALG_COSIGNATURE_V1, cosigned_message

OUT = Path(__file__).with_name("notes.json")
DASH = "\u2014 "


def _signer(name: str, seed: int, alg: int = 0x01) -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32), alg)


A = _signer("a.example/log", 1)
B = _signer("b.example/log", 2)
W = _signer("witness.example/w1", 3, ALG_COSIGNATURE_V1)
U = _signer("exämple.org/ünïcode", 4)
TEXT = "hello, note\n"


def line(name: str, kid: int, sig: bytes) -> str:
    return f"{DASH}{name} {base64.b64encode(struct.pack('>I', kid) + sig).decode()}\n"


def sig_line(s: NoteSigner, text: str) -> str:
    return line(s.name, s.verifier.key_id, s.sign(text.encode()))


def cosig_line(s: NoteSigner, text: str, ts: int = 1_700_000_000) -> str:
    return line(s.name, s.verifier.key_id, struct.pack(">Q", ts) + s.sign(cosigned_message(text, ts)))


def note(text: str, *lines: str) -> bytes:
    return (text + "\n" + "".join(lines)).encode()


def main() -> None:
    cp = Checkpoint.signed("a.example/log", 20852163, bytes(range(32)), A)
    body = cp.body()
    good = sig_line(A, TEXT)
    bad = line(A.name, A.verifier.key_id, b"\x07" * 64)
    raw_b64 = good.split(" ")[-1].strip()
    # 68 bytes -> 92 base64 chars ending in one '='; the char before it carries 2 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = raw_b64[-2]
    tweaked = raw_b64[:-2] + alphabet[alphabet.index(last) | 0b11] + "="
    ka, kb, kw, ku = (s.verifier.to_vkey() for s in (A, B, W, U))
    cases: list[tuple[str, bytes, list[str], str, list[str]]] = [
        ("ok_single", note(TEXT, good), [ka], "ok", [A.name]),
        ("ok_checkpoint", cp.to_bytes(), [ka], "ok", [A.name]),
        ("ok_unknown_signer_ignored", note(TEXT, sig_line(B, TEXT), good), [ka], "ok", [A.name]),
        ("ok_two_known_signers", note(TEXT, good, sig_line(B, TEXT)), [ka, kb], "ok", [A.name, B.name]),
        ("ok_good_then_bad_duplicate", note(TEXT, good, bad), [ka], "ok", [A.name]),
        ("ok_identical_duplicate", note(TEXT, good, good), [ka], "ok", [A.name]),
        ("ok_cosigned_checkpoint", note(body, sig_line(A, body), cosig_line(W, body)), [ka, kw], "ok", [A.name, W.name]),
        ("ok_cosignature_key_only", note(body, sig_line(A, body), cosig_line(W, body)), [kw], "ok", [W.name]),
        ("ok_unicode_name", note(TEXT, sig_line(U, TEXT)), [ku], "ok", [U.name]),
        ("ok_nbsp_and_u2028_in_text", note("a\u00a0b\u2028c\n", sig_line(A, "a\u00a0b\u2028c\n")), [ka], "ok", [A.name]),
        ("ok_bom_and_del_in_text", note("\ufeffx\x7fy\n", sig_line(A, "\ufeffx\x7fy\n")), [ka], "ok", [A.name]),
        ("ok_text_is_one_newline", note("\n", sig_line(A, "\n")), [ka], "ok", [A.name]),
        ("ok_blank_lines_inside_text", note("a\n\nb\n", sig_line(A, "a\n\nb\n")), [ka], "ok", [A.name]),
        ("ok_nonzero_base64_trailing_bits", note(TEXT, f"{DASH}{A.name} {tweaked}\n"), [ka], "ok", [A.name]),
        ("ok_100_signature_lines", note(TEXT, good, *[line(f"x{i}.example", i, b"\0" * 64) for i in range(99)]), [ka], "ok", [A.name]),
        ("malformed_101_signature_lines", note(TEXT, good, *[line(f"x{i}.example", i, b"\0" * 64) for i in range(100)]), [ka], "malformed", []),
        ("malformed_name_nbsp", note(TEXT, good, line("a\u00a0b", 1, b"\0" * 64)), [ka], "malformed", []),
        ("malformed_name_u2028", note(TEXT, good, line("a\u2028b", 1, b"\0" * 64)), [ka], "malformed", []),
        ("malformed_name_u0085", note(TEXT, good, line("a\u0085b", 1, b"\0" * 64)), [ka], "malformed", []),
        ("malformed_name_u3000", note(TEXT, good, line("a\u3000b", 1, b"\0" * 64)), [ka], "malformed", []),
        ("malformed_name_u2009", note(TEXT, good, line("a\u2009b", 1, b"\0" * 64)), [ka], "malformed", []),
        ("malformed_name_plus", note(TEXT, good, line("a+b", 1, b"\0" * 64)), [ka], "malformed", []),
        ("malformed_empty_name", note(TEXT, good, f"{DASH} {raw_b64}\n"), [ka], "malformed", []),
        ("malformed_no_space_after_name", note(TEXT, f"{DASH}{A.name}\n"), [ka], "malformed", []),
        ("malformed_trailing_space", note(TEXT, good[:-1] + " \n"), [ka], "malformed", []),
        ("malformed_missing_padding", note(TEXT, good[:-2] + "\n"), [ka], "malformed", []),
        ("malformed_signature_too_short", note(TEXT, good, line("c.example", 9, b"")), [ka], "malformed", []),
        ("malformed_ascii_dash_prefix", note(TEXT, good.replace(DASH, "-- ")), [ka], "malformed", []),
        ("malformed_no_blank_line", (TEXT + good).encode(), [ka], "malformed", []),
        ("malformed_no_final_newline", note(TEXT, good)[:-1], [ka], "malformed", []),
        ("malformed_empty_signature_block", (TEXT + "\n").encode(), [ka], "malformed", []),
        ("malformed_tab_in_text", note("a\tb\n", sig_line(A, "a\tb\n")), [ka], "malformed", []),
        ("malformed_crlf", note(TEXT, good).replace(b"\n", b"\r\n"), [ka], "malformed", []),
        ("malformed_nul_in_text", note("a\0b\n", sig_line(A, "a\0b\n")), [ka], "malformed", []),
        ("malformed_invalid_utf8", b"\xff" + note(TEXT, good), [ka], "malformed", []),
        ("malformed_overlong_utf8", b"\xc0\xaf" + note(TEXT, good), [ka], "malformed", []),
        ("malformed_utf16_surrogate", b"\xed\xa0\x80" + note(TEXT, good), [ka], "malformed", []),
        ("invalid_bad_signature", note(TEXT, bad), [ka], "invalid_signature", []),
        ("invalid_bad_then_good_duplicate", note(TEXT, bad, good), [ka], "invalid_signature", []),
        ("invalid_text_changed", note("hello, moat\n", good), [ka], "invalid_signature", []),
        ("invalid_cosignature_wrong_length", note(body, sig_line(A, body), line(W.name, W.verifier.key_id, W.sign(body.encode()))), [ka, kw], "invalid_signature", []),
        ("invalid_cosignature_timestamp_changed", note(body, sig_line(A, body), cosig_line(W, body).replace(
            cosig_line(W, body).split(" ")[-1], base64.b64encode(struct.pack(">I", W.verifier.key_id) + struct.pack(">Q", 1_700_000_001) + W.sign(cosigned_message(body, 1_700_000_000))).decode() + "\n")), [ka, kw], "invalid_signature", []),
        ("invalid_plain_signature_for_cosignature_key", note(body, line(W.name, W.verifier.key_id, struct.pack(">Q", 5) + W.sign(body.encode()))), [kw], "invalid_signature", []),
        ("unverified_unknown_signer_only", note(TEXT, sig_line(B, TEXT)), [ka], "unverified", []),
        ("unverified_key_id_of_another_key", note(TEXT, line(A.name, B.verifier.key_id, A.sign(TEXT.encode()))), [ka], "unverified", []),
        ("unverified_no_keys", note(TEXT, good), [], "unverified", []),
    ]
    doc = [{"name": n, "note_b64": base64.b64encode(m).decode(), "keys": k, "expect": e, "verified": v}
           for n, m, k, e, v in cases]
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=True) + "\n", encoding="utf-8")
    print(f"wrote {len(doc)} vectors to {OUT}")


if __name__ == "__main__":
    main()
