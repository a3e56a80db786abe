"""Self-tests of the fake Shoptet: it must behave like the platform contract says Shoptet behaves."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from tests.fakes.shoptet import SIGNATURE_HEADER, FakeShoptet, sign
from tests.fakes.shoptet import schema as schemas

ESHOP = 1000001
OTHER = 1000002
TOKEN_PATH = "/action/ApiOAuthServer/token"
ACCESS_TOKEN_PATH = "/action/ApiOAuthServer/getAccessToken"


class Platform:
    """A stand-in for the addon platform: install callback and webhook receiver on loopback."""

    def __init__(self, fake: FakeShoptet) -> None:
        self.fake = fake
        self.install_status = 200
        self.oauth_tokens: list[str] = []
        self.webhooks: list[tuple[dict[str, str], bytes]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.install_url = f"{self.url}/shoptet/install/"
        self.webhook_url = f"{self.url}/shoptet/webhooks/"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code = parse_qs(urlsplit(self.path).query)["code"][0]
                answer = requests.post(
                    platform.fake.partner_url + TOKEN_PATH,
                    json=_token_request(code, platform.install_url),
                    timeout=3,
                )
                platform.oauth_tokens.append(answer.json().get("access_token", ""))
                self._reply(platform.install_status, b"ok")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                platform.webhooks.append(({key: value for key, value in self.headers.items()}, body))
                self._reply(200, b"")

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def fake() -> Iterator[FakeShoptet]:
    with FakeShoptet() as running:
        yield running


@pytest.fixture
def platform(fake: FakeShoptet) -> Iterator[Platform]:
    receiver = Platform(fake)
    yield receiver
    receiver.stop()


@pytest.fixture
def token(fake: FakeShoptet) -> str:
    """An API token of an installed e-shop with 12 orders and 6 invoices (and another e-shop beside it)."""
    fake.add_eshop(ESHOP, orders=12, invoices=6)
    fake.add_eshop(OTHER, orders=3)
    fake.issue_oauth_token(ESHOP)
    fake.issue_oauth_token(OTHER)
    return fake.issue_api_token(ESHOP)


def _token_request(code: str, redirect_uri: str) -> dict[str, str]:
    return {
        "client_id": "demo-client",
        "client_secret": "demo-secret",
        "code": code,
        "grant_type": "authorization_code",
        "scope": "api",
        "redirect_uri": redirect_uri,
    }


def api(fake: FakeShoptet, token: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Shoptet-Access-Token": token, "Content-Type": "application/json", **kwargs.pop("headers", {})}
    return requests.request(method, fake.api_url + path, headers=headers, timeout=10, **kwargs)


def access_token(fake: FakeShoptet, oauth_token: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {oauth_token}"}
    return requests.get(fake.partner_url + ACCESS_TOKEN_PATH, headers=headers, timeout=10)


def error_code(response: requests.Response) -> str:
    return str(response.json()["errors"][0]["errorCode"])


def wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def register(fake: FakeShoptet, token: str, url: str, *events: str) -> requests.Response:
    return api(fake, token, "POST", "/api/webhooks", json={"data": [{"event": e, "url": url} for e in events]})


# -- install -------------------------------------------------------------------------------------------------
def test_install_code_is_exchanged_once(fake: FakeShoptet) -> None:
    fake.add_eshop(ESHOP)
    code = fake.issue_install_code(ESHOP, "https://addon.example/shoptet/install/")
    assert len(code) == 255

    form = _token_request(code, "https://addon.example/shoptet/install/")
    first = requests.post(fake.partner_url + TOKEN_PATH, data=form, timeout=5)
    again = requests.post(fake.partner_url + TOKEN_PATH, data=form, timeout=5)

    assert first.status_code == 200
    grant = first.json()
    assert len(grant["access_token"]) == 255
    assert {key: value for key, value in grant.items() if key != "access_token"} == {
        "expires_in": None,
        "token_type": "Bearer",
        "scope": "api",
        "eshopId": ESHOP,
        "eshopUrl": f"{fake.url}/eshops/{ESHOP}/",
        "contactEmail": f"info@eshop{ESHOP}.cz",
    }
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    assert fake.eshop(ESHOP).status == "installed"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"client_id": "other"}, "invalid_client"),
        ({"redirect_uri": "https://elsewhere.example/"}, "invalid_grant"),
        ({"code": "unknown"}, "invalid_grant"),
        ({"scope": "basic_eshop"}, "invalid_request"),
        ({"grant_type": "client_credentials"}, "invalid_request"),
    ],
)
def test_token_exchange_errors(fake: FakeShoptet, change: dict[str, str], error: str) -> None:
    fake.add_eshop(ESHOP)
    code = fake.issue_install_code(ESHOP, "https://addon.example/install")
    body = {**_token_request(code, "https://addon.example/install"), **change}

    response = requests.post(fake.partner_url + TOKEN_PATH, json=body, timeout=5)

    assert response.status_code == 400
    assert response.json()["error"] == error
    assert fake.eshop(ESHOP).status == "uninstalled"


def test_expired_install_code_is_refused(fake: FakeShoptet) -> None:
    fake.add_eshop(ESHOP)
    code = fake.issue_install_code(ESHOP)
    fake.advance_time(301)

    response = requests.post(fake.partner_url + TOKEN_PATH, json=_token_request(code, "x"), timeout=5)

    assert response.json()["error"] == "invalid_grant"


def test_install_calls_the_platform_and_reinstall_replaces_the_token(fake: FakeShoptet, platform: Platform) -> None:
    fake.add_eshop(ESHOP)

    assert fake.install(ESHOP, platform.install_url) == (200, "ok")
    assert fake.install(ESHOP, platform.install_url + "?lang=cs") == (200, "ok")

    first, second = platform.oauth_tokens
    assert first != second
    assert fake.eshop(ESHOP).oauth_token == second
    old = access_token(fake, first)
    assert (old.status_code, old.json()["error"]) == (401, "invalid_token")
    assert access_token(fake, second).status_code == 200


def test_install_that_does_not_answer_200_leaves_no_installation(fake: FakeShoptet, platform: Platform) -> None:
    fake.add_eshop(ESHOP)
    platform.install_status = 500

    status, _ = fake.install(ESHOP, platform.install_url)

    assert status == 500
    assert fake.eshop(ESHOP).status == "uninstalled"
    assert access_token(fake, platform.oauth_tokens[0]).json()["error"] == "addon_not_installed"


# -- API access tokens ---------------------------------------------------------------------------------------
def test_at_most_five_valid_api_tokens(fake: FakeShoptet) -> None:
    fake.add_eshop(ESHOP)
    oauth_token = fake.issue_oauth_token(ESHOP)

    answers = [access_token(fake, oauth_token) for _ in range(6)]

    assert [answer.status_code for answer in answers] == [200] * 5 + [429]
    assert answers[-1].json()["error"] == "maximum_tokens_reached"
    assert all(40 <= len(answer.json()["access_token"]) <= 60 for answer in answers[:5])
    assert answers[0].json()["expires_in"] == 1800
    fake.expire_api_tokens(ESHOP)
    assert access_token(fake, oauth_token).status_code == 200
    stats = fake.stats(ESHOP)
    assert (stats["tokens_minted"], stats["max_valid_tokens"], stats["valid_tokens"]) == (6, 5, 1)


def test_api_tokens_expire_with_time(fake: FakeShoptet) -> None:
    fake.add_eshop(ESHOP)
    oauth_token = fake.issue_oauth_token(ESHOP)
    token = access_token(fake, oauth_token).json()["access_token"]

    fake.advance_time(1801)

    response = api(fake, token, "GET", "/api/eshop")
    assert response.status_code == 401
    assert response.json()["errors"] == [
        {"errorCode": "expired-token", "message": "Token is expired. Please ask for new one.", "instance": "unknown"}
    ]
    assert fake.stats(ESHOP)["valid_tokens"] == 0


def test_access_token_refused_for_suspended_and_uninstalled(fake: FakeShoptet) -> None:
    fake.add_eshop(ESHOP)
    oauth_token = fake.issue_oauth_token(ESHOP)

    assert access_token(fake, "nonsense").status_code == 401
    fake.suspend(ESHOP)
    suspended = access_token(fake, oauth_token)
    fake.approve(ESHOP)
    approved = access_token(fake, oauth_token)
    fake.uninstall(ESHOP, keep_token_valid_for_probe=True)
    uninstalled = access_token(fake, oauth_token)
    fake.uninstall(ESHOP)
    revoked = access_token(fake, oauth_token)

    assert (suspended.status_code, suspended.json()["error"]) == (403, "addon_suspended")
    assert approved.status_code == 200
    assert (uninstalled.status_code, uninstalled.json()["error"]) == (401, "addon_not_installed")
    assert (revoked.status_code, revoked.json()["error"]) == (401, "invalid_token")


def test_error_statuses_of_access_token_can_be_changed(fake: FakeShoptet) -> None:
    fake.add_eshop(ESHOP)
    oauth_token = fake.issue_oauth_token(ESHOP)
    fake.suspended_status = 401
    fake.suspend(ESHOP)

    assert access_token(fake, oauth_token).status_code == 401
    fake.reset()
    assert fake.suspended_status == FakeShoptet.suspended_status


# -- API conventions -----------------------------------------------------------------------------------------
def test_api_authentication_errors(fake: FakeShoptet, token: str) -> None:
    missing = requests.get(fake.api_url + "/api/eshop", timeout=5)
    unknown = api(fake, "1-a-2-unknown", "GET", "/api/eshop")
    fake.suspend(ESHOP)
    suspended = api(fake, token, "GET", "/api/eshop")

    assert (missing.status_code, error_code(missing)) == (401, "missing-access-token")
    assert (unknown.status_code, error_code(unknown)) == (401, "invalid-token")
    assert (suspended.status_code, error_code(suspended)) == (401, "invalid-token")
    assert suspended.json()["errors"][0]["message"] == "Addon installation is not approved."


def test_envelope_request_id_and_bucket_header(fake: FakeShoptet, token: str) -> None:
    unenforced = api(fake, token, "GET", "/api/eshop")
    fake.enforce_bucket = True
    response = api(fake, token, "GET", "/api/eshop", headers={"Content-Type": "application/vnd.shoptet.v1.0"})
    wrong_type = api(fake, token, "GET", "/api/eshop", headers={"Content-Type": "text/plain"})

    body = response.json()
    assert response.status_code == 200
    assert body["errors"] is None
    assert response.headers["X-Request-ID"] == body["metadata"]["requestId"]
    assert unenforced.headers["X-RateLimit-Bucket-Filling"] == "0/200"
    assert response.headers["X-RateLimit-Bucket-Filling"] == "1/200"
    assert wrong_type.status_code == 415


def test_a_full_bucket_refuses_until_drops_leak_away(fake: FakeShoptet, token: str) -> None:
    fake.enforce_bucket, fake.bucket_capacity, fake.bucket_leak_per_second = True, 5, 0.01

    fillings = [api(fake, token, "GET", "/api/eshop").headers["X-RateLimit-Bucket-Filling"] for _ in range(5)]
    refused = api(fake, token, "GET", "/api/eshop")

    assert fillings == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    assert (refused.status_code, error_code(refused)) == (429, "too-many-requests")
    assert refused.headers["X-RateLimit-Bucket-Filling"] == "5/5"
    assert parsedate_to_datetime(refused.headers["Retry-After"]) > datetime.now(UTC)
    assert fake.stats(ESHOP)["bucket_refused"] == 1


def test_a_large_answer_costs_more_drops(fake: FakeShoptet, token: str) -> None:
    fake.enforce_bucket, fake.bucket_leak_per_second = True, 0.01
    fake.bucket_bytes_per_drop = 100

    response = api(fake, token, "GET", "/api/eshop")

    used = int(response.headers["X-RateLimit-Bucket-Filling"].split("/")[0])
    assert used == 1 + len(response.content) // 100


def test_eshop_info(fake: FakeShoptet, token: str) -> None:
    data = api(fake, token, "GET", "/api/eshop", params={"include": "orderStatuses"}).json()["data"]

    assert not schemas.validate(schemas.schema("eshop"), data)
    assert data["contactInformation"]["eshopId"] == ESHOP
    assert data["settings"]["timezone"] == "Europe/Prague"
    urls = {item["ident"]: item["url"] for item in data["urls"]}
    assert urls["oauth"] == f"{fake.url}/eshops/{ESHOP}/action/OAuthServer/"
    assert "admin-orders-list" in urls
    assert data["orderStatuses"]["defaultStatus"] == -1


def test_fourth_concurrent_request_of_one_token_gets_429(fake: FakeShoptet, token: str) -> None:
    fake.add_fault("GET", r"^/api/eshop$", 0, times=4, delay=1.0)  # long enough for all four to overlap

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: api(fake, token, "GET", "/api/eshop"), range(4)))

    assert sorted(response.status_code for response in responses) == [200, 200, 200, 429]
    throttled = next(response for response in responses if response.status_code == 429)
    assert error_code(throttled) == "too-many-requests"
    assert throttled.headers["Retry-After"] == "1"
    stats = fake.stats(ESHOP)
    assert (stats["max_concurrent_per_token"], stats["rate_limited"]) == (4, 1)


def test_identical_concurrent_writes_are_locked(fake: FakeShoptet, token: str) -> None:
    fake.add_fault("POST", "renew-signature-key", 0, times=2, delay=1.0)

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: api(fake, token, "POST", "/api/webhooks/renew-signature-key"), range(2)))

    assert sorted(response.status_code for response in responses) == [200, 423]


# -- webhooks ------------------------------------------------------------------------------------------------
def test_signature_matches_the_sdk_test_vector() -> None:
    body = (
        b'{"eshopId":315185,"event":"addon:uninstall","eventCreated":"2019-09-23T22:01:36+0200",'
        b'"eventInstance":"315185"}'
    )
    assert sign(body, "61d1175f54c47dd67df14c17002a17b2") == "a0e0a3e7689bd4c80e4d6ffcccb05235b864e1d0"


def test_webhook_registration_rules(fake: FakeShoptet, token: str) -> None:
    url = "https://addon.example/shoptet/webhooks/"

    created = register(fake, token, url, "order:create", "job:finished")
    duplicate = register(fake, token, url, "invoice:create", "order:create")
    conflict = register(fake, token, url, "order:update", "order:cancel")
    unknown = register(fake, token, url, "order:prolong")
    system = register(fake, token, url, "addon:uninstall")
    too_many = register(fake, token, url, *sorted(schemas.webhook_events())[:51])

    assert created.status_code == 201
    hooks = created.json()["data"]["webhooks"]
    assert [(hook["event"], hook["url"], hook["sendPayload"]) for hook in hooks] == [
        ("order:create", url, None),
        ("job:finished", url, None),
    ]
    assert (duplicate.status_code, error_code(duplicate)) == (422, "webhook-exists")
    assert conflict.status_code == 409
    assert (unknown.status_code, system.status_code, too_many.status_code) == (400, 400, 400)
    listed = api(fake, token, "GET", "/api/webhooks").json()["data"]
    assert [hook["event"] for hook in listed["webhooks"]] == ["order:create", "job:finished"]
    assert listed["paginator"]["totalCount"] == 2


def test_webhook_detail_update_and_delete(fake: FakeShoptet, token: str) -> None:
    hook_id = register(fake, token, "https://a.example/hook", "order:update").json()["data"]["webhooks"][0]["id"]

    patched = api(fake, token, "PATCH", f"/api/webhooks/{hook_id}", json={"data": {"url": "https://b.example/x"}})
    empty_patch = api(fake, token, "PATCH", f"/api/webhooks/{hook_id}", json={"data": {}})
    detail = api(fake, token, "GET", f"/api/webhooks/{hook_id}")
    deleted = api(fake, token, "DELETE", f"/api/webhooks/{hook_id}")
    missing = api(fake, token, "GET", f"/api/webhooks/{hook_id}")

    assert patched.status_code == 200
    assert empty_patch.status_code == 422
    assert detail.json()["data"]["webhook"]["url"] == "https://b.example/x"
    assert detail.json()["data"]["webhook"]["updated"] is not None
    assert (deleted.status_code, deleted.json()["data"]) == (200, None)
    assert (missing.status_code, error_code(missing)) == (404, "webhook-not-found")


def test_renew_signature_key_always_changes_the_key(fake: FakeShoptet, token: str) -> None:
    keys = [api(fake, token, "POST", "/api/webhooks/renew-signature-key").json()["data"]["signatureKey"] for _ in "ab"]

    assert keys[0] != keys[1]
    assert all(len(key) == 32 and int(key, 16) >= 0 for key in keys)
    assert fake.eshop(ESHOP).signature_key == keys[1]


def test_order_webhook_is_signed_with_the_current_key(fake: FakeShoptet, token: str, platform: Platform) -> None:
    register(fake, token, platform.webhook_url, "order:create", "order:update")
    key = api(fake, token, "POST", "/api/webhooks/renew-signature-key").json()["data"]["signatureKey"]

    code = fake.create_order(ESHOP)
    fake.update_order(ESHOP, code, webhook=False, paid=False)
    fake.update_order(ESHOP, code, paid=True)  # order:paid is not registered, so only order:update goes out

    (create_headers, create_body), (_, update_body) = platform.webhooks
    assert create_headers[SIGNATURE_HEADER] == sign(create_body, key)
    payload = json.loads(create_body)
    assert payload["eshopId"] == ESHOP
    assert payload["event"] == "order:create"
    assert payload["eventInstance"] == code
    assert time.strptime(payload["eventCreated"], "%Y-%m-%dT%H:%M:%S%z")
    assert json.loads(update_body)["event"] == "order:update"
    log = api(fake, token, "GET", "/api/webhooks/notifications").json()["data"]["notifications"]
    assert [(item["event"], item["status"], item["attempts"], item["active"]) for item in log] == [
        ("order:update", "success", 1, False),
        ("order:create", "success", 1, False),
    ]
    assert not schemas.validate(schemas.schema("webhookNotification"), log[0])


def test_webhook_body_escapes_slashes_like_php(fake: FakeShoptet, token: str, platform: Platform) -> None:
    register(fake, token, platform.webhook_url, "order:delete")

    fake.send_webhook(ESHOP, "order:delete", "2026/000001")

    assert b'"eventInstance":"2026\\/000001"' in platform.webhooks[0][1]


def test_send_webhook_with_a_wrong_signature(fake: FakeShoptet, token: str, platform: Platform) -> None:
    register(fake, token, platform.webhook_url, "order:create")

    fake.send_webhook(ESHOP, "order:create", "1", signature="0" * 40, body_override=b"{}")

    headers, body = platform.webhooks[0]
    assert (headers[SIGNATURE_HEADER], body) == ("0" * 40, b"{}")


def test_uninstall_sends_signed_system_webhook(fake: FakeShoptet, token: str, platform: Platform) -> None:
    fake.set_system_webhook_url(platform.webhook_url)
    register(fake, token, platform.webhook_url, "order:create")
    key = fake.eshop(ESHOP).signature_key

    assert fake.uninstall(ESHOP) == 200

    headers, body = platform.webhooks[0]
    assert headers[SIGNATURE_HEADER] == sign(body, key)
    assert json.loads(body)["event"] == "addon:uninstall"
    assert json.loads(body)["eventInstance"] == str(ESHOP)
    assert fake.eshop(ESHOP).webhooks == {}
    assert error_code(api(fake, token, "GET", "/api/eshop")) == "invalid-token"


# -- orders and invoices ------------------------------------------------------------------------------------
def test_orders_list_paging(fake: FakeShoptet, token: str) -> None:
    first = api(fake, token, "GET", "/api/orders", params={"itemsPerPage": 100}).json()["data"]
    second = api(fake, token, "GET", "/api/orders", params={"itemsPerPage": 5, "page": 3}).json()["data"]
    beyond = api(fake, token, "GET", "/api/orders", params={"page": 2})

    assert first["paginator"] == {"totalCount": 12, "page": 1, "pageCount": 1, "itemsOnPage": 12, "itemsPerPage": 50}
    assert second["paginator"]["itemsOnPage"] == 2
    assert (beyond.status_code, error_code(beyond)) == (404, "page-not-found")
    for item in first["orders"]:
        assert not schemas.validate(schemas.schema("orderListItem"), item)


def test_order_codes_with_a_slash_must_be_url_encoded(fake: FakeShoptet, token: str) -> None:
    code = "2026/000777"
    fake.eshop(ESHOP).orders[code] = dict(next(iter(fake.eshop(ESHOP).orders.values())), code=code)

    encoded = api(fake, token, "GET", f"/api/orders/{quote(code, safe='')}")
    raw = api(fake, token, "GET", f"/api/orders/{code}")
    unknown = api(fake, token, "GET", "/api/orders/0000000001")

    assert encoded.json()["data"]["order"]["code"] == code
    assert raw.status_code == 404
    assert (unknown.status_code, error_code(unknown)) == (404, "order-not-found")
    stats = fake.stats(ESHOP)
    assert stats["requests"]["GET /api/orders/{code}"] == 2
    assert ("GET", "/api/orders/2026%2F000777", 200) in stats["log"]
    assert ("GET", "/api/orders/2026/000777", 404) in stats["log"]


def test_order_detail_sections_on_demand(fake: FakeShoptet, token: str) -> None:
    code = next(iter(fake.eshop(ESHOP).orders))

    plain = api(fake, token, "GET", f"/api/orders/{quote(code, safe='')}").json()["data"]["order"]
    full = api(fake, token, "GET", f"/api/orders/{quote(code, safe='')}", params={"include": "Notes,stockLocation"})

    assert "notes" not in plain
    assert "notes" in full.json()["data"]["order"]
    assert plain == fake.order_detail(ESHOP, code)


def test_order_changes(fake: FakeShoptet, token: str) -> None:
    since = fake.clock.now().strftime("%Y-%m-%dT%H:%M:%S%z")
    code = next(iter(fake.eshop(ESHOP).orders))
    fake.advance_time(2)
    fake.update_order(ESHOP, code, status=-3)
    new_code = fake.create_order(ESHOP)
    fake.delete_order(ESHOP, new_code)

    changes = api(fake, token, "GET", "/api/orders/changes", params={"from": since}).json()["data"]["changes"]
    deletes = api(fake, token, "GET", "/api/orders/changes", params={"from": since, "changeType": "delete"})
    missing = api(fake, token, "GET", "/api/orders/changes")
    unencoded_plus = api(fake, token, "GET", f"/api/orders/changes?from={since}")

    assert [(change["code"], change["changeType"]) for change in changes] == [(code, "edit"), (new_code, "delete")]
    assert [change["code"] for change in deletes.json()["data"]["changes"]] == [new_code]
    assert (missing.status_code, error_code(missing)) == (400, "missing-parameter")
    assert (unencoded_plus.status_code, error_code(unencoded_plus)) == (400, "invalid-parameter")
    assert fake.order_detail(ESHOP, code)["status"] == {"id": -3, "name": "Vyřízena"}


def test_changes_keep_thirty_days(fake: FakeShoptet, token: str) -> None:
    long_ago = "2000-01-01T00:00:00+0100"

    changes = api(fake, token, "GET", "/api/orders/changes", params={"from": long_ago, "itemsPerPage": 5000})

    data = changes.json()["data"]
    assert data["paginator"]["itemsPerPage"] == 1000
    assert 0 < data["paginator"]["totalCount"] < 12  # orders span 45 days; older changes are gone


def test_invoices(fake: FakeShoptet, token: str) -> None:
    listed = api(fake, token, "GET", "/api/invoices").json()["data"]
    code = listed["invoices"][0]["code"]
    detail = api(fake, token, "GET", f"/api/invoices/{quote(code, safe='')}").json()["data"]["invoice"]
    missing = api(fake, token, "GET", "/api/invoices/nope")
    changes = api(
        fake, token, "GET", "/api/invoices/changes", params={"from": "2000-01-01T00:00:00", "itemsPerPage": 50}
    )

    assert listed["paginator"]["totalCount"] == 6
    assert detail["price"] == fake.order_detail(ESHOP, detail["orderCode"])["price"]
    assert (missing.status_code, error_code(missing)) == (404, "invoice-not-found")
    assert changes.json()["data"]["paginator"]["itemsPerPage"] == 20


# -- generated data ------------------------------------------------------------------------------------------
def test_generated_documents_match_the_spec(fake: FakeShoptet) -> None:
    eshop = fake.add_eshop(ESHOP, orders=60, invoices=70)

    for code, order in eshop.orders.items():
        assert not schemas.validate(schemas.schema("order"), order), code
        assert isinstance(order["code"], str)
        assert 3 <= len(order["items"]) <= 6
        assert {"shipping", "billing"} <= {item["itemType"] for item in order["items"]}
        _assert_prices_add_up(order)
    for code, invoice in eshop.invoices.items():
        assert not schemas.validate(schemas.schema("invoice"), invoice), code
        assert isinstance(invoice["varSymbol"], int)
        _assert_prices_add_up(invoice)
    codes = list(eshop.orders)
    assert any("/" in code for code in codes)
    assert any(not code.isdigit() and "/" not in code for code in codes)
    assert sum(invoice["orderCode"] is None for invoice in eshop.invoices.values()) == 10


def _assert_prices_add_up(document: dict[str, Any]) -> None:
    price = document["price"]
    assert Decimal(price["withVat"]) == Decimal(price["withoutVat"]) + Decimal(price["vat"])
    assert Decimal(price["withVat"]) == sum(Decimal(item["itemPrice"]["withVat"]) for item in document["items"])
    for item in document["items"]:
        block = item["itemPrice"]
        assert Decimal(block["withVat"]) == Decimal(block["withoutVat"]) + Decimal(block["vat"])


def test_same_seed_gives_same_data(fake: FakeShoptet) -> None:
    now = fake.clock.now()
    with FakeShoptet() as other:
        first = fake.add_eshop(ESHOP, orders=5, invoices=3, seed=7, now=now)
        second = other.add_eshop(ESHOP, orders=5, invoices=3, seed=7, now=now)
        assert json.dumps(first.orders).replace(fake.url, "") == json.dumps(second.orders).replace(other.url, "")
        assert first.invoices.keys() == second.invoices.keys()


def test_validator_catches_mistakes() -> None:
    order_schema = schemas.schema("order")
    assert schemas.validate(order_schema, {"code": 1})
    assert schemas.validate(schemas.schema("orderItem")["properties"]["itemPrice"], {"withVat": "1.5"})


# -- jobs ----------------------------------------------------------------------------------------------------
def test_snapshot_needs_job_finished_webhook(fake: FakeShoptet, token: str) -> None:
    response = api(fake, token, "GET", "/api/orders/snapshot")

    assert response.status_code == 403
    assert fake.eshop(ESHOP).jobs == {}


def test_snapshot_result_equals_order_details(fake: FakeShoptet, token: str, platform: Platform) -> None:
    register(fake, token, platform.webhook_url, "job:finished")

    accepted = api(fake, token, "GET", "/api/orders/snapshot")
    job_id = accepted.json()["data"]["jobId"]
    wait_for(lambda: platform.webhooks)

    assert accepted.status_code == 202
    headers, body = platform.webhooks[0]
    assert headers[SIGNATURE_HEADER] == sign(body, fake.eshop(ESHOP).signature_key)
    assert json.loads(body)["eventInstance"] == job_id
    job = api(fake, token, "GET", f"/api/system/jobs/{job_id}").json()["data"]["job"]
    assert not schemas.validate(schemas.schema("job"), job)
    assert (job["status"], job["endpoint"]) == ("completed", "/api/orders/snapshot")
    assert job["resultUrl"].startswith(f"{fake.url}/eshops/{ESHOP}/api-results/{job_id}-")
    lines = gzip.decompress(requests.get(job["resultUrl"], timeout=5).content).decode().splitlines()
    result = {order["code"]: order for order in map(json.loads, lines)}
    assert result == {code: fake.order_detail(ESHOP, code) for code in fake.eshop(ESHOP).orders}
    listed = api(fake, token, "GET", "/api/system/jobs", params={"status": "completed"}).json()["data"]["jobs"]
    assert [item["jobId"] for item in listed] == [job_id]


def test_invoice_snapshot_with_filter(fake: FakeShoptet, token: str, platform: Platform) -> None:
    register(fake, token, platform.webhook_url, "job:finished")
    code = next(iter(fake.eshop(ESHOP).invoices))
    since = fake.clock.now().strftime("%Y-%m-%dT%H:%M:%S%z")
    fake.advance_time(1)
    fake.update_invoice(ESHOP, code, webhook=False, paid=True)

    job_id = api(fake, token, "GET", "/api/invoices/snapshot", params={"changeTimeFrom": since}).json()["data"]["jobId"]
    wait_for(lambda: platform.webhooks)

    job = api(fake, token, "GET", f"/api/system/jobs/{job_id}").json()["data"]["job"]
    lines = gzip.decompress(requests.get(job["resultUrl"], timeout=5).content).decode().splitlines()
    assert [json.loads(line)["code"] for line in lines] == [code]


def test_job_detail_of_an_unfinished_job_at_most_ten_times(fake: FakeShoptet, token: str) -> None:
    fake.never_finish_jobs = True
    register(fake, token, "https://addon.example/hooks", "job:finished")
    job_id = api(fake, token, "GET", "/api/orders/snapshot").json()["data"]["jobId"]

    answers = [api(fake, token, "GET", f"/api/system/jobs/{job_id}") for _ in range(11)]

    assert [answer.status_code for answer in answers] == [200] * 10 + [403]
    assert error_code(answers[-1]) == "job-detail-try-counter-exceeded-limit"
    assert answers[0].json()["data"]["job"]["status"] == "pending"
    missing = api(fake, token, "GET", "/api/system/jobs/nojob00")
    assert (missing.status_code, error_code(missing)) == (404, "job-not-found")


def test_failed_job_still_sends_job_finished(fake: FakeShoptet, token: str, platform: Platform) -> None:
    register(fake, token, platform.webhook_url, "job:finished")
    fake.fail_next_job(ESHOP)

    job_id = api(fake, token, "GET", "/api/orders/snapshot").json()["data"]["jobId"]
    wait_for(lambda: platform.webhooks)

    job = api(fake, token, "GET", f"/api/system/jobs/{job_id}").json()["data"]["job"]
    assert (job["status"], job["resultUrl"]) == ("failed", None)


def test_result_file_expires(fake: FakeShoptet, token: str) -> None:
    fake.never_finish_jobs = True
    register(fake, token, "https://addon.example/hooks", "job:finished")
    job_id = api(fake, token, "GET", "/api/orders/snapshot").json()["data"]["jobId"]
    fake.suppress_job_webhook = True
    fake.finish_job(ESHOP, job_id)
    url = api(fake, token, "GET", f"/api/system/jobs/{job_id}").json()["data"]["job"]["resultUrl"]

    assert requests.get(url, timeout=5).status_code == 200
    fake.advance_time(24 * 3600 + 1)
    assert requests.get(url, timeout=5).status_code == 404


# -- faults --------------------------------------------------------------------------------------------------
def test_fault_answers_the_next_matching_requests(fake: FakeShoptet, token: str) -> None:
    fake.add_fault("GET", r"^/api/orders$", 503, times=2)

    answers = [api(fake, token, "GET", "/api/orders").status_code for _ in range(3)]

    assert answers == [503, 503, 200]
    assert fake.stats(ESHOP)["log"][-3:] == [("GET", "/api/orders", 503)] * 2 + [("GET", "/api/orders", 200)]


def test_fault_with_error_code_and_message(fake: FakeShoptet, token: str) -> None:
    fake.add_fault("GET", r"/api/eshop", 401, error_code="expired-token", message="Token is expired.")
    fake.add_fault("POST", r"/partner/action/ApiOAuthServer/token", 400, error_code="invalid_grant", message="no")

    api_answer = api(fake, token, "GET", "/api/eshop")
    oauth_answer = requests.post(fake.partner_url + TOKEN_PATH, json={}, timeout=5)

    assert api_answer.json()["errors"] == [
        {"errorCode": "expired-token", "message": "Token is expired.", "instance": "unknown"}
    ]
    assert oauth_answer.json() == {"error": "invalid_grant", "error_description": "no"}


def test_fault_headers_are_added_to_passed_through_answers(fake: FakeShoptet, token: str) -> None:
    fake.add_fault("GET", r"/api/eshop", 0, headers={"X-Shoptet-Deprecated": "yes", "Sunset": "Sat, 01 Jan 2028"})

    response = api(fake, token, "GET", "/api/eshop")

    assert response.status_code == 200
    assert (response.headers["X-Shoptet-Deprecated"], response.headers["Sunset"]) == ("yes", "Sat, 01 Jan 2028")


def test_request_count(fake: FakeShoptet, token: str) -> None:
    fake.register_webhook(ESHOP, "order:create", "https://addon.example/hooks")
    api(fake, token, "GET", "/api/webhooks")
    api(fake, token, "PATCH", "/api/webhooks/1000", json={"data": {"url": "https://addon.example/other"}})
    api(fake, token, "GET", f"/api/orders/{quote('2026/1', safe='')}")

    assert fake.request_count("GET", r"/api/webhooks") == 1
    assert fake.request_count(None, r"/api/webhooks.*") == 2
    assert fake.request_count(None, r"/api/webhooks.*", methods_other_than_get=True) == 1
    assert fake.request_count("GET", r"/api/orders/2026/1$") == 1
    assert fake.eshops[ESHOP].webhooks[1000]["url"] == "https://addon.example/other"


def test_fault_429_has_retry_after(fake: FakeShoptet, token: str) -> None:
    fake.add_fault(None, "/api/eshop", 429)

    response = api(fake, token, "GET", "/api/eshop")

    assert (response.status_code, response.headers["Retry-After"], error_code(response)) == (
        429,
        "1",
        "too-many-requests",
    )


def test_fault_on_token_exchange_with_html(fake: FakeShoptet) -> None:
    fake.add_eshop(ESHOP)
    fake.add_fault("POST", "ApiOAuthServer/token", 200, body="<html>maintenance</html>")

    response = requests.post(fake.partner_url + TOKEN_PATH, json={}, timeout=5)

    assert (response.status_code, response.text) == (200, "<html>maintenance</html>")


def test_slow_token_exchange_times_out(fake: FakeShoptet) -> None:
    fake.add_eshop(ESHOP)
    code = fake.issue_install_code(ESHOP)
    fake.add_fault("POST", "ApiOAuthServer/token", 0, delay=1.0)

    with pytest.raises(requests.Timeout):
        requests.post(fake.partner_url + TOKEN_PATH, json=_token_request(code, "x"), timeout=0.3)


# -- admin verification (basic_eshop) ------------------------------------------------------------------------
def test_admin_oauth_flow(fake: FakeShoptet) -> None:
    fake.add_eshop(ESHOP, name="Obchod")
    oauth_base = f"{fake.url}/eshops/{ESHOP}/action/OAuthServer/"
    redirect_uri = "https://addon.example/addon/settings/"

    redirect = requests.get(
        oauth_base + "authorize",
        params={
            "client_id": "demo-client",
            "scope": "basic_eshop",
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "state": "xyz",
        },
        allow_redirects=False,
        timeout=5,
    )
    query = parse_qs(urlsplit(redirect.headers["Location"]).query)
    grant = requests.post(
        oauth_base + "token",
        data={
            "client_id": "demo-client",
            "client_secret": "demo-secret",
            "code": query["code"][0],
            "grant_type": "authorization_code",
            "redirect_uri": redirect_uri,
            "scope": "basic_eshop",
        },
        timeout=5,
    ).json()
    who = requests.get(
        oauth_base + "resource",
        params={"method": "getBasicEshop"},
        headers={"Authorization": f"Bearer {grant['access_token']}"},
        timeout=5,
    ).json()

    assert query["state"] == ["xyz"]
    assert who == {
        "success": True,
        "data": {
            "user": {"email": f"info@eshop{ESHOP}.cz", "name": "Jana Nováková"},
            "project": {"id": ESHOP, "url": f"{fake.url}/eshops/{ESHOP}/", "name": "Obchod"},
        },
    }


# -- control API and command line ---------------------------------------------------------------------------
def test_control_api(fake: FakeShoptet, platform: Platform) -> None:
    control = fake.url + "/_fake"

    created = requests.post(f"{control}/eshops", json={"eshopId": 42, "orders": 3, "invoices": 1}, timeout=5)
    installed = requests.post(f"{control}/eshops/42/install", json={"installUrl": platform.install_url}, timeout=5)
    token = fake.issue_api_token(42)
    register(fake, token, platform.webhook_url, "order:update")
    code = next(iter(fake.eshop(42).orders))
    updated = requests.post(
        f"{control}/eshops/42/orders/{quote(code, safe='')}/update", json={"changes": {"paid": True}}, timeout=5
    )
    requests.post(f"{control}/faults", json={"method": "GET", "pathRegex": "^/api/eshop$", "status": 500}, timeout=5)
    faulted = api(fake, token, "GET", "/api/eshop")
    requests.post(f"{control}/eshops/42/expire-tokens", timeout=5)
    expired = api(fake, token, "GET", "/api/eshop")
    stats = requests.get(f"{control}/stats", params={"eshopId": 42}, timeout=5).json()
    reset = requests.post(f"{control}/reset", timeout=5)

    assert created.json()["orders"] == 3
    assert installed.json() == {"status": 200, "body": "ok"}
    assert updated.json()["order"]["paid"] is True
    assert json.loads(platform.webhooks[0][1])["eventInstance"] == code
    assert faulted.status_code == 500
    assert error_code(expired) == "expired-token"
    assert stats["requests"]["POST /api/webhooks"] == 1
    assert stats["log"][-1] == ["GET", "/api/eshop", 401]
    assert reset.status_code == 200
    assert fake.state.eshops == {}


def test_command_line_demo_starts_and_stops() -> None:
    project_root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.shoptet", "--port", "0", "--demo"],
        cwd=project_root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first_line = process.stdout.readline()  # type: ignore[union-attr]
        url = first_line.split()[3]
        eshops = requests.get(f"{url}/_fake/eshops", timeout=5).json()
        assert [(eshop["eshopId"], eshop["orders"], eshop["invoices"]) for eshop in eshops] == [
            (1000001, 40, 25),
            (1000002, 5, 0),
        ]
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0
