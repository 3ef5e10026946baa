"""A local HTTP server that answers like Stripe, for the real `stripe` SDK in tests.

It speaks the part of Stripe's API Waybill uses: customers, invoice items and
invoices (create, retrieve, lines, finalize), form-encoded like Stripe, with
Stripe's Idempotency-Key semantics: a key that completed replays the same
answer; the same key with other parameters is a 400 idempotency_error. Every
request is recorded. Faults are injected per step: `fail` answers 500 before
doing anything (nothing created, nothing remembered); `hang` does the work,
remembers the answer under the key, then sleeps past the client's timeout.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    status: int = 0


@dataclass
class Fault:
    method: str
    pattern: str
    mode: str  # "fail" (500, nothing done) or "hang" (done, answer late)
    times: int = 1


def _unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """metadata[k]=v -> {"metadata": {"k": "v"}} (one level, as Waybill sends)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        match = re.fullmatch(r"([^\[]+)\[([^\]]+)\]", key)
        if match:
            out.setdefault(match.group(1), {})[match.group(2)] = value
        else:
            out[key] = value
    return out


@dataclass
class FakeStripe:
    hang_seconds: float = 1.5
    calls: list[Call] = field(default_factory=list)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    # Cents Stripe adds to an invoice's total at finalization (to simulate a mismatch).
    total_skew: int = 0
    _idem: dict[str, tuple[str, str, dict[str, Any], int, dict[str, Any]]] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- control ---------------------------------------------------------------
    def inject(self, method: str, pattern: str, mode: str = "fail", times: int = 1) -> None:
        self.faults.append(Fault(method, pattern, mode, times))

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method == "POST"]

    def _fault(self, method: str, path: str) -> str | None:
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and re.fullmatch(fault.pattern, path):
                fault.times -= 1
                return fault.mode
        return None

    # -- the API ---------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):06d}"

    def _invoice_view(self, inv: dict[str, Any]) -> dict[str, Any]:
        lines = [self._line(i) for i in self.items.values() if i.get("invoice") == inv["id"]]
        total = sum(line["amount"] for line in lines)
        if inv["status"] != "draft":
            total = inv["total"]
        return {**inv, "total": total, "subtotal": total, "amount_due": max(0, total),
                "lines": {"object": "list", "data": lines, "has_more": False,
                          "url": f"/v1/invoices/{inv['id']}/lines"}}

    @staticmethod
    def _line(item: dict[str, Any]) -> dict[str, Any]:
        return {"id": "il_" + item["id"], "object": "line_item", "amount": item["amount"],
                "currency": item["currency"], "description": item.get("description"),
                "metadata": item.get("metadata", {}), "invoice": item.get("invoice")}

    def handle(self, method: str, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method == "POST" and path == "/v1/customers":
            cid = self._new_id("cus")
            self.customers[cid] = {"id": cid, "object": "customer", "metadata": params.get("metadata", {}),
                                   "description": params.get("description")}
            return 200, self.customers[cid]
        if method == "POST" and path == "/v1/invoices":
            if params.get("customer") not in self.customers:
                return 400, {"error": {"type": "invalid_request_error", "message": "No such customer"}}
            iid = self._new_id("in")
            self.invoices[iid] = {"id": iid, "object": "invoice", "customer": params["customer"],
                                  "currency": params.get("currency", "usd"), "status": "draft",
                                  "auto_advance": params.get("auto_advance") == "true",
                                  "metadata": params.get("metadata", {}), "total": 0}
            return 200, self._invoice_view(self.invoices[iid])
        if method == "POST" and path == "/v1/invoiceitems":
            inv = self.invoices.get(params.get("invoice", ""))
            if inv is None or inv["status"] != "draft":
                return 400, {"error": {"type": "invalid_request_error", "message": "invoice not a draft"}}
            iid = self._new_id("ii")
            self.items[iid] = {"id": iid, "object": "invoiceitem", "amount": int(params["amount"]),
                               "currency": params["currency"], "invoice": inv["id"],
                               "customer": params["customer"], "description": params.get("description"),
                               "metadata": params.get("metadata", {})}
            return 200, self.items[iid]
        match = re.fullmatch(r"/v1/invoices/([^/]+)(/lines|/finalize)?", path)
        if match and match.group(1) in self.invoices:
            inv = self.invoices[match.group(1)]
            if method == "GET" and match.group(2) is None:
                return 200, self._invoice_view(inv)
            if method == "GET" and match.group(2) == "/lines":
                return 200, self._invoice_view(inv)["lines"]
            if method == "POST" and match.group(2) == "/finalize":
                if inv["status"] != "draft":
                    return 400, {"error": {"type": "invalid_request_error",
                                           "message": "This invoice is already finalized"}}
                inv["total"] = self._invoice_view(inv)["total"] + self.total_skew
                inv["status"] = "open"
                inv["auto_advance"] = params.get("auto_advance") == "true"
                return 200, self._invoice_view(inv)
        return 404, {"error": {"type": "invalid_request_error", "message": f"no route {method} {path}"}}

    def serve(self, method: str, path: str, params: dict[str, Any], key: str | None
              ) -> tuple[int, dict[str, Any], bool]:
        """(status, body, hang) for one request, with Stripe's idempotency rules."""
        with self._lock:
            call = Call(method, path, params, key)
            self.calls.append(call)
            if key is not None and key in self._idem:
                m, p, prm, status, body = self._idem[key]
                if (m, p, prm) != (method, path, params):
                    call.status = 400
                    return 400, {"error": {"type": "idempotency_error",
                                           "message": "Keys for idempotent requests can only be used "
                                                      "with the same parameters"}}, False
                call.status = status
                return status, body, False
            fault = self._fault(method, path)
            if fault == "fail":
                call.status = 500
                return 500, {"error": {"type": "api_error", "message": "injected failure"}}, False
            status, body = self.handle(method, path, params)
            if key is not None and method == "POST" and status < 500:
                self._idem[key] = (method, path, params, status, body)
            call.status = status
            return status, body, fault == "hang"


class _Handler(BaseHTTPRequestHandler):
    fake: FakeStripe

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _respond(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length).decode() if length else url.query
        params = _unflatten(parse_qsl(raw, keep_blank_values=True))
        if method == "GET":
            params = {}  # list paging parameters are not part of what tests assert
        if not (self.headers.get("authorization") or "").startswith("Bearer sk_"):
            status, body, hang = 401, {"error": {"type": "authentication_error", "message": "no key"}}, False
        else:
            status, body, hang = self.fake.serve(method, url.path, params, self.headers.get("idempotency-key"))
        if hang:
            time.sleep(self.fake.hang_seconds)
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", "req_fake")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:  # noqa: N802
        self._respond("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._respond("POST")


class FakeStripeServer:
    """Context manager: a FakeStripe on 127.0.0.1, `url` for STRIPE_API_BASE."""

    def __init__(self, fake: FakeStripe | None = None) -> None:
        self.fake = fake or FakeStripe()
        handler = type("Handler", (_Handler,), {"fake": self.fake})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeStripe:
        self._thread.start()
        return self.fake

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- helpers shared by the Stripe tests ------------------------------------------

def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header, built like Stripe: HMAC-SHA256 over "t.payload"."""
    import hashlib
    import hmac

    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def finalized_record(db: Any, project: Any, period: Any, *, plan: str = "pro", compute_gb_hours: int = 3000,
                     build_minutes: int = 2500, bandwidth_gb: int = 0, credit_cents: int = 0) -> dict[str, Any]:
    """A project's finalized (open) record for `period`, made by the billing functions."""
    from tests.billing_support import finalize, month_end, put_usage, record, subscribe, utc

    subscribe(db, project, plan, utc(period.year, period.month, 1))
    put_usage(db, project, utc(period.year, period.month, 2, 10), compute_gb_hours=compute_gb_hours,
              build_minutes=build_minutes, bandwidth_gb=bandwidth_gb)
    if credit_cents:
        db.execute("INSERT INTO waybill.credits (project_id, amount_cents, reason) VALUES (%s, %s, %s)",
                   (project, credit_cents, "welcome credit"))
    db.execute("SELECT waybill.bill_period(%s, %s)", (period, month_end(period)))
    finalize(db, period)
    rec = record(db, project, period)
    assert rec is not None and rec["status"] == "open"
    rec["lines_by_no"] = db.execute(
        "SELECT line_no, amount_cents, description FROM waybill.billing_record_lines"
        " WHERE project_id = %s AND record_id = %s ORDER BY line_no", (project, rec["record_id"])).fetchall()
    return rec
