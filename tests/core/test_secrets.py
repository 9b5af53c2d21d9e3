"""The one masking function: every secret form we write or print is masked, ordinary text is not,
and a spec's masked view keeps everything but its secrets."""

import pytest

from synpro.core.secrets import hide, mask
from synpro.spec import parse_spec


@pytest.mark.parametrize("text, secret", [
    ("postgresql+psycopg://root:s3cr3t@127.0.0.1:5432/synpro", "s3cr3t"),
    ("postgresql://user:p@ss:word@db.example/x", "p@ss:word"),  # the password runs to the last @
    ("store.url: mysql://u:hunter22@h/db in a message", "hunter22"),
    ("http://127.0.0.1:8000/v1?api_key=abc123&model=x", "abc123"),
    ("https://h/v1?token=t0k3n", "t0k3n"),
    ('{"password": "pa55w0rd"}', "pa55w0rd"),
    ("OPENAI_API_KEY=sk-live-999", "sk-live-999"),
    ("Authorization: Bearer eyJhbGciOi.x.y", "eyJhbGciOi.x.y"),
])
def test_secrets_are_masked(text, secret):
    masked = mask(text)
    assert secret not in masked and "***" in masked
    assert mask(masked) == masked  # masking twice changes nothing


@pytest.mark.parametrize("text", [
    "sqlite:////tmp/runs/tiny/synpro.db", "postgresql+psycopg://root@127.0.0.1:5432/test",
    "max_new_tokens: 512", "tokens_seen=24064", "api_key_env: OPENAI_API_KEY", "tokenizer: {vocab_size: 512}",
])
def test_ordinary_text_is_left_alone(text):
    assert mask(text) == text


def test_a_hidden_literal_is_masked_wherever_it_appears():
    hide("sk-only-in-env-7781", None, "ab")  # None and very short values are ignored
    assert mask("upstream said: bad key sk-only-in-env-7781 (401)") == "upstream said: bad key *** (401)"
    assert mask("ab cab") == "ab cab"


SPEC = """
experiment: {name: s}
budget: {unique_tokens: 1000, total_tokens: 4000}
store:
  url: postgresql+psycopg://root:store-pw@db:5432/synpro
  optuna_url: postgresql+psycopg://root:optuna-pw@db:5432/synpro_optuna
tracking: {mlflow_uri: "postgresql+psycopg://ml:mlflow-pw@db:5432/mlflow"}
generation:
  generator: {backend: openai, endpoint: "http://gpu:8000/v1?api_key=endpoint-key"}
"""


def test_a_specs_masked_view_hides_every_url_secret_and_keeps_the_rest():
    spec = parse_spec(SPEC, file="s.yaml")
    public = spec.masked()
    text = public.to_yaml() + repr(public.flat())
    for secret in ("store-pw", "optuna-pw", "mlflow-pw", "endpoint-key"):
        assert secret not in text
    assert public.store_url() == "postgresql+psycopg://root:***@db:5432/synpro"
    assert spec.store_url().endswith("root:store-pw@db:5432/synpro")  # the real spec still connects
    assert public.model_dump(exclude={"store", "tracking", "generation"}) == spec.model_dump(
        exclude={"store", "tracking", "generation"}) and public.source_file == "s.yaml"
    assert public.generation.generator.endpoint == "http://gpu:8000/v1?api_key=***"
    assert parse_spec(public.to_yaml(), file="s.yaml").masked() == public  # masking is idempotent


def test_one_database_for_the_store_and_optuna_is_refused_at_validation():
    from synpro.errors import InputError

    same = SPEC.replace("optuna-pw@db:5432/synpro_optuna", "store-pw@db:5432/synpro")
    with pytest.raises(InputError, match="two databases"):
        parse_spec(same, file="s.yaml")
