# pragma version ~=0.4.3
"""
@title LogAnchor
@notice Stores, per transparency-log origin, the latest anchored (tree size, root hash).
@dev Only keys the owner registered for an origin may anchor it. A smaller tree size, or the
     same size with a different root, is refused: an anchored checkpoint can only be extended,
     so a rewritten log cannot be re-anchored even with the log's signing key.
"""

struct Anchor:
    size: uint256
    root: bytes32
    block_number: uint256

event Anchored:
    origin: indexed(bytes32)
    submitter: indexed(address)
    size: uint256
    root: bytes32

event KeyRegistered:
    origin: indexed(bytes32)
    key: indexed(address)
    allowed: bool

owner: public(address)
anchors: public(HashMap[bytes32, Anchor])
registered: public(HashMap[bytes32, HashMap[address, bool]])


@deploy
def __init__():
    self.owner = msg.sender


@external
def set_key(origin: bytes32, key: address, allowed: bool):
    """Register (allowed=True) or revoke (allowed=False) an anchoring key for an origin."""
    assert msg.sender == self.owner, "only the owner manages keys"
    assert key != empty(address), "zero address"
    self.registered[origin][key] = allowed
    log KeyRegistered(origin=origin, key=key, allowed=allowed)


@external
def anchor(origin: bytes32, size: uint256, root: bytes32):
    """Record (size, root) for origin; it must extend what is already anchored."""
    assert self.registered[origin][msg.sender], "key not registered for origin"
    assert size > 0, "empty tree"
    prev: Anchor = self.anchors[origin]
    assert size >= prev.size, "tree size went backwards"
    if size == prev.size:
        assert root == prev.root, "same size, different root"
    self.anchors[origin] = Anchor(size=size, root=root, block_number=block.number)
    log Anchored(origin=origin, submitter=msg.sender, size=size, root=root)


@view
@external
def latest(origin: bytes32) -> (uint256, bytes32, uint256):
    """Return the latest anchored (size, root, block number) for origin; size 0 if none."""
    a: Anchor = self.anchors[origin]
    return a.size, a.root, a.block_number
