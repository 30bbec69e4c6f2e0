"""SecureChannel and TokenKeys: the handshake, and every frame an attacker could try."""

from __future__ import annotations

import os
import pickle
import random

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import messages

from rancherd.gossip.codec import MAX_FRAME, MAX_MESSAGE_SIZE, decode, encode
from rancherd.gossip.errors import LocalProtocolError, RemoteProtocolError
from rancherd.gossip.messages import (
    EMPTY_VIEW_DIGEST,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Ack,
    Gossip,
    Hello,
    Message,
    NodeRecord,
    Progress,
    Release,
    Role,
)
from rancherd.gossip.security import (
    IncompatibleVersionError,
    SecureChannel,
    SelfConnectionError,
    TokenKeys,
    UnexpectedPeerError,
)

TOKEN = "correct horse battery staple"
KEYS = TokenKeys.derive(TOKEN)  # scrypt is slow on purpose: derive once per module
OTHER_KEYS = TokenKeys.derive("another token")
A = "a" * 32
B = "b" * 32
C = "c" * 32
ACK = Ack(A, 1, 2, B)


def channel(
    local_id: str,
    *,
    initiator: bool,
    keys: TokenKeys = KEYS,
    boot_id: int = 1,
    seed: object = None,
    expected_peer: str | None = None,
    versions: tuple[int, int] = (1, 1),
) -> SecureChannel:
    rng = random.Random(f"{local_id}/{initiator}/{seed}")
    return SecureChannel(
        keys,
        local_id,
        boot_id,
        initiator=initiator,
        random_bytes=rng.randbytes,
        expected_peer=expected_peer,
        versions=versions,
    )


def handshake(initiator: SecureChannel, responder: SecureChannel) -> None:
    received = responder.receive(initiator.start())
    assert received.messages == []
    [reply] = received.frames
    assert not responder.established  # until the finished frame
    answered = initiator.receive(reply)
    assert answered.messages == []
    [finished] = answered.frames
    assert initiator.established
    assert responder.receive(finished) == ([], [])
    assert responder.established


def pair(
    a: str = A, b: str = B, *, seed: object = None, keys: TokenKeys = KEYS
) -> tuple[SecureChannel, SecureChannel]:
    """An established connection from ``a`` (initiator) to ``b``."""
    initiator = channel(a, initiator=True, seed=seed, keys=keys, expected_peer=b)
    responder = channel(b, initiator=False, seed=seed, keys=keys)
    handshake(initiator, responder)
    return initiator, responder


def assert_dead(end: SecureChannel, valid_frame: bytes | None = None) -> None:
    assert end.closed
    assert not end.established
    with pytest.raises(RemoteProtocolError):
        end.receive(valid_frame or b"x" * 40)
    with pytest.raises(RemoteProtocolError):
        end.seal(ACK)


def rejects(end: SecureChannel, frame: bytes) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        end.receive(frame)
    assert_dead(end)
    return info.value


# --- The handshake and the flow -------------------------------------------------------


def test_handshake_then_messages_flow_both_ways() -> None:
    initiator, responder = pair()
    for end in (initiator, responder):
        assert end.established
        assert end.version == 1
    assert initiator.peer_id == B
    assert responder.peer_id == A
    assert initiator.peer_boot_id == responder.peer_boot_id == 1
    assert initiator.connection_id == responder.connection_id is not None
    for n in range(5):
        assert responder.receive(initiator.seal(Ack(A, n, 2, B))).messages == [Ack(A, n, 2, B)]
        assert initiator.receive(responder.seal(Release(B, n, 3))).messages == [Release(B, n, 3)]


def test_nothing_before_the_hellos() -> None:
    initiator = channel(A, initiator=True)
    responder = channel(B, initiator=False)
    for end in (initiator, responder):
        assert not end.established
        assert end.peer_id is None
        assert end.version is None
        assert end.connection_id is None
        with pytest.raises(LocalProtocolError):
            end.seal(ACK)
    with pytest.raises(LocalProtocolError):
        initiator.receive(b"x")
    with pytest.raises(LocalProtocolError):
        responder.start()
    hello = initiator.start()
    with pytest.raises(LocalProtocolError):
        initiator.start()
    with pytest.raises(LocalProtocolError):
        initiator.seal(ACK)  # the initiator waits for the responder's hello
    [reply] = responder.receive(hello).frames
    assert not responder.established  # the responder waits for the finished frame
    assert responder.peer_id == A
    assert responder.version is None
    with pytest.raises(LocalProtocolError):
        responder.seal(ACK)
    [finished] = initiator.receive(reply).frames
    responder.receive(finished)
    assert responder.established


def test_separately_derived_keys_interoperate() -> None:
    initiator = channel(A, initiator=True, keys=TokenKeys.derive(TOKEN))
    responder = channel(B, initiator=False, keys=TokenKeys.derive(TOKEN))
    handshake(initiator, responder)
    assert responder.receive(initiator.seal(ACK)).messages == [ACK]


def test_largest_message_fits_a_frame() -> None:
    record = NodeRecord(
        A, 0, 0, 0, Role.AGENT, (), "h" * 253, EMPTY_VIEW_DIGEST, 0, None, (), None, Progress.NONE
    )

    def fits(count: int) -> bool:
        try:
            encode(Gossip((record,) * count, True))
        except LocalProtocolError:
            return False
        return True

    low, high = 1, 1000  # the most records that fit: fits(low), not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    message = Gossip((record,) * low, True)
    assert MAX_MESSAGE_SIZE - 300 < len(encode(message)) <= MAX_MESSAGE_SIZE
    initiator, responder = pair()
    frame = initiator.seal(message)
    assert len(frame) == len(encode(message)) + 8 + 16 <= MAX_FRAME
    assert responder.receive(frame).messages == [message]


@given(st.lists(messages(), min_size=1, max_size=4))
@settings(max_examples=30)
def test_any_message_crosses_the_channel(batch: list[Message]) -> None:
    initiator, responder = pair()
    for message in batch:
        if isinstance(message, Hello):
            with pytest.raises(LocalProtocolError):
                initiator.seal(message)
        else:
            assert responder.receive(initiator.seal(message)).messages == [message]


def test_same_seed_same_bytes() -> None:
    """Sans-IO: the only randomness is the one passed in."""
    first, second = pair(seed=7), pair(seed=7)
    assert first[0].connection_id == second[0].connection_id
    assert first[0].seal(ACK) == second[0].seal(ACK)
    assert pair(seed=8)[0].connection_id != first[0].connection_id


def test_reads_no_global_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> bytes:
        raise AssertionError("global randomness used")

    monkeypatch.setattr(os, "urandom", forbidden)
    monkeypatch.setattr(random, "randbytes", forbidden)
    monkeypatch.setattr(random, "getrandbits", forbidden)
    initiator, responder = pair()
    assert responder.receive(initiator.seal(ACK)).messages == [ACK]


def test_bad_random_source_is_our_bug() -> None:
    end = SecureChannel(KEYS, A, 1, initiator=True, random_bytes=lambda n: b"short")
    with pytest.raises(LocalProtocolError):
        end.start()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"local_id": "A" * 32},
        {"local_id": "a"},
        {"expected_peer": "nope"},
        {"local_boot_id": -1},
        {"local_boot_id": 2**64},
        {"versions": (2, 1)},
        {"versions": (0, 1)},
    ],
)
def test_bad_construction_is_our_bug(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {
        "keys": KEYS,
        "local_id": A,
        "local_boot_id": 1,
        "initiator": True,
        "random_bytes": random.Random(0).randbytes,
    }
    arguments.update(kwargs)
    with pytest.raises(LocalProtocolError):
        SecureChannel(**arguments)  # type: ignore[arg-type]


# --- Frames that must not open ---------------------------------------------------------


def test_replayed_frame_on_the_same_connection() -> None:
    initiator, responder = pair()
    frame = initiator.seal(ACK)
    responder.receive(frame)
    error = rejects(responder, frame)
    assert "replayed" in str(error)


def test_frame_from_another_connection_of_the_same_pair() -> None:
    first_i, first_r = pair(seed=1)
    second_i, second_r = pair(seed=2)
    assert first_i.connection_id != second_i.connection_id
    # Same counter (0), same two nodes, same direction: only the connection differs.
    forward, backward = first_i.seal(ACK), second_r.seal(ACK)
    rejects(second_r, forward)
    rejects(first_i, backward)
    assert first_r.established


def test_frame_retargeted_to_a_third_node() -> None:
    a_to_b, _ = pair(A, B, seed=1)
    _, c_from_a = pair(A, C, seed=1)
    rejects(c_from_a, a_to_b.seal(ACK))


def test_frame_reflected_to_its_sender() -> None:
    initiator, responder = pair()
    rejects(initiator, initiator.seal(ACK))
    rejects(responder, responder.seal(ACK))


@pytest.mark.parametrize("order", [(1,), (0, 2), (0, 1, 0), (0, 1, 1)], ids=str)
def test_reordered_or_dropped_frames(order: tuple[int, ...]) -> None:
    initiator, responder = pair()
    frames = [initiator.seal(Ack(A, n, 0, B)) for n in range(3)]
    *accepted, last = order
    for index in accepted:
        responder.receive(frames[index])
    error = rejects(responder, frames[last])
    assert "was due" in str(error)


def test_frame_with_a_forged_counter() -> None:
    initiator, responder = pair()
    initiator.seal(ACK)  # counter 1 (0 was the finished frame), never delivered
    second = initiator.seal(ACK)  # counter 2; pretend it is frame 1, the one due
    rejects(responder, (1).to_bytes(8, "big") + second[8:])


def test_hello_sealed_with_another_token() -> None:
    stranger = channel(A, initiator=True, keys=OTHER_KEYS)
    responder = channel(B, initiator=False)
    error = rejects(responder, stranger.start())
    assert "another token" in str(error)


def test_responder_hello_sealed_with_another_token() -> None:
    initiator = channel(A, initiator=True)
    stranger = channel(B, initiator=False, keys=OTHER_KEYS)
    hello = initiator.start()
    with pytest.raises(RemoteProtocolError):
        stranger.receive(hello)
    # A stranger can only send garbage back; even its own valid hello does not open.
    other_initiator = channel(C, initiator=True, keys=OTHER_KEYS)
    reply = channel(B, initiator=False, keys=OTHER_KEYS).receive(other_initiator.start())
    rejects(initiator, reply.frames[0])


def test_session_frame_of_another_token() -> None:
    theirs, _ = pair(keys=OTHER_KEYS)
    _, ours = pair()
    rejects(ours, theirs.seal(ACK))


def test_hello_reflected_to_its_sender() -> None:
    initiator = channel(A, initiator=True)
    rejects(initiator, initiator.start())  # sealed for the other direction
    responder = channel(B, initiator=False)
    reply = responder.receive(channel(A, initiator=True).start()).frames[0]
    rejects(channel(C, initiator=False), reply)  # a responder's hello, sent to a responder


def record_session(seed: object) -> tuple[bytes, bytes, bytes, list[bytes]]:
    """One connection as a wire recorder sees it: both hellos, the finished frame, and
    session frames both ways (Acks from the initiator, Releases from the responder)."""
    initiator = channel(A, initiator=True, seed=seed, expected_peer=B)
    responder = channel(B, initiator=False, seed=seed)
    hello = initiator.start()
    [reply] = responder.receive(hello).frames
    [finished] = initiator.receive(reply).frames
    responder.receive(finished)
    frames = [initiator.seal(Ack(A, n, 7, B)) for n in range(3)]
    frames += [responder.seal(Release(B, n, 7)) for n in range(3)]
    return hello, reply, finished, frames


@pytest.mark.parametrize("frame", ["binary", "finished", "session", "hello"])
def test_replayed_hello_opens_nothing_useful(frame: str) -> None:
    """An outsider replays a recorded hello on a new connection, then sends anything: the
    responder answers, but is never established, and the next frame kills the channel."""
    hello, _, finished, frames = record_session(1)
    replay_target = channel(B, initiator=False, seed=2)
    replay_target.receive(hello)
    assert not replay_target.established
    follow = {"binary": os.urandom(24), "finished": finished, "session": frames[0]}
    rejects(replay_target, follow.get(frame, hello))
    assert replay_target.connection_id is None


def test_replayed_reply_does_not_open_on_another_connection() -> None:
    """The responder's hello is bound to the initiator's hello of its own connection."""
    _, reply, _, _ = record_session(1)
    initiator = channel(A, initiator=True, seed=2, expected_peer=B)
    initiator.start()
    error = rejects(initiator, reply)
    assert "does not open" in str(error)


def test_a_recorded_session_cannot_be_opened_with_the_token_learned_later() -> None:
    """Forward secrecy. Someone recorded a whole connection and later learned the token:
    the hellos open, but the session frames open neither under keys derived from the
    token and the hellos alone (protocol 2's keys), nor by replaying the recording into
    fresh channels built from the token."""
    hello, reply, finished, frames = record_session(1)
    learned = TokenKeys.derive(TOKEN)
    # The hellos open with the token: the recorder has both public keys and every id.
    label = b"rancherd/v1/hello"
    initiator_hello = learned._hello.decrypt(hello[:12], hello[12:], label + b"\x01")
    reply_ad = label + b"\x02" + initiator_hello
    hellos = [initiator_hello, learned._hello.decrypt(reply[:12], reply[12:], reply_ad)]
    assert [type(decode(h)) for h in hellos] == [Hello, Hello]
    # Keys from the token and the transcript without the ephemeral secret: nothing opens.
    token_only = HKDF(
        algorithm=SHA256(),
        length=80,
        salt=learned._session,
        info=b"rancherd/v3/session" + b"".join(hellos),
    ).derive(bytes(32))
    v2_style = HKDF(
        algorithm=SHA256(), length=80, salt=None, info=b"rancherd/v1/session" + b"".join(hellos)
    ).derive(learned._session)
    for okm in (token_only, v2_style):
        for key in (okm[:32], okm[32:64]):
            for frame in [finished, *frames]:
                with pytest.raises(InvalidTag):
                    ChaCha20Poly1305(key).decrypt(b"\0\0\0\0" + frame[:8], frame[8:], None)
    # Replaying the recording into fresh channels with the learned token opens nothing.
    responder = SecureChannel(
        learned, B, 1, initiator=False, random_bytes=os.urandom, versions=(1, 1)
    )
    responder.receive(hello)
    rejects(responder, finished)
    initiator = SecureChannel(
        learned, A, 1, initiator=True, random_bytes=os.urandom, versions=(1, 1)
    )
    initiator.start()
    rejects(initiator, reply)


def test_a_low_order_ephemeral_key_is_refused() -> None:
    """A token holder sending an all-zero public key would make the shared secret zero."""
    hello = encode(Hello(PROTOCOL_VERSION, PROTOCOL_VERSION, A, 1, bytes(32)))
    sealed = b"\x00" * 12 + KEYS._hello.encrypt(b"\x00" * 12, hello, b"rancherd/v1/hello\x01")
    error = rejects(channel(B, initiator=False, versions=(3, 3)), sealed)
    assert "ephemeral key" in str(error)


def test_a_message_in_place_of_the_finished_frame_is_refused() -> None:
    initiator = channel(A, initiator=True)
    responder = channel(B, initiator=False)
    [reply] = responder.receive(initiator.start()).frames
    initiator.receive(reply)
    rejects(responder, initiator.seal(ACK))  # counter 1, where the finished frame was due


def test_duplicate_hello_is_rejected() -> None:
    initiator = channel(A, initiator=True)
    responder = channel(B, initiator=False)
    hello = initiator.start()
    reply = responder.receive(hello).frames[0]
    initiator.receive(reply)
    rejects(initiator, reply)
    rejects(responder, hello)


def test_every_truncation_and_bit_flip_is_rejected() -> None:
    initiator, responder = pair()
    frame = initiator.seal(ACK)
    mutated = [frame[:n] for n in range(len(frame))]
    mutated += [
        frame[:i] + bytes([frame[i] ^ (1 << bit)]) + frame[i + 1 :]
        for i in range(len(frame))
        for bit in range(8)
    ]
    mutated.append(frame + b"\x00")
    for bad in mutated:
        fresh_i, fresh_r = pair()
        assert fresh_i.seal(ACK) == frame  # the same seed: the same frame
        rejects(fresh_r, bad)
    assert responder.receive(frame).messages == [ACK]


def test_every_mutated_hello_is_rejected() -> None:
    hello = channel(A, initiator=True).start()
    for i in range(len(hello)):
        rejects(channel(B, initiator=False), hello[:i])
        flipped = hello[:i] + bytes([hello[i] ^ 0x80]) + hello[i + 1 :]
        rejects(channel(B, initiator=False), flipped)


def test_oversized_frames_are_rejected_before_decryption() -> None:
    _, responder = pair()
    error = rejects(responder, b"\x00" * (MAX_FRAME + 1))
    assert "exceeds" in str(error)
    error = rejects(channel(B, initiator=False), b"\x00" * 4096)
    assert "too long" in str(error)


def test_a_frame_of_exactly_max_frame_is_read() -> None:
    _, responder = pair()
    error = rejects(responder, (1).to_bytes(8, "big") + bytes(MAX_FRAME - 8))
    assert "does not open" in str(error)


# --- Who is on the other end ------------------------------------------------------------


def test_hello_from_an_unexpected_peer() -> None:
    initiator = channel(A, initiator=True, expected_peer=B)
    impostor = channel(C, initiator=False)
    reply = impostor.receive(initiator.start()).frames[0]
    with pytest.raises(UnexpectedPeerError, match=C):
        initiator.receive(reply)
    assert_dead(initiator)


def test_responder_can_expect_a_peer_too() -> None:
    responder = channel(B, initiator=False, expected_peer=C)
    with pytest.raises(UnexpectedPeerError):
        responder.receive(channel(A, initiator=True).start())


def test_dialling_ourselves_is_recognised_on_both_ends() -> None:
    dialler = channel(A, initiator=True, boot_id=5)
    listener = channel(A, initiator=False, boot_id=5)
    with pytest.raises(SelfConnectionError) as accepted:
        listener.receive(dialler.start())
    assert accepted.value.reply is not None
    with pytest.raises(SelfConnectionError) as dialled:
        dialler.receive(accepted.value.reply)
    assert dialled.value.reply is None
    assert isinstance(dialled.value, RemoteProtocolError)
    assert_dead(dialler)
    assert_dead(listener)


def test_same_id_other_boot_is_a_clone_not_ourselves() -> None:
    """A cloned data dir: the channel works, and the peer's boot id tells the core."""
    initiator = channel(A, initiator=True, boot_id=5)
    responder = channel(A, initiator=False, boot_id=6)
    handshake(initiator, responder)
    assert initiator.peer_id == A
    assert initiator.peer_boot_id == 6
    assert responder.receive(initiator.seal(ACK)).messages == [ACK]
    assert initiator.receive(responder.seal(ACK)).messages == [ACK]
    rejects(initiator, initiator.seal(ACK))  # directions stay apart with equal ids


@pytest.mark.parametrize(
    ("ours", "theirs", "agreed"),
    [((1, 1), (1, 1), 1), ((1, 3), (2, 5), 3), ((2, 5), (1, 3), 3), ((1, 9), (4, 4), 4)],
)
def test_version_negotiation(ours: tuple[int, int], theirs: tuple[int, int], agreed: int) -> None:
    initiator = channel(A, initiator=True, versions=ours)
    responder = channel(B, initiator=False, versions=theirs)
    handshake(initiator, responder)
    assert initiator.version == responder.version == agreed
    assert responder.receive(initiator.seal(ACK)).messages == [ACK]


def test_no_common_version() -> None:
    initiator = channel(A, initiator=True, versions=(3, 4))
    responder = channel(B, initiator=False, versions=(1, 2))
    with pytest.raises(IncompatibleVersionError, match=r"1\.\.2.*3\.\.4"):
        responder.receive(initiator.start())
    assert_dead(responder)


@pytest.mark.parametrize("old", [(1, 1), (2, 2), (1, 2)], ids=str)
def test_this_build_refuses_an_older_peer(old: tuple[int, int]) -> None:
    """Protocol 3 derives its session keys from an ephemeral exchange that a version 2
    build does not make (and version 1 records carry the view list): the hello refuses the
    pairing, naming both ranges. A version 2 hello is sealed as ours are, so it opens and
    the refusal is by version, not a confusing "does not open"."""
    assert (MIN_PROTOCOL_VERSION, PROTOCOL_VERSION) == (3, 3)
    ours = (MIN_PROTOCOL_VERSION, PROTOCOL_VERSION)
    for theirs_initiates in (True, False):
        older = channel(A, initiator=theirs_initiates, versions=old)
        new = channel(B, initiator=not theirs_initiates, versions=ours)
        initiator, responder = (older, new) if theirs_initiates else (new, older)
        with pytest.raises(IncompatibleVersionError, match=r"no common protocol version.*3\.\.3"):
            responder.receive(initiator.start())
    new_i = channel(A, initiator=True, versions=ours)
    new_r = channel(B, initiator=False, versions=ours)
    handshake(new_i, new_r)
    assert new_i.version == new_r.version == 3


def test_version_is_bound_to_the_keys() -> None:
    """Frames sealed under one negotiated version do not open under another."""
    old_i, _ = pair(seed=1)
    new_i = channel(A, initiator=True, seed=1, versions=(1, 2), expected_peer=B)
    new_r = channel(B, initiator=False, seed=1, versions=(1, 2))
    handshake(new_i, new_r)
    assert new_i.version == 2
    rejects(new_r, old_i.seal(ACK))


# --- Hostile bytes ------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_arbitrary_bytes_to_a_fresh_responder(data: bytes) -> None:
    responder = channel(B, initiator=False)
    with pytest.raises(RemoteProtocolError):
        responder.receive(data)
    assert_dead(responder)


@given(st.lists(st.binary(max_size=200), min_size=1, max_size=3))
@settings(max_examples=50)
def test_arbitrary_bytes_to_an_established_channel(frames: list[bytes]) -> None:
    _, responder = pair()

    def feed() -> None:
        for frame in frames:
            responder.receive(frame)

    with pytest.raises(RemoteProtocolError):
        feed()
    assert_dead(responder)


# --- The token stays secret -----------------------------------------------------------------


def test_token_never_shows() -> None:
    assert TOKEN not in repr(KEYS)
    assert "horse" not in repr(KEYS)
    initiator, _ = pair()
    assert "horse" not in repr(initiator)
    with pytest.raises(TypeError):
        pickle.dumps(KEYS)


@pytest.mark.parametrize("token", ["", "bad \udcff surrogate"])
def test_bad_tokens_are_refused_without_echoing(token: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        TokenKeys.derive(token)
    assert "surrogate" not in str(info.value)
    assert info.value.__suppress_context__ or info.value.__context__ is None


def test_keys_are_the_right_size() -> None:
    with pytest.raises(LocalProtocolError):
        TokenKeys(b"short", bytes(32))
