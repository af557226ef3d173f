"""One engine per ledger file however it is named (docs/ledger.md, Locking and integrity).

A second `Ledger.open` in the same process, through every other name of a file a first Ledger
holds, is refused; the first goes on writing undisturbed; after it closes, any name opens.
(The second process and kill -9 are in tests/integration/test_ledger_lock_processes.py.)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from ledger import Ledger, LedgerBusyError, queries
from tests.unit.test_ledger_support import make_group, make_order


@pytest.fixture
async def holder(tmp_path: Path) -> AsyncIterator[Ledger]:
    (tmp_path / "data").mkdir()
    led = await Ledger.open(tmp_path / "data" / "ledger.db")
    try:
        yield led
    finally:
        await led.close()


def _symlink(db: Path) -> Path:
    link = db.parent.parent / "link.db"
    link.symlink_to(db)
    return link


def _hard_link_same_dir(db: Path) -> Path:
    link = db.with_name("copy.db")
    os.link(db, link)
    return link


def _hard_link_other_dir(db: Path) -> Path:
    other = db.parent.parent / "elsewhere"
    other.mkdir()
    link = other / "ledger.db"
    os.link(db, link)
    return link


def _relative_with_dotdot(db: Path) -> Path:
    (db.parent / "sub").mkdir()
    os.chdir(db.parent / "sub")  # monkeypatch.chdir in the test restores it
    return Path("..") / "sub" / ".." / db.name


def _through_a_symlinked_directory(db: Path) -> Path:
    alias = db.parent.parent / "alias"
    alias.symlink_to(db.parent, target_is_directory=True)
    return alias / db.name


NAMES: dict[str, Callable[[Path], Path]] = {
    "same path": lambda db: db,
    "symlink": _symlink,
    "hard link, same directory": _hard_link_same_dir,
    "hard link, another directory": _hard_link_other_dir,
    "relative path with ..": _relative_with_dotdot,
    "symlinked directory": _through_a_symlinked_directory,
}


@pytest.mark.parametrize("name", list(NAMES))
async def test_a_second_ledger_on_the_same_file_is_refused_under_any_name(
    holder: Ledger, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(holder.path.parent)
    other = NAMES[name](holder.path)
    with pytest.raises(LedgerBusyError, match="in use by another ledger of this quantarb process") as refused:
        await Ledger.open(other)
    assert str(other) in str(refused.value)

    # The refusal disturbed nothing: the first ledger writes on, the file is consistent.
    group = make_group("after")
    holder.group_opened(group)
    await holder.order_created(make_order(group, 0))
    await holder.close()
    async with queries.open_reader(holder.path) as db:
        assert (await queries.check(db))["ok"]

    # Once the first one closed, the same name opens.
    again = await Ledger.open(other)
    try:
        state = await again.recover()
        assert [g.group_id for g in state.open_groups] == ["after"]
    finally:
        await again.close()


async def test_closing_releases_the_lock_for_every_name(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    first = await Ledger.open(db)
    link = _hard_link_same_dir(db)
    await first.close()
    for path in (link, db):
        led = await Ledger.open(path)
        await led.close()


async def test_a_hard_linked_ledger_opens_with_a_warning(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    led = await Ledger.open(db)
    assert led.notices == ()
    await led.close()
    os.link(db, tmp_path / "copy.db")
    led = await Ledger.open(db)
    try:
        [notice] = led.notices
        assert "has 2 names (hard links)" in notice and "sees stale data" in notice
    finally:
        await led.close()
