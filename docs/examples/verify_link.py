"""Your sign-up page's side of marketplaced's link hook, in Python, standard library only.

marketplaced (-link-url) sends each new buyer to your sign-up page with signed query parameters. verify() checks
them; once the buyer has signed in or up, link_account() stores your account id on the subscription.

Run to check one redirect URL and link it:
  MARKETPLACED_LINK_SECRET=... MARKETPLACED_URL=http://127.0.0.1:8080 MARKETPLACED_API_KEY=... \\
    python3 verify_link.py 'https://seller.example/signup?provider=...&signature=...' ACCOUNT_ID
"""
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.parse
import urllib.request

FIELDS = ("provider", "subscription", "customer", "product", "plan", "expires")


class LinkRefused(Exception):
    pass


def verify(query, secret, now=None):
    """Returns the signed parameters of a query string, or raises LinkRefused."""
    q = urllib.parse.parse_qs(query, keep_blank_values=True)
    for name in FIELDS + ("signature",):
        if len(q.get(name, [])) != 1:
            raise LinkRefused(f"{name}: want exactly one")
    values = [q[name][0] for name in FIELDS]
    message = "\n".join(["marketplaced-link-v1", *values]).encode()
    want = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want.encode(), q["signature"][0].encode()):
        raise LinkRefused("the signature does not match")
    if not (values[5].isascii() and values[5].isdigit()) or int(values[5]) < (time.time() if now is None else now):
        raise LinkRefused("expired: send the buyer back to the marketplace to land again")
    return dict(zip(FIELDS, values))


def link_account(url, api_key, provider, customer, account_id):
    """PUT /v1/subscriptions/{provider}/{customer}/account; returns the subscription."""
    path = "/v1/subscriptions/%s/%s/account" % (urllib.parse.quote(provider, safe=""), urllib.parse.quote(customer, safe=""))
    req = urllib.request.Request(url.rstrip("/") + path, method="PUT",
                                 data=json.dumps({"account_id": account_id}).encode(),
                                 headers={"Authorization": "Bearer " + api_key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


if __name__ == "__main__":
    redirect, account = sys.argv[1], sys.argv[2]
    try:
        link = verify(urllib.parse.urlsplit(redirect).query, os.environ["MARKETPLACED_LINK_SECRET"])
    except LinkRefused as e:
        print("refused:", e)
        sys.exit(1)
    print("verified:", json.dumps(link))
    sub = link_account(os.environ["MARKETPLACED_URL"], os.environ["MARKETPLACED_API_KEY"], link["provider"], link["customer"], account)
    print("linked:", sub["provider"], sub["customer"], sub["account_id"], sub["status"])
