// Requests, errors, pipelining, subscriptions and timeouts against a real pm-server.

import { afterAll, beforeAll, describe, expect, test } from "vitest";

import {
  ChangeAction,
  CloseReason,
  EntityType,
  ErrorCode,
  entityOf,
  PmClient,
  PmError,
  ProjectRole,
  WorkItemStatus,
  WorkItemType,
} from "../src/index.js";
import type { Event } from "../src/index.js";
import { TestServer, recordStates, until } from "./server.js";

let server: TestServer;
const clients: PmClient[] = [];

beforeAll(async () => {
  server = await TestServer.start();
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.dispose();
});

async function connect(tenant: string, user: string, options = {}): Promise<PmClient> {
  const client = await server.client(tenant, user, options);
  clients.push(client);
  return client;
}

/** Catches the rejection of `promise` as a PmError (failing if it resolves). */
async function failure(promise: Promise<unknown>): Promise<PmError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(PmError);
    return error as PmError;
  }
  throw new Error("expected a PmError, but the call succeeded");
}

describe("connect", () => {
  test("hello/welcome with a token; the state is live", async () => {
    const client = await connect("welcome", "alice");
    const welcome = client.welcome!;
    expect(welcome.userId).toBe("alice");
    expect(welcome.tenantId).toBe("welcome");
    expect(welcome.protocolVersion).toBe(1);
    expect(welcome.headSeq).toBe(0n);
    expect(welcome.heartbeatIntervalMs).toBe(15_000);
    expect(welcome.maxFrameBytes).toBe(1_048_576);
    expect(welcome.connectionId).not.toBe("");
    expect(client.state.status).toBe("live");
    expect(client.state.welcome).toBe(welcome);
    expect(client.state.resumedFromSeq).toBeUndefined();
    expect(client.lastSeq).toBe(0n);
    const rtt = await client.ping();
    expect(rtt).toBeGreaterThanOrEqual(0);
  });

  test("the onStateChange option sees connecting, then live", async () => {
    const seen: string[] = [];
    const client = await connect("welcome", "alice", { onStateChange: (s: { status: string }) => seen.push(s.status) });
    expect(seen).toEqual(["connecting", "live"]);
    expect(client.state.status).toBe("live");
  });

  test("a bad token is refused with Goodbye AUTH_FAILED and close code 4001", async () => {
    const error = await failure(server.client("welcome", "alice", { token: "not-a-jwt" }));
    expect(error.kind).toBe("rejected");
    expect(error.closeReason).toBe(CloseReason.AUTH_FAILED);
    expect(error.closeCode).toBe(4001);
    expect(error.goodbye?.reason).toBe(CloseReason.AUTH_FAILED);
  });

  test("nothing listening is a connect error", async () => {
    const error = await failure(
      server.client("welcome", "alice", { url: "ws://127.0.0.1:1/ws", connectTimeoutMs: 5_000 }),
    );
    expect(error.kind).toBe("connect");
    expect(error.closeCode).toBe(1006);
  });
});

describe("commands and queries", () => {
  test("create a project and a work item, read them back", async () => {
    const client = await connect("readback", "alice");
    const created = await client.command({
      case: "createProject",
      value: { key: "PM", name: "Board", description: "the board" },
    });
    // Two changes: the project (seq 1) and its creator's admin membership (seq 2); a command's
    // seq is that of its last change.
    expect(created.seq).toBe(2n);
    expect(created.replayed).toBe(false);
    expect(created.entity?.kind.case).toBe("project");
    const project = entityOf(created, "project");
    expect(project.key).toBe("PM");
    expect(project.version).toBe(1n);
    expect(project.createdBy).toBe("alice");

    const item = await client.command({
      case: "createWorkItem",
      value: {
        projectId: project.id,
        itemType: WorkItemType.STORY,
        title: "First story",
        description: "as a user",
        storyPoints: 3,
      },
    });
    const { seq: itemSeq } = item;
    expect(itemSeq).toBe(3n);
    expect(item.entity?.kind.case).toBe("workItem");

    const got = await client.query({ case: "getWorkItem", value: { displayKey: "PM-1" } });
    expect(got.workItem?.title).toBe("First story");
    expect(got.workItem?.description).toBe("as a user");
    expect(got.workItem?.itemType).toBe(WorkItemType.STORY);
    expect(got.workItem?.status).toBe(WorkItemStatus.BACKLOG);
    expect(got.workItem?.storyPoints).toBe(3);
    expect(got.workItem?.number).toBe(1n);
    expect(got.workItem?.version).toBe(1n);
    expect(got.asOfSeq).toBe(itemSeq);

    const list = await client.query({ case: "listWorkItems", value: { projectId: project.id } });
    expect(list.items.map((i) => i.displayKey)).toEqual(["PM-1"]);
    expect(list.nextPageToken).toBe("");
    expect(list.asOfSeq).toBe(itemSeq);

    const projects = await client.query({ case: "listProjects", value: {} });
    expect(projects.items.map((p) => [p.key, p.name])).toEqual([["PM", "Board"]]);
  });

  test("the same idempotency key returns the first answer and changes nothing", async () => {
    const client = await connect("idempotent", "alice");
    const first = await client.command(
      { case: "createProject", value: { key: "ID", name: "Once" } },
      { idempotencyKey: "create-id-1" },
    );
    const again = await client.command(
      { case: "createProject", value: { key: "ID", name: "Once" } },
      { idempotencyKey: "create-id-1" },
    );
    expect(again.replayed).toBe(true);
    expect(again.seq).toBe(first.seq);
    const projects = await client.query({ case: "listProjects", value: {} });
    expect(projects.items).toHaveLength(1);
  });

  test("batch: atomic all or nothing, outcomes in order", async () => {
    const client = await connect("batch", "alice");
    const project = await client.command({ case: "createProject", value: { key: "BA", name: "Batch" } });
    const projectId = entityOf(project, "project").id;
    const ok = await client.batch(
      ["one", "two", "three"].map((title) => ({
        kind: { case: "createWorkItem" as const, value: { projectId, itemType: WorkItemType.TASK, title } },
      })),
      { atomic: true },
    );
    expect(ok.outcomes.map((o) => o.outcome.case)).toEqual(["commandResult", "commandResult", "commandResult"]);
    const titles = ok.outcomes.map((o) =>
      o.outcome.case === "commandResult" && o.outcome.value.entity?.kind.case === "workItem"
        ? o.outcome.value.entity.kind.value.title
        : "",
    );
    expect(titles).toEqual(["one", "two", "three"]);

    const bad = client.batch(
      [
        { kind: { case: "createWorkItem", value: { projectId, itemType: WorkItemType.TASK, title: "four" } } },
        { kind: { case: "createWorkItem", value: { projectId, itemType: WorkItemType.TASK, title: "" } } },
      ],
      { atomic: true },
    );
    const error = await failure(bad);
    expect(error.kind).toBe("server");
    expect(error.code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(error.field).toBe("commands[1].title");
    const list = await client.query({ case: "listWorkItems", value: { projectId } });
    expect(list.items.map((i) => i.title)).toEqual(["one", "two", "three"]);
  });
});

describe("typed errors", () => {
  test("a version conflict is CONFLICT carrying the current entity", async () => {
    const client = await connect("errors", "alice");
    const created = await client.command({ case: "createProject", value: { key: "ER", name: "Errors" } });
    const id = entityOf(created, "project").id;
    await client.command({ case: "updateProject", value: { id, expectedVersion: 1n, name: "Renamed" } });

    const error = await failure(
      client.command({ case: "updateProject", value: { id, expectedVersion: 1n, name: "Stale" } }),
    );
    expect(error.kind).toBe("server");
    expect(error.code).toBe(ErrorCode.CONFLICT);
    expect(error.message).toMatch(/^CONFLICT: /);
    expect(error.current?.kind.case).toBe("project");
    const current = entityOf(error.current, "project");
    expect(current.version).toBe(2n);
    expect(current.name).toBe("Renamed");
    expect(error.details?.code).toBe(ErrorCode.CONFLICT);
    expect(error.retryable).toBe(false);
  });

  test("NOT_FOUND, INVALID_ARGUMENT with the field", async () => {
    const client = await connect("errors", "alice");
    const missing = await failure(
      client.query({ case: "getProject", value: { id: "01890000-0000-7000-8000-000000000000" } }),
    );
    expect(missing.code).toBe(ErrorCode.NOT_FOUND);

    const invalid = await failure(client.command({ case: "createProject", value: { key: "", name: "No key" } }));
    expect(invalid.code).toBe(ErrorCode.INVALID_ARGUMENT);
    expect(invalid.field).toBe("key");
  });

  test("a request over Welcome.max_frame_bytes is refused before sending", async () => {
    const client = await connect("errors", "alice");
    const error = await failure(
      client.command({ case: "createProject", value: { key: "BIG", name: "x".repeat(1_100_000) } }),
    );
    expect(error.kind).toBe("tooLarge");
    // The connection is fine.
    await client.query({ case: "listProjects", value: {} });
    expect(client.state.status).toBe("live");
  });
});

describe("pipelining", () => {
  test("many requests in flight at once are each answered with their own response", async () => {
    const client = await connect("pipeline", "alice");
    const project = await client.command({ case: "createProject", value: { key: "PL", name: "Pipeline" } });
    const projectId = entityOf(project, "project").id;
    const n = 150;
    const creates = Array.from({ length: n }, (_, i) =>
      client.command({
        case: "createWorkItem",
        value: { projectId, itemType: WorkItemType.TASK, title: `item ${i}`, storyPoints: i },
      }),
    );
    const queries = Array.from({ length: 50 }, () =>
      client.query({ case: "getProject", value: { id: projectId } }),
    );
    const [results, projects] = await Promise.all([Promise.all(creates), Promise.all(queries)]);
    results.forEach((result, i) => {
      const item = result.entity?.kind.case === "workItem" ? result.entity.kind.value : undefined;
      expect(item?.title).toBe(`item ${i}`);
      expect(item?.storyPoints).toBe(i);
    });
    for (const p of projects) expect(p.project?.key).toBe("PL");
    // Each command committed once: the seqs are distinct and gapless.
    const seqs = results.map((r) => r.seq).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const first = seqs[0]!;
    expect(seqs).toEqual(Array.from({ length: n }, (_, i) => first + BigInt(i)));
    const numbers = new Set(
      results.map((r) => (r.entity?.kind.case === "workItem" ? r.entity.kind.value.number : 0n)),
    );
    expect(numbers.size).toBe(n);
  });
});

describe("subscriptions", () => {
  test("a subscriber receives another client's changes in seq order, by callback and iterator", async () => {
    const alice = await connect("subs", "alice");
    const project = await alice.command({ case: "createProject", value: { key: "SU", name: "Subs" } });
    const projectId = entityOf(project, "project").id;
    const member = await alice.command({
      case: "addMember",
      value: { projectId, userId: "bob", role: ProjectRole.VIEWER },
    });

    const bob = await connect("subs", "bob");
    const viaCallback: Event[] = [];
    bob.onEvent((event) => viaCallback.push(event));
    const iterator = bob.events();
    const head = await bob.subscribe({ projectIds: [projectId], fromSeq: member.seq });
    expect(head).toBe(member.seq);
    expect(bob.lastSeq).toBe(member.seq);

    const n = 20;
    const written: bigint[] = [];
    for (let i = 0; i < n; i++) {
      const result = await alice.command({
        case: "createWorkItem",
        value: { projectId, itemType: WorkItemType.BUG, title: `bug ${i}` },
      });
      written.push(result.seq);
    }
    await until("bob's events", () => viaCallback.length === n);
    expect(viaCallback.map((e) => e.seq)).toEqual(written);
    expect(viaCallback.map((e) => (e.change.case === "workItem" ? e.change.value.title : ""))).toEqual(
      Array.from({ length: n }, (_, i) => `bug ${i}`),
    );
    for (const event of viaCallback) {
      expect(event.actorId).toBe("alice");
      expect(event.projectId).toBe(projectId);
      expect(event.entityType).toBe(EntityType.WORK_ITEM);
      expect(event.action).toBe(ChangeAction.CREATED);
    }

    const viaIterator: bigint[] = [];
    for await (const event of iterator) {
      viaIterator.push(event.seq);
      if (viaIterator.length === n) break;
    }
    expect(viaIterator).toEqual(written);
    expect(bob.lastSeq).toBe(written[n - 1]);
  });

  test("subscribing from an older seq replays the log first, then live events", async () => {
    const alice = await connect("replay", "alice");
    const project = await alice.command({ case: "createProject", value: { key: "RP", name: "Replay" } });
    const projectId = entityOf(project, "project").id;
    for (let i = 0; i < 5; i++) {
      await alice.command({ case: "createWorkItem", value: { projectId, itemType: WorkItemType.TASK, title: `t${i}` } });
    }
    const head = alice.welcome!.headSeq;
    expect(head).toBe(0n);
    const seqs: bigint[] = [];
    alice.onEvent((event) => seqs.push(event.seq));
    const headSeq = await alice.subscribe({ fromSeq: 0n });
    const later = await alice.command({
      case: "createWorkItem",
      value: { projectId, itemType: WorkItemType.TASK, title: "live" },
    });
    await until("replay and live events", () => seqs.length === Number(later.seq));
    expect(seqs).toEqual(Array.from({ length: Number(later.seq) }, (_, i) => BigInt(i + 1)));
    expect(headSeq).toBe(later.seq - 1n);
  });

  test("unsubscribe stops the events", async () => {
    const alice = await connect("unsub", "alice");
    const seqs: bigint[] = [];
    alice.onEvent((event) => seqs.push(event.seq));
    await alice.subscribe({ fromSeq: 0n });
    const first = await alice.command({ case: "createProject", value: { key: "U1", name: "One" } });
    await until("the first event", () => seqs.length >= 1);
    await alice.unsubscribe();
    await alice.command({ case: "createProject", value: { key: "U2", name: "Two" } });
    await alice.ping();
    await new Promise((done) => setTimeout(done, 100));
    // The project and its creator's membership: two events for the first command, none after.
    expect(seqs[seqs.length - 1]).toBe(first.seq);
  });
});

describe("timeouts and closing", () => {
  test("a request without an answer in time fails with timeout; the client stays usable", async () => {
    const client = await connect("timeout", "alice", { keepAliveMs: 0 });
    await server.pause(true);
    const started = Date.now();
    let error: PmError;
    try {
      error = await failure(client.query({ case: "listProjects", value: {} }, { timeoutMs: 300 }));
    } finally {
      await server.pause(false);
    }
    const waited = Date.now() - started;
    expect(error.kind).toBe("timeout");
    expect(error.code).toBe(ErrorCode.ERROR_CODE_UNSPECIFIED);
    expect(error.retryable).toBe(true);
    expect(waited).toBeGreaterThanOrEqual(290);
    expect(waited).toBeLessThan(2_000);
    // The late answer to the timed-out request is dropped; later requests get their own.
    const projects = await client.query({ case: "listProjects", value: {} });
    expect(projects.items).toEqual([]);
    expect(client.state.status).toBe("live");
  });

  test("close: offline, requests fail with closed, iterators end", async () => {
    const client = await server.client("closing", "alice");
    const states = recordStates(client);
    const iterator = client.events();
    await client.close();
    expect(client.state.status).toBe("offline");
    expect(states.map((s) => s.status)).toEqual(["offline"]);
    expect(await iterator.next()).toEqual({ value: undefined, done: true });
    const error = await failure(client.query({ case: "listProjects", value: {} }));
    expect(error.kind).toBe("closed");
  });
});
