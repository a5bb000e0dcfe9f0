"""A small OAuth2 authorization server for the tests, on 127.0.0.1 only.

- `/token` (RFC 6749): the refresh_token, client_credentials and device_code grants; with
  `rotate`, every refresh issues a new refresh token and revokes the one it was given.
- `/device` (RFC 8628 3.1): device authorization; the test plays the person at the browser
  with `approve(user_code, user)` or `deny(user_code)`.
- `/introspect` (RFC 7662): what Dovecot's oauth2 passdb asks about a bearer token; the SMTP
  sink asks `valid(user, token)` directly.

The test controls the server's side of things: `grant(user)` issues a refresh token (what a
sign-in would), `revoke()` withdraws one, `expire_access_tokens()` makes every access token
issued so far invalid before its time. `issued` keeps every token and code the server handed
out, for the checks that none of them reaches a log line.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

LOOPBACK = "127.0.0.1"


class TokenServer:
    def __init__(
        self,
        client_id: str = "triaged-test",
        client_secret: str | None = None,
        lifetime: int = 3600,
        rotate: bool = False,
        device_interval: int = 1,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret or "cs-" + secrets.token_urlsafe(18)
        self.lifetime = lifetime
        self.rotate = rotate
        self.device_interval = device_interval
        # Who a client credentials token acts as (app-only access to a shared mailbox).
        self.app_user: str | None = None
        # Answer the next device_code poll with slow_down (RFC 8628 3.5).
        self.slow_down_once = False
        self.refresh_tokens: dict[str, str] = {}  # live refresh token -> user
        self.access_tokens: dict[str, tuple[str, float]] = {}  # token -> (user, expires at)
        self.devices: dict[str, dict[str, Any]] = {}  # device code -> state
        self.issued: list[str] = []
        self.grants: list[str] = []  # the grant_type of every token request, in order
        self.introspections = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def start(self) -> TokenServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base(self) -> str:
        assert self._httpd is not None
        return f"http://{LOOPBACK}:{self._httpd.server_address[1]}"

    @property
    def token_url(self) -> str:
        return self.base + "/token"

    @property
    def device_url(self) -> str:
        return self.base + "/device"

    @property
    def introspection_url(self) -> str:
        return self.base + "/introspect"

    # -- what the test does on the server's side --

    def grant(self, user: str) -> str:
        """A new refresh token for `user`, as a sign-in would give."""
        with self._lock:
            return self._new_refresh(user)

    def revoke(self, refresh_token: str) -> None:
        with self._lock:
            self.refresh_tokens.pop(refresh_token, None)

    def expire_access_tokens(self) -> None:
        with self._lock:
            self.access_tokens.clear()

    def pending_user_codes(self) -> list[str]:
        with self._lock:
            return [d["user_code"] for d in self.devices.values() if d["state"] == "pending"]

    def approve(self, user_code: str, user: str) -> None:
        self._decide(user_code, "approved", user)

    def deny(self, user_code: str) -> None:
        self._decide(user_code, "denied", None)

    def valid(self, user: str, token: str) -> bool:
        """Whether `token` is a live access token of `user` (the SMTP sink's question)."""
        with self._lock:
            entry = self.access_tokens.get(token)
        return entry is not None and entry[0] == user and entry[1] > time.time()

    def count(self, grant_type: str) -> int:
        return self.grants.count(grant_type)

    def _decide(self, user_code: str, state: str, user: str | None) -> None:
        with self._lock:
            for device in self.devices.values():
                if device["user_code"] == user_code:
                    device.update(state=state, user=user)
                    return
        raise KeyError(user_code)

    # -- the endpoints (called by the handler) --

    def _new_refresh(self, user: str) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        self.refresh_tokens[token] = user
        self.issued.append(token)
        return token

    def _new_access(self, user: str) -> dict[str, Any]:
        token = "at-" + secrets.token_urlsafe(24)
        self.access_tokens[token] = (user, time.time() + self.lifetime)
        self.issued.append(token)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant_type = form.get("grant_type", "")
        with self._lock:
            self.grants.append(grant_type)
            if form.get("client_id") != self.client_id:
                return 401, _error("invalid_client", "unknown client")
            if grant_type != "urn:ietf:params:oauth:grant-type:device_code" and (
                form.get("client_secret") != self.client_secret
            ):
                return 401, _error("invalid_client", "wrong client secret")
            if grant_type == "refresh_token":
                return self._refresh(form.get("refresh_token", ""))
            if grant_type == "client_credentials":
                if self.app_user is None:
                    return 400, _error("unauthorized_client", "no app-only access")
                return 200, self._new_access(self.app_user)
            if grant_type == "urn:ietf:params:oauth:grant-type:device_code":
                return self._device_token(form.get("device_code", ""))
        return 400, _error("unsupported_grant_type", grant_type)

    def _refresh(self, refresh_token: str) -> tuple[int, dict[str, Any]]:
        user = self.refresh_tokens.get(refresh_token)
        if user is None:
            return 400, _error("invalid_grant", "the refresh token was revoked")
        answer = self._new_access(user)
        if self.rotate:
            del self.refresh_tokens[refresh_token]
            answer["refresh_token"] = self._new_refresh(user)
        return 200, answer

    def _device_token(self, device_code: str) -> tuple[int, dict[str, Any]]:
        device = self.devices.get(device_code)
        if device is None:
            return 400, _error("invalid_grant", "unknown device code")
        if device["state"] == "pending":
            if self.slow_down_once:
                self.slow_down_once = False
                return 400, _error("slow_down", "")
            return 400, _error("authorization_pending", "")
        if device["state"] == "denied":
            return 400, _error("access_denied", "the user declined")
        if device["state"] == "used":
            return 400, _error("invalid_grant", "the device code was used")
        device["state"] = "used"
        answer = self._new_access(device["user"])
        answer["refresh_token"] = self._new_refresh(device["user"])
        return 200, answer

    def device(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if form.get("client_id") != self.client_id:
                return 401, _error("invalid_client", "unknown client")
            device_code = "dc-" + secrets.token_urlsafe(24)
            user_code = f"{secrets.token_hex(2).upper()}-{secrets.token_hex(2).upper()}"
            self.devices[device_code] = {"user_code": user_code, "state": "pending", "user": None}
            self.issued.append(device_code)
            return 200, {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": self.base + "/verify",
                "expires_in": 600,
                "interval": self.device_interval,
            }

    def introspect(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.introspections += 1
            entry = self.access_tokens.get(form.get("token", ""))
        if entry is None or entry[1] <= time.time():
            return 200, {"active": False}
        return 200, {"active": True, "username": entry[0]}


def _error(code: str, description: str) -> dict[str, Any]:
    answer = {"error": code}
    if description:
        answer["error_description"] = description
    return answer


class _Handler(BaseHTTPRequestHandler):
    owner: TokenServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        routes = {
            "/token": self.owner.token,
            "/device": self.owner.device,
            "/introspect": self.owner.introspect,
        }
        route = routes.get(self.path.split("?")[0])
        status, answer = route(form) if route else (404, _error("not_found", self.path))
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: pytest shows stderr of failing tests
