"""Ed25519 signatures over a bundle's manifest bytes: key generation, signing, verification.

The manifest lists every artifact's sha256 and size, so a signature over its exact bytes
covers the whole bundle. ``manifest.sig`` (next to ``manifest.json``, at most 4 KiB) is JSON::

    {"format": "affedge-manifest-signature/1", "algorithm": "ed25519",
     "key": "<fingerprint of the signing key>", "manifest_sha256": "<hex>",
     "signature": "<base64 of the 64-byte Ed25519 signature of manifest.json's bytes>"}

A key's fingerprint is the first 16 hex digits of the sha256 of its raw 32-byte public key.
``load_bundle(path, trust=[public keys])`` accepts a bundle only with a valid signature by one
of the trusted keys. The ``cryptography`` package is needed only here, imported when a key is
generated, loaded, used to sign or to verify (``pip install 'affedge[sign]'``).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

SIGNATURE_FORMAT = "affedge-manifest-signature/1"
PRIVATE_NAME, PUBLIC_NAME = "affedge_ed25519.key", "affedge_ed25519.pub"


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ImportError("Ed25519 bundle signing/verification needs the 'cryptography' "
                          "package: pip install 'affedge[sign]'") from None
    return ed25519, serialization


def _raw_public(pub) -> bytes:
    _, ser = _crypto()
    return pub.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)


def fingerprint(public_key) -> str:
    """First 16 hex digits of sha256(raw 32-byte Ed25519 public key)."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def generate_keypair(directory: str | os.PathLike, name: str = "affedge_ed25519"
                     ) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: ``<name>.key`` (PKCS#8 PEM, mode 0600, keep it secret)
    and ``<name>.pub`` (SubjectPublicKeyInfo PEM, give it to the devices). Refuses to
    overwrite existing files. Returns (private path, public path)."""
    ed25519, ser = _crypto()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = d / f"{name}.key", d / f"{name}.pub"
    for p in (priv_path, pub_path):
        if p.exists():
            raise FileExistsError(f"generate_keypair: {p} exists (not overwritten)")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub_path.write_bytes(key.public_key().public_bytes(
        ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))
    return priv_path, pub_path


def load_private_key(path: str | os.PathLike):
    """An Ed25519 private key from a PKCS#8 PEM file (unencrypted), or ValueError."""
    ed25519, ser = _crypto()
    data = Path(path).read_bytes()
    try:
        key = ser.load_pem_private_key(data, password=None)
    except Exception as exc:  # noqa: BLE001  (cryptography raises several types)
        raise ValueError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key ({type(key).__name__})")  # noqa: TRY004
    return key


def load_public_key(key: Any):
    """An Ed25519 public key from a key object, a path, or bytes (PEM, OpenSSH, raw 32)."""
    ed25519, ser = _crypto()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    where = "trusted key"
    if isinstance(key, (str, os.PathLike)):
        where = str(key)
        data = Path(key).read_bytes()  # FileNotFoundError names a missing key file
    elif isinstance(key, (bytes, bytearray, memoryview)):
        data = bytes(key)
    else:
        raise TypeError(f"trust: a key must be a path, bytes or an Ed25519 public key, got "
                        f"{type(key).__name__}")
    if b"PRIVATE KEY-----" in data[:100]:
        raise ValueError(f"{where}: this is a private key; trust the public one (the .pub "
                         f"next to it), and keep the private key off the devices")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            pub = ser.load_pem_public_key(data)
        elif data.startswith(b"ssh-ed25519 "):
            pub = ser.load_ssh_public_key(data)
        elif len(data) == 32:
            pub = ed25519.Ed25519PublicKey.from_public_bytes(data)
        else:
            raise ValueError("neither PEM, OpenSSH nor 32 raw bytes")
    except Exception as exc:  # noqa: BLE001  (cryptography raises several types)
        raise ValueError(f"{where}: not an Ed25519 public key ({exc})") from None
    if not isinstance(pub, ed25519.Ed25519PublicKey):
        raise ValueError(f"{where}: not an Ed25519 public key ({type(pub).__name__})")  # noqa: TRY004
    return pub


def load_public_keys(trust: Any) -> list:
    """``trust`` (one key or an iterable of keys, see :func:`load_public_key`) -> key list."""
    if isinstance(trust, (str, os.PathLike, bytes, bytearray, memoryview)) or \
            not isinstance(trust, Iterable):
        trust = [trust]
    keys = [load_public_key(k) for k in trust]
    if not keys:
        raise ValueError("trust: an empty list of keys would trust nothing")
    return keys


def signature_record(manifest_bytes: bytes, private_key) -> bytes:
    """The ``manifest.sig`` content for ``manifest_bytes`` signed with ``private_key``."""
    sig = private_key.sign(manifest_bytes)
    rec = {"format": SIGNATURE_FORMAT, "algorithm": "ed25519",
           "key": fingerprint(private_key.public_key()),
           "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
           "signature": base64.b64encode(sig).decode("ascii")}
    return (json.dumps(rec, indent=1) + "\n").encode()


def verify_manifest_signature(manifest_bytes: bytes, sig_bytes: bytes | None, keys: list,
                              where: str = "bundle") -> str:
    """The fingerprint of the trusted key whose signature ``sig_bytes`` is; BundleError if
    there is no signature, it is malformed, or no trusted key made it."""
    from affedge.bundle import SIGNATURE, BundleError

    if sig_bytes is None:
        raise BundleError(f"{where}: unsigned ({SIGNATURE} missing) but a signature by a "
                          "trusted key is required")
    try:
        rec = json.loads(sig_bytes.decode("utf-8"))
        if not isinstance(rec, dict) or rec.get("format") != SIGNATURE_FORMAT or \
                rec.get("algorithm") != "ed25519":
            raise ValueError("unknown signature format or algorithm")
        sig = base64.b64decode(rec["signature"], validate=True)
        if len(sig) != 64:
            raise ValueError(f"signature is {len(sig)} bytes, Ed25519 has 64")
    except Exception as exc:  # noqa: BLE001  (any malformation is one refusal)
        raise BundleError(f"{where}: malformed {SIGNATURE} ({exc})") from None
    _crypto()
    from cryptography.exceptions import InvalidSignature

    for key in keys:
        try:
            key.verify(sig, manifest_bytes)
        except InvalidSignature:
            continue
        return fingerprint(key)
    fps = [fingerprint(k) for k in keys]
    signer = str(rec.get("key"))[:32]
    why = "the manifest was edited after it was signed" if signer in fps else \
        "it was signed by another key, or the manifest was edited"
    raise BundleError(f"{where}: {SIGNATURE} is not a valid signature of this manifest by a "
                      f"trusted key (trusted: {', '.join(fps)}; signed by {signer!r}): {why}")


def sign_bundle(bundle: str | os.PathLike, private_key_path: str | os.PathLike) -> str:
    """Sign a bundle directory or ``.zip`` in place (writes/replaces ``manifest.sig``) after
    validating it with ``load_bundle``; returns the signing key's fingerprint."""
    from affedge.bundle import MANIFEST, SIGNATURE, load_bundle

    key = load_private_key(private_key_path)
    src = Path(bundle)
    load_bundle(src)  # never sign a bundle that does not load
    if src.is_dir():
        raw = (src / MANIFEST).read_bytes()
        tmp = src / (SIGNATURE + ".tmp")
        tmp.write_bytes(signature_record(raw, key))
        os.replace(tmp, src / SIGNATURE)
    else:
        _sign_zip(src, key)
    load_bundle(src, trust=[key.public_key()])  # the signature verifies
    return fingerprint(key.public_key())


def _sign_zip(zpath: Path, key) -> None:
    """Rewrite the zip with ``manifest.sig`` next to its manifest (atomic replace)."""
    from affedge.bundle import MANIFEST, SIGNATURE

    with zipfile.ZipFile(zpath) as zf:
        names = [i.filename for i in zf.infolist()]
        man = next(n for n in names if PurePosixPath(n).name == MANIFEST
                   and len(PurePosixPath(n).parts) <= 2)
        prefix = man[: -len(MANIFEST)]
        raw = zf.read(man)
        fd, tmp = tempfile.mkstemp(prefix=".sign-", suffix=".zip", dir=zpath.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w") as out:  # members keep their compression
                for info in zf.infolist():
                    if info.filename != prefix + SIGNATURE:
                        with zf.open(info) as s, out.open(info, "w") as d:
                            while chunk := s.read(1 << 20):
                                d.write(chunk)
                out.writestr(prefix + SIGNATURE, signature_record(raw, key))
            os.replace(tmp, zpath)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def main(argv=None) -> int:
    """``python -m affedge.signing KEYDIR`` (a new key pair) or ``--sign BUNDLE --key KEY``
    (sign a bundle in place, e.g. again after ``affedge build-engines`` added engines: any
    manifest change invalidates the old signature)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        prog="python -m affedge.signing",
        description="Ed25519 keys and signatures for affedge bundles (export --sign, run "
                    "--trust).")
    ap.add_argument("keydir", nargs="?", help="write a new key pair into this directory "
                    "(affedge_ed25519.key: keep it secret; affedge_ed25519.pub: for --trust)")
    ap.add_argument("--sign", metavar="BUNDLE", help="sign this bundle directory or .zip in "
                    "place (replaces its manifest.sig)")
    ap.add_argument("--key", metavar="KEY", help="the private key for --sign")
    args = ap.parse_args(argv)
    if (args.keydir is None) == (args.sign is None):
        ap.error("give KEYDIR (a new key pair) or --sign BUNDLE --key KEY")
    if args.sign is not None and args.key is None:
        ap.error("--sign needs --key (the private key file)")
    try:
        if args.keydir is not None:
            priv, pub = generate_keypair(args.keydir)
            print(f"private key {priv} (export --sign; keep it secret)\n"
                  f"public key {pub} (run --trust)")
        else:
            fp = sign_bundle(args.sign, args.key)
            print(f"signed {args.sign} (key {fp})")
    except (OSError, ValueError, ImportError) as exc:
        print(f"python -m affedge.signing: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
