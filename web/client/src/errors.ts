// The client's one error type.

import type { CloseReason } from "./gen/pm/v1/common_pb.js";
import { ErrorCode } from "./gen/pm/v1/common_pb.js";
import type { Entity, Error as ProtoError } from "./gen/pm/v1/entities_pb.js";
import type { Goodbye } from "./gen/pm/v1/envelope_pb.js";

/**
 * What went wrong, from the client's point of view.
 *
 * - `server`: the server answered the request with an `Error` (see {@link PmError.code}).
 * - `timeout`: no answer within the request (or connect) timeout.
 * - `disconnected`: the connection dropped while the request was in flight; it may or may not
 *   have been applied (retry commands with an idempotency key).
 * - `closed`: the client was closed (by `close()`, a refusal that retrying cannot fix, or a drop
 *   with reconnect off); nothing more will be sent.
 * - `rejected`: the server refused the connection with `Goodbye` (bad token, limits, shutdown);
 *   see {@link PmError.closeReason} and {@link PmError.closeCode}.
 * - `connect`: the WebSocket could not be opened or closed before `Welcome`.
 * - `tooLarge`: the request is larger than `Welcome.max_frame_bytes`; it was not sent.
 * - `protocol`: the server answered with something the client did not expect.
 */
export type PmErrorKind =
  | "server"
  | "timeout"
  | "disconnected"
  | "closed"
  | "rejected"
  | "connect"
  | "tooLarge"
  | "protocol";

/** Fields of a {@link PmError} besides the message. */
export interface PmErrorInit {
  kind: PmErrorKind;
  code?: ErrorCode;
  field?: string;
  current?: Entity;
  details?: ProtoError;
  closeCode?: number;
  closeReason?: CloseReason;
  goodbye?: Goodbye;
}

/**
 * Every failure of a client call. Server errors carry the stable {@link ErrorCode} (switch on
 * it; the message is for humans), the offending request `field` and, for `CONFLICT`, the
 * entity as it is now (`current`). Failures of the client itself (timeouts, dropped
 * connections) have `code` `ERROR_CODE_UNSPECIFIED` and say what happened in `kind`.
 */
export class PmError extends Error {
  override readonly name = "PmError";
  /** What kind of failure this is. */
  readonly kind: PmErrorKind;
  /** The server's error code (`ERROR_CODE_UNSPECIFIED` unless `kind` is `server` or `tooLarge`). */
  readonly code: ErrorCode;
  /** The offending request field, e.g. `title` or `commands[2].title`; empty if none. */
  readonly field: string;
  /** For `CONFLICT`: the entity as it is now. */
  readonly current: Entity | undefined;
  /** The server's `Error` message as received, for `server` errors. */
  readonly details: ProtoError | undefined;
  /** For `rejected` and `connect`: the WebSocket close code, if one arrived. */
  readonly closeCode: number | undefined;
  /** For `rejected`: the `Goodbye` reason. */
  readonly closeReason: CloseReason | undefined;
  /** For `rejected`: the `Goodbye` as received. */
  readonly goodbye: Goodbye | undefined;

  constructor(message: string, init: PmErrorInit) {
    super(message);
    this.kind = init.kind;
    this.code = init.code ?? ErrorCode.ERROR_CODE_UNSPECIFIED;
    this.field = init.field ?? "";
    this.current = init.current;
    this.details = init.details;
    this.closeCode = init.closeCode;
    this.closeReason = init.closeReason;
    this.goodbye = init.goodbye;
  }

  /** The error of a server `Error` answer. */
  static fromServer(error: ProtoError): PmError {
    const name = ErrorCode[error.code] ?? String(error.code);
    return new PmError(`${name}: ${error.message}`, {
      kind: "server",
      code: error.code,
      field: error.field,
      current: error.current,
      details: error,
    });
  }

  /**
   * Whether sending the same request again later may succeed: timeouts, dropped connections,
   * and the server's `UNAVAILABLE` and `RATE_LIMITED`. (A command retried after `timeout` or
   * `disconnected` may apply twice unless it carries an idempotency key.)
   */
  get retryable(): boolean {
    switch (this.kind) {
      case "timeout":
      case "disconnected":
        return true;
      case "server":
        return this.code === ErrorCode.UNAVAILABLE || this.code === ErrorCode.RATE_LIMITED;
      default:
        return false;
    }
  }
}
