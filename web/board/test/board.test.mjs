// The board page in Chromium against the real pm-server: live updates between two users,
// card order after concurrent moves, a server restart under an open page, a viewer, an edit
// conflict, and a phone-sized screen. Screenshots go to test-results/.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  Server,
  addMember,
  column,
  createItem,
  eventually,
  freePort,
  launchBrowser,
  openPage,
  screenshot,
  seedProject,
  serverOrder,
  signIn,
  titlesIn,
} from "./harness.mjs";

let browser;
before(async () => {
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
});

/** Runs `body` with a fresh server, which is stopped and removed afterwards. */
async function withServer(body) {
  const server = await Server.start();
  try {
    await body(server);
  } finally {
    await server.dispose();
  }
}

function card(page, title) {
  return page.locator("li.card", { has: page.locator(".card-title", { hasText: title }) });
}

describe("board page", { timeout: 120_000 }, () => {
  test("sign-in through the address fragment, which is then removed", async () => {
    await withServer(async (server) => {
      const page = await openPage(browser);
      await page.goto(server.boardUrl);
      await page.locator(".connection[data-status=live]").waitFor();
      assert.equal(new URL(page.url()).hash, "", "the token left the address bar");
      assert.equal(await page.evaluate(() => sessionStorage.getItem("pm-board-token")), server.token);
      await page.locator("text=No projects yet").waitFor();
      // A reload stays signed in (session storage), without the token in the address.
      await page.reload();
      await page.locator(".connection[data-status=live]").waitFor();

      // A token the server refuses leads to the form, with the reason.
      const other = await openPage(browser);
      await other.goto(`${server.origin}/#token=not-a-token`);
      await other.locator(".sign-in .error").waitFor();
      assert.match(await other.locator(".sign-in .error").innerText(), /refused this token/);
      await other.locator("#token").fill(server.token);
      await other.getByRole("button", { name: "Sign in" }).click();
      await other.locator(".connection[data-status=live]").waitFor();
      assert.deepEqual([...page.errors, ...other.errors.filter((e) => !/WebSocket/.test(e.message))], []);
    });
  });

  test("two users on one board: create, move, comment appear live; order matches the server's ranks after concurrent moves", async () => {
    await withServer(async (server) => {
      // Alice (the dev user) creates the project in the page; Bob is an editor.
      const alice = await openPage(browser);
      await signIn(alice, server, server.token);
      await alice.locator("#project-key").fill("PM");
      await alice.locator("#project-name").fill("Launch");
      await alice.getByRole("button", { name: "Create project" }).click();
      await alice.locator(".board").waitFor();
      assert.equal(new URL(alice.url()).hash, "#p=PM");
      assert.equal(await column(alice, "In progress").locator(".wip").innerText(), "0/3");
      const [project] = (await server.query({ listProjects: {} })).items;
      await addMember(server, project.id, "bob", "EDITOR");
      const bob = await openPage(browser);
      await signIn(bob, server, await server.tokenFor("bob"), "PM");

      // Created in Alice's page: appears in Bob's without a reload.
      await alice.getByRole("button", { name: "New item" }).click();
      await alice.locator("#item-title").fill("Write the spec");
      await alice.locator("#item-description").fill("Everything the launch needs");
      await alice.getByRole("button", { name: "Create", exact: true }).click();
      await card(bob, "Write the spec").waitFor();
      assert.deepEqual(await titlesIn(bob, "Backlog"), ["Write the spec"]);

      // Moved by Alice with the keyboard way (the move button): Bob sees it in To do.
      await alice.getByRole("button", { name: "Move PM-1 to To do" }).click();
      await eventually(() => titlesIn(bob, "To do"), ["Write the spec"], { message: "Bob's To do" });

      // Dragged by Bob into In progress: Alice sees it.
      await card(bob, "Write the spec").dragTo(column(bob, "In progress").locator("ul.cards"));
      await eventually(() => titlesIn(alice, "In progress"), ["Write the spec"], { message: "Alice's In progress" });
      assert.equal(await column(alice, "In progress").locator(".wip").innerText(), "1/3");

      // Bob has the card open; Alice comments: the comment shows in Bob's dialog.
      await card(bob, "Write the spec").locator(".card-open").click();
      await card(alice, "Write the spec").locator(".card-open").click();
      await alice.locator("#comment").fill("Draft is in the wiki");
      await alice.getByRole("button", { name: "Comment", exact: true }).click();
      await bob.locator(".comments li", { hasText: "Draft is in the wiki" }).waitFor();
      await screenshot(bob, "live-comment");
      await alice.keyboard.press("Escape");
      await bob.keyboard.press("Escape");

      // Concurrent moves: four cards in To do, both users reorder at the same time.
      for (const title of ["Alpha", "Bravo", "Charlie", "Delta"]) await createItem(server, project.id, title);
      await eventually(() => titlesIn(alice, "To do"), ["Alpha", "Bravo", "Charlie", "Delta"], { message: "Alice's To do" });
      await eventually(() => titlesIn(bob, "To do"), ["Alpha", "Bravo", "Charlie", "Delta"], { message: "Bob's To do" });
      await Promise.all([
        alice.getByRole("button", { name: "Move PM-5 up" }).click(), // Delta above Charlie
        bob.getByRole("button", { name: "Move PM-2 down" }).click(), // Alpha below Bravo
      ]);
      await Promise.all([
        card(alice, "Alpha").dragTo(card(alice, "Delta"), { targetPosition: { x: 20, y: 5 } }),
        bob.getByRole("button", { name: "Move PM-4 up" }).click(),
      ]);
      // Whatever won, both pages show exactly the server's order.
      await new Promise((ok) => setTimeout(ok, 300));
      const order = await serverOrder(server, project.id, "WORK_ITEM_STATUS_TODO");
      assert.deepEqual([...order].sort(), ["Alpha", "Bravo", "Charlie", "Delta"]);
      await eventually(() => titlesIn(alice, "To do"), order, { message: "Alice's order" });
      await eventually(() => titlesIn(bob, "To do"), order, { message: "Bob's order" });
      // Each card once on each page.
      for (const page of [alice, bob]) {
        assert.equal(await page.locator("li.card").count(), 5);
      }

      // The activity feed shows the moves and the comment.
      await alice.locator(".activity li", { hasText: "moved work item PM-1" }).first().waitFor();
      await alice.locator(".activity li", { hasText: "created comment" }).waitFor();
      await screenshot(alice, "two-users");
      assert.deepEqual([...alice.errors, ...bob.errors], []);
    });
  });

  test("the server restarts under an open page: reconnecting, then resumed with every change made meanwhile, no duplicate", async () => {
    await withServer(async (server) => {
      const project = await seedProject(server, "OPS");
      const first = await createItem(server, project.id, "Before the restart");
      const page = await openPage(browser);
      await signIn(page, server, server.token, "OPS");
      await card(page, "Before the restart").waitFor();
      const { asOfSeq: seqBefore } = await server.query({ listProjects: {} });

      await server.stop();
      await page.locator(".connection[data-status=resuming]").waitFor();
      assert.match(await page.locator(".connection").innerText(), /reconnecting/);
      await screenshot(page, "reconnecting");

      // Meanwhile, changes through the CLI on a server the page cannot reach (same data).
      const aside = await Server.start({ dataDir: server.dataDir, port: await freePort() });
      await createItem(aside, project.id, "Made while away 1");
      await createItem(aside, project.id, "Made while away 2", "WORK_ITEM_STATUS_IN_PROGRESS");
      await aside.command({
        moveWorkItem: { id: first.id, expectedVersion: first.version, status: "WORK_ITEM_STATUS_DONE" },
      });
      await aside.command({ createComment: { workItemId: first.id, content: "Done while you were away" } });
      await aside.stop();

      // Back on the page's address: it resumes from the last event it had.
      await server.restart();
      await page.locator(".connection[data-status=live]").waitFor({ timeout: 30_000 });
      assert.equal(await page.locator(".connection").innerText(), `live · resumed at seq ${seqBefore}`);
      await eventually(() => titlesIn(page, "To do"), ["Made while away 1"], { message: "To do" });
      await eventually(() => titlesIn(page, "In progress"), ["Made while away 2"], { message: "In progress" });
      await eventually(() => titlesIn(page, "Done"), ["Before the restart"], { message: "Done" });
      assert.equal(await page.locator("li.card").count(), 3, "no card twice");
      await page.locator(".activity li", { hasText: "created comment" }).waitFor();
      const seqs = await page.locator(".activity li").evaluateAll((rows) => rows.map((r) => r.dataset.seq));
      assert.equal(new Set(seqs).size, seqs.length, "no event twice in the feed");
      await screenshot(page, "resumed");
      assert.deepEqual(
        page.errors.filter((e) => !/WebSocket|ERR_CONNECTION_REFUSED/.test(e.message)),
        [],
      );
    });
  });

  test("away longer than the change log is kept: the page reads the board again (RESYNC_REQUIRED)", async () => {
    await withServer(async (server) => {
      const project = await seedProject(server, "RS");
      await createItem(server, project.id, "Kept");
      const page = await openPage(browser);
      await signIn(page, server, server.token, "RS");
      await card(page, "Kept").waitFor();
      await server.stop();
      await page.locator(".connection[data-status=resuming]").waitFor();

      // Meanwhile a server that keeps only the newest event prunes what the page would need.
      const aside = await Server.start({
        dataDir: server.dataDir,
        port: await freePort(),
        settings: ["changelog.retain_events=1", "changelog.prune_interval_secs=1"],
      });
      const gone = await createItem(aside, project.id, "Deleted while away");
      await aside.command({ deleteWorkItem: { id: gone.id, expectedVersion: gone.version } });
      await createItem(aside, project.id, "Made while away");
      const head = (await aside.query({ listProjects: {} })).asOfSeq;
      await eventually(async () => (await aside.stats()).oldest_seq, Number(head), { timeout: 15_000, message: "oldest seq" });
      await aside.stop();

      await server.restart();
      await page.locator(".notice", { hasText: "The board was read again" }).waitFor({ timeout: 30_000 });
      await eventually(() => titlesIn(page, "To do"), ["Kept", "Made while away"], { message: "To do" });
      assert.equal(await page.locator("li.card").count(), 2);
      assert.equal(await page.locator(".connection").getAttribute("data-status"), "live");
    });
  });

  test("a viewer sees the board with every control disabled, and the server refuses a forced move", async () => {
    await withServer(async (server) => {
      const project = await seedProject(server, "VW");
      const item = await createItem(server, project.id, "Read me only");
      await addMember(server, project.id, "vera", "VIEWER");
      const veraToken = await server.tokenFor("vera");
      const page = await openPage(browser);
      await signIn(page, server, veraToken, "VW");

      await card(page, "Read me only").waitFor();
      assert.match(await page.locator(".role").innerText(), /viewer · read only/);
      assert.equal(await page.getByRole("button", { name: "New item" }).isDisabled(), true);
      assert.equal(await page.getByRole("button", { name: "New sprint" }).isDisabled(), true);
      assert.equal(await card(page, "Read me only").getAttribute("draggable"), "false");
      for (const button of await card(page, "Read me only").locator(".moves button").all()) {
        assert.equal(await button.isDisabled(), true);
      }
      assert.equal(await page.locator("section.column button[aria-label^='Set the WIP limit']").count(), 0);
      // The card opens read-only.
      await card(page, "Read me only").locator(".card-open").click();
      assert.equal(await page.locator("#item-title").isDisabled(), true);
      assert.equal(await page.locator("#comment").isDisabled(), true);
      assert.equal(await page.getByRole("button", { name: "Save" }).count(), 0);
      await page.keyboard.press("Escape");

      // A move forced past the disabled button: the server refuses, the card stays.
      await page.locator(`button[aria-label="Move ${item.displayKey} to In progress"]`).evaluate((b) => {
        b.disabled = false;
      });
      await page.locator(`button[aria-label="Move ${item.displayKey} to In progress"]`).click();
      await page.locator(".notice.error", { hasText: "Not allowed" }).waitFor();
      assert.deepEqual(await titlesIn(page, "To do"), ["Read me only"]);
      // And so it does for the viewer's token outside the page.
      const [answer] = await server.send(
        [{ command: { moveWorkItem: { id: item.id, expectedVersion: item.version, status: "WORK_ITEM_STATUS_DONE" } } }],
        { token: veraToken, allowErrors: true },
      );
      assert.equal(answer.error.code, "PERMISSION_DENIED");
      assert.deepEqual(await serverOrder(server, project.id, "WORK_ITEM_STATUS_TODO"), ["Read me only"]);
      await screenshot(page, "viewer");
    });
  });

  test("an edit conflict is explained and the card reloaded, never overwritten", async () => {
    await withServer(async (server) => {
      const project = await seedProject(server, "CF");
      const item = await createItem(server, project.id, "Original title");
      await addMember(server, project.id, "bob", "EDITOR");
      const alice = await openPage(browser);
      const bob = await openPage(browser);
      await signIn(alice, server, server.token, "CF");
      await signIn(bob, server, await server.tokenFor("bob"), "CF");

      // Both open the card; Alice saves first.
      await card(alice, "Original title").locator(".card-open").click();
      await card(bob, "Original title").locator(".card-open").click();
      await alice.locator("#item-title").fill("Title by Alice");
      await alice.getByRole("button", { name: "Save" }).click();
      await card(alice, "Title by Alice").waitFor();
      // Bob's dialog notices at once…
      await bob.locator(".stale", { hasText: "dev-user changed this card" }).waitFor();
      // …and his save is refused, explained, and the card shown as it is now.
      await bob.locator("#item-title").fill("Title by Bob");
      await bob.locator("#item-description").fill("Bob's notes");
      await bob.getByRole("button", { name: "Save" }).click();
      const conflict = bob.locator(".conflict");
      await conflict.waitFor();
      const text = await conflict.innerText();
      assert.match(text, /Edit conflict/);
      assert.match(text, /CF-1 was changed by dev-user meanwhile \(now version 2\)/);
      assert.match(text, /Your change was not applied/);
      assert.match(text, /Your unsaved values were: title “Title by Bob”, description “Bob's notes”/);
      assert.equal(await bob.locator("#item-title").inputValue(), "Title by Alice");
      await screenshot(bob, "conflict");
      const { workItem } = await server.query({ getWorkItem: { id: item.id } });
      assert.equal(workItem.title, "Title by Alice", "nothing overwritten");

      // On the fresh card, Bob's save goes through.
      await bob.locator("#item-description").fill("Bob's notes");
      await bob.getByRole("button", { name: "Save" }).click();
      await eventually(
        async () => (await server.query({ getWorkItem: { id: item.id } })).workItem.description,
        "Bob's notes",
      );
      await eventually(() => titlesIn(bob, "To do"), ["Title by Alice"]);
    });
  });

  test("sprint filter, full-text search, and editing every field of a card", async () => {
    await withServer(async (server) => {
      const project = await seedProject(server, "SP");
      const sprint = await server.command({ createSprint: { projectId: project.id, name: "Sprint 1" } });
      const zebra = await createItem(server, project.id, "Stripes");
      await createItem(server, project.id, "Plain");
      await server.command({ createComment: { workItemId: zebra.id, content: "a zebra was seen" } });
      const page = await openPage(browser);
      await signIn(page, server, server.token, "SP");
      await eventually(() => titlesIn(page, "To do"), ["Stripes", "Plain"]);

      // Edit all fields of a card at once: the sprint goes with the update, in one step.
      await card(page, "Stripes").locator(".card-open").click();
      await page.locator("#item-title").fill("Stripes and dots");
      await page.locator("#item-description").fill("Markdown *here*");
      await page.locator("#item-status").selectOption({ label: "Review" });
      await page.locator("#item-priority").selectOption({ label: "High" });
      await page.locator("#item-points").fill("5");
      await page.locator("#item-assignee").fill("bob");
      await page.locator("#item-sprint").selectOption({ label: "Sprint 1" });
      await page.getByRole("button", { name: "Save" }).click();
      await eventually(() => titlesIn(page, "Review"), ["Stripes and dots"]);
      const { workItem } = await server.query({ getWorkItem: { id: zebra.id } });
      assert.deepEqual(
        [workItem.title, workItem.description, workItem.status, workItem.priority, workItem.storyPoints, workItem.assigneeId, workItem.sprintId],
        ["Stripes and dots", "Markdown *here*", "WORK_ITEM_STATUS_REVIEW", "PRIORITY_HIGH", 5, "bob", sprint.id],
      );
      assert.match(await card(page, "Stripes and dots").innerText(), /5 pt[\s\S]*@bob/);

      // A new item in the sprint, from the dialog.
      await page.getByRole("button", { name: "New item" }).click();
      await page.locator("#item-title").fill("Sprint work");
      await page.locator("#item-type").selectOption({ label: "Bug" });
      await page.locator("#item-sprint").selectOption({ label: "Sprint 1" });
      await page.getByRole("button", { name: "Create", exact: true }).click();
      await card(page, "Sprint work").waitFor();
      // The card may show (its event) before the dialog closes (the answer): closing takes
      // the focus away from wherever it is, so the keyboard part waits for it.
      await page.locator("dialog.item-dialog").waitFor({ state: "detached" });

      // The keyboard way: Alt+arrows on a focused card; the focus follows the card.
      const plain = card(page, "Plain").locator(".card-open");
      await plain.focus();
      await page.keyboard.press("Alt+ArrowRight");
      await eventually(() => titlesIn(page, "In progress"), ["Plain"]);
      await eventually(() => page.evaluate(() => document.activeElement?.closest("li.card")?.dataset.key), "SP-2");
      await page.keyboard.press("Alt+ArrowLeft");
      await eventually(() => titlesIn(page, "To do"), ["Plain"]);
      await page.keyboard.press("Alt+ArrowRight");
      await eventually(() => titlesIn(page, "In progress"), ["Plain"]);
      await page.keyboard.press("Alt+ArrowRight");
      await eventually(() => titlesIn(page, "Review"), ["Stripes and dots", "Plain"]);
      await page.keyboard.press("Alt+ArrowUp");
      await eventually(() => titlesIn(page, "Review"), ["Plain", "Stripes and dots"]);
      assert.deepEqual(await serverOrder(server, project.id, "WORK_ITEM_STATUS_REVIEW"), ["Plain", "Stripes and dots"]);
      await page.keyboard.press("Alt+ArrowLeft");
      await eventually(() => titlesIn(page, "In progress"), ["Plain"]);
      await page.keyboard.press("Alt+ArrowLeft");
      await eventually(() => titlesIn(page, "To do"), ["Plain"]);

      const filter = page.getByLabel("Sprint filter");
      await filter.selectOption({ label: "Sprint 1 (planned)" });
      await eventually(() => page.locator("li.card .card-title").allTextContents(), ["Sprint work", "Stripes and dots"]);
      await filter.selectOption({ label: "No sprint" });
      await eventually(() => page.locator("li.card .card-title").allTextContents(), ["Plain"]);
      await filter.selectOption({ label: "All items" });

      // Search covers comments; words match as prefixes.
      await page.getByLabel("Search").fill("zeb");
      await eventually(() => page.locator("li.card .card-title").allTextContents(), ["Stripes and dots"]);
      await page.getByLabel("Search").fill("");
      await eventually(() => page.locator("li.card").count(), 3);
      assert.deepEqual(page.errors, []);
    });
  });

  test("read model: names for ids, a Blocked badge, search hits with snippets, Cancelled, WIP warnings", async () => {
    await withServer(async (server) => {
      const project = await seedProject(server, "RM", { wip: 1 });
      await addMember(server, project.id, "bob", "EDITOR");
      // Bob connects once with a display name: ListUsers then knows it.
      const bobToken = await server.tokenFor("bob", "Bob Builder");
      await server.query({ listProjects: {} }, { token: bobToken });
      const blocker = await createItem(server, project.id, "Blocker");
      await server.command({ createComment: { workItemId: blocker.id, content: "a zebra <b>crossing</b> here" } });
      const waiting = await server.command({
        createWorkItem: { projectId: project.id, itemType: "WORK_ITEM_TYPE_TASK", title: "Waiting", status: "WORK_ITEM_STATUS_TODO", assigneeId: "bob" },
      });
      await server.command({
        createDependency: { blockingItemId: blocker.id, blockedItemId: waiting.id, dependencyType: "DEPENDENCY_TYPE_BLOCKS" },
      });
      const page = await openPage(browser);
      await signIn(page, server, server.token, "RM");
      await eventually(() => titlesIn(page, "To do"), ["Blocker", "Waiting"]);

      // Names instead of ids: the assignee on the card, the actor in the feed.
      assert.equal(await card(page, "Waiting").locator(".badge.assignee").innerText(), "@Bob Builder");
      assert.equal(await page.locator(".activity li .who").first().innerText(), "Dev User");
      // Blocked (from the query), only where it is; an event without it keeps it.
      assert.deepEqual(await card(page, "Waiting").locator(".badge.blocked").allTextContents(), ["Blocked"]);
      assert.equal(await card(page, "Blocker").locator(".badge.blocked").count(), 0);
      await server.command({ updateWorkItem: { id: waiting.id, expectedVersion: waiting.version, title: "Still waiting" } });
      await card(page, "Still waiting").waitFor();
      assert.deepEqual(await card(page, "Still waiting").locator(".badge.blocked").allTextContents(), ["Blocked"]);
      // The dialog names the assignee too.
      await card(page, "Still waiting").locator(".card-open").click();
      assert.equal(await page.locator("#item-assignee").inputValue(), "bob");
      assert.equal(await page.locator(".assignee-name").innerText(), "Bob Builder");
      // Cancelled is a column of its own, chosen in the dialog.
      await page.locator("#item-status").selectOption({ label: "Cancelled" });
      await page.getByRole("button", { name: "Save" }).click();
      await eventually(() => titlesIn(page, "Cancelled"), ["Still waiting"]);
      assert.deepEqual(await titlesIn(page, "To do"), ["Blocker"]);

      // Search: hits with snippets, matched words marked, text never HTML; cards filtered.
      await page.getByLabel("Search").fill("zebra");
      const hit = page.locator(".search-hits li");
      await eventually(() => hit.count(), 1);
      assert.equal(await hit.locator(".card-key").innerText(), "RM-1");
      assert.equal(await hit.locator(".hit-title").innerText(), "Blocker");
      assert.deepEqual(await hit.locator(".snippet mark").allTextContents(), ["zebra"]);
      assert.match(await hit.locator(".snippet").innerText(), /zebra <b>crossing<\/b>/);
      assert.equal(await hit.locator(".snippet b").count(), 0, "snippet rendered as text");
      await eventually(() => page.locator("li.card .card-title").allTextContents(), ["Blocker"]);
      await screenshot(page, "search");
      await hit.locator("button.hit").click();
      assert.equal(await page.locator("#dialog-title").innerText(), "RM-1 Blocker");
      // Closed by its button: an Escape here now and then left the dialog open in headless
      // Chromium (seen in CI and locally, about one run in eight).
      await page.locator("dialog.item-dialog").getByRole("button", { name: "Close" }).click();
      await page.locator("dialog.item-dialog").waitFor({ state: "detached" });
      await page.getByLabel("Search").fill("");
      await eventually(() => page.locator("li.card").count(), 2);

      // A move over a warned WIP limit goes through, and the warning is shown.
      const lanes = await server.query({ listSwimLanes: { projectId: project.id } });
      const lane = lanes.items.find((l) => l.name === "In progress");
      await server.command({ updateSwimLane: { id: lane.id, expectedVersion: lane.version, wipPolicy: "WIP_POLICY_WARN" } });
      await createItem(server, project.id, "Busy", "WORK_ITEM_STATUS_IN_PROGRESS");
      await eventually(() => titlesIn(page, "In progress"), ["Busy"]);
      await page.getByRole("button", { name: "Move RM-1 to In progress" }).click();
      await eventually(() => titlesIn(page, "In progress"), ["Busy", "Blocker"]);
      const warning = page.locator(".notice.warning");
      await warning.waitFor();
      assert.match(await warning.innerText(), /^swim lane "In progress" is over its WIP limit: 2 work items, limit 1\s*×?$/);
      assert.deepEqual(page.errors, []);
    });
  });

  test("readable on a phone: columns stack, the feed follows", async () => {
    await withServer(async (server) => {
      const project = await seedProject(server, "MOB", { wip: 1 });
      await createItem(server, project.id, "First in progress", "WORK_ITEM_STATUS_IN_PROGRESS");
      await createItem(server, project.id, "Second in progress", "WORK_ITEM_STATUS_IN_PROGRESS");
      const page = await openPage(browser, { viewport: { width: 390, height: 844 } });
      await signIn(page, server, server.token, "MOB");
      const wip = column(page, "In progress").locator(".wip");
      assert.equal(await wip.innerText(), "2/1");
      assert.match(await wip.getAttribute("class"), /\bover\b/, "over the WIP limit is highlighted");
      const backlog = await column(page, "Backlog").boundingBox();
      const todo = await column(page, "To do").boundingBox();
      assert.ok(todo.y >= backlog.y + backlog.height, "To do is under Backlog");
      assert.ok(todo.width > 300, "a column takes the phone's width");
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(width <= 390, `no sideways scrolling (${width})`);
      await screenshot(page, "phone");
    });
  });
});
