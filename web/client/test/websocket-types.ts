// Compile-time check (run by `npm run typecheck`): the browsers' global WebSocket and the `ws`
// package's WebSocket both fit the `WebSocket` option without a cast.

import { WebSocket as NodeWebSocket } from "ws";

import type { WebSocketConstructor } from "../src/index.js";

export const browserWebSocket: WebSocketConstructor = globalThis.WebSocket;
export const nodeWebSocket: WebSocketConstructor = NodeWebSocket;
