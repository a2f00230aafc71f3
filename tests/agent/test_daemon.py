from __future__ import annotations

import itertools
import random
import time

from gatewatch.agent.daemon import ConfirmationBudget, SliceCursor, run_schedule
from gatewatch.agent.netinfo import NetworkView, default_gateways, local_address_toward


async def test_passes_repeat_on_schedule_and_a_network_change_brings_the_next_one_forward() -> None:
    ran: list[float] = []
    views = itertools.chain(
        [NetworkView("192.168.1.5", ("192.168.1.1",))] * 3, itertools.repeat(NetworkView("10.0.0.5", ()))
    )

    async def one_pass() -> str | None:
        ran.append(len(ran))
        return None

    passes = await run_schedule(
        one_pass, interval=3600, jitter=10, observe=lambda: next(views), max_passes=2,
        rng=random.Random(1), min_gap=0.0, poll=0.01,
    )  # fmt: skip
    # The interval is an hour: only the network change let the second pass happen within the test.
    assert passes == 2 and ran == [0, 1]


async def test_a_pass_that_saw_the_network_change_is_followed_soon() -> None:
    count = 0

    async def one_pass() -> str | None:
        nonlocal count
        count += 1
        return "network_changed"

    same = NetworkView("192.168.1.5", ())
    assert (
        await run_schedule(
            one_pass, interval=3600, jitter=0, observe=lambda: same, max_passes=3, min_gap=0.01
        )
        == 3
    )


def test_network_view_on_loopback(tmp_path) -> None:
    assert local_address_toward("127.0.0.1") == "127.0.0.1"
    assert local_address_toward("not an address") is None
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway\tFlags\n"
        "eth0\t00000000\t0101A8C0\t0003\n"  # default via 192.168.1.1
        "eth0\t0001A8C0\t00000000\t0001\n"
    )
    assert default_gateways(table) == ["192.168.1.1"]
    assert default_gateways(tmp_path / "absent") == []


async def test_the_upload_waits_a_random_delay_after_the_pass() -> None:
    events: list[tuple[str, float]] = []
    start = time.monotonic()

    async def one_pass() -> str | None:
        events.append(("pass", time.monotonic() - start))
        return None

    async def upload() -> None:
        events.append(("upload", time.monotonic() - start))

    same = NetworkView("192.168.1.5", ())
    passes = await run_schedule(
        one_pass, interval=0.3, jitter=0, observe=lambda: same, max_passes=2, min_gap=0.0, poll=0.01,
        upload=upload, upload_delay=(0.1, 0.15), rng=random.Random(3),
    )  # fmt: skip
    assert passes == 2
    assert [kind for kind, _ in events] == ["pass", "upload", "pass", "upload"]
    (_, first_pass), (_, first_upload), (_, second_pass), (_, second_upload) = events
    assert 0.1 <= first_upload - first_pass <= 0.25  # not adjacent to the pass, and not late
    assert first_upload < second_pass and second_upload - second_pass >= 0.1


async def test_an_upload_that_fails_does_not_end_the_schedule() -> None:
    calls: list[int] = []

    async def one_pass() -> str | None:
        return None

    async def broken_upload() -> None:
        calls.append(1)
        raise RuntimeError("bug")

    same = NetworkView(None, ())
    passes = await run_schedule(
        one_pass, interval=0.01, jitter=0, observe=lambda: same, max_passes=2, min_gap=0.0, poll=0.01,
        upload=broken_upload,
    )  # fmt: skip
    assert passes == 2 and len(calls) == 2


def test_slices_cover_the_list_once_per_round_and_differ_between_agents() -> None:
    urls = [f"https://site{i}.example/" for i in range(200)]
    cursor = SliceCursor(slices=8, salt="agent-1")
    rounds = [cursor.take(urls, str) for _ in range(8)]
    assert sorted(u for r in rounds for u in r) == sorted(urls)  # every URL once in a round of 8 passes
    assert max(map(len, rounds)) < 50  # small paced passes, not one burst
    assert cursor.index == 0 and cursor.take(urls, str) == rounds[0]  # the next round repeats the order
    other = SliceCursor(slices=8, salt="agent-2")
    assert other.take(urls, str) != rounds[0]  # another agent measures a URL at another moment
    assert SliceCursor(slices=1).take(urls, str) == urls


def test_the_confirmation_budget_caps_the_hour_and_skips_urls_just_measured() -> None:
    now = [0.0]
    budget = ConfirmationBudget(per_hour=3, same_url_gap=600, clock=lambda: now[0])
    assert budget.take(["a", "b", "a"]) == ["a", "b"]
    assert budget.take(["a", "c", "d"]) == ["c"]  # a was just measured; the hour's budget is then spent
    now[0] = 700.0
    assert budget.take(["a"]) == []  # still within the hour
    now[0] = 3700.0
    assert budget.take(["a", "e", "f", "g"]) == ["a", "e", "f"]


async def test_confirmation_requests_are_polled_between_passes_with_jitter() -> None:
    """The daemon asks for confirmation requests about every ``confirm_every`` seconds while it waits for
    its next pass; a failing poll does not end the schedule."""
    polls: list[float] = []

    async def one_pass() -> str | None:
        return None

    async def confirm() -> None:
        polls.append(time.monotonic())
        if len(polls) == 2:
            raise RuntimeError("collector unreachable")

    same = NetworkView("192.168.1.5", ())
    started = time.monotonic()
    await run_schedule(
        one_pass, interval=0.5, jitter=0, observe=lambda: same, max_passes=2, rng=random.Random(3),
        min_gap=0.0, poll=0.05, confirm=confirm, confirm_every=0.1,
    )  # fmt: skip
    assert 3 <= len(polls) <= 7, polls  # 0.5 s of waiting, one poll every 0.075-0.125 s
    assert all(p - started < 1.0 for p in polls)
