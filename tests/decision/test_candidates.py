from __future__ import annotations

from nextbest.catalog import bundled_catalog_path, load_catalog
from nextbest.decision.candidates import candidates_for
from nextbest.domain import Channel


def test_candidates_answer_the_trigger_on_the_allowed_channels() -> None:
    catalog = load_catalog(bundled_catalog_path())
    every = candidates_for(catalog, "cart_abandoned", [])
    assert every
    assert {a.id for a in every} == {a.id for a in catalog.actions if "cart_abandoned" in a.triggers}
    assert {a.channel for a in every} > {Channel.EMAIL}
    only_email = candidates_for(catalog, "cart_abandoned", [Channel.EMAIL])
    assert only_email == [a for a in every if a.channel is Channel.EMAIL]
    assert candidates_for(catalog, "no_such_trigger", []) == []
