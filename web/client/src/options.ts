// Connection options and the reconnect backoff.

import type { ConnectionState } from "./client.js";

/**
 * An event handler property. Declared through a method so that its parameter is checked
 * bivariantly: the DOM's and the `ws` package's handlers take their own, richer event types.
 */
type Handler<E> = { handle(event: E): void }["handle"];

/** The part of the WHATWG `WebSocket` the client uses (browsers, Node 22+, and the `ws` package). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: Handler<unknown> | null;
  onmessage: Handler<{ data: unknown }> | null;
  onclose: Handler<{ code: number; reason: string }> | null;
  onerror: Handler<unknown> | null;
}

/** A `WebSocket` constructor: the global one, or e.g. `WebSocket` of the `ws` package. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Exponential backoff between reconnect attempts. */
export interface BackoffOptions {
  /** The delay before the first attempt, in ms (default 250). */
  initialMs?: number;
  /** The delay never grows beyond this, in ms (default 10 000). */
  maxMs?: number;
  /**
   * Fraction (0 to 1) of each delay that is randomized, so that many clients cut off at once do
   * not come back at once (default 0.5).
   */
  jitter?: number;
}

/** How a {@link PmClient} connects and behaves. */
export interface PmClientOptions {
  /**
   * The WebSocket endpoint, e.g. `ws://127.0.0.1:7400/ws`. With several, the client moves to
   * the next one on each reconnect attempt (e.g. the nodes of a cluster).
   */
  url: string | readonly string[];
  /** The token (JWT) for `Hello`. Optional when `getToken` is given. */
  token?: string;
  /**
   * Supplies a fresh token. Called before every reconnect (not before the first connect when
   * `token` is given), for a refresh shortly before the current token expires (see
   * `refreshBeforeExpiryMs`), and by `refreshToken()` without an argument. With it, a
   * connection closed because its token expired (close code 4001) reconnects with a fresh one
   * instead of going offline.
   */
  getToken?: () => string | Promise<string>;
  /**
   * With `getToken`: refresh the token on the open connection (the `RefreshToken` request) this
   * long before it expires (from the JWT's `exp`, or the last `RefreshTokenResult.expires_at`).
   * Default 60 000 ms; 0 turns the automatic refresh off.
   */
  refreshBeforeExpiryMs?: number;
  /** Sent in `Hello.client_name`, for the server's logs (default `pm-client-ts/<version>`). */
  clientName?: string;
  /** How long a request waits for its response before failing with `timeout` (default 30 000 ms). */
  requestTimeoutMs?: number;
  /** How long opening the socket plus `Hello`/`Welcome` may take (default 10 000 ms). */
  connectTimeoutMs?: number;
  /**
   * Reconnect automatically (and resume the subscription from the last delivered event) when
   * the connection drops. Default on with the default backoff; `false` turns it off.
   */
  reconnect?: BackoffOptions | false;
  /**
   * After the server closed the connection for rate-limit abuse (close code 4029), wait at
   * least this long before reconnecting (default 5 000 ms).
   */
  rateLimitDelayMs?: number;
  /**
   * Send an application `Ping` when nothing was received for this long, and treat the connection
   * as dead (close it and reconnect) when nothing was received for three times this long.
   * Default: the server's `Welcome.heartbeat_interval_ms`; 0 turns the keep-alive off.
   */
  keepAliveMs?: number;
  /** The `WebSocket` constructor (default: `globalThis.WebSocket`; in Node 20 pass `ws`). */
  WebSocket?: WebSocketConstructor;
  /**
   * Called with every connection state from the start (`connecting` included, which
   * `PmClient.onStateChange` registered after `connect` resolves cannot see).
   */
  onStateChange?: (state: ConnectionState) => void;
  /**
   * Errors that happen in the background, outside any call: a failed automatic token refresh,
   * a subscription that could not be resumed, an exception thrown by a listener. Default:
   * `console.error`.
   */
  onError?: (error: unknown) => void;
}

/** The backoff with its defaults filled in. */
export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly jitter: number;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = Math.max(0, options.initialMs ?? 250);
    this.maxMs = Math.max(this.initialMs, options.maxMs ?? 10_000);
    this.jitter = Math.min(1, Math.max(0, options.jitter ?? 0.5));
  }

  /**
   * The delay before attempt `attempt` (1-based): `initialMs * 2^(attempt-1)`, capped at
   * `maxMs`, minus up to `jitter` of it at random.
   */
  delay(attempt: number, random: () => number = Math.random): number {
    const exponent = Math.min(Math.max(attempt - 1, 0), 30);
    const base = Math.min(this.initialMs * 2 ** exponent, this.maxMs);
    return Math.round(base * (1 - this.jitter * random()));
  }
}
