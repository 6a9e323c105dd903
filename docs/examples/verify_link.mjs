// Your sign-up page's side of marketplaced's link hook, in Node.js (18 or later), no packages.
//
// marketplaced (-link-url) sends each new buyer to your sign-up page with signed query parameters. verify() checks
// them; once the buyer has signed in or up, linkAccount() stores your account id on the subscription.
//
// Run to check one redirect URL and link it:
//   MARKETPLACED_LINK_SECRET=... MARKETPLACED_URL=http://127.0.0.1:8080 MARKETPLACED_API_KEY=... \
//     node verify_link.mjs 'https://seller.example/signup?provider=...&signature=...' ACCOUNT_ID
import { createHmac, timingSafeEqual } from "node:crypto";
import { pathToFileURL } from "node:url";

const FIELDS = ["provider", "subscription", "customer", "product", "plan", "expires"];

export class LinkRefused extends Error {}

// verify returns the signed parameters of a URLSearchParams, or throws LinkRefused.
export function verify(params, secret, now = Date.now() / 1000) {
  for (const name of [...FIELDS, "signature"]) {
    if (params.getAll(name).length !== 1) throw new LinkRefused(`${name}: want exactly one`);
  }
  const values = FIELDS.map((name) => params.get(name));
  const message = ["marketplaced-link-v1", ...values].join("\n");
  const want = createHmac("sha256", secret).update(message).digest();
  const got = Buffer.from(params.get("signature"), "hex");
  if (got.length !== want.length || !timingSafeEqual(got, want)) throw new LinkRefused("the signature does not match");
  if (!/^\d+$/.test(values[5]) || Number(values[5]) < now) throw new LinkRefused("expired: send the buyer back to the marketplace to land again");
  return Object.fromEntries(FIELDS.map((name, i) => [name, values[i]]));
}

// linkAccount is PUT /v1/subscriptions/{provider}/{customer}/account; it returns the subscription.
export async function linkAccount(url, apiKey, provider, customer, accountId) {
  const path = `/v1/subscriptions/${encodeURIComponent(provider)}/${encodeURIComponent(customer)}/account`;
  const resp = await fetch(url.replace(/\/$/, "") + path, {
    method: "PUT",
    headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({ account_id: accountId }),
  });
  const body = await resp.json();
  if (!resp.ok) throw new Error(`${resp.status} ${body.error.code}: ${body.error.message}`);
  return body;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [redirect, account] = process.argv.slice(2);
  let link;
  try {
    link = verify(new URL(redirect).searchParams, process.env.MARKETPLACED_LINK_SECRET);
  } catch (e) {
    if (!(e instanceof LinkRefused)) throw e;
    console.log("refused:", e.message);
    process.exit(1);
  }
  console.log("verified:", JSON.stringify(link));
  const sub = await linkAccount(process.env.MARKETPLACED_URL, process.env.MARKETPLACED_API_KEY, link.provider, link.customer, account);
  console.log("linked:", sub.provider, sub.customer, sub.account_id, sub.status);
}
