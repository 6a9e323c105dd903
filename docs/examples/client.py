"""A marketplaced client in Python, standard library only.

Run against a daemon:  MARKETPLACED_URL=http://127.0.0.1:8080 MARKETPLACED_API_KEY=... python3 client.py
"""
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid


class MarketplacedError(Exception):
    def __init__(self, status, error, retry_after):
        super().__init__(f"{status} {error.get('code')}: {error.get('message')}")
        self.status, self.error, self.retry_after = status, error, retry_after


class Marketplaced:
    def __init__(self, url, api_key, timeout=10):
        self.url, self.api_key, self.timeout = url.rstrip("/"), api_key, timeout

    def _call(self, method, path, body=None):
        req = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": "Bearer " + self.api_key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as e:
            raise MarketplacedError(e.code, json.load(e).get("error", {}), e.headers.get("Retry-After")) from None

    def record_usage(self, records, attempts=5):
        """Records a batch, all or nothing. 429 and 503 are retried with the
        same batch: records with an event_id are counted once however often
        they are sent."""
        for attempt in range(attempts):
            try:
                return self._call("POST", "/v1/usage", {"records": records})
            except MarketplacedError as e:
                if e.status not in (429, 503) or attempt == attempts - 1:
                    raise
                time.sleep(float(e.retry_after or 1))

    def entitled(self, provider, customer, feature=""):
        q = urllib.parse.urlencode({"provider": provider, "customer": customer, "feature": feature})
        return self._call("GET", "/v1/entitlements/check?" + q)

    def usage(self, provider, customer):
        q = urllib.parse.urlencode({"provider": provider, "customer": customer})
        return self._call("GET", "/v1/usage?" + q)["buckets"]


if __name__ == "__main__":
    mp = Marketplaced(os.environ["MARKETPLACED_URL"], os.environ["MARKETPLACED_API_KEY"])
    batch = [
        {"event_id": str(uuid.uuid4()), "provider": "aws", "customer": "cust-py", "metric": "tokens", "quantity": 1200},
        {"event_id": str(uuid.uuid4()), "provider": "aws", "customer": "cust-py", "metric": "tokens", "quantity": 800},
    ]
    print("recorded:", mp.record_usage(batch))
    print("again:", mp.record_usage(batch))  # a retry: counted once
    try:
        mp.record_usage([{"provider": "aws", "customer": "cust-py", "metric": "tokenz", "quantity": 1}])
    except MarketplacedError as e:
        print("refused:", e.status, e.error["field"])
    print("entitled:", mp.entitled("aws", "cust-py", "gpu"))
    print("usage:", sum(b["quantity"] for b in mp.usage("aws", "cust-py")))
