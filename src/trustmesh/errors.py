"""The one error root of trustmesh.

Every error a user can cause or a verifier can find is a ``TrustmeshError``. The CLI turns any of
them into one clear line and a non-zero exit; a traceback reaching a user is a bug.

::

    TrustmeshError
    ├── InputError                  bad file, field or argument (names it)
    │   ├── DatasetError            a dataset file is missing or its sha256 does not match
    │   └── ConfigError             a settings/TOML/playbook value is invalid
    ├── VerificationError           something that must verify does not (carries ``index`` if known)
    │   ├── InclusionProofError     an inclusion proof does not lead to the root
    │   ├── ConsistencyError        two tree states are not consistent (a rewritten history)
    │   ├── SignatureError          a signature, key or signed note does not verify
    │   ├── LogIntegrityError       stored entries/hashes do not match what was committed
    │   ├── CheckpointError         a checkpoint is malformed, replaced or out of order
    │   ├── WitnessError            a witness refused to cosign or saw a split view
    │   ├── ArtifactDigestError     a model artifact does not match its manifest
    │   ├── AnchorError             a chain anchor disagrees with the log
    │   ├── ProofError              a zero-knowledge proof is rejected
    │   └── PassportError           a model passport field does not verify (names the field)
    ├── ModelError                  a detector is unfitted, or features do not fit it
    ├── PlaybookError               a playbook is invalid or cannot run
    ├── ActionError                 a response action failed
    ├── SinkError                   an output (file, syslog, stream, SIEM, webhook) failed a delivery
    ├── ChainError                  the chain is unreachable, reverts or is not ours
    ├── FederatedError              a federated round cannot proceed
    ├── PrivacyBudgetExceeded       the differential-privacy budget is spent
    ├── EnvironmentProblem          the machine, not the input: disk full, read-only media,
    │                               permission denied, I/O error (carries ``path``)
    └── MissingDependencyError      an optional extra is not installed (says which)

Exit codes (the CLI maps every error to one of them; see README "Exit codes"):

==== =====================================================================================
0    success
1    does not verify: any ``VerificationError`` (a proof, signature, checkpoint, log, digest)
2    bad input: ``InputError`` and every other ``TrustmeshError`` (file, field, argument)
3    environment: ``EnvironmentProblem`` (disk full, read-only, permissions; names the path)
130  interrupted (SIGINT)
==== =====================================================================================
"""

from __future__ import annotations

import errno
import os

__all__ = [
    "ActionError",
    "AnchorError",
    "ArtifactDigestError",
    "ChainError",
    "CheckpointError",
    "ConfigError",
    "ConsistencyError",
    "DatasetError",
    "EnvironmentProblem",
    "FederatedError",
    "InclusionProofError",
    "InputError",
    "LogIntegrityError",
    "MissingDependencyError",
    "ModelError",
    "PassportError",
    "PlaybookError",
    "PrivacyBudgetExceeded",
    "ProofError",
    "SignatureError",
    "SinkError",
    "TrustmeshError",
    "VerificationError",
    "WitnessError",
]


class TrustmeshError(Exception):
    """Root of every error trustmesh raises on purpose.

    Its text is always one line: messages that quote a library's multi-line error are folded.
    """

    def __str__(self) -> str:
        text = super().__str__()
        return " ".join(text.split()) if "\n" in text or "\r" in text else text


class InputError(TrustmeshError):
    """Reject bad input; the message names the file or field and the problem."""


class DatasetError(InputError):
    """Report a dataset file that is missing or corrupted, and where to get it."""


class ConfigError(InputError):
    """Report an invalid setting, configuration file or playbook value."""


class VerificationError(TrustmeshError):
    """Signal that something which must verify does not.

    ``index`` is the first bad leaf index (or tree size) when one is known.
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class InclusionProofError(VerificationError):
    """An inclusion proof does not lead to the expected root."""


class ConsistencyError(VerificationError):
    """Two tree states are not consistent: history was rewritten or forked."""


class SignatureError(VerificationError):
    """A signature, key or signed note does not verify."""


class LogIntegrityError(VerificationError):
    """Stored entries or hashes do not match what the log committed to."""


class CheckpointError(VerificationError):
    """A checkpoint is malformed, replaced, or goes backwards."""


class WitnessError(VerificationError):
    """A witness refused to cosign, or cosignatures reveal a split view."""


class ArtifactDigestError(VerificationError):
    """A model artifact's sha256 does not match its manifest."""


class AnchorError(VerificationError):
    """The (size, root) anchored on chain disagrees with the log."""


class ProofError(VerificationError):
    """A zero-knowledge proof is malformed or does not verify."""


class PassportError(VerificationError):
    """A model passport does not verify; the message names the field that differs."""


class ModelError(TrustmeshError):
    """A detector is used before fitting, or given features it cannot score."""


class PlaybookError(TrustmeshError):
    """A playbook is invalid or cannot be executed."""


class ActionError(TrustmeshError):
    """A response action failed to apply or roll back."""


class SinkError(TrustmeshError):
    """An alert output (file, syslog, Redis stream, bulk endpoint, webhook) failed a delivery."""


class ChainError(TrustmeshError):
    """The chain is unreachable, reverted, has the wrong id, or the contract is not ours."""


class FederatedError(TrustmeshError):
    """A federated round cannot proceed."""


class PrivacyBudgetExceeded(TrustmeshError):
    """The differential-privacy budget (epsilon at delta) would be exceeded."""


class EnvironmentProblem(TrustmeshError):
    """The machine refused an operation: disk full, read-only media, permission denied, I/O error.

    Not the input's fault and not a verification failure: the same command succeeds once the
    environment is fixed. ``path`` names the file or folder involved when known.
    """

    #: errno values that describe the machine rather than the input
    ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                        errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ETXTBSY})
    _WHAT = {errno.ENOSPC: "no space left on device (disk full)", errno.EDQUOT: "disk quota exceeded",
             errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
             errno.EPERM: "operation not permitted", errno.EIO: "input/output error"}

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

    @classmethod
    def from_os_error(cls, exc: OSError, path: str | os.PathLike[str] | None = None) -> EnvironmentProblem | None:
        """Return the problem an ``OSError`` describes, or None when it is not an environment error."""
        if exc.errno not in cls.ERRNOS:
            return None
        where = str(path if path is not None else exc.filename if exc.filename is not None else "")
        what = cls._WHAT.get(exc.errno, exc.strerror or os.strerror(exc.errno or 0))
        return cls(f"{where}: {what}" if where else what, path=where or None)


class MissingDependencyError(TrustmeshError):
    """An optional extra is not installed; the message gives the pip command."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"optional dependency {module!r} is not installed; "
            f"install it with: pip install -c constraints.txt 'trustmesh[{extra}]'"
        )
        self.module = module
        self.extra = extra
