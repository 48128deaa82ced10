"""`ztid keyring|seal|open|rewrap`, run in-process through ztid.cli.main."""

from __future__ import annotations

import json
import os

from ztid.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_seal_open_rotate_rewrap_archive(tmp_path, capsysbinary):
    capsys = capsysbinary  # `open` writes raw plaintext to stdout
    ring, src, dst, out = (str(tmp_path / n) for n in ("ring.json", "data.bin", "data.ztid", "back.bin"))
    plaintext = os.urandom(300_000)
    (tmp_path / "data.bin").write_bytes(plaintext)
    assert run(capsys, "keyring", "init", ring)[0] == 0
    code, stdout, _ = run(capsys, "seal", src, dst, "--keyring", ring, "--dataset", "imagenet", "--segment-size",
                          "4096", "--json")
    assert code == 0 and json.loads(stdout)["name"] == "data.bin" and json.loads(stdout)["key_version"] == 1
    assert run(capsys, "open", dst, "-o", out, "--keyring", ring, "--dataset", "imagenet")[0] == 0
    assert (tmp_path / "back.bin").read_bytes() == plaintext
    code, stdout, _ = run(capsys, "open", dst, "--keyring", ring)
    assert code == 0 and stdout == plaintext  # streamed to stdout
    code, stdout, _ = run(capsys, "keyring", "rotate", ring, "--json")
    assert code == 0 and json.loads(stdout)["version"] == 2
    code, stdout, _ = run(capsys, "rewrap", dst, "--keyring", ring, "--json")
    assert code == 0 and json.loads(stdout)["files"][0]["key_version"] == 2
    assert run(capsys, "keyring", "set-min-version", ring, "default", "2")[0] == 0
    os.remove(out)
    assert run(capsys, "open", dst, "-o", out, "--keyring", ring)[0] == 0
    assert (tmp_path / "back.bin").read_bytes() == plaintext
    code, stdout, _ = run(capsys, "keyring", "show", ring, "--json")
    shown = json.loads(stdout)
    assert shown["keys"]["default"] == {"versions": [1, 2], "primary": 2, "min_decrypt_version": 2}
    assert b"key\"" not in stdout.replace(b"\"keys\"", b"")  # never key material


def test_failures_map_to_exit_codes(tmp_path, capsys):
    ring, src, dst, out = (str(tmp_path / n) for n in ("ring.json", "data.bin", "data.ztid", "back.bin"))
    (tmp_path / "data.bin").write_bytes(b"x" * 10_000)
    run(capsys, "keyring", "init", ring)
    run(capsys, "seal", src, dst, "--keyring", ring, "--dataset", "ds", "--name", "a/b.bin")
    # wrong expected name: invalid (1)
    code, stdout, _ = run(capsys, "open", dst, "-o", out, "--keyring", ring, "--name", "a/c.bin", "--json")
    assert code == 1 and json.loads(stdout)["ok"] is False
    # tampered data: invalid (1), and no output file appears
    data = bytearray((tmp_path / "data.ztid").read_bytes())
    data[-5] ^= 1
    (tmp_path / "data.ztid").write_bytes(bytes(data))
    code, _, err = run(capsys, "open", dst, "-o", out, "--keyring", ring)
    assert code == 1 and "decryption failed" in err and not os.path.exists(out)
    # loose keyring permissions, missing files, bad dataset id: usage (2)
    os.chmod(ring, 0o644)
    assert run(capsys, "open", dst, "-o", out, "--keyring", ring)[0] == 2
    os.chmod(ring, 0o600)
    assert run(capsys, "open", str(tmp_path / "nope"), "--keyring", ring)[0] == 2
    assert run(capsys, "seal", str(tmp_path / "nope"), dst, "--keyring", ring, "--dataset", "ds")[0] == 2
    assert run(capsys, "seal", src, dst, "--keyring", ring, "--dataset", "bad/ds")[0] == 2
    assert run(capsys, "keyring", "init", ring)[0] == 2  # exists
    # a file that is not sealed at all: invalid (1)
    assert run(capsys, "open", src, "--keyring", ring)[0] == 1
