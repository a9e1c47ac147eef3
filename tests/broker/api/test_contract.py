"""openapi.yaml and the app agree; health, readiness and metrics answer."""

from __future__ import annotations

from broker.api import ACMEDNS_ROUTES, ROUTES, httpreq_routes
from tests.support import Api, OpenApi, Running


def test_app_routes_equal_the_spec_paths(openapi: OpenApi):
    table = (*ROUTES, *ACMEDNS_ROUTES, *httpreq_routes(""))
    assert {(method, path) for method, path, _ in table} == openapi.paths()


async def test_the_running_app_serves_every_spec_path(running: Running, openapi: OpenApi):
    app_routes = {
        (route.method, route.resource.canonical)
        for route in running.broker.http_app.router.routes()
        if route.resource is not None
    }
    assert app_routes == openapi.paths()


async def test_health_and_readiness(api: Api):
    assert await api.call("GET", "/healthz") == (200, {"status": "ok"})
    status, body = await api.call("GET", "/readyz")
    assert status == 200
    assert body["checks"]["store"]["ok"] is True
    assert body["checks"]["dns"]["ok"] is True


async def test_readiness_fails_when_the_store_is_gone(api: Api, running: Running):
    await running.broker.store.close()
    status, body = await api.call("GET", "/readyz")
    assert status == 503
    assert body["checks"]["store"]["ok"] is False


async def test_metrics_count_requests_operations_records_and_dns_queries(
    api: Api, running: Running
):
    token = running.admin_token
    await api.call("POST", "/v1/present", token, json={"domain": "example.test", "value": "a" * 43})
    await api.call("POST", "/v1/present", json={"domain": "example.test", "value": "a" * 43})
    await running.txt("_acme-challenge.example.test")
    await running.txt("nope.example.test")
    status, text, _ = await running.call("GET", "/metrics")
    assert status == 200
    lines = text.splitlines()
    assert (
        'dns01_broker_http_requests_total{method="POST",route="/v1/present",status="201"} 1.0'
        in lines
    )
    assert (
        'dns01_broker_http_requests_total{method="POST",route="/v1/present",status="401"} 1.0'
        in lines
    )
    assert 'dns01_broker_challenge_operation_seconds_count{operation="present"} 1.0' in lines
    assert "dns01_broker_live_records 1.0" in lines
    assert 'dns01_broker_dns_queries_total{rcode="NOERROR",transport="udp"} 1.0' in lines
    assert 'dns01_broker_dns_queries_total{rcode="NXDOMAIN",transport="udp"} 1.0' in lines
