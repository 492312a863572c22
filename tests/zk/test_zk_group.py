"""Known-answer tests for ristretto255 (RFC 9496 Appendix A) and the hazmat group layer."""

from __future__ import annotations

import pytest

from trustmesh.errors import ProofError
from trustmesh.privacy.zk.hazmat import (
    GENERATOR,
    H,
    IDENTITY,
    L,
    Point,
    Transcript,
    base_mul,
    commit,
    hash_to_point,
    scalar_from_bytes,
    scalar_to_bytes,
    schnorr_prove,
    schnorr_verify,
)

# RFC 9496 A.1: encodings of [0]B .. [15]B.
MULTIPLES = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76",
    "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919",
    "94741f5d5d52755ece4f23f044ee27d5d1ea1e2bd196b462166b16152a9d0259",
    "da80862773358b466ffadfe0b3293ab3d9fd53c5ea6c955358f568322daf6a57",
    "e882b131016b52c1d3337080187cf768423efccbb517bb495ab812c4160ff44e",
    "f64746d3c92b13050ed8d80236a7f0007c3b3f962f5ba793d19a601ebb1df403",
    "44f53520926ec81fbd5a387845beb7df85a96a24ece18738bdcfa6a7822a176d",
    "903293d8f2287ebe10e2374dc1a53e0bc887e592699f02d077d5263cdd55601c",
    "02622ace8f7303a31cafc63f8fc48fdc16e1c8c8d234b2f0d6685282a9076031",
    "20706fd788b2720a1ed2a5dad4952b01f413bcf0e7564de8cdc816689e2db95f",
    "bce83f8ba5dd2fa572864c24ba1810f9522bc6004afe95877ac73241cafdab42",
    "e4549ee16b9aa03099ca208c67adafcafa4c3f3e4e5303de6026e3ca8ff84460",
    "aa52e000df2e16f55fb1032fc33bc42742dad6bd5a8fc0be0167436c5948501f",
    "46376b80f409b29dc2b5f6f0c52591990896e5716f41477cd30085ab7f10301e",
    "e0c418f7c8d9c4cdd7395b93ea124f3ad99021bb681dfc3302a9d99a2e53e64e",
]

# RFC 9496 A.2: encodings that must be rejected.
INVALID = [
    # non-canonical field encodings
    "00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "f3ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    # negative field elements
    "0100000000000000000000000000000000000000000000000000000000000000",
    "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "ed57ffd8c914fb201471d1c3d245ce3c746fcbe63a3679d51b6a516ebebe0e20",
    "c34c4e1826e5d403b78e246e88aa051c36ccf0aafebffe137d148a2bf9104562",
    "c940e5a4404157cfb1628b108db051a8d439e1a421394ec4ebccb9ec92a8ac78",
    "47cfc5497c53dc8e61c91d17fd626ffb1c49e2bca94eed052281b510b1117a24",
    "f1c6165d33367351b0da8f6e4511010c68174a03b6581212c71c0e1d026c3c72",
    "87260f7a2f12495118360f02c26a470f450dadf34a413d21042b43b9d93e1309",
    # non-square x^2
    "26948d35ca62e643e26a83177332e6b6afeb9d08e4268b650f1f5bbd8d81d371",
    "4eac077a713c57b4f4397629a4145982c661f48044dd3f96427d40b147d9742f",
    "de6a7b00deadc788eb6b6c8d20c0ae96c2f2019078fa604fee5b87d6e989ad7b",
    "bcab477be20861e01e4a0e295284146a510150d9817763caf1a6f4b422d67042",
    "2a292df7e32cababbd9de088d1d1abec9fc0440f637ed2fba145094dc14bea08",
    "f4a9e534fc0d216c44b218fa0c42d99635a0127ee2e53c712f70609649fdff22",
    "8268436f8c4126196cf64b3c7ddbda90746a378625f9813dd9b8457077256731",
    "2810e5cbc2cc4d4eece54f61c6f69758e289aa7ab440b3cbeaa21995c2f4232b",
    # negative xy value
    "3eb858e78f5a7254d8c9731174a94f76755fd3941c0ac93735c07ba14579630e",
    "a45fdc55c76448c049a1ab33f17023edfb2be3581e9c7aade8a6125215e04220",
    "d483fe813c6ba647ebbfd3ec41adca1c6130c2beeee9d9bf065c8d151c5f396e",
    "8a2e1d30050198c65a54483123960ccc38aef6848e1ec8f5f780e8523769ba32",
    "32888462f8b486c68ad7dd9610be5192bbeaf3b443951ac1a8118419d9fa097b",
    "227142501b9d4355ccba290404bde41575b037693cef1f438c47f8fbf35d1165",
    # s = -1, which causes y = 0
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]


@pytest.mark.parametrize("n", range(16))
def test_small_multiples_of_the_generator_match_rfc9496(n: int) -> None:
    expected = bytes.fromhex(MULTIPLES[n])
    assert base_mul(n).to_bytes() == expected
    assert (GENERATOR * n).to_bytes() == expected


def test_repeated_addition_matches_rfc9496() -> None:
    acc = IDENTITY
    for hex_encoding in MULTIPLES:
        assert acc.to_bytes() == bytes.fromhex(hex_encoding)
        acc = acc + GENERATOR


@pytest.mark.parametrize("hex_encoding", MULTIPLES)
def test_valid_encodings_decode_and_round_trip(hex_encoding: str) -> None:
    data = bytes.fromhex(hex_encoding)
    assert Point.from_bytes(data).to_bytes() == data


@pytest.mark.parametrize("hex_encoding", INVALID)
def test_invalid_encodings_are_rejected(hex_encoding: str) -> None:
    with pytest.raises(ProofError, match="not a valid ristretto255 encoding"):
        Point.from_bytes(bytes.fromhex(hex_encoding))


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_length_points_are_rejected(length: int) -> None:
    with pytest.raises(ProofError, match="32 bytes"):
        Point.from_bytes(b"\x01" * length)


def test_group_order_annihilates_the_generator() -> None:
    assert (GENERATOR * L).is_identity()
    assert (GENERATOR * (L + 5)) == base_mul(5)
    assert -GENERATOR + GENERATOR == IDENTITY


def test_scalars_must_be_canonical() -> None:
    assert scalar_from_bytes(scalar_to_bytes(L - 1)) == L - 1
    with pytest.raises(ProofError, match="non-canonical"):
        scalar_from_bytes(L.to_bytes(32, "little"))
    with pytest.raises(ProofError, match="non-canonical"):
        scalar_from_bytes(b"\xff" * 32)
    with pytest.raises(ProofError, match="32 bytes"):
        scalar_from_bytes(b"\x00" * 31)


def test_second_generator_is_hash_derived_and_independent_of_g() -> None:
    assert H == hash_to_point(b"trustmesh/pedersen/H/v1")
    assert H != GENERATOR and not H.is_identity()
    assert all(H != base_mul(n) for n in range(16))


def test_pedersen_commitment_is_additively_homomorphic() -> None:
    assert commit(3, 10) + commit(4, 20) == commit(7, 30)
    assert commit(-1, 0) + commit(1, 0) == IDENTITY
    assert commit(5, 1) != commit(6, 1)


def test_transcript_challenges_depend_on_every_message() -> None:
    def run(msg: bytes, label: bytes = b"m") -> int:
        t = Transcript(b"p")
        t.append(label, msg)
        return t.challenge(b"c")

    assert run(b"a") == run(b"a")
    assert run(b"a") != run(b"b")
    assert run(b"a", b"m") != run(b"a", b"n")
    # framing: moving a byte between label and message changes the challenge
    assert run(b"ab", b"m") != run(b"b", b"ma")


def test_schnorr_hazmat_round_trip_and_rejections() -> None:
    secret = 123456789
    proof = schnorr_prove(secret, b"ctx")
    schnorr_verify(base_mul(secret), proof, b"ctx")
    with pytest.raises(ProofError):
        schnorr_verify(base_mul(secret), proof, b"other")
    with pytest.raises(ProofError):
        schnorr_verify(base_mul(secret + 1), proof, b"ctx")
    with pytest.raises(ProofError, match="identity"):
        schnorr_verify(IDENTITY, proof, b"ctx")
    with pytest.raises(ProofError, match="non-canonical"):
        schnorr_verify(base_mul(secret), proof[:32] + b"\xff" * 32, b"ctx")
