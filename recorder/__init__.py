"""zsp recordings: format v1 and its writer.

A recording is an append-only file of msgpack frames, hash-chained with keyed blake3 and
signed with Ed25519 at checkpoints and at the seal (see ``docs/FORMAT.md``); masked input is
kept sealed to an X25519 escrow key (``_escrow``). This package knows
nothing of SSH or terminals' UIs; it never imports textual or asyncssh.
"""

from __future__ import annotations

from ._async import AsyncRecorder
from ._chain import FrameChain
from ._escrow import EscrowPrivateKey, EscrowPublicKey, open_sealed, seal
from ._exceptions import (
    EscrowError,
    KeyFileError,
    RecorderError,
    RecordingFailed,
    RecordingLimitReached,
    ResumeRefused,
    SignatureError,
)
from ._format import (
    HEAD_LEN,
    MAGIC,
    MAX_BODY_LEN,
    MAX_CHECKPOINT_FRAMES,
    MAX_DATA_PER_FRAME,
    PREAMBLE,
    VERSION,
    Checkpoint,
    Event,
    FormatViolation,
    Frame,
    FrameData,
    FrameKind,
    Header,
    Resize,
    Seal,
    chain_head,
    check_event_fields,
    checkpoint_message,
    decode_body,
    genesis,
    pack_length,
    parse_data,
)
from ._ids import new_session_id
from ._keys import PublicKey, SigningKey
from ._resume import INTERRUPTED, ChainEnd, ResumedSeal, append_at_end, interrupted_seal
from ._signers import (
    SIGNATURE_NAMESPACE,
    SignerOptions,
    load_trusted_keys,
    names_principal,
    parse_signer_options,
    parse_trusted_keys,
)
from ._sshsig import EVIDENCE_NAMESPACE, sign_sshsig, verify_sshsig
from ._writer import FileSink, FsyncPolicy, RecordingWriter, SealInfo, SessionMeta, Sink

__all__ = [
    "EVIDENCE_NAMESPACE",
    "HEAD_LEN",
    "INTERRUPTED",
    "MAGIC",
    "MAX_BODY_LEN",
    "MAX_CHECKPOINT_FRAMES",
    "MAX_DATA_PER_FRAME",
    "PREAMBLE",
    "SIGNATURE_NAMESPACE",
    "VERSION",
    "AsyncRecorder",
    "ChainEnd",
    "Checkpoint",
    "EscrowError",
    "EscrowPrivateKey",
    "EscrowPublicKey",
    "Event",
    "FileSink",
    "FormatViolation",
    "Frame",
    "FrameChain",
    "FrameData",
    "FrameKind",
    "FsyncPolicy",
    "Header",
    "KeyFileError",
    "PublicKey",
    "RecorderError",
    "RecordingFailed",
    "RecordingLimitReached",
    "RecordingWriter",
    "Resize",
    "ResumeRefused",
    "ResumedSeal",
    "Seal",
    "SealInfo",
    "SessionMeta",
    "SignatureError",
    "SignerOptions",
    "SigningKey",
    "Sink",
    "append_at_end",
    "chain_head",
    "check_event_fields",
    "checkpoint_message",
    "decode_body",
    "genesis",
    "interrupted_seal",
    "load_trusted_keys",
    "names_principal",
    "new_session_id",
    "open_sealed",
    "pack_length",
    "parse_data",
    "parse_signer_options",
    "parse_trusted_keys",
    "seal",
    "sign_sshsig",
    "verify_sshsig",
]
