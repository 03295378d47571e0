// The pure parts: backoff delays and JWT expiry (no server needed).

import { describe, expect, test } from "vitest";

import { Backoff, jwtExpiryMs } from "../src/index.js";

describe("Backoff", () => {
  test("delays double up to the cap without jitter", () => {
    const backoff = new Backoff({ initialMs: 100, maxMs: 700, jitter: 0 });
    expect([1, 2, 3, 4, 5].map((a) => backoff.delay(a))).toEqual([100, 200, 400, 700, 700]);
    expect(backoff.delay(200)).toBe(700);
  });

  test("jitter takes off at most its fraction", () => {
    const backoff = new Backoff({ initialMs: 1_000, maxMs: 10_000, jitter: 0.5 });
    expect(backoff.delay(1, () => 0)).toBe(1_000);
    expect(backoff.delay(1, () => 0.999999)).toBe(500);
    for (let i = 0; i < 100; i++) {
      const delay = backoff.delay(1);
      expect(delay).toBeGreaterThanOrEqual(500);
      expect(delay).toBeLessThanOrEqual(1_000);
    }
  });
});

describe("jwtExpiryMs", () => {
  const encode = (value: unknown) =>
    btoa(JSON.stringify(value)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

  test("reads exp in milliseconds", () => {
    const token = `${encode({ alg: "HS256" })}.${encode({ sub: "a", tid: "t", exp: 1_900_000_000 })}.sig`;
    expect(jwtExpiryMs(token)).toBe(1_900_000_000_000);
  });

  test("no exp or no JWT: undefined", () => {
    expect(jwtExpiryMs(`${encode({})}.${encode({ sub: "a" })}.sig`)).toBeUndefined();
    expect(jwtExpiryMs("garbage")).toBeUndefined();
    expect(jwtExpiryMs("a.%%%.c")).toBeUndefined();
  });
});
