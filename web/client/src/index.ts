// @pm-server/client: a TypeScript client for pm-server (protocol v1).

export {
  PmClient,
  PROTOCOL_VERSION,
  CLIENT_VERSION,
  jwtExpiryMs,
} from "./client.js";
export type {
  BatchOptions,
  CallOptions,
  CommandInit,
  CommandKind,
  CommandOptions,
  ConnectionState,
  ConnectionStatus,
  QueryCase,
  QueryKind,
  QueryResultFor,
  RequestBody,
  ResponseResult,
  SubscribeOptions,
} from "./client.js";
export { entityOf } from "./entity.js";
export type { EntityCase, EntityFor } from "./entity.js";
export { PmError } from "./errors.js";
export type { PmErrorInit, PmErrorKind } from "./errors.js";
export { Backoff } from "./options.js";
export type {
  BackoffOptions,
  PmClientOptions,
  WebSocketConstructor,
  WebSocketLike,
} from "./options.js";

// The generated protocol types (protobuf-es v2): messages, their schemas (for `create`,
// `toBinary`, `toJson` of @bufbuild/protobuf) and enums. The message `pm.v1.Error` is exported
// as `Error` like every other message; import it under another name if needed.
export * from "./gen/pm/v1/common_pb.js";
export * from "./gen/pm/v1/entities_pb.js";
export * from "./gen/pm/v1/commands_pb.js";
export * from "./gen/pm/v1/queries_pb.js";
export * from "./gen/pm/v1/envelope_pb.js";
