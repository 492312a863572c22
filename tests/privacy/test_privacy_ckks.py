"""Tests for CKKS aggregation: sums decrypt correctly, the server context cannot decrypt, parsing is strict."""

from __future__ import annotations

import numpy as np
import pytest

from trustmesh.errors import InputError
from trustmesh.privacy import CkksCiphertext, CkksKeyring, add_ciphertexts, add_plaintext


@pytest.fixture(scope="module")
def keyring() -> CkksKeyring:
    return CkksKeyring.generate()


def test_sum_of_ciphertexts_decrypts_to_the_sum(keyring: CkksKeyring) -> None:
    rng = np.random.default_rng(0)
    vectors = [rng.normal(size=5000) for _ in range(4)]  # > one chunk of 4096 slots
    cts = [keyring.encrypt(v) for v in vectors]

    summed = add_ciphertexts(keyring.public_context(), cts)

    assert np.allclose(keyring.decrypt(summed), np.sum(vectors, axis=0), atol=1e-4)


def test_plaintext_added_under_the_public_context_decrypts_to_the_sum(keyring: CkksKeyring) -> None:
    rng = np.random.default_rng(1)
    secret = rng.normal(size=5000)  # > one chunk of 4096 slots
    noise = rng.normal(scale=3.0, size=5000)

    noised = add_plaintext(keyring.public_context(), keyring.encrypt(secret), noise)

    assert np.allclose(keyring.decrypt(noised), secret + noise, atol=1e-4)
    assert not np.allclose(keyring.decrypt(noised), secret, atol=0.1)


def test_plaintext_of_the_wrong_length_or_non_finite_is_refused(keyring: CkksKeyring) -> None:
    ct = keyring.encrypt([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="2 values, the ciphertext holds 3"):
        add_plaintext(keyring.public_context(), ct, [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        add_plaintext(keyring.public_context(), ct, [1.0, np.nan, 2.0])
    with pytest.raises(InputError, match="secret key"):
        add_plaintext(keyring.secret_bytes(), ct, [0.0, 0.0, 0.0])


def test_public_context_holds_no_secret_key(keyring: CkksKeyring) -> None:
    with pytest.raises(ValueError, match="secret key"):
        CkksKeyring.from_bytes(keyring.public_context())


def test_aggregator_refuses_a_context_with_the_secret_key(keyring: CkksKeyring) -> None:
    ct = keyring.encrypt([1.0, 2.0])
    with pytest.raises(InputError, match="secret key"):
        add_ciphertexts(keyring.secret_bytes(), [ct, ct])


def test_ciphertext_roundtrips_through_bytes(keyring: CkksKeyring) -> None:
    ct = keyring.encrypt([1.5, -2.0, 3.25])
    again = CkksCiphertext.from_bytes(ct.to_bytes())
    assert np.allclose(keyring.decrypt(again), [1.5, -2.0, 3.25], atol=1e-5)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-5], "runs past the end"),
        (lambda b: b + b"x", "trailing"),
        (lambda b: b"XXXXXXX\n" + b[8:], "magic"),
        (lambda b: b[:10], "truncated"),
    ],
)
def test_tampered_ciphertext_bytes_are_rejected(keyring: CkksKeyring, mutate: object, message: str) -> None:
    data = keyring.encrypt([1.0, 2.0]).to_bytes()
    with pytest.raises(InputError, match=message):
        CkksCiphertext.from_bytes(mutate(data))  # type: ignore[operator]


def test_mismatched_lengths_are_rejected(keyring: CkksKeyring) -> None:
    with pytest.raises(InputError, match="length"):
        add_ciphertexts(keyring.public_context(), [keyring.encrypt([1.0]), keyring.encrypt([1.0, 2.0])])
