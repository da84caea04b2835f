"""loadstone.tls: certificate loading and checks, SNI choice, failure labels."""

from __future__ import annotations

import re
import ssl
import time
from pathlib import Path

import pytest

from loadstone.config.model import CertificateSpec, ListenerTls
from loadstone.tls.certificates import TlsError, load_certificate
from loadstone.tls.termination import failure_reason, load_certificates
from tests.tlscerts import Ca


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Ca:
    return Ca(tmp_path_factory.mktemp("pki"))


def test_names_expiry_and_wildcards(ca: Ca) -> None:
    issued = ca.issue("w", ["API.test", "*.apps.test"], days=10)
    cert = load_certificate("listeners.web.tls.certificates[0]", str(issued.bundle), None)
    assert cert.names == ("api.test", "*.apps.test")
    assert cert.matches("api.test") and cert.matches("x.apps.test")
    assert not cert.matches("apps.test") and not cert.matches("a.b.apps.test")
    assert not cert.matches("other.test")
    assert abs(cert.not_after - (time.time() + 10 * 86400)) < 120
    warning = cert.expiry_problem()
    assert warning is not None and "expires in 9 days" in warning
    assert str(issued.bundle) in warning


def test_expired_certificate_is_reported_as_such(ca: Ca) -> None:
    issued = ca.issue("old", ["old.test"], expired=True)
    cert = load_certificate("x", str(issued.cert), str(issued.key))
    assert cert.expiry_problem() == f"x: certificate {issued.cert} (CN=old.test) has expired"


def test_bad_files_name_the_yaml_path_and_the_file(ca: Ca, tmp_path: Path) -> None:
    a = ca.issue("a", ["a.test"])
    b = ca.issue("b", ["b.test"], kind="rsa")
    at = "listeners.web.tls.certificates[0]"
    with pytest.raises(TlsError, match=rf"^{re.escape(at)}: cannot read certificate .*/nope"):
        load_certificate(at, str(tmp_path / "nope"), None)
    with pytest.raises(TlsError, match=r"no private key in .*a\.crt"):
        load_certificate(at, str(a.cert), None)
    with pytest.raises(
        TlsError, match=r"the key in .*b.key does not match the certificate .*a.crt"
    ):
        load_certificate(at, str(a.cert), str(b.key))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(TlsError, match=r"no PEM certificate in .*junk\.pem"):
        load_certificate(at, str(tmp_path / "junk.pem"), None)


def test_sni_choice_defaults_to_the_first(ca: Ca) -> None:
    a = ca.issue("a", ["a.test"])
    b = ca.issue("b", ["*.b.test"], kind="rsa")
    config = ListenerTls(
        certificates=(CertificateSpec(str(a.bundle)), CertificateSpec(str(b.bundle)))
    )
    certs = load_certificates(config, "http", "listeners.web.tls")
    assert certs.choose("x.b.test")[1].names == ("*.b.test",)
    assert certs.choose("X.B.TEST.")[1].names == ("*.b.test",)
    assert certs.choose("a.test")[1].names == ("a.test",)
    assert certs.choose("nothing.test")[1].names == ("a.test",)
    assert certs.choose(None)[1].names == ("a.test",)


def test_unknown_cipher_names_the_key(ca: Ca) -> None:
    a = ca.issue("a", ["a.test"])
    config = ListenerTls(certificates=(CertificateSpec(str(a.bundle)),), ciphers="NOPE-CIPHER")
    with pytest.raises(TlsError, match=r"^listeners.web.tls.ciphers: no cipher known"):
        load_certificates(config, "http", "listeners.web.tls")


def test_failure_reasons_are_short_labels() -> None:
    err = ssl.SSLError(1, "[SSL: HTTP_REQUEST] http request")
    err.reason = "HTTP_REQUEST"
    assert failure_reason(err) == "http_request"
    assert failure_reason(ConnectionAbortedError("timeout")) == "timeout"
    assert failure_reason(ConnectionResetError()) == "closed"
    assert failure_reason(None) == "closed"
