"""A load through a DocumentCache gives what a plain load gives, and parses only what it has not seen."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from compiler.flow import Profile
from compiler.inputs import Inputs, load_inputs
from compiler.inputs.cache import DocumentCache
from compiler.inputs.yamlload import load_text
from compiler.source import InputError, InputErrors
from compiler.synth import Scale, generate, write
from verifier.diff.scope import cluster_signature
from verifier.simulate.source import ReferenceEvaluator


def _objects() -> list[dict[str, Any]]:
    objects = generate(Scale(40, 2, 16, seed=5))
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            obj["spec"]["replicas"] = 2
    return objects


def _same(cached: Inputs, plain: Inputs) -> None:
    """Equal in everything a consumer reads, positions included (through ``Inputs.locate``)."""
    assert cluster_signature(cached.cluster) == cluster_signature(plain.cluster)
    assert [e.source for e in cached.cluster.endpoints] == [e.source for e in plain.cluster.endpoints]
    assert [n.source for n in cached.cluster.namespaces.values()] == [
        n.source for n in plain.cluster.namespaces.values()
    ]
    assert [p.model_dump() for p in cached.policies] == [p.model_dump() for p in plain.policies]
    assert [cached.locate(p.display, p.src) for p in cached.policies] == [p.src for p in plain.policies]
    assert cached.files == plain.files and cached.skipped_kinds == plain.skipped_kinds
    refs = [
        [r.ref for rules in (*u.allows.values(), *u.denies.values()) for r in rules]
        for u in ReferenceEvaluator(cached, Profile.CILIUM).units
    ]
    assert refs == [
        [r.ref for rules in (*u.allows.values(), *u.denies.values()) for r in rules]
        for u in ReferenceEvaluator(plain, Profile.CILIUM).units
    ]


def test_a_second_version_reuses_every_unchanged_document(tmp_path: Path) -> None:
    objects = _objects()
    changed = copy.deepcopy(objects)
    policy = next(o for o in changed if o["kind"] == "CiliumNetworkPolicy")
    policy["spec"]["ingress"][0]["toPorts"][0]["ports"].append({"port": "1234", "protocol": "TCP"})  # one line more
    cache = DocumentCache()
    old_paths = [str(p) for p in write(objects, tmp_path / "old")]
    old = load_inputs(old_paths, cache=cache)
    parsed = cache.parsed
    new_paths = [str(p) for p in write(changed, tmp_path / "new")]
    new = load_inputs(new_paths, cache=cache)
    assert cache.parsed == parsed + 1 and cache.reused == parsed - 1
    _same(new, load_inputs(new_paths))
    _same(old, load_inputs(old_paths))
    assert new.moved  # every reused policy is in another file now, some a line further down
    edited = f"CiliumNetworkPolicy {policy['metadata']['namespace']}/{policy['metadata']['name']}"
    assert all(p is q for p, q in zip(old.policies, new.policies, strict=True) if p.display != edited)


def test_a_document_inserted_first_shifts_every_position(tmp_path: Path) -> None:
    text = (tmp_path / "base.yaml")
    paths = write(_objects(), tmp_path / "old")
    text.write_text("---\n".join(p.read_text() for p in paths))
    cache = DocumentCache()
    load_inputs([str(text)], cache=cache)
    moved = tmp_path / "moved.yaml"
    moved.write_text("# a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n" + text.read_text())
    _same(load_inputs([str(moved)], cache=cache), load_inputs([str(moved)]))


BROKEN = {
    "YAML syntax": "kind: [unclosed\n",
    "validation": "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x, namespace: a}\n"
                  "spec: {podSelector: {}, polcyTypes: [Ingress]}\n",
    "duplicate": None,  # the same policy document twice
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_errors_are_those_of_a_plain_load(case: str, tmp_path: Path) -> None:
    paths = write(_objects(), tmp_path / "old")
    cache = DocumentCache()
    load_inputs([str(p) for p in paths], cache=cache)
    text = paths[1].read_text()
    first_policy = text.split("\n---\n")[0]
    extra = BROKEN[case] if BROKEN[case] is not None else first_policy + "\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(text + "---\n" + extra)
    errors = []
    for use in (cache, None):
        with pytest.raises((InputError, InputErrors)) as caught:
            load_inputs([str(paths[0]), str(bad)], cache=use)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]


UNCHUNKED = {
    "directive": "%YAML 1.1\n---\n",
    "document end": "...\n",
    "CRLF": "\r\n",
}


@pytest.mark.parametrize("case", sorted(UNCHUNKED))
def test_texts_chunking_does_not_cover_are_parsed_whole(case: str, tmp_path: Path) -> None:
    paths = write(_objects(), tmp_path / "old")
    cache = DocumentCache()
    load_inputs([str(p) for p in paths], cache=cache)
    text = paths[1].read_text()
    odd = tmp_path / "odd.yaml"
    if case == "CRLF":
        odd.write_bytes(text.replace("\n", "\r\n").encode())
    elif case == "document end":
        odd.write_text(text.replace("\n---\n", "\n...\n---\n"))
    else:
        odd.write_text(UNCHUNKED[case] + text)
    _same(load_inputs([str(paths[0]), str(odd)], cache=cache), load_inputs([str(paths[0]), str(odd)]))


YAML_TYPES = """\
a: 1
b: true
c: null
d: 1.5
e: 2024-01-01
f: "quoted: yes"
g: [x, 2, {h: i}]
j: 0x1F
k: ~
base: {l: 1}
merged:
  <<: {m: 2}
  n: 3
block: |
  text
  --- not a marker (indented)
"""


def test_documents_without_anchors_build_as_with_them() -> None:
    """The direct builder (no ``&`` in the text) and PyYAML's construction agree, lines included."""
    fast = list(load_text(YAML_TYPES, "f"))
    slow = list(load_text(YAML_TYPES + "# & forces the alias-aware path\n", "f"))
    assert fast == slow == [yaml.safe_load(YAML_TYPES) | {"e": "2024-01-01"}]
    assert fast[0].key_lines == slow[0].key_lines and fast[0]["g"].item_lines == slow[0]["g"].item_lines
    assert fast[0]["merged"].key_lines == slow[0]["merged"].key_lines
