// PmClient: one WebSocket to pm-server, pipelined requests, an event stream in seq order, and
// automatic reconnect that resumes the subscription from the last delivered event.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";

import { CloseReason } from "./gen/pm/v1/common_pb.js";
import type { EntityType } from "./gen/pm/v1/common_pb.js";
import type { BatchResult, Command, CommandResult } from "./gen/pm/v1/commands_pb.js";
import { CommandSchema } from "./gen/pm/v1/commands_pb.js";
import type { ClientFrame, Event, Goodbye, Response, Welcome } from "./gen/pm/v1/envelope_pb.js";
import { ClientFrameSchema, ServerFrameSchema } from "./gen/pm/v1/envelope_pb.js";
import type { Query, QueryResult } from "./gen/pm/v1/queries_pb.js";
import { QuerySchema } from "./gen/pm/v1/queries_pb.js";
import { PmError } from "./errors.js";
import { Feed } from "./events.js";
import { Backoff } from "./options.js";
import type { PmClientOptions, WebSocketConstructor, WebSocketLike } from "./options.js";

/** The protocol version this client speaks (`Hello.protocol_version`). */
export const PROTOCOL_VERSION = 1;

/** The client's version, sent in the default `Hello.client_name`. */
export const CLIENT_VERSION = "0.1.0";

/** How long to wait for the close frame that follows a `Goodbye`. */
const GOODBYE_CLOSE_WAIT_MS = 2_000;

/** How long `close()` waits for the server's close frame. */
const CLOSE_WAIT_MS = 1_000;

/** Retry delay after a failed automatic token refresh. */
const REFRESH_RETRY_MS = 5_000;

/** The automatic refresh never runs sooner than this after the previous one. */
const MIN_REFRESH_DELAY_MS = 1_000;

/** A request body as accepted by {@link PmClient.request}: any case of `ClientFrame.body` but `hello`. */
export type RequestBody = Exclude<
  NonNullable<Exclude<MessageInitShape<typeof ClientFrameSchema>, ClientFrame>["body"]>,
  { case: undefined } | { case: "hello" } | { case: "ping" }
>;

/** A successful `Response.result` (any case but `error`). */
export type ResponseResult = Exclude<Response["result"], { case: undefined } | { case: "error" }>;

/** A command as accepted by {@link PmClient.command}: one case of `Command.kind`. */
export type CommandKind = Exclude<
  NonNullable<Exclude<MessageInitShape<typeof CommandSchema>, Command>["kind"]>,
  { case: undefined }
>;

/** A command of a batch: `{ kind, idempotencyKey? }` (or a `Command` message). */
export type CommandInit = MessageInitShape<typeof CommandSchema>;

/** A query as accepted by {@link PmClient.query}: one case of `Query.kind`. */
export type QueryKind = Exclude<
  NonNullable<Exclude<MessageInitShape<typeof QuerySchema>, Query>["kind"]>,
  { case: undefined }
>;

/** The name of a query, e.g. `listWorkItems`. */
export type QueryCase = QueryKind["case"];

/** The result message of query `K`, e.g. `ListWorkItemsResult` for `listWorkItems`. */
export type QueryResultFor<K extends QueryCase> = Extract<
  QueryResult["result"],
  { case: `${K}Result` }
>["value"];

/** Per-call options. */
export interface CallOptions {
  /** Overrides `requestTimeoutMs` for this call. */
  timeoutMs?: number;
}

/** Options of {@link PmClient.command}. */
export interface CommandOptions extends CallOptions {
  /** The same key from the same user within 24 h returns the first answer and changes nothing. */
  idempotencyKey?: string;
}

/** Options of {@link PmClient.batch}. */
export interface BatchOptions extends CallOptions {
  /** Commit all commands or none. */
  atomic?: boolean;
}

/** What to subscribe to; see {@link PmClient.subscribe}. */
export interface SubscribeOptions extends CallOptions {
  /** Only these projects (empty or absent: every project the caller may see). */
  projectIds?: readonly string[];
  /** Only these entity types (empty or absent: all). */
  entityTypes?: readonly EntityType[];
  /**
   * Deliver every matching event with seq greater than this, then live events: the `as_of_seq`
   * of a snapshot (`List*`), `Welcome.head_seq` for "from now on", or 0n for the whole log.
   */
  fromSeq: bigint;
}

/**
 * - `connecting`: opening the first connection.
 * - `live`: welcomed by the server (and, after a reconnect, the subscription resumed); requests
 *   are sent at once.
 * - `resuming`: the connection dropped; waiting for or making reconnect attempt `attempt`.
 *   Requests made meanwhile wait (within their timeout) and are sent once connected.
 * - `offline`: closed for good: by `close()`, by a refusal that retrying cannot fix (e.g. an
 *   expired token and no `getToken`), or after a drop with reconnect off. See `error`.
 */
export type ConnectionStatus = "connecting" | "live" | "resuming" | "offline";

/** The connection state, as seen through {@link PmClient.state} and {@link PmClient.onStateChange}. */
export interface ConnectionState {
  readonly status: ConnectionStatus;
  /** The seq of the last event delivered (or the `fromSeq` of the latest subscription). */
  readonly lastSeq: bigint;
  /** `live`: the current connection's `Welcome`. */
  readonly welcome?: Welcome;
  /**
   * `live` after a reconnect that resumed the subscription: the seq it resumed from (every
   * event after it follows, none twice). Show it as "resumed at seq N".
   */
  readonly resumedFromSeq?: bigint;
  /** `connecting` and `resuming`: the attempt (1-based). */
  readonly attempt?: number;
  /** `resuming`: the delay before this attempt, in ms. */
  readonly retryInMs?: number;
  /** `resuming` and `offline`: the close code that ended the last connection (1006: no close frame). */
  readonly closeCode?: number;
  /** `resuming` and `offline`: the `Goodbye` the server sent before closing, if any. */
  readonly goodbye?: Goodbye;
  /**
   * `offline`: why. `resuming`: why the previous attempt failed. `live`: why the subscription
   * could not be resumed (e.g. `RESYNC_REQUIRED`: take a fresh snapshot and subscribe again).
   */
  readonly error?: PmError;
}

type Track =
  | { kind: "plain" }
  | { kind: "subscribe"; subscription: Subscription; fromSeq: bigint; resume: boolean }
  | { kind: "unsubscribe" }
  | { kind: "refresh"; token: string };

interface Subscription {
  projectIds: string[];
  entityTypes: EntityType[];
}

interface Pending {
  body: RequestBody;
  track: Track;
  resolve: (result: ResponseResult) => void;
  reject: (error: PmError) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
  id: bigint | undefined;
}

interface PingWaiter {
  sentAt: number;
  resolve?: (rttMs: number) => void;
  reject?: (error: PmError) => void;
}

/** A socket just welcomed, with whatever arrived before the client took it into service. */
interface Opened {
  ws: WebSocketLike;
  welcome: Welcome;
  /** Frames that followed the `Welcome` before {@link PmClient} attached its handlers. */
  early: unknown[];
  /** The close that followed, if it came that early. */
  earlyClose: { code: number; reason: string } | undefined;
}

/** One welcomed WebSocket. */
interface Connection {
  ws: WebSocketLike;
  welcome: Welcome;
  goodbye: Goodbye | undefined;
  lastReceived: number;
  pings: PingWaiter[];
  keepAlive: ReturnType<typeof setInterval> | undefined;
  goodbyeTimer: ReturnType<typeof setTimeout> | undefined;
  dropped: boolean;
}

/**
 * A connection to pm-server. Requests are pipelined (each gets its own request id; responses
 * may come in any order), events arrive in seq order without gap or duplicate across
 * reconnects, and the connection state is observable.
 *
 * ```ts
 * const client = await PmClient.connect({ url: "ws://127.0.0.1:7400/ws", token });
 * const { project } = await client.command({ case: "createProject", value: { key: "PM", name: "Board" } });
 * ```
 */
export class PmClient {
  readonly #options: PmClientOptions;
  readonly #urls: readonly string[];
  readonly #WebSocket: WebSocketConstructor;
  readonly #backoff: Backoff | undefined;
  readonly #requestTimeoutMs: number;
  readonly #connectTimeoutMs: number;
  readonly #refreshBeforeExpiryMs: number;
  readonly #onError: (error: unknown) => void;

  #urlIndex = 0;
  #token = "";
  #tokenExpiresAt: number | undefined;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  #conn: Connection | undefined;
  #nextId = 0n;
  readonly #pending = new Map<bigint, Pending>();
  readonly #queue: Pending[] = [];
  #subscription: Subscription | undefined;
  #lastSeq = 0n;
  #closed = false;
  #wake: (() => void) | undefined;
  #state: ConnectionState = { status: "connecting", lastSeq: 0n, attempt: 1 };
  readonly #stateListeners = new Set<(state: ConnectionState) => void>();
  readonly #eventListeners = new Set<(event: Event) => void>();
  readonly #feeds = new Set<Feed<Event>>();

  private constructor(options: PmClientOptions) {
    this.#options = options;
    this.#urls = typeof options.url === "string" ? [options.url] : [...options.url];
    if (this.#urls.length === 0) throw new TypeError("PmClient: `url` names no endpoint");
    const ctor =
      options.WebSocket ??
      (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!ctor) {
      throw new TypeError(
        "PmClient: no global WebSocket here; pass one as the `WebSocket` option (in Node 20: `import { WebSocket } from \"ws\"`)",
      );
    }
    this.#WebSocket = ctor;
    this.#backoff = options.reconnect === false ? undefined : new Backoff(options.reconnect ?? {});
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#refreshBeforeExpiryMs = options.refreshBeforeExpiryMs ?? 60_000;
    if (options.onStateChange) this.#stateListeners.add(options.onStateChange);
    this.#onError =
      options.onError ??
      ((error: unknown) => {
        console.error("pm-client:", error);
      });
  }

  /**
   * Opens a WebSocket, sends `Hello` with the token and waits for `Welcome`. Rejects with a
   * {@link PmError}: `rejected` (the server said `Goodbye`, e.g. a bad token), `connect` or
   * `timeout`. Later drops are repaired by reconnecting (unless `reconnect: false`).
   */
  static async connect(options: PmClientOptions): Promise<PmClient> {
    const client = new PmClient(options);
    await client.#start();
    return client;
  }

  async #start(): Promise<void> {
    this.#setState({ status: "connecting", lastSeq: 0n, attempt: 1 });
    try {
      const token = this.#options.token ?? (await this.#freshToken());
      const opened = await this.#open(this.#urls[0] as string, token);
      this.#token = token;
      this.#attach(opened, false);
    } catch (error) {
      const failure =
        error instanceof PmError
          ? error
          : new PmError(`connecting failed: ${describe(error)}`, { kind: "connect" });
      this.#shutdown(failure);
      throw failure;
    }
  }

  // ----- public API -------------------------------------------------------------------------

  /** The current connection state. */
  get state(): ConnectionState {
    return this.#state;
  }

  /** The `Welcome` of the current (or last) connection. */
  get welcome(): Welcome | undefined {
    return this.#conn?.welcome;
  }

  /** The seq of the last event delivered (or the `fromSeq` of the latest subscription). */
  get lastSeq(): bigint {
    return this.#lastSeq;
  }

  /** The endpoint of the current (or next) connection. */
  get url(): string {
    return this.#urls[this.#urlIndex] as string;
  }

  /** Calls `listener` with every new state; returns a function that removes it. */
  onStateChange(listener: (state: ConnectionState) => void): () => void {
    this.#stateListeners.add(listener);
    return () => this.#stateListeners.delete(listener);
  }

  /**
   * Calls `listener` with every event, in seq order, each seq once (also across reconnects);
   * returns a function that removes it.
   */
  onEvent(listener: (event: Event) => void): () => void {
    this.#eventListeners.add(listener);
    return () => this.#eventListeners.delete(listener);
  }

  /**
   * The events delivered from now on, as an async iterator (in seq order, each seq once). Each
   * call returns an independent iterator with its own (unbounded) buffer; leaving the
   * `for await` loop detaches it. It ends when the client goes offline for good.
   */
  events(): AsyncIterableIterator<Event> {
    const feed: Feed<Event> = new Feed(() => this.#feeds.delete(feed));
    if (this.#closed) feed.end();
    else this.#feeds.add(feed);
    return feed;
  }

  /**
   * Sends any request and waits for its `Response`; a server `Error` rejects with a
   * {@link PmError} of kind `server`.
   */
  request(body: RequestBody, options: CallOptions = {}): Promise<ResponseResult> {
    return this.#call(body, { kind: "plain" }, options.timeoutMs);
  }

  /** Runs a command; resolves with the entity after the change and the seq of its change. */
  async command(kind: CommandKind, options: CommandOptions = {}): Promise<CommandResult> {
    const body: RequestBody = {
      case: "command",
      value: { idempotencyKey: options.idempotencyKey ?? "", kind },
    };
    const result = await this.request(body, options);
    return take(result, "commandResult");
  }

  /**
   * Runs a query; resolves with its typed result (which carries `as_of_seq`), e.g.
   * `ListWorkItemsResult` for `{ case: "listWorkItems", value: { projectId } }`.
   */
  async query<K extends QueryCase>(
    kind: Extract<QueryKind, { case: K }>,
    options: CallOptions = {},
  ): Promise<QueryResultFor<K>> {
    const result = take(
      await this.request({ case: "query", value: { kind } as MessageInitShape<typeof QuerySchema> }, options),
      "queryResult",
    );
    const wanted = `${kind.case}Result`;
    if (result.result.case !== wanted) {
      throw new PmError(`expected ${wanted}, got ${result.result.case ?? "nothing"}`, {
        kind: "protocol",
      });
    }
    return result.result.value as QueryResultFor<K>;
  }

  /**
   * Runs several commands in one request; with `atomic` all or nothing. Each command's outcome
   * (result or error) is in `outcomes`, in order.
   */
  async batch(commands: readonly CommandInit[], options: BatchOptions = {}): Promise<BatchResult> {
    const result = await this.request(
      { case: "batch", value: { commands: [...commands], atomic: options.atomic ?? false } },
      options,
    );
    return take(result, "batchResult");
  }

  /**
   * Subscribes (replacing any subscription) to the events after `fromSeq`. Resolves with the
   * server's `head_seq`. Events arrive through {@link onEvent} and {@link events}; after a
   * reconnect the client subscribes again from the last event it delivered.
   */
  async subscribe(options: SubscribeOptions): Promise<bigint> {
    const subscription: Subscription = {
      projectIds: [...(options.projectIds ?? [])],
      entityTypes: [...(options.entityTypes ?? [])],
    };
    const result = await this.#call(
      subscribeBody(subscription, options.fromSeq),
      { kind: "subscribe", subscription, fromSeq: options.fromSeq, resume: false },
      options.timeoutMs,
    );
    return take(result, "subscribeResult").headSeq;
  }

  /** Ends the subscription (also for future reconnects). */
  async unsubscribe(options: CallOptions = {}): Promise<void> {
    const result = await this.#call(
      { case: "unsubscribe", value: {} },
      { kind: "unsubscribe" },
      options.timeoutMs,
    );
    take(result, "unsubscribeResult");
  }

  /**
   * Replaces the connection's token (the `RefreshToken` request) without dropping the
   * subscription; later reconnects use the new token. Without an argument the token comes from
   * `getToken`. Resolves with the new token's expiry (Unix ms).
   */
  async refreshToken(token?: string, options: CallOptions = {}): Promise<bigint> {
    const fresh = token ?? (await this.#freshToken());
    const result = await this.#call(
      { case: "refreshToken", value: { token: fresh } },
      { kind: "refresh", token: fresh },
      options.timeoutMs,
    );
    return take(result, "refreshTokenResult").expiresAt;
  }

  /** Sends an application `Ping`; resolves with the round-trip time to the `Pong`, in ms. */
  ping(options: CallOptions = {}): Promise<number> {
    return new Promise((resolve, reject) => {
      const conn = this.#conn;
      if (this.#closed) return reject(closedError());
      if (!conn) return reject(new PmError("not connected", { kind: "disconnected" }));
      const timeoutMs = options.timeoutMs ?? this.#requestTimeoutMs;
      const waiter: PingWaiter = { sentAt: now() };
      const timer = setTimeout(() => {
        waiter.resolve = undefined;
        waiter.reject = undefined;
        reject(new PmError(`no Pong within ${timeoutMs} ms`, { kind: "timeout" }));
      }, timeoutMs);
      waiter.resolve = (rtt) => {
        clearTimeout(timer);
        resolve(rtt);
      };
      waiter.reject = (error) => {
        clearTimeout(timer);
        reject(error);
      };
      this.#sendPing(conn, waiter);
    });
  }

  /**
   * Closes the connection for good: requests in flight or waiting fail with `closed`, the
   * event iterators end, the state becomes `offline`.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    const conn = this.#conn;
    this.#shutdown(undefined);
    if (conn) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, CLOSE_WAIT_MS);
        conn.ws.onclose = () => {
          clearTimeout(timer);
          resolve();
        };
        try {
          conn.ws.close(1000, "client closed");
        } catch {
          clearTimeout(timer);
          resolve();
        }
      });
    }
  }

  // ----- requests ---------------------------------------------------------------------------

  #call(body: RequestBody, track: Track, timeoutMs: number | undefined): Promise<ResponseResult> {
    return new Promise((resolve, reject) => {
      if (this.#closed) return reject(closedError());
      const limit = timeoutMs ?? this.#requestTimeoutMs;
      const pending: Pending = { body, track, resolve, reject, timer: undefined, id: undefined };
      pending.timer = setTimeout(() => {
        if (pending.id !== undefined) this.#pending.delete(pending.id);
        const queued = this.#queue.indexOf(pending);
        if (queued >= 0) this.#queue.splice(queued, 1);
        reject(new PmError(`no answer within ${limit} ms`, { kind: "timeout" }));
      }, limit);
      if (this.#conn) this.#transmit(this.#conn, pending);
      else this.#queue.push(pending);
    });
  }

  /** Gives the request an id and sends it. */
  #transmit(conn: Connection, pending: Pending): void {
    this.#nextId += 1n;
    const id = this.#nextId;
    const bytes = toBinary(
      ClientFrameSchema,
      create(ClientFrameSchema, { requestId: id, body: pending.body }),
    );
    const max = conn.welcome.maxFrameBytes;
    if (max > 0 && bytes.byteLength > max) {
      clearTimeout(pending.timer);
      pending.reject(
        new PmError(`the request is ${bytes.byteLength} bytes; the server takes at most ${max}`, {
          kind: "tooLarge",
        }),
      );
      return;
    }
    pending.id = id;
    this.#pending.set(id, pending);
    try {
      conn.ws.send(bytes);
    } catch (error) {
      this.#pending.delete(id);
      clearTimeout(pending.timer);
      pending.reject(new PmError(`sending failed: ${describe(error)}`, { kind: "disconnected" }));
    }
  }

  #sendPing(conn: Connection, waiter: PingWaiter): void {
    const frame = create(ClientFrameSchema, {
      requestId: 0n,
      body: { case: "ping", value: { clientTime: BigInt(Date.now()) } },
    });
    conn.pings.push(waiter);
    try {
      conn.ws.send(toBinary(ClientFrameSchema, frame));
    } catch (error) {
      conn.pings.pop();
      waiter.reject?.(new PmError(`sending failed: ${describe(error)}`, { kind: "disconnected" }));
    }
  }

  /** Answers a request and applies what its success means to the client's own state. */
  #settle(pending: Pending, response: Response): void {
    clearTimeout(pending.timer);
    const result = response.result;
    let outcome: ResponseResult | PmError;
    if (result.case === "error") outcome = PmError.fromServer(result.value);
    else if (result.case === undefined)
      outcome = new PmError("a response without a result", { kind: "protocol" });
    else outcome = result;

    const track = pending.track;
    if (track.kind === "subscribe") {
      if (!(outcome instanceof PmError) && outcome.case === "subscribeResult") {
        // Everything after the ack belongs to this subscription, from `fromSeq` on.
        this.#subscription = track.subscription;
        this.#lastSeq = track.fromSeq;
        if (track.resume && this.#conn) {
          this.#setState({
            status: "live",
            lastSeq: this.#lastSeq,
            welcome: this.#conn.welcome,
            resumedFromSeq: track.fromSeq,
          });
        }
      } else if (track.resume && outcome instanceof PmError) {
        // The stream cannot continue without a gap (e.g. RESYNC_REQUIRED): the owner must take
        // a fresh snapshot and subscribe again.
        this.#subscription = undefined;
        if (this.#conn) {
          this.#setState({
            status: "live",
            lastSeq: this.#lastSeq,
            welcome: this.#conn.welcome,
            error: outcome,
          });
        }
        this.#report(outcome);
      }
    } else if (track.kind === "unsubscribe" && !(outcome instanceof PmError)) {
      this.#subscription = undefined;
    } else if (track.kind === "refresh" && !(outcome instanceof PmError)) {
      if (outcome.case === "refreshTokenResult") {
        this.#token = track.token;
        this.#tokenExpiresAt = Number(outcome.value.expiresAt);
        this.#scheduleRefresh();
      }
    }
    if (outcome instanceof PmError) pending.reject(outcome);
    else pending.resolve(outcome);
  }

  // ----- connections ------------------------------------------------------------------------

  /** Opens a socket, sends `Hello` and waits for `Welcome`. */
  #open(url: string, token: string): Promise<Opened> {
    return new Promise((resolve, reject) => {
      let ws: WebSocketLike;
      try {
        ws = new this.#WebSocket(url);
      } catch (error) {
        reject(new PmError(`cannot open ${url}: ${describe(error)}`, { kind: "connect" }));
        return;
      }
      ws.binaryType = "arraybuffer";
      let done = false;
      let goodbye: Goodbye | undefined;
      let goodbyeTimer: ReturnType<typeof setTimeout> | undefined;
      const finish = (error: PmError | undefined, welcome?: Welcome) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        clearTimeout(goodbyeTimer);
        ws.onopen = null;
        // Never null: some implementations (the `ws` package) throw on an unhandled error.
        ws.onerror = ignore;
        if (error) {
          ws.onmessage = null;
          ws.onclose = null;
          try {
            ws.close();
          } catch {
            // Already closed.
          }
          reject(error);
        } else {
          // Frames of the same read as the Welcome may be dispatched before the caller gets
          // the socket: keep them (and an early close) for `#attach`.
          const opened: Opened = { ws, welcome: welcome as Welcome, early: [], earlyClose: undefined };
          ws.onmessage = (message) => opened.early.push(message.data);
          ws.onclose = (event) => {
            opened.earlyClose = { code: event.code, reason: event.reason };
          };
          resolve(opened);
        }
      };
      const rejected = (bye: Goodbye, closeCode: number | undefined) =>
        new PmError(
          `the server refused the connection (${CloseReason[bye.reason] ?? bye.reason}, close code ${closeCode ?? "none"}): ${bye.message}`,
          { kind: "rejected", closeCode, closeReason: bye.reason, goodbye: bye },
        );
      const timer = setTimeout(
        () => finish(new PmError(`no Welcome within ${this.#connectTimeoutMs} ms`, { kind: "timeout" })),
        this.#connectTimeoutMs,
      );
      ws.onopen = () => {
        const hello = create(ClientFrameSchema, {
          requestId: 0n,
          body: {
            case: "hello",
            value: {
              token,
              clientName: this.#options.clientName ?? `pm-client-ts/${CLIENT_VERSION}`,
              protocolVersion: PROTOCOL_VERSION,
            },
          },
        });
        try {
          ws.send(toBinary(ClientFrameSchema, hello));
        } catch (error) {
          finish(new PmError(`sending Hello failed: ${describe(error)}`, { kind: "connect" }));
        }
      };
      ws.onmessage = (message) => {
        const bytes = binary(message.data);
        if (!bytes) return;
        let body;
        try {
          body = fromBinary(ServerFrameSchema, bytes).body;
        } catch (error) {
          finish(new PmError(`undecodable server frame: ${describe(error)}`, { kind: "protocol" }));
          return;
        }
        if (body.case === "welcome") {
          finish(undefined, body.value);
        } else if (body.case === "goodbye") {
          goodbye = body.value;
          const bye = body.value;
          goodbyeTimer = setTimeout(() => finish(rejected(bye, undefined)), GOODBYE_CLOSE_WAIT_MS);
        } else {
          finish(
            new PmError("the server answered Hello with something other than Welcome", {
              kind: "protocol",
            }),
          );
        }
      };
      ws.onclose = (event) => {
        finish(
          goodbye
            ? rejected(goodbye, event.code)
            : new PmError(
                `the connection to ${url} closed before Welcome (close code ${event.code}${event.reason ? `: ${event.reason}` : ""})`,
                { kind: "connect", closeCode: event.code },
              ),
        );
      };
      ws.onerror = ignore;
    });
  }

  /** Takes a welcomed socket into service. */
  #attach(opened: Opened, reconnected: boolean): void {
    const { ws, welcome } = opened;
    const conn: Connection = {
      ws,
      welcome,
      goodbye: undefined,
      lastReceived: now(),
      pings: [],
      keepAlive: undefined,
      goodbyeTimer: undefined,
      dropped: false,
    };
    this.#conn = conn;
    ws.onmessage = (message) => this.#onMessage(conn, message.data);
    ws.onclose = (event) => this.#onDrop(conn, event.code, event.reason);
    ws.onerror = ignore;

    const keepAliveMs = this.#options.keepAliveMs ?? (welcome.heartbeatIntervalMs || 15_000);
    if (keepAliveMs > 0) {
      conn.keepAlive = setInterval(() => {
        const silent = now() - conn.lastReceived;
        if (silent >= 3 * keepAliveMs) {
          // A dead peer or path: the close handshake may never finish, so do not wait for it.
          try {
            conn.ws.close(1000, "keep-alive timeout");
          } catch {
            // Already closed.
          }
          this.#onDrop(conn, 1006, "nothing received for three keep-alive intervals");
        } else if (silent >= keepAliveMs) {
          this.#sendPing(conn, { sentAt: now() });
        }
      }, keepAliveMs);
    }

    const subscription = this.#subscription;
    if (reconnected && subscription) {
      // Stay `resuming` until the server acknowledges the resubscription.
      const fromSeq = this.#lastSeq;
      const pending: Pending = {
        body: subscribeBody(subscription, fromSeq),
        track: { kind: "subscribe", subscription, fromSeq, resume: true },
        resolve: ignore,
        reject: ignore,
        timer: undefined,
        id: undefined,
      };
      this.#transmit(conn, pending);
    } else {
      this.#setState({ status: "live", lastSeq: this.#lastSeq, welcome });
    }
    for (const pending of this.#queue.splice(0)) this.#transmit(conn, pending);
    this.#scheduleRefresh();
    for (const data of opened.early) this.#onMessage(conn, data);
    if (opened.earlyClose) this.#onDrop(conn, opened.earlyClose.code, opened.earlyClose.reason);
  }

  #onMessage(conn: Connection, data: unknown): void {
    if (conn.dropped) return;
    conn.lastReceived = now();
    const bytes = binary(data);
    if (!bytes) return;
    let body;
    try {
      body = fromBinary(ServerFrameSchema, bytes).body;
    } catch (error) {
      this.#report(new PmError(`undecodable server frame ignored: ${describe(error)}`, { kind: "protocol" }));
      return;
    }
    switch (body.case) {
      case "response": {
        const pending = this.#pending.get(body.value.requestId);
        if (!pending) return; // Timed out meanwhile.
        this.#pending.delete(body.value.requestId);
        this.#settle(pending, body.value);
        return;
      }
      case "event":
        this.#deliver(body.value);
        return;
      case "pong": {
        // Pongs come back in the order the pings were sent.
        const waiter = conn.pings.shift();
        waiter?.resolve?.(now() - waiter.sentAt);
        return;
      }
      case "goodbye": {
        conn.goodbye = body.value;
        // The close frame follows; if it does not, stop waiting for it.
        conn.goodbyeTimer = setTimeout(() => {
          try {
            conn.ws.close();
          } catch {
            // Already closed.
          }
          this.#onDrop(conn, 1006, "no close frame after Goodbye");
        }, GOODBYE_CLOSE_WAIT_MS);
        return;
      }
      default:
        return;
    }
  }

  #deliver(event: Event): void {
    // The server never repeats an event; this guards the no-duplicate, in-order promise
    // (e.g. across a resume).
    if (event.seq <= this.#lastSeq) return;
    this.#lastSeq = event.seq;
    for (const listener of [...this.#eventListeners]) {
      try {
        listener(event);
      } catch (error) {
        this.#report(error);
      }
    }
    for (const feed of this.#feeds) feed.push(event);
  }

  /** The current connection ended (close frame, network failure, or keep-alive timeout). */
  #onDrop(conn: Connection, closeCode: number, reason: string): void {
    if (conn.dropped || this.#conn !== conn) return;
    conn.dropped = true;
    this.#conn = undefined;
    this.#retire(conn);
    clearTimeout(this.#refreshTimer);
    for (const [id, pending] of this.#pending) {
      this.#pending.delete(id);
      clearTimeout(pending.timer);
      pending.reject(
        new PmError("the connection dropped; the request may or may not have been applied", {
          kind: "disconnected",
        }),
      );
    }
    if (this.#closed) return;

    const goodbye = conn.goodbye;
    const authFailure =
      closeCode === 4001 ||
      goodbye?.reason === CloseReason.AUTH_EXPIRED ||
      goodbye?.reason === CloseReason.AUTH_FAILED;
    const cause = new PmError(
      goodbye
        ? `the server closed the connection (${CloseReason[goodbye.reason] ?? goodbye.reason}, close code ${closeCode}): ${goodbye.message}`
        : `the connection closed (close code ${closeCode}${reason ? `: ${reason}` : ""})`,
      { kind: "disconnected", closeCode, closeReason: goodbye?.reason, goodbye },
    );
    if (!this.#backoff || (authFailure && !this.#options.getToken)) {
      this.#shutdown(cause, closeCode, goodbye);
      return;
    }
    void this.#reconnect(this.#backoff, closeCode, goodbye, cause);
  }

  /** Stops a connection's timers and fails its pings. */
  #retire(conn: Connection): void {
    clearInterval(conn.keepAlive);
    clearTimeout(conn.goodbyeTimer);
    conn.ws.onmessage = null;
    conn.ws.onclose = null;
    conn.ws.onerror = ignore;
    for (const waiter of conn.pings.splice(0)) {
      waiter.reject?.(new PmError("the connection dropped", { kind: "disconnected" }));
    }
  }

  /**
   * Reconnects with backoff until connected, closed, or refused in a way that retrying cannot
   * fix. After close code 4008 (slow consumer) the first attempt is immediate; after 4029
   * (rate limited) every delay is at least `rateLimitDelayMs`; after 1001 (shutdown) the next
   * endpoint is tried (with several `url`s) after a jittered delay.
   */
  async #reconnect(
    backoff: Backoff,
    closeCode: number,
    goodbye: Goodbye | undefined,
    cause: PmError,
  ): Promise<void> {
    let rateLimited = closeCode === 4029 || goodbye?.reason === CloseReason.RATE_LIMIT_ABUSE;
    const slowConsumer = closeCode === 4008 || goodbye?.reason === CloseReason.SLOW_CONSUMER;
    let error = cause;
    for (let attempt = 1; !this.#closed; attempt++) {
      let delay = backoff.delay(attempt);
      if (slowConsumer && attempt === 1) delay = 0;
      if (rateLimited) delay = Math.max(delay, this.#options.rateLimitDelayMs ?? 5_000);
      this.#setState({
        status: "resuming",
        lastSeq: this.#lastSeq,
        attempt,
        retryInMs: delay,
        closeCode,
        goodbye,
        error,
      });
      await this.#sleep(delay);
      if (this.#closed) return;
      if (this.#urls.length > 1) this.#urlIndex = (this.#urlIndex + 1) % this.#urls.length;
      let token = this.#token;
      try {
        if (this.#options.getToken) token = await this.#freshToken();
      } catch (failure) {
        error = new PmError(`getToken failed: ${describe(failure)}`, { kind: "connect" });
        this.#report(failure);
        continue;
      }
      if (this.#closed) return;
      try {
        const opened = await this.#open(this.url, token);
        if (this.#closed) {
          opened.ws.close(1000, "client closed");
          return;
        }
        if (token !== this.#token) {
          this.#token = token;
          this.#tokenExpiresAt = undefined;
        }
        this.#attach(opened, true);
        return;
      } catch (failure) {
        error =
          failure instanceof PmError
            ? failure
            : new PmError(`reconnecting failed: ${describe(failure)}`, { kind: "connect" });
        const reason = error.closeReason;
        if (
          error.kind === "rejected" &&
          (reason === CloseReason.AUTH_FAILED || reason === CloseReason.AUTH_EXPIRED) &&
          !this.#options.getToken
        ) {
          this.#shutdown(error, error.closeCode, error.goodbye);
          return;
        }
        if (reason === CloseReason.RATE_LIMIT_ABUSE) rateLimited = true;
      }
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }

  /** Goes offline for good. */
  #shutdown(error: PmError | undefined, closeCode?: number, goodbye?: Goodbye): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#wake?.();
    clearTimeout(this.#refreshTimer);
    const conn = this.#conn;
    this.#conn = undefined;
    if (conn) {
      conn.dropped = true;
      this.#retire(conn);
    }
    const closed = closedError(error);
    for (const pending of [...this.#pending.values(), ...this.#queue.splice(0)]) {
      clearTimeout(pending.timer);
      pending.reject(closed);
    }
    this.#pending.clear();
    this.#setState({
      status: "offline",
      lastSeq: this.#lastSeq,
      ...(error ? { error } : {}),
      ...(closeCode !== undefined ? { closeCode } : {}),
      ...(goodbye ? { goodbye } : {}),
    });
    for (const feed of this.#feeds) feed.end();
    this.#feeds.clear();
  }

  // ----- tokens -----------------------------------------------------------------------------

  async #freshToken(): Promise<string> {
    const getToken = this.#options.getToken;
    if (!getToken) throw new TypeError("PmClient: neither `token` nor `getToken` was given");
    return await getToken();
  }

  /** Plans the automatic refresh before the current token expires. */
  #scheduleRefresh(delayMs?: number): void {
    clearTimeout(this.#refreshTimer);
    if (!this.#options.getToken || this.#refreshBeforeExpiryMs <= 0 || this.#closed) return;
    let delay = delayMs;
    if (delay === undefined) {
      const expiresAt = this.#tokenExpiresAt ?? jwtExpiryMs(this.#token);
      if (expiresAt === undefined) return;
      delay = Math.max(expiresAt - this.#refreshBeforeExpiryMs - Date.now(), MIN_REFRESH_DELAY_MS);
    }
    this.#refreshTimer = setTimeout(() => {
      if (!this.#conn) return; // A reconnect fetches a fresh token anyway.
      this.refreshToken().catch((error: unknown) => {
        if (error instanceof PmError && (error.kind === "closed" || error.kind === "disconnected")) return;
        this.#report(error);
        if (this.#conn) this.#scheduleRefresh(REFRESH_RETRY_MS);
      });
    }, delay);
  }

  // ----- state ------------------------------------------------------------------------------

  #setState(state: ConnectionState): void {
    this.#state = state;
    for (const listener of [...this.#stateListeners]) {
      try {
        listener(state);
      } catch (error) {
        this.#report(error);
      }
    }
  }

  #report(error: unknown): void {
    try {
      this.#onError(error);
    } catch {
      // The error handler itself failed; nothing more to do.
    }
  }
}

/**
 * The `exp` claim of a JWT in Unix milliseconds, read without verifying the token (the server
 * verifies it); `undefined` if it has none or is not a JWT.
 */
export function jwtExpiryMs(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const claims: unknown = JSON.parse(atob(padded));
    const exp = (claims as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

function subscribeBody(subscription: Subscription, fromSeq: bigint): RequestBody {
  return {
    case: "subscribe",
    value: {
      projectIds: subscription.projectIds,
      entityTypes: subscription.entityTypes,
      fromSeq,
    },
  };
}

type ResultValue<C extends ResponseResult["case"]> =
  Extract<ResponseResult, { case: C }> extends { value: infer V } ? V : never;

/** The value of a response of the expected kind; anything else is a protocol error. */
function take<C extends ResponseResult["case"]>(result: ResponseResult, wanted: C): ResultValue<C> {
  if (result.case !== wanted) {
    throw new PmError(`expected ${wanted}, got ${result.case}`, { kind: "protocol" });
  }
  return result.value as unknown as ResultValue<C>;
}

function closedError(cause?: PmError): PmError {
  return new PmError(cause ? `the client is closed: ${cause.message}` : "the client is closed", {
    kind: "closed",
    ...(cause
      ? { closeCode: cause.closeCode, closeReason: cause.closeReason, goodbye: cause.goodbye }
      : {}),
  });
}

/** The bytes of a binary WebSocket message (`ArrayBuffer`, or a Node `Buffer`); text frames give `undefined`. */
function binary(data: unknown): Uint8Array | undefined {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return undefined;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function now(): number {
  return typeof performance !== "undefined" ? performance.now() : Date.now();
}

function ignore(): void {}
