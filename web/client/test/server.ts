// A real pm-server for the tests: the binary of PM_SERVER_BIN (default: the repository's
// target/debug/pm-server), in development mode, on a free loopback port, with a temporary data
// directory. Tokens are minted with `pm-server token --dev-data-dir`.

import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { WebSocket } from "ws";

import { PmClient } from "../src/index.js";
import type { ConnectionState, ConnectionStatus, PmClientOptions } from "../src/index.js";

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));

/** The server binary: PM_SERVER_BIN, or target/debug/pm-server of this repository. */
export function serverBin(): string {
  const bin = process.env.PM_SERVER_BIN
    ? resolve(process.env.PM_SERVER_BIN)
    : resolve(here, "../../../target/debug/pm-server");
  if (!existsSync(bin)) {
    throw new Error(
      `pm-server binary not found at ${bin}: run \`cargo build\` in the repository root first, ` +
        "or set PM_SERVER_BIN to the binary",
    );
  }
  return bin;
}

/** The environment of the server and the CLI: this one without PM_* settings or RUST_LOG. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("PM_") && key !== "RUST_LOG") env[key] = value;
  }
  env.RUST_LOG = "warn";
  return env;
}

export class TestServer {
  readonly bin: string;
  readonly dataDir: string;
  readonly settings: string[];
  #child: ChildProcess | undefined;
  #exited: Promise<number | null> | undefined;
  #address = "";
  #log = "";

  private constructor(settings: string[]) {
    this.bin = serverBin();
    this.dataDir = mkdtempSync(join(tmpdir(), "pm-client-test-"));
    this.settings = settings;
  }

  /** Starts a server; `settings` are `section.key=value` overrides. */
  static async start(settings: string[] = []): Promise<TestServer> {
    const server = new TestServer(settings);
    await server.#spawn("127.0.0.1:0");
    return server;
  }

  /** `ws://127.0.0.1:PORT/ws`. */
  get url(): string {
    return `ws://${this.#address}/ws`;
  }

  /** The server's stderr so far, for failure messages. */
  get log(): string {
    return this.#log;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  async #spawn(listen: string): Promise<void> {
    const args = ["serve", "--dev", "--listen", listen, "--data-dir", this.dataDir];
    for (const setting of this.settings) args.push("--set", setting);
    const child = spawn(this.bin, args, { env: childEnv(), stdio: ["ignore", "pipe", "pipe"] });
    this.#child = child;
    this.#exited = new Promise((done) => child.once("exit", (code) => done(code)));
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => {
      this.#log += chunk;
    });
    child.stdout?.setEncoding("utf8");
    const address = await new Promise<string>((ok, fail) => {
      let out = "";
      const timer = setTimeout(() => fail(new Error(`pm-server did not start within 15 s:\n${out}\n${this.#log}`)), 15_000);
      child.stdout?.on("data", (chunk: string) => {
        out += chunk;
        const match = /WebSocket:\s+ws:\/\/(\S+)\/ws/.exec(out);
        if (match?.[1]) {
          clearTimeout(timer);
          ok(match[1]);
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        fail(new Error(`pm-server exited with ${code} before serving:\n${out}\n${this.#log}`));
      });
    });
    this.#address = address;
  }

  /** The value of a counter or gauge of `GET /metrics` (0 if absent). */
  async metric(name: string): Promise<number> {
    const response = await fetch(`http://${this.#address}/metrics`);
    const text = await response.text();
    const line = text.split("\n").find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
    return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
  }

  /** Mints a token for `user` of `tenant` with the development secret. */
  async token(tenant: string, user: string, ttlSecs = 3600): Promise<string> {
    const { stdout } = await run(
      this.bin,
      ["token", "--dev-data-dir", this.dataDir, "--tenant", tenant, "--user", user, "--ttl-secs", String(ttlSecs)],
      { env: childEnv() },
    );
    return stdout.trim();
  }

  /** Stops the server with `signal` (SIGKILL: a crash; SIGTERM: an orderly shutdown) and waits for it. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
    child.kill(signal);
    return await this.#exited!;
  }

  /**
   * Stops the server with `signal` (SIGKILL: a crash; SIGTERM: an orderly shutdown with
   * `Goodbye`), runs `meanwhile` while it is down, and starts it again on the same port and
   * data directory.
   */
  async restart(signal: NodeJS.Signals = "SIGKILL", meanwhile?: () => Promise<void>): Promise<void> {
    await this.stop(signal);
    await meanwhile?.();
    await this.#spawn(this.#address);
  }

  /**
   * Pauses (SIGSTOP) or resumes (SIGCONT) the process: paused, it holds its sockets but answers
   * nothing. Pausing waits until every thread of the process has stopped (a signal takes
   * effect asynchronously), as /proc shows.
   */
  async pause(paused: boolean): Promise<void> {
    const pid = this.#child?.pid;
    if (pid === undefined) return;
    this.#child?.kill(paused ? "SIGSTOP" : "SIGCONT");
    if (!paused || !existsSync(`/proc/${pid}/task`)) return;
    await until(`pm-server (pid ${pid}) stopped`, () => {
      try {
        return readdirSync(`/proc/${pid}/task`).every((task) => {
          // "pid (comm) S ...": the state follows the last parenthesis.
          const stat = readFileSync(`/proc/${pid}/task/${task}/stat`, "utf8");
          return /^[Tt]$/.test(stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3));
        });
      } catch {
        return false;
      }
    }, 5_000);
  }

  /** Stops the server and removes its data. */
  async dispose(): Promise<void> {
    await this.pause(false);
    await this.stop("SIGKILL");
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** Connects a client of `tenant`/`user` (the `ws` package as WebSocket). */
  async client(
    tenant: string,
    user: string,
    options: Partial<PmClientOptions> = {},
  ): Promise<PmClient> {
    const token = options.token ?? (options.getToken ? undefined : await this.token(tenant, user));
    return await PmClient.connect({
      url: this.url,
      ...(token !== undefined ? { token } : {}),
      WebSocket,
      reconnect: { initialMs: 50, maxMs: 300, jitter: 0.5 },
      onError: () => {},
      ...options,
    });
  }
}

/** Every state a client goes through, recorded from now on. */
export function recordStates(client: PmClient): ConnectionState[] {
  const states: ConnectionState[] = [];
  client.onStateChange((state) => states.push(state));
  return states;
}

/** Waits until `check()` holds (polling every 10 ms), or fails after `timeoutMs` with `what`. */
export async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 10));
  }
}

/** Waits until the client's state has `status`. */
export async function untilStatus(client: PmClient, status: ConnectionStatus, timeoutMs = 10_000): Promise<void> {
  await until(`state ${status} (now ${client.state.status})`, () => client.state.status === status, timeoutMs);
}

/** Waits until `states` (from {@link recordStates}) show a drop followed by `live` again. */
export async function untilReconnected(states: ConnectionState[], timeoutMs = 10_000): Promise<void> {
  await until(
    "resuming, then live",
    () => {
      const dropped = states.findIndex((s) => s.status === "resuming");
      return dropped >= 0 && states.slice(dropped).some((s) => s.status === "live");
    },
    timeoutMs,
  );
}
