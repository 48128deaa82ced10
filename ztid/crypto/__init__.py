"""Encryption for ML data: Tink-format streaming AEAD, sealed files and key-encryption keys.

``ztid.crypto.stream`` holds the byte format (Tink AES-GCM-HKDF streaming), ``random_access`` the
seekable decryptor, ``sealed`` the self-describing file container and ``keys`` the local keyring
of key-encryption keys. Import the submodule you need; this package imports nothing heavy.
"""
