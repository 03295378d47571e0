// Reconnect and resume against a real pm-server that is killed, shut down and restarted.

import { afterEach, describe, expect, test } from "vitest";
import { WebSocket } from "ws";

import { CloseReason, ErrorCode, PmClient, PmError, WorkItemType, entityOf } from "../src/index.js";
import type { ConnectionState, Event, PmClientOptions } from "../src/index.js";
import { TestServer, recordStates, until, untilReconnected, untilStatus } from "./server.js";

const cleanup: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function start(settings: string[] = []): Promise<TestServer> {
  const server = await TestServer.start(settings);
  cleanup.push(() => server.dispose());
  return server;
}

async function connect(server: TestServer, user: string, options: Partial<PmClientOptions> = {}) {
  const client = await server.client("resume", user, options);
  cleanup.push(() => client.close());
  return client;
}

/**
 * A real WebSocket whose connections can be cut off, like a network partition: while `down`,
 * every new connection goes to a port where nothing listens.
 */
function partition() {
  const gate = { down: false };
  class GatedWebSocket extends WebSocket {
    constructor(url: string) {
      super(gate.down ? "ws://127.0.0.1:1/ws" : url);
    }
  }
  return { gate, WebSocket: GatedWebSocket as unknown as PmClientOptions["WebSocket"] };
}

function seqRange(from: bigint, to: bigint): bigint[] {
  const out: bigint[] = [];
  for (let s = from; s <= to; s++) out.push(s);
  return out;
}

function statuses(states: ConnectionState[]): string[] {
  // Consecutive repeats (one `resuming` per attempt) folded into one.
  return states.map((s) => s.status).filter((s, i, all) => i === 0 || all[i - 1] !== s);
}

async function writeItems(client: PmClient, projectId: string, titles: string[]): Promise<bigint[]> {
  const seqs: bigint[] = [];
  for (const title of titles) {
    const result = await client.command({
      case: "createWorkItem",
      value: { projectId, itemType: WorkItemType.TASK, title },
    });
    seqs.push(result.seq);
  }
  return seqs;
}

describe("reconnect and resume", () => {
  test("killed and restarted server: resuming → live at the last seq, no event lost or repeated", async () => {
    const server = await start();
    const writer = await connect(server, "alice");
    const writerStates = recordStates(writer);
    const net = partition();
    const reader = await connect(server, "alice", { WebSocket: net.WebSocket });
    const states = recordStates(reader);
    const events: Event[] = [];
    reader.onEvent((event) => events.push(event));
    const iterated: bigint[] = [];
    const iterating = (async () => {
      for await (const event of reader.events()) iterated.push(event.seq);
    })();

    const project = await writer.command({ case: "createProject", value: { key: "RS", name: "Resume" } });
    const projectId = entityOf(project, "project").id;
    await reader.subscribe({ fromSeq: 0n });
    const before = await writeItems(writer, projectId, ["a", "b", "c"]);
    const lastBefore = before[2]!;
    await until("the events before the crash", () => reader.lastSeq === lastBefore);

    // Crash. The reader cannot reach the server until the partition heals; the writer reconnects
    // and writes meanwhile.
    net.gate.down = true;
    await server.restart("SIGKILL");
    await untilStatus(reader, "resuming");
    expect(reader.state.closeCode).toBe(1006);
    expect(reader.state.goodbye).toBeUndefined();
    expect(reader.state.lastSeq).toBe(lastBefore);
    await untilReconnected(writerStates);
    const whileDown = await writeItems(writer, projectId, ["d", "e", "f", "g"]);
    await until("a few failed reconnect attempts", () => (reader.state.attempt ?? 0) >= 3);
    expect(reader.state.status).toBe("resuming");

    net.gate.down = false;
    await untilStatus(reader, "live");
    expect(reader.state.resumedFromSeq).toBe(lastBefore);
    const after = await writeItems(writer, projectId, ["h", "i"]);
    const last = after[1]!;
    await until("every event", () => reader.lastSeq === last);

    // Seq 1 is the project, 2 its creator's membership, then one per item: gapless.
    expect(events.map((e) => e.seq)).toEqual(seqRange(1n, last));
    expect([...before, ...whileDown, ...after]).toEqual(seqRange(3n, last));
    expect(events.slice(2).map((e) => (e.change.case === "workItem" ? e.change.value.title : "?"))).toEqual(
      ["a", "b", "c", "d", "e", "f", "g", "h", "i"],
    );
    expect(statuses(states)).toEqual(["resuming", "live"]);
    expect(states[states.length - 1]?.resumedFromSeq).toBe(lastBefore);

    await reader.close();
    await iterating;
    expect(iterated).toEqual(seqRange(1n, last));
  });

  test("orderly shutdown: Goodbye SHUTDOWN with close 1001, then resume on restart", async () => {
    const server = await start();
    const writer = await connect(server, "alice");
    const writerStates = recordStates(writer);
    const reader = await connect(server, "alice");
    const seqs: bigint[] = [];
    reader.onEvent((event) => seqs.push(event.seq));
    const project = await writer.command({ case: "createProject", value: { key: "SD", name: "Shutdown" } });
    const projectId = entityOf(project, "project").id;
    await reader.subscribe({ fromSeq: project.seq });
    const before = await writeItems(writer, projectId, ["a", "b"]);
    await until("the events before the shutdown", () => reader.lastSeq === before[1]);

    const states = recordStates(reader);
    let resuming: ConnectionState | undefined;
    await server.restart("SIGTERM", async () => {
      await untilStatus(reader, "resuming");
      resuming = reader.state;
    });
    expect(resuming?.closeCode).toBe(1001);
    expect(resuming?.goodbye?.reason).toBe(CloseReason.SHUTDOWN);
    expect(resuming?.goodbye?.resumeFromSeq).toBe(before[1]);

    await untilStatus(reader, "live");
    expect(reader.state.resumedFromSeq).toBe(before[1]);
    await untilReconnected(writerStates);
    const after = await writeItems(writer, projectId, ["c"]);
    await until("the event after the restart", () => reader.lastSeq === after[0]);
    expect(seqs).toEqual(seqRange(project.seq + 1n, after[0]!));
    expect(statuses(states)).toEqual(["resuming", "live"]);
  });

  test("requests made while resuming wait and are sent once connected", async () => {
    const server = await start();
    const net = partition();
    const client = await connect(server, "alice", { WebSocket: net.WebSocket });
    net.gate.down = true;
    await server.restart("SIGKILL");
    await untilStatus(client, "resuming");
    const created = client.command({ case: "createProject", value: { key: "WQ", name: "Queued" } });
    await new Promise((done) => setTimeout(done, 200));
    net.gate.down = false;
    const result = await created;
    // The project (seq 1) and its creator's membership (seq 2), created once.
    expect(result.seq).toBe(2n);
    const projects = await client.query({ case: "listProjects", value: {} });
    expect(projects.items.map((p) => p.key)).toEqual(["WQ"]);
    expect(client.state.status).toBe("live");
  });

  test("with reconnect off, a drop leaves the client offline", async () => {
    const server = await start();
    const client = await connect(server, "alice", { reconnect: false });
    const iterator = client.events();
    await server.stop("SIGKILL");
    await untilStatus(client, "offline");
    expect(client.state.closeCode).toBe(1006);
    expect(client.state.error?.kind).toBe("disconnected");
    expect(await iterator.next()).toEqual({ value: undefined, done: true });
    const error = await client.ping().catch((e: unknown) => e);
    expect((error as { kind?: string }).kind).toBe("closed");
  });

  test("rate-limit abuse: close 4029, then a longer wait before reconnecting", async () => {
    const server = await start([
      "limits.requests_per_second=1",
      "limits.request_burst=2",
      "limits.rate_limit_strikes=3",
    ]);
    const client = await connect(server, "alice", { rateLimitDelayMs: 1_500 });
    const states = recordStates(client);
    const answers = await Promise.allSettled(
      Array.from({ length: 8 }, () => client.query({ case: "listProjects", value: {} })),
    );
    const outcomes = answers.map((a) =>
      a.status === "fulfilled"
        ? "ok"
        : a.reason instanceof PmError && a.reason.kind === "server"
          ? ErrorCode[a.reason.code]
          : (a.reason as PmError).kind,
    );
    // Within the burst: answered; beyond it: RATE_LIMITED, until the strikes run out and the
    // server closes the connection (the rest fail with `disconnected`).
    expect(outcomes.filter((o) => o === "RATE_LIMITED").length).toBeGreaterThanOrEqual(1);
    for (const outcome of outcomes) expect(["ok", "RATE_LIMITED", "disconnected"]).toContain(outcome);
    await until("the 4029 close", () => states.some((s) => s.status === "resuming"));
    const resuming = states.find((s) => s.status === "resuming")!;
    expect(resuming.closeCode).toBe(4029);
    expect(resuming.goodbye?.reason).toBe(CloseReason.RATE_LIMIT_ABUSE);
    expect(resuming.retryInMs).toBeGreaterThanOrEqual(1_500);
    const cutAt = Date.now();
    await untilStatus(client, "live", 10_000);
    expect(Date.now() - cutAt).toBeGreaterThanOrEqual(1_400);
  });
});
