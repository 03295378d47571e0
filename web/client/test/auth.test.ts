// Token refresh and expiry against a real pm-server (no clock leeway, so tokens expire on time).

import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { CloseReason, ErrorCode, PmError, jwtExpiryMs } from "../src/index.js";
import type { PmClient } from "../src/index.js";
import { TestServer, recordStates, until, untilStatus } from "./server.js";

let server: TestServer;
const clients: PmClient[] = [];

beforeAll(async () => {
  server = await TestServer.start(["auth.leeway_secs=0"]);
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.dispose();
});

function keep(client: PmClient): PmClient {
  clients.push(client);
  return client;
}

describe("token refresh", () => {
  test("refreshToken replaces the token on the open connection", async () => {
    const client = keep(await server.client("auth", "alice"));
    const fresh = await server.token("auth", "alice", 7200);
    const expiresAt = await client.refreshToken(fresh);
    expect(Number(expiresAt)).toBe(jwtExpiryMs(fresh));

    const other = await server.token("auth", "mallory", 7200);
    const denied = await client.refreshToken(other).then(() => { throw new Error("expected a failure"); }, (e: unknown) => e as PmError);
    expect(denied).toBeInstanceOf(PmError);
    expect(denied.code).toBe(ErrorCode.PERMISSION_DENIED);
    expect(denied.field).toBe("token");

    const bad = await client.refreshToken("garbage").then(() => { throw new Error("expected a failure"); }, (e: unknown) => e as PmError);
    expect(bad.code).toBe(ErrorCode.UNAUTHENTICATED);
    expect(client.state.status).toBe("live");
  });

  test("an expiring token is refreshed in time through getToken; the connection stays", async () => {
    // Expires in 2 to 3 s; refreshed 2 s before, but no sooner than 1 s after connecting.
    const short = await server.token("auth", "alice", 3);
    let calls = 0;
    const client = keep(
      await server.client("auth", "alice", {
        token: short,
        getToken: async () => {
          calls += 1;
          return await server.token("auth", "alice", 3600);
        },
        refreshBeforeExpiryMs: 2_000,
      }),
    );
    const connectionId = client.welcome!.connectionId;
    const states = recordStates(client);
    await new Promise((done) => setTimeout(done, Math.max(jwtExpiryMs(short)! - Date.now(), 0) + 1_000));
    expect(calls).toBe(1);
    expect(states).toEqual([]);
    expect(client.state.status).toBe("live");
    expect(client.welcome!.connectionId).toBe(connectionId);
    const projects = await client.query({ case: "listProjects", value: {} });
    expect(projects.items).toEqual([]);
  });

  test("without getToken, an expired token ends in Goodbye AUTH_EXPIRED, close 4001, offline", async () => {
    const short = await server.token("auth", "alice", 2);
    const client = keep(await server.client("auth", "alice", { token: short }));
    await untilStatus(client, "offline", 5_000);
    expect(client.state.closeCode).toBe(4001);
    expect(client.state.goodbye?.reason).toBe(CloseReason.AUTH_EXPIRED);
    const error = await client.ping().then(() => { throw new Error("expected a failure"); }, (e: unknown) => e as PmError);
    expect(error.kind).toBe("closed");
  });

  test("with getToken, a connection closed for an expired token reconnects with a fresh one", async () => {
    const short = await server.token("auth", "alice", 2);
    const client = keep(
      await server.client("auth", "alice", {
        token: short,
        getToken: () => server.token("auth", "alice", 3600),
        refreshBeforeExpiryMs: 0,
      }),
    );
    const first = client.welcome!.connectionId;
    const states = recordStates(client);
    await until("a reconnect", () => states.some((s) => s.status === "live"), 6_000);
    const resuming = states.find((s) => s.status === "resuming");
    expect(resuming?.closeCode).toBe(4001);
    expect(resuming?.goodbye?.reason).toBe(CloseReason.AUTH_EXPIRED);
    expect(client.welcome!.connectionId).not.toBe(first);
    await client.query({ case: "listProjects", value: {} });
  });
});
