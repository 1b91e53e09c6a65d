"""Masking tokens out of log text by pattern."""

from __future__ import annotations

from asgi_rt.middleware._mask import mask


def test_the_token_and_any_part_of_it_are_masked_but_ordinary_words_stay() -> None:
    token = "tok_9f8e7d6c5b4a"
    text = f"refused {token}; prefix {token[:8]} suffix {token[-7:]} at line 3"
    assert mask(text, token) == "refused ***; prefix *** suffix *** at line 3"


def test_bearer_values_and_jwts_are_masked_whatever_the_token() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"
    text = f"Authorization: Bearer abc.def, cookie {jwt}"
    assert mask(text, "unrelated") == "Authorization: Bearer ***, cookie ***"
