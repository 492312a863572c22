"""CLI commands: ``identity admin init|remove``, ``identity enroll|rotate|revoke|list|show|prove|verify``
and ``bench zk``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from trustmesh.cli._common import console, err_console, guarded, print_json
from trustmesh.cli._root import app, bench_app

__all__ = ["identity_app"]

identity_app = typer.Typer(help="Device and site identities kept in the ledger (enrol, rotate, revoke, prove).", no_args_is_help=True)
admin_app = typer.Typer(help="Identity admins: the keys that authorise enrolments and revocations.", no_args_is_help=True)
identity_app.add_typer(admin_app, name="admin")
app.add_typer(identity_app, name="identity")

_LEDGER = typer.Option(..., "--ledger", help="Ledger folder holding the identity entries.")
_KEYS_HELP = "Folder for the device's private keys (files are written 0600 and never printed)."


def _open(ledger_dir: Path, read_only: bool = False) -> Any:
    from trustmesh.ledger import Ledger

    return Ledger.open(ledger_dir, read_only=read_only)


def _default_keys(ledger_dir: Path, device_id: str) -> Path:
    return ledger_dir.parent / "trustmesh-keys" / device_id


def _default_admin_key(ledger_dir: Path) -> Path:
    return ledger_dir.parent / "trustmesh-keys" / "identity-admin.key"


def _load_admin(ledger_dir: Path, admin_key: Path | None) -> Any:
    from trustmesh.errors import InputError
    from trustmesh.ledger import NoteSigner

    path = admin_key or _default_admin_key(ledger_dir)
    if not path.is_file():
        raise InputError(f"{path}: no identity admin key (give --admin-key, or run `trustmesh identity admin init`)")
    return NoteSigner.load(path)


def _report_rejected(reg: Any) -> None:
    """Name every identity entry the registry skipped (one line each, on stderr)."""
    for r in reg.rejected:
        err_console.print(f"warning: ledger entry {r.index} ({r.kind}) skipped: {r.reason}", highlight=False,
                          soft_wrap=True)


@admin_app.command("init")
@guarded
def admin_init_command(
    ledger: Path = _LEDGER,
    name: str = typer.Option(..., "--name", help="Admin key name, e.g. ops.example.org/identity-admin."),
    key: Path | None = typer.Option(None, "--key", help="Where to write the private key (0600, never printed). "
                                    "Default: LEDGER/../trustmesh-keys/identity-admin.key."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Create an identity admin key and register it in the ledger (signed by the log's own key)."""
    from trustmesh.errors import InputError
    from trustmesh.identity import add_admin

    target = key or _default_admin_key(ledger)
    if target.exists():
        raise InputError(f"{target}: a key already exists; refusing to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _open(ledger) as lg:
        signer, index = add_admin(lg, name, target)
    doc = {"admin": signer.name, "verifier_key": signer.verifier.to_vkey(), "index": index, "key_file": str(target)}
    if json_out:
        print_json(doc)
    else:
        console.print(f"identity admin {signer.name} registered at ledger index {index}; private key in {target} "
                      f"(0600); public key {doc['verifier_key']}", highlight=False)


@admin_app.command("remove")
@guarded
def admin_remove_command(
    ledger: Path = _LEDGER,
    verifier_key: str = typer.Option(..., "--verifier-key", help="The admin's public key (name+hash+base64)."),
) -> None:
    """Record that an identity admin's key no longer authorises anything (signed by the log key)."""
    from trustmesh.identity import remove_admin

    with _open(ledger) as lg:
        index = remove_admin(lg, verifier_key)
    console.print(f"identity admin removed at ledger index {index}", highlight=False)


@identity_app.command("enroll")
@guarded
def enroll_command(
    device_id: str = typer.Argument(..., help="Device or site id (A-Z a-z 0-9 . _ : -)."),
    ledger: Path = _LEDGER,
    role: str = typer.Option("device", "--role", help="device or site."),
    keys: Path | None = typer.Option(None, "--keys", help=_KEYS_HELP + " Default: LEDGER/../trustmesh-keys/ID."),
    admin_key: Path | None = typer.Option(None, "--admin-key", help="Identity admin key that authorises the "
                                          "enrolment. Default: LEDGER/../trustmesh-keys/identity-admin.key."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Generate keys for a device or site and enrol its public keys (authorised by an identity admin)."""
    from trustmesh.errors import InputError
    from trustmesh.identity import DeviceKeys, check_device_id, enroll

    check_device_id(device_id)
    if role not in ("device", "site"):
        raise InputError(f"--role must be 'device' or 'site', got {role!r}")
    key_dir = keys or _default_keys(ledger, device_id)
    admin = _load_admin(ledger, admin_key)
    new = DeviceKeys.generate()
    with _open(ledger) as lg:
        new.save(key_dir)
        index = enroll(lg, device_id, new, role="site" if role == "site" else "device", admin=admin)
    doc = {"device_id": device_id, "role": role, "index": index, "keys_dir": str(key_dir), **new.public.to_dict()}
    if json_out:
        print_json(doc)
    else:
        console.print(f"enrolled {role} {device_id} at ledger index {index}; private keys in {key_dir} (0600)")


@identity_app.command("rotate")
@guarded
def rotate_command(
    device_id: str = typer.Argument(...),
    ledger: Path = _LEDGER,
    keys: Path | None = typer.Option(None, "--keys", help="Folder with the current keys. " + _KEYS_HELP),
    new_keys: Path | None = typer.Option(None, "--new-keys", help="Folder for the new keys (default: KEYS.next-N)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Replace a device's keys; the old key signs the rotation."""
    from trustmesh.identity import DeviceKeys, rotate

    key_dir = keys or _default_keys(ledger, device_id)
    old = DeviceKeys.load(key_dir)
    target = new_keys
    if target is None:
        n = 1
        while (key_dir.parent / f"{key_dir.name}.next-{n}").exists():
            n += 1
        target = key_dir.parent / f"{key_dir.name}.next-{n}"
    new = DeviceKeys.generate()
    with _open(ledger) as lg:
        new.save(target)
        index = rotate(lg, device_id, old, new)
    doc = {"device_id": device_id, "index": index, "keys_dir": str(target), **new.public.to_dict()}
    if json_out:
        print_json(doc)
    else:
        console.print(f"rotated {device_id} at ledger index {index}; new private keys in {target} (0600)")


@identity_app.command("revoke")
@guarded
def revoke_command(
    device_id: str = typer.Argument(...),
    ledger: Path = _LEDGER,
    reason: str = typer.Option(..., "--reason", help="Why (recorded in the ledger)."),
    admin_key: Path | None = typer.Option(None, "--admin-key", help="Sign as this identity admin "
                                          "(default: LEDGER/../trustmesh-keys/identity-admin.key)."),
    keys: Path | None = typer.Option(None, "--keys", help="Sign with the device's own current keys instead."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Revoke a device's key (signed by an identity admin or the device itself): later signatures are refused."""
    from trustmesh.errors import InputError
    from trustmesh.identity import DeviceKeys, revoke

    if not 0 < len(reason) <= 500:
        raise InputError("--reason must be 1-500 characters")
    if keys is not None and admin_key is not None:
        raise InputError("give --admin-key or --keys, not both")
    with _open(ledger) as lg:
        if keys is not None:
            index = revoke(lg, device_id, reason, device_keys=DeviceKeys.load(keys))
        else:
            index = revoke(lg, device_id, reason, admin=_load_admin(ledger, admin_key))
    if json_out:
        print_json({"device_id": device_id, "revoked_at": index, "reason": reason})
    else:
        console.print(f"revoked {device_id} at ledger index {index}")


@identity_app.command("list")
@guarded
def list_command(
    ledger: Path = _LEDGER,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """List enrolled devices and sites with their status."""
    from trustmesh.identity import IdentityRegistry

    with _open(ledger, read_only=True) as lg:
        reg = IdentityRegistry.from_ledger(lg)
    _report_rejected(reg)
    docs = [d.to_dict() for d in reg.devices()]
    if json_out:
        print_json({"origin": reg.origin, "admins": reg.admins(), "devices": docs,
                    "rejected": [r.to_dict() for r in reg.rejected]})
        return
    for d in docs:
        console.print(f"{d['device_id']:<24} {d['role']:<7} {d['status']:<8} keys since index {d['keys'][-1]['since']}")
    if not docs:
        console.print("no devices enrolled")


@identity_app.command("show")
@guarded
def show_command(
    device_id: str = typer.Argument(...),
    ledger: Path = _LEDGER,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Show a device's key history (public keys only)."""
    from trustmesh.identity import IdentityRegistry

    with _open(ledger, read_only=True) as lg:
        reg = IdentityRegistry.from_ledger(lg)
    _report_rejected(reg)
    doc = reg.get(device_id).to_dict()
    if json_out:
        print_json(doc)
        return
    console.print(f"{doc['device_id']} ({doc['role']}): {doc['status']}")
    for k in doc["keys"]:
        end = f"until {k['until']} ({k['ended_by']})" if k["until"] is not None else "current"
        console.print(f"  since {k['since']} {end}: ed25519 {k['ed25519']} ristretto255 {k['ristretto255']}")


@identity_app.command("prove")
@guarded
def prove_command(
    device_id: str = typer.Argument(...),
    ledger: Path = _LEDGER,
    round_: int = typer.Option(0, "--round", help="Round number bound into the proof."),
    nonce: str | None = typer.Option(None, "--nonce", help="Verifier's challenge nonce (hex, 16-64 bytes); fresh if omitted."),
    keys: Path | None = typer.Option(None, "--keys", help="Folder with the device's keys."),
    out: Path | None = typer.Option(None, "--out", help="Write the proof JSON here instead of stdout."),
) -> None:
    """Prove knowledge of the device's enrolled ristretto255 key (Schnorr, zero knowledge)."""
    import secrets

    from trustmesh.errors import InputError
    from trustmesh.identity import DeviceKeys
    from trustmesh.privacy.zk import ProofContext, prove_key_knowledge

    device_keys = DeviceKeys.load(keys or _default_keys(ledger, device_id))
    with _open(ledger, read_only=True) as lg:
        origin = lg.origin
    try:
        raw_nonce = bytes.fromhex(nonce) if nonce else secrets.token_bytes(32)
        ctx = ProofContext(origin, round_, device_id, raw_nonce)
    except ValueError as exc:
        raise InputError(f"--nonce/--round: {exc}") from None
    proof = prove_key_knowledge(device_keys.schnorr, ctx)
    doc = {"context": ctx.to_dict(), "proof": proof.to_bytes().hex(), "public": device_keys.public.ristretto255.to_bytes().hex()}
    if out is None:
        print_json(doc)
    else:
        out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote proof to {out}")


@identity_app.command("verify")
@guarded
def verify_command(
    device_id: str = typer.Argument(...),
    proof_file: Path = typer.Argument(..., help="Proof JSON from `identity prove`."),
    ledger: Path = _LEDGER,
    nonce: str | None = typer.Option(None, "--nonce", help="The nonce you issued (hex); required unless --accept-any-nonce."),
    round_: int | None = typer.Option(None, "--round", help="The round you expect."),
    accept_any_nonce: bool = typer.Option(False, "--accept-any-nonce", help="Skip the freshness check (replayable!)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Verify a key-knowledge proof against the device's current ledger key and your context."""
    from trustmesh.errors import InputError, ProofError
    from trustmesh.identity import IdentityRegistry
    from trustmesh.privacy.zk import ProofContext, SchnorrProof

    try:
        doc = json.loads(proof_file.read_text(encoding="utf-8"))
        ctx = ProofContext.from_dict(doc["context"])
        proof = SchnorrProof.from_bytes(bytes.fromhex(str(doc["proof"])))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ProofError(f"{proof_file}: malformed proof file ({exc})") from None
    if nonce is None and not accept_any_nonce:
        raise InputError("--nonce is required (the challenge you issued), or pass --accept-any-nonce")
    if nonce is not None and ctx.nonce.hex() != nonce.lower():
        raise ProofError(f"{proof_file}: proof is bound to another nonce (replayed?)")
    if round_ is not None and ctx.round != round_:
        raise ProofError(f"{proof_file}: proof is for round {ctx.round}, expected {round_}")
    with _open(ledger, read_only=True) as lg:
        reg = IdentityRegistry.from_ledger(lg)
    _report_rejected(reg)
    reg.verify_key_proof(device_id, proof, ctx)
    if json_out:
        print_json({"verified": True, "device_id": device_id, "context": ctx.to_dict(), "ledger_size": reg.size})
    else:
        console.print(f"verified: {device_id} holds its enrolled key (origin {ctx.origin}, round {ctx.round})")


@bench_app.command("zk")
@guarded
def bench_zk_command(
    coordinates: int = typer.Option(10_000, "--coordinates", help="Coordinates in the L-infinity proof."),
    bound: int = typer.Option(127, "--bound", help="L-infinity bound (bits per coordinate = bitlen(2*bound))."),
    reps: int = typer.Option(5, "--reps", help="Repetitions for the single range proofs (median reported)."),
    workers: int = typer.Option(2, "--workers", help="Threads for group operations."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Prove/verify time and proof size: 32/64-bit range proofs and an L-infinity bound proof."""
    from trustmesh.errors import InputError
    from trustmesh.privacy.zk._bench import bench_zk

    if coordinates < 1 or bound < 1 or reps < 1 or workers < 1:
        raise InputError("--coordinates, --bound, --reps and --workers must be >= 1")
    report = bench_zk(coordinates=coordinates, bound=bound, reps=reps, workers=workers)
    if json_out:
        print_json(report)
        return
    for r in report["range"]:
        console.print(f"range {r['bits']:>2} bits: prove {r['prove_s'] * 1000:.1f} ms, verify {r['verify_s'] * 1000:.1f} ms, {r['proof_bytes']} bytes")
    li = report["linf"]
    console.print(f"linf {li['coordinates']} coords x {li['bits_per_coordinate']} bits: prove {li['prove_s']:.2f} s, "
                  f"verify {li['verify_s']:.2f} s, proof {li['proof_bytes'] / 1e6:.2f} MB")
