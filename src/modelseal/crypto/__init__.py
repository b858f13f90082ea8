"""The primitive layer: AEADs, HKDF, signatures, SM2 encryption, key files.

Everything above this package (``sealed``, ``license``, ``envelope``) builds
recipes from these names and never touches ``cryptography`` or the SM2
backend directly.
"""

from modelseal.crypto.aead import (
    AEAD_ALGORITHMS,
    AES_256_GCM,
    NONCE_SIZE,
    SM4_GCM,
    TAG_SIZE,
    Aead,
    aead_key_size,
    new_aead,
)
from modelseal.crypto.content_key import CONTENT_KEY_SIZE, ContentKey
from modelseal.crypto.kdf import hkdf_sha256
from modelseal.crypto.keys import (
    ALGORITHMS_FOR,
    KEY_TYPES,
    SIGNATURE_ALGORITHMS,
    KeyType,
    PrivateKey,
    PublicKey,
    SignatureAlgorithm,
    b64url,
    b64url_decode,
    generate_private_key,
    jwk_thumbprint,
    load_private_key,
    load_public_key,
)

__all__ = [
    "AEAD_ALGORITHMS",
    "AES_256_GCM",
    "ALGORITHMS_FOR",
    "CONTENT_KEY_SIZE",
    "KEY_TYPES",
    "NONCE_SIZE",
    "SIGNATURE_ALGORITHMS",
    "SM4_GCM",
    "TAG_SIZE",
    "Aead",
    "ContentKey",
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "SignatureAlgorithm",
    "aead_key_size",
    "b64url",
    "b64url_decode",
    "generate_private_key",
    "hkdf_sha256",
    "jwk_thumbprint",
    "load_private_key",
    "load_public_key",
    "new_aead",
]
