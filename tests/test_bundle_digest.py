"""A bundle's identity is the sha256 of its manifest; pinned or signed bundles refuse any edit.

Real Ed25519 keys (the ``cryptography`` package) and real copies of the demo bundle: every leaf
of the manifest is edited in turn and the edited bundle must be refused when a digest or a
signature is expected, and load as "unpinned" otherwise.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from affedge.bundle import BundleError, load_bundle, sha256_file, update_manifest
from affedge.sdk.recognizer import DEMO_BUNDLE, DEMO_CLIP

pytest.importorskip("cryptography")
pytestmark = pytest.mark.skipif(not (DEMO_BUNDLE / "manifest.json").is_file(),
                                reason="demo bundle not present")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from affedge.signing import generate_keypair

    d = tmp_path_factory.mktemp("keys")
    owner = generate_keypair(d / "owner")
    other = generate_keypair(d / "other")
    return {"owner": owner, "other": other}


def _digest(root: Path) -> str:
    return hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest()


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    else:
        yield path, obj


def _perturb(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, float):
        return v * 1.5 + 1e-3
    if isinstance(v, str):
        return v + "x"
    return 0  # null


def _set(obj, path, value):
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


def test_digest_is_the_sha256_of_the_manifest_bytes(demo, tmp_path):
    b = load_bundle(demo)
    assert b.digest == _digest(demo) and len(b.digest) == 64
    assert b.signature_status == "unpinned"
    z = tmp_path / "demo.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted(demo.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(demo).as_posix())
    assert load_bundle(z).digest == b.digest  # the same manifest bytes in a zip


def test_expected_digest_pins_the_bundle(demo):
    d = _digest(demo)
    for form in (d, d.upper(), "sha256:" + d, f"  {d}\n"):
        assert load_bundle(demo, expect_digest=form).signature_status == "digest-pinned"
    other = hashlib.sha256(b"another bundle").hexdigest()
    with pytest.raises(BundleError, match=f"digest sha256:{d} differs from the expected "
                                          f"sha256:{other}"):
        load_bundle(demo, expect_digest=other)
    for bad in ("abc", d[:-1], d + "0", "md5:" + d):
        with pytest.raises(ValueError, match=r"a bundle digest \(--bundle-digest, expect_digest\) "
                                              r"must be 64 hex digits"):
            load_bundle(demo, expect_digest=bad)


def test_every_edited_manifest_field_is_refused_when_pinned_or_signed(demo, keys):
    """Each leaf of the manifest (every artifact hash, statistic, shape, string) edited: the
    pinned load and the signed load refuse it, before the manifest is parsed."""
    from affedge.signing import load_public_key, sign_bundle

    priv, pub = keys["owner"]
    sign_bundle(demo, priv)
    pub = load_public_key(pub)
    digest = _digest(demo)
    original = json.loads((demo / "manifest.json").read_text())
    leaves = list(_leaves(original))
    assert len(leaves) > 500  # really every field of the demo manifest
    for path, value in leaves:
        m = json.loads(json.dumps(original))
        _set(m, path, _perturb(value))
        (demo / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(BundleError, match="differs from the expected"):
            load_bundle(demo, expect_digest=digest)
        with pytest.raises(BundleError, match="not a valid signature of this manifest"):
            load_bundle(demo, trust=pub)
    # a byte-level edit that keeps the JSON equal (whitespace) is an edit too
    (demo / "manifest.json").write_text(json.dumps(original, indent=2) + " ")
    with pytest.raises(BundleError, match="differs from the expected"):
        load_bundle(demo, expect_digest=digest)
    with pytest.raises(BundleError, match="not a valid signature"):
        load_bundle(demo, trust=pub)


@pytest.mark.parametrize("path,value", [
    (("audio_norm", "logmel", "std", 0), None),  # the std doubled (issue 15's mutation)
    (("features", "sample_rate"), 22050),
    (("video", "fps"), 25.0),
    (("created",), "2030-01-01T00:00:00+00:00"),
    (("parity", 0, "threshold"), 1.0),
])
def test_valid_edit_loads_as_unpinned_and_is_refused_when_pinned(demo, keys, path, value):
    from affedge.signing import sign_bundle

    priv, pub = keys["owner"]
    sign_bundle(demo, priv)
    digest = _digest(demo)
    m = json.loads((demo / "manifest.json").read_text())
    if value is None:
        value = 2 * m["audio_norm"]["logmel"]["std"][0]
    _set(m, path, value)
    (demo / "manifest.json").write_text(json.dumps(m, indent=2))
    b = load_bundle(demo)  # the schema accepts the edit: nothing but identity can tell
    assert b.signature_status == "unpinned" and b.digest == _digest(demo) != digest
    with pytest.raises(BundleError, match="digest"):
        load_bundle(demo, expect_digest=digest)
    with pytest.raises(BundleError, match="signature"):
        load_bundle(demo, trust=[pub])


def test_sign_and_verify_with_real_keys(demo, keys):
    from cryptography.hazmat.primitives import serialization

    from affedge.signing import fingerprint, load_public_key, sign_bundle

    priv, pub = keys["owner"]
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    fp = sign_bundle(demo, priv)
    assert fp == fingerprint(load_public_key(pub)) and len(fp) == 16
    sig = json.loads((demo / "manifest.sig").read_text())
    assert sig["algorithm"] == "ed25519" and sig["key"] == fp
    assert sig["manifest_sha256"] == _digest(demo)
    # the same key in every accepted form: path, PEM bytes, raw 32 bytes, OpenSSH, object
    key = load_public_key(pub)
    forms = [pub, str(pub), pub.read_bytes(),
             key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
             key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
             key]
    for form in forms:
        assert load_bundle(demo, trust=form).signature_status == f"signed:{fp}"
    # one of several trusted keys suffices; digest and signature together
    b = load_bundle(demo, trust=[keys["other"][1], pub], expect_digest=_digest(demo))
    assert b.signature_status == f"signed:{fp}"
    # without trust the signature is not checked: unpinned
    assert load_bundle(demo).signature_status == "unpinned"


def test_signature_by_an_untrusted_key_refused(demo, keys):
    from affedge.signing import sign_bundle

    sign_bundle(demo, keys["other"][0])
    with pytest.raises(BundleError, match="not a valid signature of this manifest by a trusted "
                                          "key.*: it was signed by another key"):
        load_bundle(demo, trust=keys["owner"][1])


def test_unsigned_or_malformed_signature_refused_when_trust_is_required(demo, keys):
    pub = keys["owner"][1]
    with pytest.raises(BundleError, match=r"unsigned \(manifest.sig missing\)"):
        load_bundle(demo, trust=pub)
    for content in (b"", b"{}", b"not json", json.dumps(
            {"format": "affedge-manifest-signature/1", "algorithm": "ed25519",
             "signature": "AAAA"}).encode(), b"x" * 5000):
        (demo / "manifest.sig").write_bytes(content)
        with pytest.raises(BundleError, match="manifest.sig"):
            load_bundle(demo, trust=pub)


def test_signature_moved_from_another_bundle_refused(demo, keys, tmp_path):
    from affedge.signing import sign_bundle

    other = tmp_path / "other"
    shutil.copytree(DEMO_BUNDLE, other)
    m = json.loads((other / "manifest.json").read_text())
    m["video"]["fps"] = 25.0
    (other / "manifest.json").write_text(json.dumps(m))
    sign_bundle(other, keys["owner"][0])
    shutil.copy(other / "manifest.sig", demo / "manifest.sig")
    with pytest.raises(BundleError, match="not a valid signature"):
        load_bundle(demo, trust=keys["owner"][1])


def test_signed_zip_bundle(demo, keys, tmp_path):
    from affedge.signing import sign_bundle

    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(demo.rglob("*")):
            if f.is_file():
                zf.write(f, "bundle/" + f.relative_to(demo).as_posix())  # one top folder
    fp = sign_bundle(z, keys["owner"][0])
    assert "bundle/manifest.sig" in zipfile.ZipFile(z).namelist()
    assert load_bundle(z, trust=keys["owner"][1]).signature_status == f"signed:{fp}"
    fp2 = sign_bundle(z, keys["owner"][0])  # re-signing replaces, never duplicates
    assert fp2 == fp and zipfile.ZipFile(z).namelist().count("bundle/manifest.sig") == 1
    # a zip whose manifest was edited after signing
    edited = tmp_path / "edited.zip"
    with zipfile.ZipFile(z) as src, zipfile.ZipFile(edited, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("manifest.json"):
                data = data.replace(b'"fps": 30.0', b'"fps": 31.0')
            dst.writestr(info, data)
    with pytest.raises(BundleError, match="not a valid signature.*: the manifest was edited "
                                          "after it was signed"):
        load_bundle(edited, trust=keys["owner"][1])
    assert load_bundle(edited).signature_status == "unpinned"


def test_update_manifest_drops_the_stale_signature(demo, keys):
    from affedge.signing import sign_bundle

    sign_bundle(demo, keys["owner"][0])
    update_manifest(demo, parity_inputs="re-measured")
    assert not (demo / "manifest.sig").exists()
    with pytest.raises(BundleError, match="unsigned"):
        load_bundle(demo, trust=keys["owner"][1])


def test_signed_bundle_runs_in_the_recognizer(demo, keys):
    import numpy as np

    from affedge.sdk.recognizer import Recognizer
    from affedge.signing import sign_bundle

    sign_bundle(demo, keys["owner"][0])
    b = load_bundle(demo, trust=keys["owner"][1])
    with Recognizer(b, backend="cpu") as rec:
        p = rec.push_frame(np.full((120, 160, 3), 90, np.uint8), 0.0)
    assert p.frame == 0 and rec.bundle.signature_status.startswith("signed:")


def test_key_helpers_refuse_bad_input(tmp_path, keys):
    from affedge.signing import generate_keypair, load_private_key, load_public_key

    with pytest.raises(FileExistsError):
        generate_keypair(keys["owner"][0].parent)
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        load_public_key(b"garbage")
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        load_private_key(keys["owner"][1])  # a public key is not a private key
    # ... nor the other way round (a new user passed the .key to --trust)
    with pytest.raises(ValueError, match=r"this is a private key; trust the public one"):
        load_public_key(keys["owner"][0])
    with pytest.raises(FileNotFoundError):
        load_public_key(tmp_path / "missing.pub")
    with pytest.raises(ValueError, match="empty list"):
        load_bundle(DEMO_BUNDLE, trust=[])


def test_cryptography_is_imported_only_for_signatures():
    code = ("import sys; from affedge.bundle import load_bundle; "
            "from affedge.sdk.recognizer import DEMO_BUNDLE; b = load_bundle(DEMO_BUNDLE); "
            "assert b.signature_status == 'unpinned'; "
            "print('cryptography' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_artifact_swap_changes_the_digest(demo):
    """Replacing an artifact *and* its manifest record (a consistent forgery) loads unpinned
    but never under the original digest."""
    digest = _digest(demo)
    m = json.loads((demo / "manifest.json").read_text())
    (demo / "window.onnx").write_bytes((demo / "window.onnx").read_bytes() + b"")
    a = next(x for x in m["artifacts"] if x["name"] == "encoder" and x["format"] == "onnx-int8")
    shutil.copy(demo / "encoder.onnx", demo / a["file"])
    a["sha256"], a["size"] = sha256_file(demo / a["file"]), (demo / a["file"]).stat().st_size
    (demo / "manifest.json").write_text(json.dumps(m, indent=2))
    assert load_bundle(demo).signature_status == "unpinned"
    with pytest.raises(BundleError, match="digest"):
        load_bundle(demo, expect_digest=digest)


def test_pinning_an_already_loaded_bundle(demo, keys):
    """Bundle.pinned(): the check for a Bundle object handed to Recognizer."""
    from affedge.signing import sign_bundle

    fp = sign_bundle(demo, keys["owner"][0])
    b = load_bundle(demo)
    assert b.pinned() is b
    assert b.pinned(expect_digest=b.digest).signature_status == "digest-pinned"
    assert b.pinned(trust=keys["owner"][1]).signature_status == f"signed:{fp}"
    with pytest.raises(BundleError, match="differs from the expected"):
        b.pinned(expect_digest="0" * 64)
    with pytest.raises(BundleError, match="not a valid signature"):
        b.pinned(trust=keys["other"][1])
    (demo / "manifest.json").write_bytes((demo / "manifest.json").read_bytes() + b" ")
    with pytest.raises(BundleError, match="changed on disk since it was loaded"):
        b.pinned(expect_digest=b.digest)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          timeout=300, check=False, cwd=cwd)


def test_signing_command_keys_sign_and_doctor_verifies(demo, keys, tmp_path):
    """``python -m affedge.signing``: --help only prints (it used to write a key pair into a
    directory named '--help'); an existing key is one line, exit 1; ``--sign`` signs a bundle in
    place (the way to sign again after build-engines); ``doctor --trust`` checks it and exits
    1 for another key."""
    here = tmp_path / "cwd"
    here.mkdir()
    r = _cli("-m", "affedge.signing", "--help", cwd=here)
    assert r.returncode == 0 and "--sign" in r.stdout and list(here.iterdir()) == []
    r = _cli("-m", "affedge.signing", keys["owner"][0].parent)
    assert r.returncode == 1 and "exists" in r.stderr and "Traceback" not in r.stderr
    r = _cli("-m", "affedge.signing", "--sign", demo, "--key", keys["owner"][0])
    assert r.returncode == 0, r.stderr
    ok = _cli("-m", "affedge.cli", "doctor", "--no-devices", "--bundle", demo, "--trust",
              keys["owner"][1])
    assert ok.returncode == 0 and "(signed:" in ok.stdout, ok.stderr
    bad = _cli("-m", "affedge.cli", "doctor", "--no-devices", "--bundle", demo, "--trust",
               keys["other"][1])
    assert bad.returncode == 1 and "not a valid signature" in bad.stderr
    assert bad.stderr.count(f"bundle {demo}") == 1, bad.stderr
    # run without --trust says the signature is there and unchecked (it said "checksums only")
    run = _cli("-m", "affedge.cli", "run", DEMO_CLIP, "--bundle", demo, "--max-frames", "1",
               "--audio", "none")
    assert run.returncode == 0, run.stderr
    assert "(unpinned: it carries a signature, not checked; check it with --trust PUBKEY)" in \
        run.stderr, run.stderr
    pinned = _cli("-m", "affedge.cli", "doctor", "--no-devices", "--bundle", demo,
                  "--bundle-digest", "sha256:" + "0" * 64)
    assert pinned.returncode == 1 and "digest" in pinned.stderr
