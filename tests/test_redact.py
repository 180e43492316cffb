"""Secrets never reach the log."""

from inspector.redact import fingerprint, redact_authorization, redact_header, redact_url

SIG = "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024"


def test_sigv4_keeps_credential_drops_signature():
    value = ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
             f"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature={SIG}")
    out = redact_authorization(value)
    assert SIG not in out
    assert "Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request" in out
    assert out.endswith("Signature=[redacted]")


def test_bearer_token_is_fingerprinted():
    out = redact_header("authorization", "Bearer sk-live-abcdef123456")
    assert "sk-live" not in out and out.startswith("Bearer [redacted sha256:")
    assert out == redact_header("authorization", "Bearer sk-live-abcdef123456")  # stable, correlatable


def test_cookies_and_api_keys():
    for name in ("cookie", "set-cookie", "x-api-key", "x-amz-security-token"):
        assert redact_header(name, "secret-value") == fingerprint("secret-value")
    assert redact_header("content-type", "application/json") == "application/json"


def test_presigned_url_signature_and_tokens():
    url = ("/bucket/model.pt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20240101%2Fus-east-1"
           f"&X-Amz-Signature={SIG}&X-Amz-Security-Token=FwoGZXIvYXdz&api_key=k1&keep=1")
    out = redact_url(url)
    assert SIG not in out and "FwoGZXIvYXdz" not in out and "k1" not in out
    assert "X-Amz-Credential=AKIA%2F20240101%2Fus-east-1" in out and "keep=1" in out


def test_url_without_query_unchanged():
    assert redact_url("/v2/models/x/infer") == "/v2/models/x/infer"
