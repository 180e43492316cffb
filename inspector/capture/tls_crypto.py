"""TLS record protection for offline decryption: suites, key schedules, record opening.

What a key log gives is turned into record keys here, with `cryptography` doing the ciphers:

* **TLS 1.3** (RFC 8446 §7): each traffic secret gives `key = HKDF-Expand-Label(secret, "key",
  "", key_length)` and `iv = HKDF-Expand-Label(secret, "iv", "", 12)`; the nonce is the IV XOR
  the record's sequence number; the additional data is the record header. The plaintext ends
  with the real content type and zero padding. A KeyUpdate moves a direction to
  `HKDF-Expand-Label(secret, "traffic upd", "", Hash.length)`.
* **TLS 1.2** (RFC 5246 §6.3): `key_block = PRF(master_secret, "key expansion", server_random +
  client_random)` with the suite's hash (SHA-256 or SHA-384), cut into MAC keys, cipher keys and
  IVs. AES-GCM and AES-CCM (RFC 5288, 6655): 4-byte salt + the record's 8-byte explicit nonce;
  ChaCha20-Poly1305 (RFC 7905): 12-byte IV XOR sequence number; additional data `seq || type ||
  version || length`. CBC suites with HMAC-SHA1/SHA-256/SHA-384, MAC-then-encrypt or
  encrypt-then-MAC (RFC 7366), explicit IVs.
* **TLS 1.0 / 1.1**: the MD5/SHA-1 PRF, CBC suites (TLS 1.0 chains its IV across records).
* Older suites still met in captures of old stacks: CBC with Camellia, SEED, 3DES, IDEA or DES,
  and RC4 (one keystream per direction), HMAC-MD5 or HMAC-SHA1. Export suites, NULL ciphers,
  ARIA and GOST are not decrypted.

`open()` returns `(content type, plaintext)` when the record authenticates and None when it
does not: a failed tag or MAC is the signal of a wrong key, and nothing unauthenticated is ever
returned. Nothing here raises on record contents.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4, IDEA, SEED, Camellia, TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

AES_GCM = "aes-gcm"
AES_CCM = "aes-ccm"
AES_CCM_8 = "aes-ccm-8"
CHACHA20_POLY1305 = "chacha20-poly1305"
AES_CBC = "aes-cbc"
CAMELLIA_CBC = "camellia-cbc"
SEED_CBC = "seed-cbc"
TRIPLE_DES_CBC = "3des-cbc"
DES_CBC = "des-cbc"
IDEA_CBC = "idea-cbc"
RC4 = "rc4"

#: Block ciphers of the CBC suites: (cipher factory from the key, block size).
_BLOCK_CIPHERS = {
    AES_CBC: (algorithms.AES, 16),
    CAMELLIA_CBC: (Camellia, 16),
    SEED_CBC: (SEED, 16),
    TRIPLE_DES_CBC: (TripleDES, 8),
    DES_CBC: (lambda key: TripleDES(key * 3), 8),  # single DES: the three 3DES keys equal
    IDEA_CBC: (IDEA, 8),
}

TLS10, TLS11, TLS12, TLS13 = 0x0301, 0x0302, 0x0303, 0x0304


@dataclass(frozen=True, slots=True)
class SuiteSpec:
    """How a cipher suite protects records."""

    cipher: str
    key_length: int
    hash: str  # PRF (TLS 1.2) / HKDF (TLS 1.3) hash: sha256 or sha384
    mac: str | None = None  # CBC suites: the HMAC hash
    tls13: bool = False

    @property
    def tag_length(self) -> int:
        return 8 if self.cipher == AES_CCM_8 else 16

    @property
    def block_size(self) -> int:
        """CBC suites: the cipher's block size (the explicit IV's length); 0 for the others."""
        entry = _BLOCK_CIPHERS.get(self.cipher)
        return entry[1] if entry is not None else 0


def _suites() -> dict[int, SuiteSpec]:
    gcm128, gcm256 = SuiteSpec(AES_GCM, 16, "sha256"), SuiteSpec(AES_GCM, 32, "sha384")
    chacha = SuiteSpec(CHACHA20_POLY1305, 32, "sha256")
    ccm128, ccm256 = SuiteSpec(AES_CCM, 16, "sha256"), SuiteSpec(AES_CCM, 32, "sha256")
    ccm8_128, ccm8_256 = SuiteSpec(AES_CCM_8, 16, "sha256"), SuiteSpec(AES_CCM_8, 32, "sha256")
    cbc128_sha, cbc256_sha = SuiteSpec(AES_CBC, 16, "sha256", "sha1"), SuiteSpec(AES_CBC, 32, "sha256", "sha1")
    cbc128_sha256 = SuiteSpec(AES_CBC, 16, "sha256", "sha256")
    cbc256_sha256 = SuiteSpec(AES_CBC, 32, "sha256", "sha256")
    cbc256_sha384 = SuiteSpec(AES_CBC, 32, "sha384", "sha384")
    rc4_md5, rc4_sha = SuiteSpec(RC4, 16, "sha256", "md5"), SuiteSpec(RC4, 16, "sha256", "sha1")
    camellia128 = SuiteSpec(CAMELLIA_CBC, 16, "sha256", "sha1")
    camellia256 = SuiteSpec(CAMELLIA_CBC, 32, "sha256", "sha1")
    seed, idea = SuiteSpec(SEED_CBC, 16, "sha256", "sha1"), SuiteSpec(IDEA_CBC, 16, "sha256", "sha1")
    triple_des, des = SuiteSpec(TRIPLE_DES_CBC, 24, "sha256", "sha1"), SuiteSpec(DES_CBC, 8, "sha256", "sha1")
    table: dict[int, SuiteSpec] = {
        0x1301: SuiteSpec(AES_GCM, 16, "sha256", tls13=True),
        0x1302: SuiteSpec(AES_GCM, 32, "sha384", tls13=True),
        0x1303: SuiteSpec(CHACHA20_POLY1305, 32, "sha256", tls13=True),
        0x1304: SuiteSpec(AES_CCM, 16, "sha256", tls13=True),
        0x1305: SuiteSpec(AES_CCM_8, 16, "sha256", tls13=True),
    }
    for codes, spec in (
        ((0x009C, 0x009E, 0x00A0, 0x00A2, 0x00A4, 0x00A6, 0xC02B, 0xC02D, 0xC02F, 0xC031, 0x00A8, 0x00AA,
          0x00AC), gcm128),
        ((0x009D, 0x009F, 0x00A1, 0x00A3, 0x00A5, 0x00A7, 0xC02C, 0xC02E, 0xC030, 0xC032, 0x00A9, 0x00AB,
          0x00AD), gcm256),
        ((0xCCA8, 0xCCA9, 0xCCAA, 0xCCAB, 0xCCAC, 0xCCAD, 0xCCAE), chacha),
        ((0xC09C, 0xC09E, 0xC0AC, 0xC0A4, 0xC0A6), ccm128),
        ((0xC09D, 0xC09F, 0xC0AD, 0xC0A5, 0xC0A7), ccm256),
        ((0xC0A0, 0xC0A2, 0xC0AE, 0xC0A8, 0xC0AA), ccm8_128),
        ((0xC0A1, 0xC0A3, 0xC0AF, 0xC0A9, 0xC0AB), ccm8_256),
        ((0x002F, 0x0030, 0x0031, 0x0032, 0x0033, 0x0034, 0xC004, 0xC009, 0xC00E, 0xC013, 0xC018, 0x008C),
         cbc128_sha),
        ((0x0035, 0x0036, 0x0037, 0x0038, 0x0039, 0x003A, 0xC005, 0xC00A, 0xC00F, 0xC014, 0xC019, 0x008D),
         cbc256_sha),
        ((0x003C, 0x003E, 0x003F, 0x0040, 0x0067, 0x006C, 0xC023, 0xC025, 0xC027, 0xC029), cbc128_sha256),
        ((0x003D, 0x0068, 0x0069, 0x006A, 0x006B, 0x006D), cbc256_sha256),
        ((0xC024, 0xC026, 0xC028, 0xC02A), cbc256_sha384),
        ((0x0041, 0x0042, 0x0043, 0x0044, 0x0045, 0x0046), camellia128),
        ((0x0084, 0x0085, 0x0086, 0x0087, 0x0088, 0x0089), camellia256),
        ((0x0096, 0x0097, 0x0098, 0x0099, 0x009A, 0x009B), seed),
        ((0x0007,), idea),
        ((0x000A, 0x000D, 0x0010, 0x0013, 0x0016, 0x001B, 0xC003, 0xC008, 0xC00D, 0xC012, 0xC017), triple_des),
        ((0x0009, 0x000C, 0x000F, 0x0012, 0x0015, 0x001A), des),
        ((0x0004, 0x0018), rc4_md5),
        ((0x0005, 0xC002, 0xC007, 0xC00C, 0xC011, 0xC016, 0x008A), rc4_sha),
    ):
        for code in codes:
            table[code] = spec
    return table


#: Cipher suites whose records can be decrypted, by code.
SUITES = _suites()

_HASHES = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384()}
_DIGEST_SIZES = {"md5": 16, "sha1": 20, "sha256": 32, "sha384": 48}


# -- key schedules ---------------------------------------------------------------------------


def hkdf_expand_label(secret: bytes, label: bytes, context: bytes, length: int, hash_name: str) -> bytes:
    """HKDF-Expand-Label (RFC 8446 §7.1)."""
    full_label = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full_label)]) + full_label + bytes([len(context)]) + context
    return HKDFExpand(_HASHES[hash_name], length, info).derive(secret)


def _p_hash(hash_name: str, secret: bytes, seed: bytes, length: int) -> bytes:
    out = bytearray()
    a = seed
    while len(out) < length:
        a = hmac.digest(secret, a, hash_name)
        out += hmac.digest(secret, a + seed, hash_name)
    return bytes(out[:length])


def prf(version: int, hash_name: str, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """The TLS PRF: P_<hash> for TLS 1.2 (RFC 5246 §5), P_MD5 XOR P_SHA1 before (RFC 2246 §5)."""
    if version >= TLS12:
        return _p_hash(hash_name, secret, label + seed, length)
    half = (len(secret) + 1) // 2
    md5 = _p_hash("md5", secret[:half], label + seed, length)
    sha1 = _p_hash("sha1", secret[len(secret) - half:], label + seed, length)
    return bytes(x ^ y for x, y in zip(md5, sha1))


# -- record protection -----------------------------------------------------------------------


def _aead(spec: SuiteSpec, key: bytes) -> AESGCM | AESCCM | ChaCha20Poly1305:
    if spec.cipher == AES_GCM:
        return AESGCM(key)
    if spec.cipher == CHACHA20_POLY1305:
        return ChaCha20Poly1305(key)
    return AESCCM(key, tag_length=spec.tag_length)


def _xor_nonce(iv: bytes, seq: int) -> bytes:
    return (int.from_bytes(iv, "big") ^ seq).to_bytes(len(iv), "big")


class Tls13Protection:
    """One direction's keys in one TLS 1.3 epoch (a traffic secret)."""

    __slots__ = ("_aead", "_iv", "secret", "spec")

    def __init__(self, spec: SuiteSpec, secret: bytes) -> None:
        self.spec = spec
        self.secret = secret
        self._aead = _aead(spec, hkdf_expand_label(secret, b"key", b"", spec.key_length, spec.hash))
        self._iv = hkdf_expand_label(secret, b"iv", b"", 12, spec.hash)

    def open(self, header: bytes, fragment: bytes, seq: int) -> tuple[int, bytes] | None:
        if len(fragment) < self.spec.tag_length + 1:
            return None
        try:
            plain = self._aead.decrypt(_xor_nonce(self._iv, seq), fragment, header)
        except (InvalidTag, ValueError):
            return None
        inner = plain.rstrip(b"\x00")
        if not inner:
            return None  # no content type: RFC 8446 §5.4 makes this an unexpected_message
        return inner[-1], inner[:-1]

    def updated(self) -> Tls13Protection:
        """The keys after a KeyUpdate from this direction."""
        size = _DIGEST_SIZES[self.spec.hash]
        return Tls13Protection(self.spec, hkdf_expand_label(self.secret, b"traffic upd", b"", size, self.spec.hash))


class Tls12AeadProtection:
    """One direction of a TLS 1.2 AEAD suite (GCM, CCM, ChaCha20-Poly1305)."""

    __slots__ = ("_aead", "_explicit", "_iv", "_tag")

    def __init__(self, spec: SuiteSpec, key: bytes, iv: bytes) -> None:
        self._aead = _aead(spec, key)
        self._iv = iv
        self._explicit = spec.cipher != CHACHA20_POLY1305
        self._tag = spec.tag_length

    def open(self, header: bytes, fragment: bytes, seq: int) -> tuple[int, bytes] | None:
        if self._explicit:
            if len(fragment) < 8 + self._tag:
                return None
            nonce, sealed = self._iv + fragment[:8], fragment[8:]
        else:
            if len(fragment) < self._tag:
                return None
            nonce, sealed = _xor_nonce(self._iv, seq), fragment
        aad = seq.to_bytes(8, "big") + header[:3] + (len(sealed) - self._tag).to_bytes(2, "big")
        try:
            return header[0], self._aead.decrypt(nonce, sealed, aad)
        except (InvalidTag, ValueError):
            return None


class CbcProtection:
    """One direction of a CBC suite with an HMAC (TLS 1.0-1.2), MAC-then-encrypt or
    encrypt-then-MAC. TLS 1.0 chains the IV from the previous record's last block."""

    __slots__ = ("_block", "_chained_iv", "_etm", "_key", "_mac", "_mac_key", "_mac_size")

    def __init__(self, spec: SuiteSpec, key: bytes, mac_key: bytes, *, encrypt_then_mac: bool,
                 chained_iv: bytes | None = None) -> None:
        assert spec.mac is not None
        factory, self._block = _BLOCK_CIPHERS[spec.cipher]
        self._key = factory(key)
        self._mac = spec.mac
        self._mac_key = mac_key
        self._mac_size = _DIGEST_SIZES[spec.mac]
        self._etm = encrypt_then_mac
        self._chained_iv = chained_iv

    def _mac_of(self, seq: int, header: bytes, data: bytes) -> bytes:
        return hmac.digest(self._mac_key, seq.to_bytes(8, "big") + header[:3] + len(data).to_bytes(2, "big") + data,
                           self._mac)

    def _decrypt(self, data: bytes) -> bytes | None:
        block = self._block
        if self._chained_iv is not None:
            iv, body = self._chained_iv, data
        else:
            iv, body = data[:block], data[block:]
        if not body or len(body) % block:
            return None
        if self._chained_iv is not None:
            self._chained_iv = body[-block:]
        decryptor = Cipher(self._key, modes.CBC(iv)).decryptor()
        plain = decryptor.update(body) + decryptor.finalize()
        pad = plain[-1]
        if pad + 1 > len(plain) or plain[-pad - 1:] != bytes([pad]) * (pad + 1):
            return None
        return plain[:-pad - 1]

    def open(self, header: bytes, fragment: bytes, seq: int) -> tuple[int, bytes] | None:
        size = self._mac_size
        if self._etm:
            if len(fragment) < size + self._block:
                return None
            data, tag = fragment[:-size], fragment[-size:]
            if not hmac.compare_digest(self._mac_of(seq, header, data), tag):
                if self._chained_iv is not None:
                    self._chained_iv = data[-self._block:]  # the sender chained from it all the same
                return None
            plain = self._decrypt(data)
            return None if plain is None else (header[0], plain)
        plain = self._decrypt(fragment)
        if plain is None or len(plain) < size:
            return None
        content, tag = plain[:-size], plain[-size:]
        if not hmac.compare_digest(self._mac_of(seq, header, content), tag):
            return None
        return header[0], content


class Rc4Protection:
    """One direction of an RC4 suite: a keystream that runs across records, MAC-then-encrypt."""

    __slots__ = ("_decryptor", "_mac", "_mac_key", "_mac_size")

    def __init__(self, spec: SuiteSpec, key: bytes, mac_key: bytes) -> None:
        assert spec.mac is not None
        self._decryptor = Cipher(ARC4(key), mode=None).decryptor()
        self._mac = spec.mac
        self._mac_key = mac_key
        self._mac_size = _DIGEST_SIZES[spec.mac]

    def open(self, header: bytes, fragment: bytes, seq: int) -> tuple[int, bytes] | None:
        plain = self._decryptor.update(fragment)  # the keystream moves on whatever the MAC says
        size = self._mac_size
        if len(plain) < size:
            return None
        content, tag = plain[:-size], plain[-size:]
        expected = hmac.digest(self._mac_key, seq.to_bytes(8, "big") + header[:3] + len(content).to_bytes(2, "big")
                               + content, self._mac)
        return (header[0], content) if hmac.compare_digest(expected, tag) else None


RecordProtection = Tls13Protection | Tls12AeadProtection | CbcProtection | Rc4Protection


def tls12_protections(spec: SuiteSpec, version: int, master_secret: bytes, client_random: bytes,
                      server_random: bytes, *, encrypt_then_mac: bool) -> tuple[RecordProtection, RecordProtection]:
    """(client-to-server, server-to-client) record protection of a TLS 1.0-1.2 session."""
    mac_size = _DIGEST_SIZES[spec.mac] if spec.mac else 0
    if spec.block_size:
        iv_size = spec.block_size if version <= TLS10 else 0
    elif spec.cipher == RC4:
        iv_size = 0
    else:
        iv_size = 12 if spec.cipher == CHACHA20_POLY1305 else 4
    size = 2 * (mac_size + spec.key_length + iv_size)
    block = prf(version, spec.hash, master_secret, b"key expansion", server_random + client_random, size)
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        pos += n
        return block[pos - n:pos]

    client_mac, server_mac = take(mac_size), take(mac_size)
    client_key, server_key = take(spec.key_length), take(spec.key_length)
    client_iv, server_iv = take(iv_size), take(iv_size)
    if spec.cipher == RC4:
        return Rc4Protection(spec, client_key, client_mac), Rc4Protection(spec, server_key, server_mac)
    if spec.block_size:
        chained = version <= TLS10
        return (CbcProtection(spec, client_key, client_mac, encrypt_then_mac=encrypt_then_mac,
                              chained_iv=client_iv if chained else None),
                CbcProtection(spec, server_key, server_mac, encrypt_then_mac=encrypt_then_mac,
                              chained_iv=server_iv if chained else None))
    return Tls12AeadProtection(spec, client_key, client_iv), Tls12AeadProtection(spec, server_key, server_iv)
