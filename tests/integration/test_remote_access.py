"""Reaching a device from elsewhere: the control API's bearer token and NBD over TLS, through real nbdkit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from blockemu.control.auth import TOKEN_ENV
from blockemu.control.client import ControlClient, ControlClientError, ServedDevice

pytestmark = pytest.mark.integration
TOKEN = "Zm9yLXRlc3RzLW9ubHktMDEyMzQ1Njc4OQ"


def _serve(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "blockemu", "serve", str(config), "--unix",
                           str(config.parent / "s.sock"), *args], capture_output=True, text=True, timeout=60)


def test_remote_binding_is_refused_without_the_flag_and_a_token(real_components: None, small_config: Path,
                                                                tmp_path: Path) -> None:
    no_flag = _serve(small_config, "--http", "0.0.0.0:0")
    assert no_flag.returncode == 2 and no_flag.stderr.count("\n") == 1
    assert "--http-allow-remote" in no_flag.stderr
    no_token = _serve(small_config, "--http", "0.0.0.0:0", "--http-allow-remote")
    assert no_token.returncode == 2 and "--http-token-file" in no_token.stderr
    short = tmp_path / "short-token"
    short.write_text("abc\n")
    weak = _serve(small_config, "--http", "0.0.0.0:0", "--http-allow-remote", "--http-token-file", str(short))
    assert weak.returncode == 2 and "16 to 4096 characters" in weak.stderr and weak.stderr.count("\n") == 1
    assert not (tmp_path / "s.sock").exists()


def test_every_change_needs_the_token_and_reads_do_not(real_components: None, small_config: Path,
                                                       tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    device = ServedDevice(small_config, extra_args=["--http-token-file", str(token_file), "--http-allow-remote"])
    # Bound to every address: the flag and the token make that allowed; loopback still reaches it.
    device.extra_args += ["--http", f"0.0.0.0:{device.port}"]
    env_token = os.environ.pop(TOKEN_ENV, None)
    try:
        with device:
            anonymous = device.control
            assert anonymous.device()["name"] == "ufs_test"  # GETs are open
            assert "blockemu_" in anonymous.metrics_text()
            before = anonymous.device()
            for token in (None, "Zm9yLXRlc3RzLW9ubHktMDEyMzQ1Njc4OA"):
                request = urllib.request.Request(f"{anonymous.url}/api/v1/age", method="POST",
                                                 data=b'{"fragmentation_percent": 50}')
                if token:
                    request.add_header("Authorization", f"Bearer {token}")
                with pytest.raises(urllib.error.HTTPError) as refused:
                    urllib.request.urlopen(request, timeout=10)
                assert refused.value.code == 401
                assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")
                assert "Authorization: Bearer" in json.loads(refused.value.read())["error"]
            with pytest.raises(ControlClientError, match="401"):
                anonymous.put("hid/defrag_trigger", "enable")
            assert anonymous.device()["hid"] == before["hid"]
            assert anonymous.device()["fragmentation"] == before["fragmentation"]

            holder = ControlClient(anonymous.url, token=TOKEN)
            holder.post("age", {"fragmentation_percent": 50, "seed": 3, "mapped_only": False})
            assert holder.device()["fragmentation"] != before["fragmentation"]
            spec = holder.get("openapi.json")
            assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
            assert "security" in spec["paths"]["/api/v1/age"]["post"]

            ctl = [sys.executable, "-m", "blockemu", "ctl", "--url", anonymous.url]
            refused_ctl = subprocess.run([*ctl, "hid", "set", "defrag_trigger", "enable"], capture_output=True,
                                         text=True, timeout=60)
            assert refused_ctl.returncode == 1 and "401" in refused_ctl.stderr
            allowed = subprocess.run([*ctl, "--token-file", str(token_file), "hid", "set", "defrag_trigger",
                                      "enable"], capture_output=True, text=True, timeout=60)
            assert allowed.returncode == 0, allowed.stderr
            assert holder.get("hid")["state"] != before["hid"]["state"]  # the defrag the ctl call started
    finally:
        if env_token is not None:
            os.environ[TOKEN_ENV] = env_token


def test_nbd_over_tls_with_a_pre_shared_key(real_components: None, small_config: Path, tmp_path: Path) -> None:
    import nbd

    psk = tmp_path / "keys.psk"
    psk.write_text("alice:" + "5a" * 32 + "\n")
    bad = tmp_path / "bad.psk"
    bad.write_text("alice:not-hex\n")
    refused = _serve(small_config, "--tls-psk", str(bad))
    assert refused.returncode == 2 and "line 1 must be username:hexkey" in refused.stderr
    assert refused.stderr.count("\n") == 1

    with ServedDevice(small_config, extra_args=["--tls-psk", str(psk)]) as device:
        printed = "\n".join(device.output)
        assert f"nbds+unix://alice@/?socket={device.socket}&tls-psk-file={psk}" in printed
        with pytest.raises(nbd.Error, match="requires TLS"):
            device.connect()  # plain NBD is refused
        handle = nbd.NBD()
        handle.set_tls(nbd.TLS_REQUIRE)
        handle.set_tls_username("alice")
        handle.set_tls_psk_file(str(psk))
        handle.connect_unix(str(device.socket))
        assert handle.get_tls_negotiated()
        handle.pwrite(b"\xa5" * 4096, 8192)
        handle.flush()
        assert handle.pread(4096, 8192) == b"\xa5" * 4096
        handle.shutdown()
        wrong = nbd.NBD()
        wrong.set_tls(nbd.TLS_REQUIRE)
        wrong.set_tls_username("alice")
        other = tmp_path / "other.psk"
        other.write_text("alice:" + "77" * 32 + "\n")
        wrong.set_tls_psk_file(str(other))
        with pytest.raises(nbd.Error):
            wrong.connect_unix(str(device.socket))  # a wrong key fails the handshake
