import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.mesh.invite import MAX_TOKEN_CHARS, TOKEN_PREFIX, InvalidToken, InviteToken

addresses = st.lists(st.text(min_size=1, max_size=60), max_size=8).map(tuple)


@given(addresses)
def test_token_round_trips(addrs: tuple[str, ...]) -> None:
    token = InviteToken.new_mesh(addrs)
    assert InviteToken.decode(token.encode()) == token


def test_token_is_short_and_recognisable() -> None:
    text = InviteToken.new_mesh(("192.168.1.20:41234",)).encode()
    assert text.startswith(TOKEN_PREFIX)
    assert len(text) < 120


def test_pasted_with_whitespace_still_decodes() -> None:
    token = InviteToken.new_mesh(("10.0.0.1:9",))
    assert InviteToken.decode(f"  {token.encode()}\n") == token


@pytest.mark.parametrize(
    "text, reason",
    [
        ("hello", "should start with"),
        ("mesh1-", "truncated"),
        ("mesh1-!!!!", "damaged"),
    ],
)
def test_bad_tokens_say_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        InviteToken.decode(text)


def test_truncated_paste_is_rejected() -> None:
    text = InviteToken.new_mesh(("example.org:7000",)).encode()
    with pytest.raises(InvalidToken):
        InviteToken.decode(text[:-4])


def test_other_version_is_rejected() -> None:
    import base64

    body = bytearray(base64.urlsafe_b64decode(InviteToken.new_mesh().encode()[6:] + "=="))
    body[0] = 9
    with pytest.raises(InvalidToken, match="version 9"):
        InviteToken.decode(TOKEN_PREFIX + base64.urlsafe_b64encode(bytes(body)).decode())


@given(st.text(max_size=300))
def test_garbage_never_raises_anything_but_invalid_token(text: str) -> None:
    try:
        InviteToken.decode(TOKEN_PREFIX + text)
    except InvalidToken:
        pass


def test_oversized_input_is_rejected_before_decoding() -> None:
    with pytest.raises(InvalidToken, match="too long"):
        InviteToken.decode(TOKEN_PREFIX + "A" * MAX_TOKEN_CHARS)
