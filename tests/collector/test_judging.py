"""collector/judging.py: the DNS answers' ``bogon`` and ``asn`` re-derived by the collector, copying only
what changes."""

from __future__ import annotations

from gatewatch.collector.judging import rederive_dns_answers
from gatewatch.core.measurement import WebTestKeys
from gatewatch.core.observations import DNSAnswer, DNSQuery, DNSReply


def _keys(bogon: bool, reply_bogon: bool) -> WebTestKeys:
    answer = DNSAnswer(answer_type="A", ipv4="10.1.2.3", ttl=60, bogon=bogon)
    reply = DNSReply(
        t=0.01,
        rcode="NOERROR",
        answers=[DNSAnswer(answer_type="A", ipv4="10.9.9.9", ttl=60, bogon=reply_bogon)],
    )
    cname = DNSAnswer(answer_type="CNAME", hostname="other.lab", ttl=60)
    query = DNSQuery(resolver_address="127.53.0.1:53", hostname="x.lab", query_type="A", t0=0.0, t=0.01,
                     answers=[cname, answer], replies=[reply])  # fmt: skip
    return WebTestKeys(queries=[query])


def test_answers_as_the_agent_said_are_kept_as_they_are() -> None:
    keys = _keys(bogon=True, reply_bogon=True)
    assert rederive_dns_answers(keys, (), None) is keys


def test_a_hidden_bogon_is_recomputed_in_answers_and_replies_without_touching_the_original() -> None:
    for bogon, reply_bogon in ((False, True), (True, False), (False, False)):
        keys = _keys(bogon, reply_bogon)
        rederived = rederive_dns_answers(keys, (), None)
        (query,) = rederived.queries
        assert [a.bogon for a in query.answers] == [False, True]
        assert [a.bogon for a in query.replies[0].answers] == [True]
        assert keys.queries[0].answers[1].bogon is bogon  # the parsed measurement is untouched
        assert keys.queries[0].replies[0].answers[0].bogon is reply_bogon


def test_allowed_ranges_are_not_bogons() -> None:
    keys = _keys(bogon=True, reply_bogon=True)
    (query,) = rederive_dns_answers(keys, ("10.0.0.0/8",), None).queries
    assert [a.bogon for a in query.answers] + [query.replies[0].answers[0].bogon] == [False, False, False]
