// The browser tests' harness: the real pm-server binary (PM_SERVER_BIN, default
// ../../target/debug/pm-server) on a free loopback port with a temporary data directory, its
// CLI for tokens and for changes made behind the page's back, and Debian's Chromium driven by
// playwright-core (CHROMIUM_BIN, default /usr/bin/chromium; nothing is downloaded).

import { spawn, execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));

export const BIN = resolve(process.env.PM_SERVER_BIN ?? join(here, "../../../target/debug/pm-server"));
export const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
/** Where the run's screenshots go (git-ignored). */
export const SHOTS = join(here, "../test-results");

/** A port that was free a moment ago on 127.0.0.1. */
export async function freePort() {
  return new Promise((ok, fail) => {
    const probe = createServer();
    probe.once("error", fail);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => ok(port));
    });
  });
}

/** A `serve --dev` process; `stop()` ends it with SIGTERM (a clean shutdown). */
export class Server {
  /**
   * Starts the server on `port` (default: a free one) with `dataDir` (default: a new one) and
   * `settings` (`section.key=value`, each passed as `--set`).
   */
  static async start({ port, dataDir, settings = [] } = {}) {
    const server = new Server();
    server.settings = settings;
    server.dataDir = dataDir ?? mkdtempSync(join(tmpdir(), "pm-board-test-"));
    server.ownsDir = dataDir === undefined;
    server.port = port ?? (await freePort());
    await server.#spawn();
    return server;
  }

  async #spawn() {
    const child = spawn(
      BIN,
      [
        "serve",
        "--dev",
        "--listen",
        `127.0.0.1:${this.port}`,
        "--data-dir",
        this.dataDir,
        ...this.settings.flatMap((setting) => ["--set", setting]),
      ],
      { env: env({ PM_LOG: process.env.PM_LOG ?? "warn" }), stdio: ["ignore", "pipe", "inherit"] },
    );
    this.child = child;
    this.exited = new Promise((ok) => child.once("exit", (code, signal) => ok({ code, signal })));
    const banner = await new Promise((ok, fail) => {
      let text = "";
      const timer = setTimeout(() => fail(new Error(`pm-server printed no banner: ${text}`)), 20_000);
      child.stdout.on("data", (chunk) => {
        text += chunk;
        if (text.includes("health:")) {
          clearTimeout(timer);
          ok(text);
        }
      });
      child.once("exit", (code) => fail(new Error(`pm-server exited (${code}) before serving: ${text}`)));
    });
    child.stdout.resume();
    const board = /board:\s+(\S+)/.exec(banner)?.[1];
    if (!board) throw new Error(`no board URL in the banner: ${banner}`);
    this.boardUrl = board;
    this.token = new URL(board).hash.replace("#token=", "");
    this.origin = `http://127.0.0.1:${this.port}`;
    this.wsUrl = `ws://127.0.0.1:${this.port}/ws`;
  }

  /** The same data directory served again on the same port. */
  async restart() {
    await this.stop();
    await this.#spawn();
  }

  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    this.child.kill("SIGTERM");
    const { code } = await this.exited;
    if (code !== 0) throw new Error(`pm-server exited with ${code} on SIGTERM`);
  }

  async dispose() {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
    if (this.ownsDir) rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** A token of tenant `dev` for `user` (display name `name`, if given), signed with this server's development secret. */
  async tokenFor(user, name) {
    const args = ["token", "--dev-data-dir", this.dataDir, "--tenant", "dev", "--user", user];
    if (name) args.push("--name", name);
    const { stdout } = await run(BIN, args, {
      env: env({ PM_LOG: "error" }),
    });
    return stdout.trim();
  }

  /** `pm-server client send` with `token` (default: the banner's): the JSON answers, in order. */
  async send(requests, { token = this.token, url = this.wsUrl, allowErrors = false } = {}) {
    const args = ["client", "send", ...requests.map((r) => JSON.stringify(r))];
    try {
      const { stdout } = await run(BIN, args, { env: env({ PM_URL: url, PM_TOKEN: token, PM_LOG: "error" }) });
      return parseLines(stdout);
    } catch (error) {
      if (allowErrors && error.code === 1) return parseLines(error.stdout);
      throw new Error(`pm-server client send failed (${error.code}): ${error.stdout}${error.stderr}`);
    }
  }

  /** Runs one command and returns its entity (e.g. `{ workItem: {...} }`'s value). */
  async command(command, options) {
    const [answer] = await this.send([{ command }], options);
    const entity = answer.commandResult?.entity;
    if (!entity) throw new Error(`no entity in ${JSON.stringify(answer)}`);
    return Object.values(entity)[0];
  }

  /** The tenant `dev`'s figures from `pm-server tenants stats --json` (safe while serving). */
  async stats() {
    const { stdout } = await run(BIN, ["tenants", "stats", "--json", "--data-dir", this.dataDir, "--tenant", "dev"], {
      env: env({ PM_LOG: "error" }),
    });
    return JSON.parse(stdout)[0];
  }

  async query(query, options) {
    const [answer] = await this.send([{ query }], options);
    return Object.values(answer.queryResult)[0];
  }
}

/** The environment of a child: this one's, without a JWT secret (the dev secret signs), plus `extra`. */
function env(extra) {
  const out = { ...process.env, ...extra };
  delete out.PM_JWT_SECRET;
  return out;
}

function parseLines(stdout) {
  return stdout
    .split("\n")
    .filter((line) => line.trim())
    .map((line) => JSON.parse(line));
}

/** A project `key` with one lane per status (In progress limited to `wip`), made through the CLI. */
export async function seedProject(server, key, { wip = 3 } = {}) {
  const project = await server.command({ createProject: { key, name: `${key} board` } });
  const lanes = [
    ["Backlog", "WORK_ITEM_STATUS_BACKLOG"],
    ["To do", "WORK_ITEM_STATUS_TODO"],
    ["In progress", "WORK_ITEM_STATUS_IN_PROGRESS", wip],
    ["Review", "WORK_ITEM_STATUS_REVIEW"],
    ["Done", "WORK_ITEM_STATUS_DONE"],
  ];
  await server.send([
    {
      batch: {
        atomic: true,
        commands: lanes.map(([name, status, wipLimit], position) => ({
          createSwimLane: { projectId: project.id, name, status, position, ...(wipLimit ? { wipLimit } : {}) },
        })),
      },
    },
  ]);
  return project;
}

export async function addMember(server, projectId, userId, role) {
  return server.command({ addMember: { projectId, userId, role: `PROJECT_ROLE_${role}` } });
}

export async function createItem(server, projectId, title, status = "WORK_ITEM_STATUS_TODO", options) {
  return server.command(
    { createWorkItem: { projectId, itemType: "WORK_ITEM_TYPE_TASK", title, status } },
    options,
  );
}

/** The titles of a status's items in the server's order (by rank, then id). */
export async function serverOrder(server, projectId, status) {
  const page = await server.query({ listWorkItems: { projectId, statuses: [status], page: { pageSize: 500 } } });
  return (page.items ?? []).map((item) => item.title);
}

/** A Chromium for the test file. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    // As root (CI containers) Chromium's sandbox cannot start.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
}

/** A fresh browser context (its own session storage: one user) on a page. */
export async function openPage(browser, { viewport = { width: 1400, height: 900 } } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(new Error(message.text()));
  });
  page.errors = errors;
  return page;
}

/** Opens the board signed in with `token`, on project `key` if given. */
export async function signIn(page, server, token, key) {
  await page.goto(`${server.origin}/#token=${token}${key ? `&p=${key}` : ""}`);
  await page.locator(".connection[data-status=live]").waitFor();
  if (key) await page.locator(".board").waitFor();
}

export async function screenshot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** The column of a status (`To do`, `In progress`, ...). */
export function column(page, status) {
  return page.locator(`section.column[data-status="${status}"]`);
}

/** The card titles of a column, top to bottom. */
export async function titlesIn(page, status) {
  return column(page, status).locator("li.card .card-title").allTextContents();
}

/** Waits until `read()` deep-equals `expected` (the page settles after events arrive). */
export async function eventually(read, expected, { timeout = 10_000, message = "" } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await read();
    if (JSON.stringify(last) === JSON.stringify(expected)) return last;
    if (Date.now() > deadline) {
      throw new Error(`${message} never became ${JSON.stringify(expected)}; last ${JSON.stringify(last)}`);
    }
    await new Promise((ok) => setTimeout(ok, 50));
  }
}
