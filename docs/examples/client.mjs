// A marketplaced client in Node.js (18 or later: built-in fetch), no packages.
//
// Run against a daemon:  MARKETPLACED_URL=http://127.0.0.1:8080 MARKETPLACED_API_KEY=... node client.mjs
import { randomUUID } from "node:crypto";

export class MarketplacedError extends Error {
  constructor(status, error, retryAfter) {
    super(`${status} ${error.code}: ${error.message}`);
    Object.assign(this, { status, error, retryAfter });
  }
}

export class Marketplaced {
  constructor(url, apiKey, timeoutMs = 10000) {
    this.url = url.replace(/\/$/, "");
    this.apiKey = apiKey;
    this.timeoutMs = timeoutMs;
  }

  async #call(method, path, body) {
    const resp = await fetch(this.url + path, {
      method,
      headers: { Authorization: `Bearer ${this.apiKey}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    const json = await resp.json();
    if (!resp.ok) throw new MarketplacedError(resp.status, json.error ?? {}, resp.headers.get("Retry-After"));
    return json;
  }

  // Records a batch, all or nothing. 429 and 503 are retried with the same
  // batch: records with an event_id are counted once however often sent.
  async recordUsage(records, attempts = 5) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#call("POST", "/v1/usage", { records });
      } catch (e) {
        if (!(e instanceof MarketplacedError) || ![429, 503].includes(e.status) || attempt === attempts) throw e;
        await new Promise((r) => setTimeout(r, 1000 * Number(e.retryAfter ?? 1)));
      }
    }
  }

  entitled(provider, customer, feature = "") {
    return this.#call("GET", "/v1/entitlements/check?" + new URLSearchParams({ provider, customer, feature }));
  }

  async usage(provider, customer) {
    return (await this.#call("GET", "/v1/usage?" + new URLSearchParams({ provider, customer }))).buckets;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const mp = new Marketplaced(process.env.MARKETPLACED_URL, process.env.MARKETPLACED_API_KEY);
  const batch = [
    { event_id: randomUUID(), provider: "aws", customer: "cust-node", metric: "tokens", quantity: 1200 },
    { event_id: randomUUID(), provider: "aws", customer: "cust-node", metric: "tokens", quantity: 800 },
  ];
  console.log("recorded:", JSON.stringify(await mp.recordUsage(batch)));
  console.log("again:", JSON.stringify(await mp.recordUsage(batch))); // a retry: counted once
  try {
    await mp.recordUsage([{ provider: "aws", customer: "cust-node", metric: "tokenz", quantity: 1 }]);
  } catch (e) {
    console.log("refused:", e.status, e.error.field);
  }
  console.log("entitled:", JSON.stringify(await mp.entitled("aws", "cust-node", "gpu")));
  console.log("usage:", (await mp.usage("aws", "cust-node")).reduce((s, b) => s + b.quantity, 0));
}
