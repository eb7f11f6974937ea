"""The view index (verifier/proofs/view_index.py) answers as the reference evaluator does view by
view: subject selection, peer selection with fromRequires/toRequires, and the parts the L7 cases
cut remote cells into (views of one part get equal peer rules), on generated policy sets under
both profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from compiler.flow import Direction, Profile
from compiler.inputs import Inputs, load_inputs
from tests.strategies import GeneratedCase, cases
from verifier.proofs.l7_cases import RemoteClass, _RemoteIndex
from verifier.proofs.view_index import ViewIndex, members, refine
from verifier.simulate.source import ReferenceEvaluator
from verifier.simulate.source_labels import PeerKind, PeerView, all_hold

GENERATED = int(os.environ.get("NETPOLC_VERIFY_EXAMPLES", "40"))
EXAMPLES = sorted(p for p in (Path(__file__).resolve().parent.parent / "examples").iterdir() if p.is_dir())


def _mask(views: list[PeerView], holds: object) -> int:
    return sum(1 << i for i, view in enumerate(views) if holds(view))  # type: ignore[operator]


def _endpoint_views(ref: ReferenceEvaluator) -> list[PeerView]:
    views = (ref.view(a) for ep in ref.cluster.endpoints for a in ep.addresses)
    return [v for v in views if v.kind is PeerKind.ENDPOINT]


def _check_masks(inputs: Inputs) -> None:
    for profile in Profile:
        ref = ReferenceEvaluator(inputs, profile)
        views = _endpoint_views(ref)
        index = ViewIndex(ref, views)
        for unit in ref.units:
            if unit.subject is not None:
                subject = unit.subject
                assert index.holding(subject) == _mask(views, lambda v, s=subject: all_hold(s, v))
            for direction in unit.directions:
                requires, requires_deny = ref.requirements([unit], direction)
                tests = [(p, requires) for r in unit.allows.get(direction, ()) for p in r.peers]
                tests += [(p, requires_deny) for r in unit.denies.get(direction, ()) for p in r.peers]
                for peer, needs in tests:
                    expected = _mask(views, lambda v, p=peer, n=needs, e=ref: e.peer_matches(p, v, n))
                    assert index.selecting(peer, needs) == expected, (profile, peer)


def _check_parts(inputs: Inputs) -> None:
    for profile in Profile:
        ref = ReferenceEvaluator(inputs, profile)
        remotes: dict[int, list[RemoteClass]] = {4: [], 6: []}
        for view in _endpoint_views(ref):
            assert view.endpoint is not None
            first = (view.address, view.endpoint.key)
            remotes[view.address.version].append(RemoteClass(first, (), frozenset({view.endpoint.key})))
        index = _RemoteIndex(ref, remotes)
        views = index.views.views
        for own in ref.cluster.endpoints:
            for direction in Direction:
                part = index.parts(direction, own)
                keys: dict[int, object] = {}
                for i, view in enumerate(views):
                    key = ref.peer_rules(direction, own, view).key
                    assert keys.setdefault(part[i], key) == key, (profile, direction, own.key, view.address)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_masks_and_parts_on_every_example(example: Path) -> None:
    """The examples hold what generated sets rarely do: fromRequires (multi-tenant), services."""
    inputs = load_inputs([str(example)])
    _check_masks(inputs)
    _check_parts(inputs)


@settings(max_examples=GENERATED, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_masks_are_the_evaluators_answers_view_by_view(case: GeneratedCase) -> None:
    _check_masks(case.inputs)


@settings(max_examples=GENERATED, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_views_of_one_part_get_equal_peer_rules(case: GeneratedCase) -> None:
    _check_parts(case.inputs)


def test_refine_cuts_parts_by_every_mask_and_no_more() -> None:
    assert sorted(refine([0b1111], [0b0011, 0b0101])) == [0b0001, 0b0010, 0b0100, 0b1000]
    assert refine([0b0110, 0], [0b1111]) == [0b0110]
    assert list(members(0b10110)) == [1, 2, 4]
