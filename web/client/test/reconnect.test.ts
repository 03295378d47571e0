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
  return { gate, WebSocket: GatedWebSocket };
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

  test("slow consumer: close 4008, immediate resume from Goodbye.resume_from_seq, nothing lost", async () => {
    const server = await start(["limits.outgoing_queue=4"]);
    const writer = await connect(server, "alice");
    // A real socket whose reading can be stopped (ws's pause), so that the server's queue for
    // it overflows.
    const sockets: WebSocket[] = [];
    class PausableWebSocket extends WebSocket {
      constructor(url: string) {
        super(url);
        sockets.push(this);
      }
    }
    const reader = await connect(server, "alice", {
      WebSocket: PausableWebSocket,
    });
    const states = recordStates(reader);
    const seqs: bigint[] = [];
    reader.onEvent((event) => seqs.push(event.seq));
    const project = await writer.command({ case: "createProject", value: { key: "SC", name: "Slow" } });
    const projectId = entityOf(project, "project").id;
    await reader.subscribe({ fromSeq: project.seq });

    sockets[sockets.length - 1]!.pause();
    // Events of about 200 KB each (the 100 000-character description, in the entity and in the
    // field changes): a few dozen fill the socket buffers, then the server's queue of 4.
    let last = project.seq;
    const description = "x".repeat(100_000);
    while ((await server.metric("pm_slow_consumer_disconnects_total")) < 1) {
      const batch = await writer.batch(
        Array.from({ length: 9 }, (_, i) => ({
          kind: { case: "createWorkItem" as const, value: { projectId, itemType: WorkItemType.TASK, title: `t${i}`, description } },
        })),
      );
      const outcome = batch.outcomes[batch.outcomes.length - 1]?.outcome;
      if (outcome?.case === "commandResult") last = outcome.value.seq;
      if (last > project.seq + 1000n) throw new Error("the server never cut the stalled subscriber off");
    }
    sockets[sockets.length - 1]!.resume();

    await untilReconnected(states);
    const cut = states.find((s) => s.status === "resuming")!;
    expect(cut.closeCode).toBe(4008);
    expect(cut.goodbye?.reason).toBe(CloseReason.SLOW_CONSUMER);
    expect(cut.retryInMs).toBe(0);
    // Every event sent before the Goodbye was delivered: the client resumes exactly there.
    expect(cut.lastSeq).toBe(cut.goodbye!.resumeFromSeq);
    expect(reader.state.resumedFromSeq).toBe(cut.goodbye!.resumeFromSeq);
    await until("every event", () => reader.lastSeq === last);
    expect(seqs).toEqual(seqRange(project.seq + 1n, last));
  });

  test("keep-alive: a peer that stops answering is noticed, and the client resumes", async () => {
    const server = await start();
    const writer = await connect(server, "alice");
    const reader = await connect(server, "alice", { keepAliveMs: 200, connectTimeoutMs: 500 });
    const project = await writer.command({ case: "createProject", value: { key: "KA", name: "Keep-alive" } });
    await reader.subscribe({ fromSeq: project.seq });
    const states = recordStates(reader);
    await server.pause(true);
    try {
      await untilStatus(reader, "resuming", 3_000);
    } finally {
      await server.pause(false);
    }
    expect(states[0]?.closeCode).toBe(1006);
    expect(states[0]?.error?.message).toMatch(/nothing received for three keep-alive intervals/);
    await untilStatus(reader, "live");
    expect(reader.state.resumedFromSeq).toBe(project.seq);
    const item = await writer.command({
      case: "createWorkItem",
      value: { projectId: entityOf(project, "project").id, itemType: WorkItemType.TASK, title: "after" },
    });
    await until("the event after the pause", () => reader.lastSeq === item.seq);
  });

  test("a resume older than the retained log: live with RESYNC_REQUIRED, then a fresh snapshot", async () => {
    const server = await start(["changelog.retain_events=3", "changelog.prune_interval_secs=1"]);
    const writer = await connect(server, "alice");
    const net = partition();
    const errors: unknown[] = [];
    const reader = await connect(server, "alice", {
      WebSocket: net.WebSocket,
      onError: (error) => errors.push(error),
    });
    const project = await writer.command({ case: "createProject", value: { key: "RY", name: "Resync" } });
    const projectId = entityOf(project, "project").id;
    await reader.subscribe({ fromSeq: project.seq });
    const states = recordStates(reader);

    // The reader is cut off while the log moves on and its old part is pruned (the newest 3
    // events are kept, pruning runs every second).
    const writerStates = recordStates(writer);
    net.gate.down = true;
    await server.restart("SIGKILL");
    await untilStatus(reader, "resuming");
    await untilReconnected(writerStates);
    await writeItems(writer, projectId, ["a", "b", "c", "d", "e", "f"]);
    await new Promise((done) => setTimeout(done, 1_500));
    const [head] = await writeItems(writer, projectId, ["g"]);
    expect(states.every((s) => s.status === "resuming")).toBe(true);

    net.gate.down = false;
    await until("the failed resume", () => reader.state.status === "live" && reader.state.error !== undefined);
    expect(reader.state.error?.code).toBe(ErrorCode.RESYNC_REQUIRED);
    expect(reader.state.resumedFromSeq).toBeUndefined();
    expect(errors).toHaveLength(1);
    expect((errors[0] as PmError).code).toBe(ErrorCode.RESYNC_REQUIRED);

    // What the owner does: a fresh snapshot, then subscribe from its as_of_seq.
    const snapshot = await reader.query({ case: "listWorkItems", value: { projectId } });
    expect(snapshot.items.map((i) => i.title)).toEqual(["a", "b", "c", "d", "e", "f", "g"]);
    expect(snapshot.asOfSeq).toBe(head);
    const seqs: bigint[] = [];
    reader.onEvent((event) => seqs.push(event.seq));
    await reader.subscribe({ fromSeq: snapshot.asOfSeq });
    const next = await writeItems(writer, projectId, ["h"]);
    await until("the event after the snapshot", () => reader.lastSeq === next[0]);
    expect(seqs).toEqual(next);
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
    // server closes the connection. Answers still queued at the close may never be sent (the
    // server's Goodbye goes first), so those calls fail with `disconnected`.
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
