"""``Encryption``: seals turns and thread metadata before they leave the process.

A sealed turn keeps in clear only what the store needs (seq, role, key, timestamps);
its content, files, images, metadata, tool and model names travel as one ciphertext in
``content``, written ``cm2.<key id>.<base64>``. Sealed thread metadata is a mapping
with one entry, ``{"cm1": "<key id>.<base64>"}``.

The cipher is AES-SIV (RFC 5297), a deterministic authenticated cipher: the same turn
sealed twice under one key gives the same ciphertext, so a retried append compares
equal in the store and idempotency works unchanged. The price, said in the README: an
attacker with the database learns which turns of one thread carry identical
plaintext (threads have different keys).

The associated data binds each ciphertext to its place: a turn's to its thread, role
and seq, the compaction summary's to its thread, role and the seq it covers up to, under
another label than a turn's; metadata to its thread. A ciphertext moved to another
thread, turn or field, or relabelled, fails as ``DecryptionError``. A turn is sealed for
its seq before the store has numbered it, so the writer says which seq it sealed for and
the store refuses any other (``SeqTakenError``; ``Memory`` seals again and retries).

Turns sealed before seqs were bound (``cm1.``, their data bound to thread and role only)
are read while ``accept_legacy`` is on, and ``convmem rotate-keys`` seals them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import orjson
import pybase64
from cryptography.exceptions import InvalidTag

from convmem.encryption.keys import KEY_ID_CHARS, KeyRing
from convmem.errors import DecryptionError, InvalidTurnError
from convmem.models import Thread, ThreadSummary, Turn, turn_from_storage

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

PREFIX: Final = "cm2."
LEGACY_PREFIX: Final = "cm1."  # the same length: the key id sits at the same place
_KEY_AT: Final = len(PREFIX)
_KEY_END: Final = _KEY_AT + KEY_ID_CHARS  # then ".", then the ciphertext
METADATA_FIELD: Final = "cm1"
_TURN_AAD: Final = b"convmem turn v2"
_SUMMARY_AAD: Final = b"convmem summary v2"
_LEGACY_TURN_AAD: Final = b"convmem turn v1"
_METADATA_AAD: Final = b"convmem thread metadata v1"
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


class Encryption:
    """Encryption at rest with ``keys`` (the first encrypts, every one decrypts).

    ``accept_plaintext`` lets turns written before encryption was turned on be read
    until ``convmem rotate-keys`` has sealed them; while it is on, whoever can write to
    the database can also plant unsealed turns, so turn it off when rotation is done.
    ``accept_legacy`` does the same for turns sealed before seqs were bound (``cm1.``),
    which can be moved between places of their thread undetected.
    """

    encrypts = True

    def __init__(
        self,
        keys: str | Iterable[str],
        *,
        accept_plaintext: bool = False,
        accept_legacy: bool = True,
    ) -> None:
        self.ring = KeyRing(keys)
        self.accept_plaintext = accept_plaintext
        self.accept_legacy = accept_legacy

    @property
    def current_key_id(self) -> str:
        return self.ring.current.id

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(key.id for key in self.ring.keys)

    # -- sealing ------------------------------------------------------------------

    def seal_turns(
        self, thread_id: str, turns: Sequence[Turn], *, first_seq: int
    ) -> Sequence[Turn]:
        """``turns`` sealed for seqs ``first_seq, first_seq + 1, ...`` (set on them)."""
        return self._seal(thread_id, turns, _TURN_AAD, range(first_seq, first_seq + len(turns)))

    def seal_turns_at(
        self, thread_id: str, turns: Sequence[Turn], seqs: Sequence[int]
    ) -> Sequence[Turn]:
        """``turns`` sealed for ``seqs``, one each (set on them)."""
        return self._seal(thread_id, turns, _TURN_AAD, seqs)

    def seal_summary(self, thread_id: str, summary: Turn, *, covers_to_seq: int) -> Turn:
        """A compaction summary sealed for the place it is kept: its thread's summary
        through ``covers_to_seq``."""
        return self._seal(thread_id, (summary,), _SUMMARY_AAD, (covers_to_seq,))[0]

    def _seal(
        self, thread_id: str, turns: Sequence[Turn], label: bytes, seqs: Sequence[int]
    ) -> list[Turn]:
        key = self.ring.current
        cipher = self.ring.cipher(key.id, thread_id)
        thread = thread_id.encode()
        head = f"{PREFIX}{key.id}."
        sealed = []
        for seq, turn in zip(seqs, turns, strict=True):
            data = [label, thread, turn.role.encode(), b"%d" % seq]
            ciphertext = cipher.encrypt(sealed_payload(turn), data)
            sealed.append(
                turn_from_storage(
                    seq,
                    turn.role,
                    head + _text(ciphertext),
                    None,
                    None,
                    None,
                    (),
                    (),
                    _EMPTY,
                    turn.key,
                    turn.created_at,
                )
            )
        return sealed

    def seal_metadata(self, thread_id: str, metadata: Mapping[str, Any]) -> Mapping[str, Any]:
        key = self.ring.current
        sealed = self.ring.cipher(key.id, thread_id).encrypt(
            orjson.dumps(dict(metadata)), [_METADATA_AAD, thread_id.encode()]
        )
        return {METADATA_FIELD: f"{key.id}.{_text(sealed)}"}

    # -- opening ------------------------------------------------------------------

    def open_turns(self, thread_id: str, turns: Sequence[Turn]) -> tuple[Turn, ...]:
        """The turns as written, each authenticated for its thread, role and seq."""
        return self._open(thread_id, turns, _TURN_AAD)

    def open_summary_turn(self, thread_id: str, summary: Turn) -> Turn:
        """The thread's compaction summary as written, authenticated as its summary."""
        return self._open(thread_id, (summary,), _SUMMARY_AAD)[0]

    def _open(self, thread_id: str, turns: Sequence[Turn], label: bytes) -> tuple[Turn, ...]:
        """Opening is on the path of every cold read, so the per-thread work (the cipher,
        the associated data) is done once per call."""
        thread = thread_id.encode()
        what = "turn" if label is _TURN_AAD else "the summary through turn"
        ciphers: dict[str, AESSIV] = {}
        opened = []
        for turn in turns:
            content = turn.content
            if content.startswith(PREFIX):
                data = [label, thread, turn.role.encode(), b"%d" % turn.seq]
            elif content.startswith(LEGACY_PREFIX):
                if not self.accept_legacy:
                    raise _legacy(thread_id, f"{what} {turn.seq}")
                data = [_LEGACY_TURN_AAD, thread, turn.role.encode()]
            else:
                opened.append(self._unsealed(thread_id, turn, f"{what} {turn.seq}"))
                continue
            key_id = content[_KEY_AT:_KEY_END]
            cipher = ciphers.get(key_id)
            if cipher is None:
                cipher = ciphers[key_id] = self._cipher(thread_id, key_id, f"{what} {turn.seq}")
            try:
                if content[_KEY_END] != ".":
                    raise ValueError("no key id")
                ciphertext = pybase64.b64decode(content[_KEY_END + 1 :], validate=True)
                payload = cipher.decrypt(ciphertext, data)
            except (InvalidTag, ValueError, IndexError) as exc:  # (base64 errors are ValueErrors)
                raise _tampered(thread_id, f"{what} {turn.seq}") from exc
            try:
                text, tool_name, provider, model, files, images, metadata = orjson.loads(payload)
                opened.append(
                    turn_from_storage(
                        turn.seq,
                        turn.role,
                        text,
                        tool_name,
                        provider,
                        model,
                        files,
                        images,
                        metadata,
                        turn.key,
                        turn.created_at,
                    )
                )
            except (orjson.JSONDecodeError, ValueError, TypeError, InvalidTurnError) as exc:
                # Authenticated, so written by a holder of the key: a bug, never tampering.
                raise DecryptionError(
                    f"{what} {turn.seq} of thread {thread_id} decrypted to an unexpected shape",
                    thread_id=thread_id,
                ) from exc
        return tuple(opened)

    def open_metadata(self, thread_id: str, metadata: Mapping[str, Any]) -> Mapping[str, Any]:
        sealed = metadata.get(METADATA_FIELD) if len(metadata) == 1 else None
        if not isinstance(sealed, str):
            if self.accept_plaintext:
                return metadata
            raise _in_clear(thread_id, "its metadata")
        key_id, _, encoded = sealed.partition(".")
        cipher = self._cipher(thread_id, key_id, "its metadata")
        try:
            payload = cipher.decrypt(
                pybase64.b64decode(encoded, validate=True), [_METADATA_AAD, thread_id.encode()]
            )
        except (InvalidTag, ValueError) as exc:  # (base64 errors are ValueErrors)
            raise _tampered(thread_id, "its metadata") from exc
        opened = orjson.loads(payload)
        if not isinstance(opened, dict):
            raise DecryptionError(
                f"the metadata of thread {thread_id} decrypted to an unexpected shape",
                thread_id=thread_id,
            )
        return MappingProxyType(opened) if opened else _EMPTY

    def open_thread(self, thread: Thread) -> Thread:
        summary = thread.summary
        return replace(
            thread,
            turns=self.open_turns(thread.id, thread.turns),
            metadata=self.open_metadata(thread.id, thread.metadata),
            summary=None if summary is None else self.open_summary_turn(thread.id, summary),
        )

    def open_summary(self, summary: ThreadSummary) -> ThreadSummary:
        return replace(summary, metadata=self.open_metadata(summary.id, summary.metadata))

    # -- rotation -----------------------------------------------------------------

    def reseal_turn(self, thread_id: str, turn: Turn, *, summary: bool = False) -> Turn | None:
        """``turn`` (as stored; the compaction summary with ``summary``) sealed under the
        current key and for its place, or None if it already is.

        A turn stored in clear is sealed too, but only with ``accept_plaintext``: rotation
        is how threads written before encryption was turned on get encrypted, and without
        that setting a turn in clear may have been planted by whoever can write the
        database (``DecryptionError``, as when reading it). A turn sealed before seqs
        were bound is sealed again for its seq (read with ``accept_legacy``).
        """
        if turn.content.startswith(f"{PREFIX}{self.ring.current.id}."):
            return None
        if summary:
            opened = self.open_summary_turn(thread_id, turn)
            return self.seal_summary(thread_id, opened, covers_to_seq=turn.seq)
        (opened,) = self.open_turns(thread_id, (turn,))
        return self.seal_turns(thread_id, (opened,), first_seq=turn.seq)[0]

    def reseal_metadata(
        self, thread_id: str, metadata: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        """Thread metadata (as stored) sealed under the current key, or None if it is."""
        sealed = metadata.get(METADATA_FIELD) if len(metadata) == 1 else None
        if isinstance(sealed, str) and sealed.startswith(f"{self.ring.current.id}."):
            return None
        return self.seal_metadata(thread_id, self.open_metadata(thread_id, metadata))

    # -- parts --------------------------------------------------------------------

    def _unsealed(self, thread_id: str, turn: Turn, what: str) -> Turn:
        if self.accept_plaintext:
            return turn
        raise _in_clear(thread_id, what)

    def _cipher(self, thread_id: str, key_id: str, what: str) -> AESSIV:
        if not self.ring.knows(key_id):
            raise DecryptionError(
                f"{what} of thread {thread_id} is encrypted under key id {key_id!r}, which is"
                " not among the configured encryption keys: add that key to"
                " CONVMEM_ENCRYPTION_KEYS after the first (every listed key decrypts)",
                thread_id=thread_id,
            )
        return self.ring.cipher(key_id, thread_id)


def sealed_payload(turn: Turn) -> bytes:
    """What a turn's ciphertext holds: every field the store does not need in clear (the
    same in both formats; ``cm1.`` differs only in its associated data)."""
    return orjson.dumps(
        [
            turn.content,
            turn.tool_name,
            turn.model_provider,
            turn.model_name,
            turn.files,
            turn.images,
            dict(turn.metadata),
        ]
    )


def _text(ciphertext: bytes) -> str:
    """Ciphertext as text columns and Redis strings hold it: base64. pybase64's SIMD
    codec decodes a turn in ~1.5 µs where the standard library takes 5–10 µs, and every
    cold read decodes each turn once."""
    return pybase64.b64encode(ciphertext).decode("ascii")


def _tampered(thread_id: str, what: str) -> DecryptionError:
    return DecryptionError(
        f"{what} of thread {thread_id} failed authentication: its ciphertext was altered,"
        " truncated or moved from another thread or turn",
        thread_id=thread_id,
    )


def _legacy(thread_id: str, what: str) -> DecryptionError:
    return DecryptionError(
        f"{what} of thread {thread_id} was sealed before convmem bound each turn to its"
        " seq, and CONVMEM_ENCRYPTION_ACCEPT_LEGACY is off: `convmem rotate-keys` with"
        " CONVMEM_ENCRYPTION_ACCEPT_LEGACY=1 seals it again (the same setting reads it"
        " meanwhile); otherwise someone copied an old ciphertext into the store",
        thread_id=thread_id,
    )


def _in_clear(thread_id: str, what: str) -> DecryptionError:
    return DecryptionError(
        f"{what} of thread {thread_id} is stored in clear although encryption is on: if it"
        " was written before encryption was turned on, `convmem rotate-keys` with"
        " CONVMEM_ENCRYPTION_ACCEPT_PLAINTEXT=1 seals it (the same setting reads it"
        " meanwhile); otherwise someone wrote it into the store",
        thread_id=thread_id,
    )
