"""The messaging service's contracts stay complete: every route it serves is in
proto/openapi.yaml, and every event type it appends to a conversation log has a schema in
proto/events and is listed in proto/asyncapi.yaml."""

import re

from conftest import ROOT

SERVICE = ROOT / "services" / "messaging"


def openapi_operations():
    ops, current = set(), None
    for line in (ROOT / "proto" / "openapi.yaml").read_text().splitlines():
        m = re.match(r"^  (/\S+):$", line)
        if m:
            current = m.group(1)
            continue
        if re.match(r"^\S", line):
            current = None
        m = re.match(r"^    (get|post|put|patch|delete):$", line)
        if m and current:
            ops.add((m.group(1).upper(), current))
    return ops


def test_every_messaging_route_is_in_openapi():
    routes = set(re.findall(r'\{"(GET|POST|PUT|PATCH|DELETE)", "(/v1/[^"]+)", messaging_\w+\}',
                            (SERVICE / "main.c").read_text()))
    assert len(routes) >= 20
    missing = routes - openapi_operations()
    assert not missing, f"routes without an OpenAPI operation: {sorted(missing)}"


def test_every_logged_event_type_has_a_schema_and_is_in_asyncapi():
    source = "".join(p.read_text() for p in SERVICE.glob("messaging_*.c") if not p.name.endswith("_test.c"))
    types = set(re.findall(r'"((?:message|reaction|conversation|member)\.[a-z_]+)"', source))
    types.discard("message.created.schema")
    assert {"message.created", "member.added", "conversation.updated"} <= types
    asyncapi = (ROOT / "proto" / "asyncapi.yaml").read_text()
    for t in sorted(types):
        assert (ROOT / "proto" / "events" / f"{t}.schema.json").exists(), f"{t} has no schema"
        assert f"name: {t}\n" in asyncapi, f"{t} is not listed in asyncapi.yaml"
