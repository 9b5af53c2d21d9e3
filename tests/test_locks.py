"""Locks of a database shared by workers: held by one holder at a time, on SQLite and PostgreSQL."""

from store.locks import db_lock, sqlite_file


def test_one_holder_at_a_time_and_released_on_exit(url: str) -> None:
    with db_lock(url, "queue") as held:
        assert held is True
        with db_lock(url, "queue", wait=False) as second:  # another connection / open file: refused
            assert second is False
        with db_lock(url, "schema", wait=False) as other_name:  # locks of other names are independent
            assert other_name is True
    with db_lock(url, "queue", wait=False) as again:
        assert again is True


def test_urls_without_a_lock_and_sqlite_files(tmp_path) -> None:
    with db_lock("http://127.0.0.1:5000", "mlflow") as held:  # a tracking server serialises itself
        assert held is True
    assert sqlite_file(f"sqlite:///{tmp_path / 'a.db'}") == tmp_path / "a.db"
    assert sqlite_file("sqlite://") is None and sqlite_file("postgresql+psycopg://u@h/db") is None
