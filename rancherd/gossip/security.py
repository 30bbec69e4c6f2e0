"""Sealing: keys derived from the shared token, and a sans-IO secure channel per connection.

Every byte a node sends is sealed with ChaCha20-Poly1305 under a key only token holders
can derive; there is no plaintext mode. A connection carries three kinds of frames:

Hello frame (the first frame in each direction)::

    aead_nonce (12 random bytes) || seal(hello_key, aead_nonce, encode(Hello), ad)
    ad = "rancherd/v1/hello" || 0x01                             (the initiator's)
    ad = "rancherd/v1/hello" || 0x02 || the initiator's hello    (the responder's reply)

``Hello.nonce`` is the sender's ephemeral X25519 public key, new for every connection.

Finished frame (the initiator's second frame): a session frame (below) with counter 0 and
an empty plaintext. It proves to the responder that the initiator holds the ephemeral key
of its hello, so a recorded hello replayed on a new connection gets nowhere.

Session frame (every later frame, one message each)::

    counter (8 bytes, big-endian) || seal(direction_key, 0x00000000 || counter, encode(message),
                                          ad = "rancherd/v1/frame" || version || sender id
                                               || receiver id || connection id || direction)

Keys. ``TokenKeys.derive`` stretches the token with scrypt (fixed salt: a purpose label, since
every node must reach the same key without talking), then HKDF-SHA256 splits it into a
hello key and a session key. When both hellos are in, each side computes the X25519 shared
secret of the two ephemeral keys and derives with HKDF (salt: the token's session key; key
material: the shared secret; info: both hellos, so both ephemeral keys, both node ids, both
boot ids and both version ranges) one key per direction and a 16-byte connection id. The
ephemeral private keys are dropped as soon as the session keys exist.

Guarantees, in plain words:

- Without the token nothing opens: no hello, no message, not even the membership.
- Forward secrecy: the session keys need the ephemeral private keys, which never leave the
  two processes and are forgotten once used, so someone who recorded a connection and
  later learns the token still cannot open its session frames (only the hellos).
- A session frame opens only on the connection it was sealed for, in the direction it was
  sealed for, at exactly its place in the sequence: the counter starts at 0 and grows by
  one per frame, so a replayed, reordered, dropped, reflected or re-targeted frame (sent to
  a third node, or on another connection between the same two nodes) is rejected.
- A replayed hello is worthless: a replayed initiator hello never gets past the finished
  frame (the responder is ``established`` only once it opens), and a replayed reply does
  not open, since it is bound to the initiator's hello of this connection.
- A frame longer than ``MAX_FRAME`` is rejected before any decryption.
- Every error is a ``RemoteProtocolError`` and leaves the channel dead: every later call
  raises too, so the transport closes the connection.
- A hello carrying our own node id and boot id means we dialled ourselves; that raises
  ``SelfConnectionError`` so the transport can drop the address quietly.
- A peer that speaks no common protocol version is refused at its hello with
  ``IncompatibleVersionError``, which names both ranges. The initiator's hello is sealed
  as protocol 2 sealed it, so a version 2 hello still opens and is refused by version.

What it does not give: the token authenticates the fleet, not a node. Any token holder can
claim any node id.

The module reads no clock and no global randomness: the caller passes ``random_bytes``
(``os.urandom`` in production, a seeded source in tests and the simulator); the ephemeral
keys are made from it too.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from rancherd.gossip.codec import (
    MAX_FRAME,
    MAX_FRAME_OVERHEAD,
    MAX_UINT,
    MAX_VERSION,
    NONCE_SIZE,
    RecordFilter,
    decode,
    encode,
)
from rancherd.gossip.errors import LocalProtocolError, RemoteProtocolError
from rancherd.gossip.messages import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Hello,
    Message,
    NodeId,
    is_node_id,
)

__all__ = [
    "IncompatibleVersionError",
    "Received",
    "SecureChannel",
    "SelfConnectionError",
    "TokenKeys",
    "UnexpectedPeerError",
]

# scrypt with the interactive-login parameters of its paper: about 16 MiB and tens of
# milliseconds once per process, but a guess of the token costs an attacker as much.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
TOKEN_SALT = b"rancherd/v1/token"
"""Fixed by design: every node must derive the same key from the token alone."""

KEY_SIZE = 32
AEAD_NONCE_SIZE = 12
TAG_SIZE = 16
COUNTER_SIZE = 8
CONNECTION_ID_SIZE = 16
HELLO_FRAME_MAX = 256
"""A hello frame is about 110 bytes; anything much longer is not one."""
FINISHED_FRAME_SIZE = COUNTER_SIZE + TAG_SIZE
"""The finished frame: counter 0 and the tag of an empty plaintext."""

_HELLO_AD = b"rancherd/v1/hello"
_FRAME_AD = b"rancherd/v1/frame"
_SESSION_INFO = b"rancherd/v3/session"
_TO_RESPONDER = b"\x01"
_TO_INITIATOR = b"\x02"

assert AEAD_NONCE_SIZE + TAG_SIZE <= MAX_FRAME_OVERHEAD
assert NONCE_SIZE == 32  # Hello.nonce carries an X25519 public key
assert COUNTER_SIZE + TAG_SIZE <= MAX_FRAME_OVERHEAD


class SelfConnectionError(RemoteProtocolError):
    """The hello carries our own node id and boot id: we reached ourselves.

    Not an attack: our own address came back from discovery. Drop the address quietly.
    On the accepting side, ``reply`` is our hello: send it before closing, so the dialling
    side (this same process) learns it too.
    """

    def __init__(self, message: str, reply: bytes | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class UnexpectedPeerError(RemoteProtocolError):
    """The peer's hello names another node than the one we meant to reach."""


class IncompatibleVersionError(RemoteProtocolError):
    """The two nodes share no protocol version."""


class TokenKeys:
    """The keys every holder of the token derives alike. Never shown in a repr or error.

    Deriving is slow on purpose (scrypt); derive once per token and keep the result.
    """

    __slots__ = ("_hello", "_session")

    def __init__(self, hello_key: bytes, session_key: bytes) -> None:
        """From keys already derived; ``derive`` is the usual way in."""
        if len(hello_key) != KEY_SIZE or len(session_key) != KEY_SIZE:
            raise LocalProtocolError(f"keys are {KEY_SIZE} bytes")
        self._hello = ChaCha20Poly1305(hello_key)
        self._session = session_key

    @classmethod
    def derive(cls, token: str) -> TokenKeys:
        if not isinstance(token, str) or not token:
            raise LocalProtocolError("the token must be a non-empty string")
        try:
            secret = token.encode()
        except UnicodeEncodeError:
            raise LocalProtocolError("the token is not valid UTF-8 text") from None
        scrypt = Scrypt(salt=TOKEN_SALT, length=KEY_SIZE, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
        master = scrypt.derive(secret)
        return cls(
            _hkdf(master, b"rancherd/v1/hello", KEY_SIZE),
            _hkdf(master, b"rancherd/v1/session", KEY_SIZE),
        )

    def __repr__(self) -> str:
        return "TokenKeys(<secret>)"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("TokenKeys are not picklable; derive them again")


def _hkdf(key: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=SHA256(), length=length, salt=None, info=info).derive(key)


class Received(NamedTuple):
    """What one incoming frame produced."""

    messages: list[Message]
    """Messages for the application (at most one per frame)."""
    frames: list[bytes]
    """Frames to send back, in order (the responder's hello)."""


class _State(enum.Enum):
    READY = "ready"  # an initiator before start()
    AWAIT_HELLO = "await-hello"
    AWAIT_FINISHED = "await-finished"  # a responder that sent its hello
    ESTABLISHED = "established"
    DEAD = "dead"


class _Direction:
    """The sealing state of one direction of an established connection."""

    __slots__ = ("aead", "associated_data", "counter")

    def __init__(self, key: bytes, associated_data: bytes) -> None:
        self.aead = ChaCha20Poly1305(key)
        self.associated_data = associated_data
        self.counter = 0
        """Of the next frame: sent so far, or received so far."""


class _Session(NamedTuple):
    version: int
    connection_id: bytes
    send: _Direction
    receive: _Direction


def _aead_nonce(counter: bytes) -> bytes:
    # Unique per key: each direction has its own key and its counter never repeats.
    return b"\0\0\0\0" + counter


class SecureChannel:
    """One end of one connection: handshake, then sealed frames. Sans-IO.

    The initiator calls ``start()`` and sends the frame; the responder answers its hello
    from ``receive``, and the initiator answers that with the finished frame (from
    ``receive`` too: send every frame of ``Received.frames``, in order, before any
    ``seal``). The initiator is ``established`` once the reply is in, the responder once
    the finished frame opens. Once ``established``, ``seal`` produces frames and
    ``receive`` opens them. ``receive`` raises ``RemoteProtocolError`` (and the channel is
    dead) for anything it rejects; misuse by the caller raises ``LocalProtocolError`` and
    changes nothing.
    """

    def __init__(
        self,
        keys: TokenKeys,
        local_id: NodeId,
        local_boot_id: int,
        *,
        initiator: bool,
        random_bytes: Callable[[int], bytes],
        expected_peer: NodeId | None = None,
        versions: tuple[int, int] = (MIN_PROTOCOL_VERSION, PROTOCOL_VERSION),
    ) -> None:
        """``versions`` is the range this end speaks (tests and the simulator vary it)."""
        if not is_node_id(local_id):
            raise LocalProtocolError("local_id is not a node id")
        if expected_peer is not None and not is_node_id(expected_peer):
            raise LocalProtocolError("expected_peer is not a node id")
        if type(local_boot_id) is not int or not 0 <= local_boot_id <= MAX_UINT:
            raise LocalProtocolError("local_boot_id is not an unsigned 64-bit int")
        if not 1 <= versions[0] <= versions[1] <= MAX_VERSION:
            raise LocalProtocolError(f"bad version range {versions}")
        self._keys = keys
        self._local_id = local_id
        self._local_boot_id = local_boot_id
        self._initiator = initiator
        self._random_bytes = random_bytes
        self._expected_peer = expected_peer
        self._versions = versions
        self._state = _State.READY if initiator else _State.AWAIT_HELLO
        self._error: RemoteProtocolError | None = None
        self._own_hello = b""
        """Our hello, encoded, until the session keys are derived from it."""
        self._ephemeral: X25519PrivateKey | None = None
        """Our ephemeral key, until the session keys are derived from it."""
        self._initiator_hello = b""
        """The initiator's hello, encoded: the responder's reply is bound to it."""
        self._peer: Hello | None = None
        self._session: _Session | None = None

    # --- Properties ------------------------------------------------------------------

    @property
    def initiator(self) -> bool:
        return self._initiator

    @property
    def established(self) -> bool:
        return self._state is _State.ESTABLISHED

    @property
    def closed(self) -> bool:
        """True once an error killed the channel."""
        return self._state is _State.DEAD

    @property
    def peer_id(self) -> NodeId | None:
        """The id in the peer's hello, once received (vouched for by the token only; by
        the token and the peer's ephemeral key once ``established``)."""
        return None if self._peer is None else self._peer.node_id

    @property
    def peer_boot_id(self) -> int | None:
        return None if self._peer is None else self._peer.boot_id

    @property
    def version(self) -> int | None:
        """The protocol version both ends speak, once established."""
        return None if not self.established or self._session is None else self._session.version

    @property
    def connection_id(self) -> str | None:
        """Hex id of this connection (the same at both ends), for logs."""
        if not self.established or self._session is None:
            return None
        return self._session.connection_id.hex()

    # --- Public calls ----------------------------------------------------------------

    def start(self) -> bytes:
        """The initiator's hello frame, to send first."""
        self._check_alive()
        if self._state is not _State.READY:
            raise LocalProtocolError("start() is for a new initiator, once")
        frame = self._hello_frame()
        self._state = _State.AWAIT_HELLO
        return frame

    def receive(self, frame: bytes, keep: RecordFilter | None = None) -> Received:
        """Process one incoming frame (the transport keeps frame boundaries and order).

        ``keep``: the receiver's pre-filter of a Gossip's relayed records (``decode``)."""
        self._check_alive()
        if self._state is _State.READY:
            raise LocalProtocolError("call start() before receive() on an initiator")
        try:
            if self._session is None:
                reply = self._accept_hello(frame)
                return Received([], [reply])
            if self._state is _State.AWAIT_FINISHED:
                self._accept_finished(frame)
                return Received([], [])
            return Received([self._open(self._session.receive, frame, keep)], [])
        except RemoteProtocolError as error:
            self._state = _State.DEAD
            self._error = error
            self._ephemeral = None
            raise

    def seal(self, message: Message, encoded: bytes | None = None) -> bytes:
        """The frame carrying ``message`` to the peer. ``encoded``: ``encode(message)``,
        when the caller has it already (one message sealed for several links)."""
        self._check_alive()
        if self._state is not _State.ESTABLISHED or self._session is None:
            raise LocalProtocolError("seal() before the handshake completed")
        if isinstance(message, Hello):
            raise LocalProtocolError("hellos are the channel's own business")
        plaintext = encode(message) if encoded is None else encoded
        return self._seal(self._session.send, plaintext)

    # --- Handshake -------------------------------------------------------------------

    def _hello_frame(self) -> bytes:
        low, high = self._versions
        self._ephemeral = X25519PrivateKey.from_private_bytes(self._random(KEY_SIZE))
        public = self._ephemeral.public_key().public_bytes_raw()
        self._own_hello = encode(Hello(low, high, self._local_id, self._local_boot_id, public))
        aead_nonce = self._random(AEAD_NONCE_SIZE)
        if self._initiator:
            associated_data = _HELLO_AD + _TO_RESPONDER
        else:
            associated_data = _HELLO_AD + _TO_INITIATOR + self._initiator_hello
        sealed = self._keys._hello.encrypt(aead_nonce, self._own_hello, associated_data)
        return aead_nonce + sealed

    def _random(self, size: int) -> bytes:
        value = self._random_bytes(size)
        if type(value) is not bytes or len(value) != size:
            raise LocalProtocolError(f"random_bytes({size}) returned something else")
        return value

    def _open_hello(self, frame: bytes) -> tuple[Hello, bytes]:
        if len(frame) > HELLO_FRAME_MAX:
            raise RemoteProtocolError(f"hello frame of {len(frame)} bytes is too long")
        if len(frame) < AEAD_NONCE_SIZE + TAG_SIZE:
            raise RemoteProtocolError("truncated hello frame")
        if self._initiator:
            associated_data = _HELLO_AD + _TO_INITIATOR + self._own_hello
        else:
            associated_data = _HELLO_AD + _TO_RESPONDER
        try:
            plaintext = self._keys._hello.decrypt(
                frame[:AEAD_NONCE_SIZE], frame[AEAD_NONCE_SIZE:], associated_data
            )
        except InvalidTag:
            raise RemoteProtocolError(
                "hello does not open: sealed with another token, damaged, replayed, or not a hello"
            ) from None
        hello = decode(plaintext)
        if not isinstance(hello, Hello):
            raise RemoteProtocolError(f"expected a Hello, got {type(hello).__name__}")
        return hello, plaintext

    def _accept_hello(self, frame: bytes) -> bytes:
        """Check the peer's hello and derive the session; the frame to send back (the
        responder's hello, or the initiator's finished frame)."""
        hello, plaintext = self._open_hello(frame)
        self._peer = hello
        if not self._initiator:
            self._initiator_hello = plaintext
        if hello.node_id == self._local_id and hello.boot_id == self._local_boot_id:
            raise SelfConnectionError(
                "connected to ourselves", None if self._initiator else self._hello_frame()
            )
        if self._expected_peer is not None and hello.node_id != self._expected_peer:
            raise UnexpectedPeerError(
                f"expected node {self._expected_peer}, the peer is {hello.node_id}"
            )
        low = max(self._versions[0], hello.min_version)
        high = min(self._versions[1], hello.max_version)
        if low > high:
            raise IncompatibleVersionError(
                f"no common protocol version: we speak {self._versions[0]}..{self._versions[1]}"
                f", the peer speaks {hello.min_version}..{hello.max_version}"
            )
        reply = b"" if self._initiator else self._hello_frame()
        self._session = self._derive_session(plaintext, hello, high)
        self._own_hello = self._initiator_hello = b""
        if self._initiator:
            self._state = _State.ESTABLISHED
            return self._seal(self._session.send, b"")  # the finished frame
        self._state = _State.AWAIT_FINISHED
        return reply

    def _accept_finished(self, frame: bytes) -> None:
        assert self._session is not None
        if len(frame) != FINISHED_FRAME_SIZE:
            raise RemoteProtocolError(
                f"expected the finished frame, got {len(frame)} bytes (a replayed hello?)"
            )
        if self._open_plaintext(self._session.receive, frame) != b"":
            raise RemoteProtocolError("the finished frame is not empty")
        self._state = _State.ESTABLISHED

    def _derive_session(self, peer_hello: bytes, hello: Hello, version: int) -> _Session:
        assert self._ephemeral is not None
        try:
            shared = self._ephemeral.exchange(X25519PublicKey.from_public_bytes(hello.nonce))
        except ValueError:  # a low-order point: the shared secret would be all zeros
            raise RemoteProtocolError("the peer's ephemeral key is not usable") from None
        self._ephemeral = None
        if self._initiator:
            transcript = self._own_hello + peer_hello
        else:
            transcript = peer_hello + self._own_hello
        okm = HKDF(
            algorithm=SHA256(),
            length=2 * KEY_SIZE + CONNECTION_ID_SIZE,
            salt=self._keys._session,
            info=_SESSION_INFO + transcript,
        ).derive(shared)
        to_responder, to_initiator = okm[:KEY_SIZE], okm[KEY_SIZE : 2 * KEY_SIZE]
        connection_id = okm[2 * KEY_SIZE :]

        version_bytes = version.to_bytes(2, "big")

        def associated_data(sender: NodeId, receiver: NodeId, direction: bytes) -> bytes:
            ids = sender.encode() + receiver.encode()
            return _FRAME_AD + version_bytes + ids + connection_id + direction

        local_id, peer_id = self._local_id, hello.node_id
        if self._initiator:
            send = _Direction(to_responder, associated_data(local_id, peer_id, _TO_RESPONDER))
            receive = _Direction(to_initiator, associated_data(peer_id, local_id, _TO_INITIATOR))
        else:
            send = _Direction(to_initiator, associated_data(local_id, peer_id, _TO_INITIATOR))
            receive = _Direction(to_responder, associated_data(peer_id, local_id, _TO_RESPONDER))
        return _Session(version, connection_id, send, receive)

    # --- Frames ----------------------------------------------------------------------

    @staticmethod
    def _seal(send: _Direction, plaintext: bytes) -> bytes:
        if send.counter > MAX_UINT:
            raise LocalProtocolError("frame counter exhausted; open a new connection")
        counter = send.counter.to_bytes(COUNTER_SIZE, "big")
        frame = counter + send.aead.encrypt(_aead_nonce(counter), plaintext, send.associated_data)
        send.counter += 1
        return frame

    @staticmethod
    def _open_plaintext(receive: _Direction, frame: bytes) -> bytes:
        if len(frame) > MAX_FRAME:
            raise RemoteProtocolError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
        if len(frame) < COUNTER_SIZE + TAG_SIZE:
            raise RemoteProtocolError(f"truncated frame of {len(frame)} bytes")
        counter = frame[:COUNTER_SIZE]
        number = int.from_bytes(counter, "big")
        if number != receive.counter:
            raise RemoteProtocolError(
                f"frame {number} where {receive.counter} was due: replayed, reordered or dropped"
            )
        try:
            plaintext = receive.aead.decrypt(
                _aead_nonce(counter), frame[COUNTER_SIZE:], receive.associated_data
            )
        except InvalidTag:
            raise RemoteProtocolError(
                "frame does not open: damaged, or sealed for another connection or direction"
            ) from None
        receive.counter += 1
        return plaintext

    @classmethod
    def _open(cls, receive: _Direction, frame: bytes, keep: RecordFilter | None) -> Message:
        message = decode(cls._open_plaintext(receive, frame), keep)
        if isinstance(message, Hello):
            raise RemoteProtocolError("a Hello inside an established connection")
        return message

    def _check_alive(self) -> None:
        if self._state is _State.DEAD:
            raise RemoteProtocolError(f"channel closed after an earlier error: {self._error}")

    def __repr__(self) -> str:
        role = "initiator" if self._initiator else "responder"
        return f"<SecureChannel {role} {self._state.value} peer={self.peer_id}>"
