"""The services' /internal routes (service to service, never routed by the gateway) answer only
callers that present the shared key of INTERNAL_KEY_FILE in X-Internal-Key (libcommon
internal.h): a pod that merely reaches a service's port reads no tenant's data through them.
The rest of the suite shows the services' own calls carry the key: tenant settings, CORS
allowlists, attachment checks and the search backfill all go through these routes."""
import pytest
import requests

from chat import problem
from conftest import INTERNAL_HEADERS, INTERNAL_KEY, INTERNAL_KEY_OLD, PORTS

ROUTES = [
    ("user", "GET", "/internal/v1/tenants/cors-origins"),
    ("user", "GET", "/internal/v1/tenants/{tenant}/settings"),
    ("messaging", "GET", "/internal/v1/messaging/events?tenant={tenant}"),
    ("messaging", "GET", "/internal/v1/messaging/attachments/00000000-0000-4000-8000-000000000000"
                         "?tenant={tenant}&user=alice"),
    ("messaging", "POST", "/internal/v1/messaging/jobs/run"),
    ("media", "GET", "/internal/v1/media/00000000-0000-4000-8000-000000000000/attachable"
                     "?tenant={tenant}&user=alice"),
    ("media", "POST", "/internal/v1/jobs/run"),
]


@pytest.mark.parametrize("service,method,path", ROUTES, ids=[f"{s}:{p.split('?')[0]}" for s, _, p in ROUTES])
def test_internal_routes_need_the_shared_key(tenant, service, method, path):
    url = f"http://127.0.0.1:{PORTS[service]}" + path.format(tenant=tenant["id"])
    for headers in ({}, {"X-Internal-Key": "not-" + INTERNAL_KEY}, {"X-Internal-Key": INTERNAL_KEY[:-1]},
                    {"X-Internal-Key": ""}):
        r = requests.request(method, url, headers=headers, timeout=30)
        p = problem(r, 401, "X-Internal-Key")
        assert p["type"] == "urn:chat:problem:unauthenticated"
        assert "items" not in r.text
    # The first key of the file, and the second (a rotation in progress): both open the route.
    for key in (INTERNAL_KEY, INTERNAL_KEY_OLD):
        r = requests.request(method, url, headers={"X-Internal-Key": key}, timeout=60)
        assert r.status_code in (200, 404), r.text  # 404: the attachment checks' unknown media


def test_the_public_routes_do_not_take_the_key(api, tenant):
    """The key opens the /internal routes only: it is no credential for a tenant's API."""
    r = requests.get(f"http://127.0.0.1:{PORTS['messaging']}/v1/conversations", headers=INTERNAL_HEADERS,
                     timeout=10)
    problem(r, 401)
