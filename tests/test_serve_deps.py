"""The routes' dependencies (serve/deps.py): the role check names the route it guards, runs
once per request, and every HTTP route and the WebSocket reach the same service.

The service runs with ``workers=0``: submitted jobs stay queued, nothing is generated.
"""

from __future__ import annotations

from fastapi.routing import APIRoute, APIWebSocketRoute
from test_serve import VIEWER, H, clean_env, make_client  # noqa: F401 (clean_env is autouse)

from musicgen_edu.serve import streaming
from musicgen_edu.serve.deps import require, service
from musicgen_edu.serve.routes import ROUTERS


def test_a_403_names_the_method_and_route_template_it_guards(tmp_path):
    with make_client(tmp_path, workers=0) as c:
        job_id = c.post("/v1/generate", json={"prompt": "x", "duration": 0.5},
                        headers=H["user"]).json()["id"]
        for method, path, route in [
                ("POST", "/v1/generate", "/v1/generate"),
                ("POST", "/v1/prompts/improve", "/v1/prompts/improve"),
                ("DELETE", f"/v1/jobs/{job_id}", "/v1/jobs/{job_id}")]:
            r = c.request(method, path, headers=H["viewer"], json={"prompt": "x"})
            assert r.status_code == 403, r.text
            assert r.json()["detail"] == (f"this key's role is 'viewer'; {method} {route} needs "
                                          "one of ['user', 'admin'].")
        with c.websocket_connect(f"/v1/stream?api_key={VIEWER}") as ws:
            assert ws.receive_json()["detail"] == ("this key's role is 'viewer'; WS /v1/stream "
                                                   "needs one of ['user', 'admin'].")
    with make_client(tmp_path / "m", workers=0, metrics_auth=True) as c:
        r = c.get("/metrics", headers=H["user"])
        assert r.status_code == 403 and "GET /metrics needs one of ['admin']" in r.json()["detail"]


def test_the_role_check_runs_once_per_request(tmp_path):
    """A burst of 3: three requests pass, the fourth is refused. A role check that ran twice
    per request (two dependencies asking for the caller) would refuse the second."""
    with make_client(tmp_path, workers=0, rate_limit_per_minute=1, rate_limit_burst=3) as c:
        codes = [c.get("/v1/jobs", headers=H["user"]).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
    assert require("user") is require("user") and require("user") is not require("viewer")


def test_every_route_takes_the_service_and_a_role_from_the_dependencies():
    """No route reads ``app.state`` itself: each declares ``ServiceDep``; every /v1 HTTP route
    declares one role check (the WebSocket checks its role after accepting the socket). The
    routes are read from the routers the app includes (FastAPI >= 0.165 wraps included
    routers in ``app.routes``, so walking those would check nothing)."""
    roles = {require(r): r for r in ("viewer", "user", "admin")}
    routes = [r for router in (*ROUTERS, streaming.router) for r in router.routes
              if isinstance(r, (APIRoute, APIWebSocketRoute))]
    # the liveness probe and the web page's files use no service (their modules say why)
    checked = [r for r in routes if r.path not in ("/healthz", "/", "/web/{name}")]
    assert len(checked) >= 15, [r.path for r in routes]       # the walk found the routes
    for route in checked:
        calls = [d.call for d in route.dependant.dependencies]
        assert service in calls, route.path
        checks = [roles[c] for c in calls if c in roles]
        expected = 0 if not route.path.startswith("/v1/") or route.path == "/v1/stream" else 1
        assert len(checks) == expected, (route.path, checks)
