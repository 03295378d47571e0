// The board's state: one PmClient, the entities the user has loaded, kept current by one
// subscription to everything the user may see.
//
// Consistency without bookkeeping: every entity is stored by id and replaced only by a version
// at least as new (versions only grow), deleted ones are kept as tombstones. So snapshots
// (`List*`) and events can arrive in any order and overlap — the subscription starts at the
// projects snapshot's `as_of_seq`, each project's snapshot is read later — and the result is
// the newest state of each entity, each once. After a reconnect the client resumes the
// subscription from the last event it delivered, so nothing is refetched.

import { ErrorCode, PmClient, PmError, ProjectRole, WorkItemStatus, entityOf } from "@pm-server/client";
import type {
  ActivityEntry,
  Comment,
  CommandKind,
  CommandResult,
  ConnectionState,
  Entity,
  Event,
  FieldChange,
  Project,
  ProjectMember,
  SearchHit,
  Sprint,
  SwimLane,
  User,
  Warning,
  WorkItem,
} from "@pm-server/client";
import { byRank } from "./labels.ts";

interface Versioned {
  id: string;
  version: bigint;
  deletedAt?: bigint;
}

/** Entities by id, newest version wins; deleted ones stay as tombstones. */
class Table<T extends Versioned> {
  readonly rows = new Map<string, T>();

  /** Stores `row` unless a newer version is known; whether it was stored. */
  put(row: T): boolean {
    const known = this.rows.get(row.id);
    if (known && known.version > row.version) return false;
    this.rows.set(row.id, row);
    return true;
  }

  get(id: string): T | undefined {
    const row = this.rows.get(id);
    return row && row.deletedAt === undefined ? row : undefined;
  }

  live(filter: (row: T) => boolean): T[] {
    const out: T[] = [];
    for (const row of this.rows.values()) {
      if (row.deletedAt === undefined && filter(row)) out.push(row);
    }
    return out;
  }
}

/** One line of the activity feed, from the log (`ListActivity`) or a live event. */
export interface ActivityRow {
  seq: bigint;
  at: bigint;
  actorId: string;
  /** The actor's display name when the log named them (events carry ids only). */
  actorName: string;
  action: number;
  entityType: number;
  label: string;
  changes: FieldChange[];
}

/** A message for the user: what failed and why, or what happened. */
export interface Notice {
  id: number;
  kind: "error" | "warning" | "info";
  text: string;
}

/** The outcome of a save that may meet someone else's change. */
export type SaveOutcome =
  | { ok: true; item: WorkItem }
  | { ok: false; conflict?: WorkItem; message: string };

const PAGE = 500;
/** The most search hits read for one search. */
const SEARCH_HITS = 200;

/** Why a command failed, in words for the user. */
export function describe(error: unknown): string {
  if (error instanceof PmError) {
    switch (error.code) {
      case ErrorCode.PERMISSION_DENIED:
        return `Not allowed: ${error.details?.message ?? error.message} (your role in this project does not permit it).`;
      case ErrorCode.INVALID_ARGUMENT:
        return `Invalid ${error.field || "input"}: ${error.details?.message ?? error.message}`;
      case ErrorCode.RATE_LIMITED:
        return "Too many requests; wait a moment and try again.";
      default:
        if (error.kind === "server") return error.details?.message ?? error.message;
        if (error.kind === "disconnected" || error.kind === "timeout")
          return "The connection dropped before the server answered; the change may not have been saved.";
        return error.message;
    }
  }
  return error instanceof Error ? error.message : String(error);
}

export class Store {
  readonly client: PmClient;
  readonly userId: string;
  connection: ConnectionState;
  readonly projects = new Table<Project>();
  readonly items = new Table<WorkItem>();
  readonly lanes = new Table<SwimLane>();
  readonly sprints = new Table<Sprint>();
  readonly comments = new Table<Comment>();
  /** Members by `projectId/userId`. */
  readonly members = new Map<string, ProjectMember>();
  /** Activity by project, newest first, each seq once. */
  readonly activity = new Map<string, ActivityRow[]>();
  /** Projects whose board has been read. */
  readonly loaded = new Set<string>();
  /** The people sharing a project with the user (`ListUsers`), by id. */
  readonly users = new Map<string, User>();
  notices: Notice[] = [];
  #noticeId = 0;
  readonly #listeners = new Set<() => void>();
  #scheduled = false;
  #resyncing = false;

  private constructor(client: PmClient) {
    this.client = client;
    this.userId = client.welcome?.userId ?? "";
    this.connection = client.state;
  }

  /** Connects with `token`, reads the projects and subscribes from that snapshot on. */
  static async open(url: string, token: string): Promise<Store> {
    const client = await PmClient.connect({
      url,
      token,
      clientName: "pm-board/0.1.0",
      onError: (error) => console.warn("pm-board:", error),
    });
    const store = new Store(client);
    client.onStateChange((state) => {
      store.connection = state;
      if (state.status === "live" && state.error?.code === ErrorCode.RESYNC_REQUIRED) void store.#resync();
      store.changed();
    });
    client.onEvent((event) => store.#apply(event));
    try {
      const asOf = await store.#loadProjects();
      await client.subscribe({ fromSeq: asOf });
      void store.loadUsers();
    } catch (error) {
      await client.close();
      throw error;
    }
    return store;
  }

  /** Calls `listener` after changes (at most once per animation frame). */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  changed(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      for (const listener of this.#listeners) listener();
    });
  }

  notify(kind: Notice["kind"], text: string): void {
    const notice = { id: ++this.#noticeId, kind, text };
    this.notices = [...this.notices.slice(-3), notice];
    this.changed();
    setTimeout(() => this.dismiss(notice.id), kind === "info" ? 5_000 : 12_000);
  }

  dismiss(id: number): void {
    this.notices = this.notices.filter((n) => n.id !== id);
    this.changed();
  }

  close(): void {
    void this.client.close();
  }

  // --- reading ---

  projectList(): Project[] {
    return this.projects.live(() => true).sort((a, b) => a.key.localeCompare(b.key));
  }

  projectByKey(key: string): Project | undefined {
    return this.projects.live((p) => p.key === key)[0];
  }

  role(projectId: string): ProjectRole {
    return this.members.get(`${projectId}/${this.userId}`)?.role ?? ProjectRole.UNSPECIFIED;
  }

  canEdit(projectId: string): boolean {
    return this.role(projectId) >= ProjectRole.EDITOR;
  }

  /** How a person is shown: their display name if known, else their id. */
  nameOf(userId: string): string {
    return this.users.get(userId)?.name || userId;
  }

  memberIds(projectId: string): string[] {
    return [...this.members.values()]
      .filter((m) => m.projectId === projectId)
      .map((m) => m.userId)
      .sort();
  }

  itemsOf(projectId: string): WorkItem[] {
    return this.items.live((i) => i.projectId === projectId).sort(byRank);
  }

  lanesOf(projectId: string): SwimLane[] {
    return this.lanes
      .live((l) => l.projectId === projectId)
      .sort((a, b) => a.position - b.position || (a.id < b.id ? -1 : 1));
  }

  sprintsOf(projectId: string): Sprint[] {
    return this.sprints.live((s) => s.projectId === projectId).sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  commentsOf(itemId: string): Comment[] {
    return this.comments
      .live((c) => c.workItemId === itemId)
      .sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.id < b.id ? -1 : 1));
  }

  /** Reads a project's board (lanes, sprints, members, items, recent activity) once. */
  async loadProject(projectId: string): Promise<void> {
    if (this.loaded.has(projectId)) return;
    const [lanes, sprints, members, activity] = await Promise.all([
      this.client.query({ case: "listSwimLanes", value: { projectId, page: { pageSize: PAGE } } }),
      this.client.query({ case: "listSprints", value: { projectId, page: { pageSize: PAGE } } }),
      this.client.query({ case: "listMembers", value: { projectId, page: { pageSize: PAGE } } }),
      this.client.query({ case: "listActivity", value: { projectId, page: { pageSize: 40 } } }),
      this.#loadItems(projectId),
    ]);
    for (const lane of lanes.items) this.lanes.put(lane);
    for (const sprint of sprints.items) this.sprints.put(sprint);
    for (const member of members.items) this.#putMember(member);
    this.#addActivity(projectId, activity.items.map((entry) => rowOfEntry(entry, this)));
    this.loaded.add(projectId);
    this.changed();
  }

  /** Loads a work item's comments (kept current by events afterwards). */
  async loadComments(itemId: string): Promise<void> {
    let pageToken = "";
    do {
      const page = await this.client.query({
        case: "listComments",
        value: { workItemId: itemId, page: { pageSize: PAGE, pageToken } },
      });
      for (const comment of page.items) this.comments.put(comment);
      pageToken = page.nextPageToken;
    } while (pageToken);
    this.changed();
  }

  /** The project's hits of a full-text search (`Search`), best first (at most `SEARCH_HITS`). */
  async search(projectId: string, text: string): Promise<SearchHit[]> {
    const hits: SearchHit[] = [];
    let pageToken = "";
    do {
      const page = await this.client.query({
        case: "search",
        value: { projectId, text, entityTypes: [], page: { pageSize: 100, pageToken } },
      });
      hits.push(...page.items);
      pageToken = page.nextPageToken;
    } while (pageToken && hits.length < SEARCH_HITS);
    return hits.slice(0, SEARCH_HITS);
  }

  /**
   * Reads the people sharing a project with the user, to show names for ids. Quietly keeps
   * the ids shown if it fails (names are a nicety).
   */
  async loadUsers(): Promise<void> {
    try {
      const users: User[] = [];
      let pageToken = "";
      do {
        const page = await this.client.query({ case: "listUsers", value: { page: { pageSize: PAGE, pageToken } } });
        users.push(...page.items);
        pageToken = page.nextPageToken;
      } while (pageToken);
      this.users.clear();
      for (const user of users) this.users.set(user.id, user);
      this.changed();
    } catch (error) {
      console.warn("pm-board: could not read the users:", error);
    }
  }

  /** Shows what a successful command warns about (e.g. a lane now over its WIP limit). */
  warn(warnings: Warning[]): void {
    for (const warning of warnings) if (warning.message) this.notify("warning", warning.message);
  }

  /**
   * The server no longer has every change since the last one this page saw (its change log
   * was pruned while the page was away): forget everything, read it again, subscribe anew.
   */
  async #resync(): Promise<void> {
    if (this.#resyncing) return;
    this.#resyncing = true;
    const open = [...this.loaded];
    try {
      for (const table of [this.projects, this.items, this.lanes, this.sprints]) table.rows.clear();
      this.members.clear();
      this.activity.clear();
      this.loaded.clear();
      this.changed();
      const asOf = await this.#loadProjects();
      await this.client.subscribe({ fromSeq: asOf });
      for (const projectId of open) await this.loadProject(projectId);
      this.notify("info", "The board was read again: the server no longer had every change since this page last saw one.");
    } catch (error) {
      this.notify("error", `Could not read the board again: ${describe(error)}. Reload the page.`);
    } finally {
      this.#resyncing = false;
    }
  }

  async #loadProjects(): Promise<bigint> {
    let pageToken = "";
    let asOf = 0n;
    do {
      const page = await this.client.query({
        case: "listProjects",
        value: { page: { pageSize: PAGE, pageToken } },
      });
      for (const project of page.items) this.projects.put(project);
      if (!pageToken) asOf = page.asOfSeq;
      pageToken = page.nextPageToken;
    } while (pageToken);
    return asOf;
  }

  async #loadItems(projectId: string): Promise<void> {
    let pageToken = "";
    do {
      const page = await this.client.query({
        case: "listWorkItems",
        value: { projectId, page: { pageSize: PAGE, pageToken } },
      });
      for (const item of page.items) this.items.put(item);
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  // --- changing ---

  /** Runs a command; stores its entity at once (the event that follows changes nothing). */
  async #command(kind: CommandKind): Promise<CommandResult> {
    const result = await this.client.command(kind);
    if (result.entity) this.#putEntity(result.entity);
    this.warn(result.warnings);
    this.changed();
    return result;
  }

  /** Creates a project with one lane per status (WIP limits on the middle ones). */
  async createProject(key: string, name: string, description: string): Promise<Project> {
    const project = entityOf(
      await this.#command({ case: "createProject", value: { key, name, description } }),
      "project",
    );
    const lanes: [string, WorkItemStatus, number | undefined][] = [
      ["Backlog", WorkItemStatus.BACKLOG, undefined],
      ["To do", WorkItemStatus.TODO, undefined],
      ["In progress", WorkItemStatus.IN_PROGRESS, 3],
      ["Review", WorkItemStatus.REVIEW, 2],
      ["Done", WorkItemStatus.DONE, undefined],
    ];
    const batch = await this.client.batch(
      lanes.map(([laneName, status, wipLimit], position) => ({
        kind: {
          case: "createSwimLane" as const,
          value: { projectId: project.id, name: laneName, status, position, wipLimit },
        },
      })),
      { atomic: true },
    );
    for (const outcome of batch.outcomes) {
      if (outcome.outcome.case === "commandResult" && outcome.outcome.value.entity) {
        this.#putEntity(outcome.outcome.value.entity);
      }
    }
    this.changed();
    return project;
  }

  async createItem(value: Extract<CommandKind, { case: "createWorkItem" }>["value"]): Promise<WorkItem> {
    return entityOf(await this.#command({ case: "createWorkItem", value }), "workItem");
  }

  /**
   * Saves the fields of `draft` that differ from `base` (the card as it was when editing
   * began), on top of `base.version`. If someone changed the card meanwhile, nothing is saved:
   * the answer carries the card as it is now.
   */
  async saveItem(base: WorkItem, draft: ItemDraft): Promise<SaveOutcome> {
    const update: Extract<CommandKind, { case: "updateWorkItem" }>["value"] = {
      id: base.id,
      expectedVersion: base.version,
      clearFields: [],
    };
    if (draft.title !== base.title) update.title = draft.title;
    if (draft.description !== base.description) update.description = draft.description;
    if (draft.status !== base.status) update.status = draft.status;
    if (draft.priority !== base.priority) update.priority = draft.priority;
    if (draft.storyPoints !== base.storyPoints) {
      if (draft.storyPoints === undefined) update.clearFields!.push("story_points");
      else update.storyPoints = draft.storyPoints;
    }
    if (draft.assigneeId !== base.assigneeId) {
      if (draft.assigneeId === undefined) update.clearFields!.push("assignee_id");
      else update.assigneeId = draft.assigneeId;
    }
    // Anything besides id, version and the (empty) clear list is a change.
    const changed = Object.keys(update).length > 3 || update.clearFields!.length > 0;
    const sprintChanged = draft.sprintId !== base.sprintId;
    try {
      let item = base;
      if (changed && sprintChanged) {
        // One step, all or nothing: the move follows the update's version.
        const batch = await this.client.batch(
          [
            { kind: { case: "updateWorkItem", value: update } },
            {
              kind: {
                case: "moveWorkItem",
                value: { id: base.id, expectedVersion: base.version + 1n, sprintId: draft.sprintId ?? "" },
              },
            },
          ],
          { atomic: true },
        );
        for (const outcome of batch.outcomes) {
          if (outcome.outcome.case === "commandResult") this.warn(outcome.outcome.value.warnings);
        }
        const last = batch.outcomes[batch.outcomes.length - 1]?.outcome;
        if (last?.case === "commandResult" && last.value.entity) {
          this.#putEntity(last.value.entity);
          item = entityOf(last.value.entity, "workItem");
        }
      } else if (changed) {
        item = entityOf(await this.#command({ case: "updateWorkItem", value: update }), "workItem");
      } else if (sprintChanged) {
        item = entityOf(
          await this.#command({
            case: "moveWorkItem",
            value: { id: base.id, expectedVersion: base.version, sprintId: draft.sprintId ?? "" },
          }),
          "workItem",
        );
      }
      this.changed();
      return { ok: true, item };
    } catch (error) {
      return this.#failed(error);
    }
  }

  /**
   * Moves a card to `status`, between `afterId` and `beforeId` (either absent: first or last).
   * A card changed by someone else meanwhile is reloaded and the move is not made.
   */
  async move(item: WorkItem, status: WorkItemStatus, afterId?: string, beforeId?: string): Promise<SaveOutcome> {
    try {
      const moved = entityOf(
        await this.#command({
          case: "moveWorkItem",
          value: {
            id: item.id,
            expectedVersion: item.version,
            status: status === item.status ? undefined : status,
            afterId,
            beforeId,
          },
        }),
        "workItem",
      );
      return { ok: true, item: moved };
    } catch (error) {
      const outcome = this.#failed(error);
      this.notify("error", `Not moved: ${outcome.message}`);
      return outcome;
    }
  }

  async comment(workItemId: string, content: string): Promise<void> {
    await this.#command({ case: "createComment", value: { workItemId, content } });
  }

  async createSprint(projectId: string, name: string): Promise<Sprint> {
    return entityOf(await this.#command({ case: "createSprint", value: { projectId, name } }), "sprint");
  }

  async setWipLimit(lane: SwimLane, limit: number | undefined): Promise<void> {
    try {
      await this.#command({
        case: "updateSwimLane",
        value: {
          id: lane.id,
          expectedVersion: lane.version,
          wipLimit: limit,
          clearFields: limit === undefined ? ["wip_limit"] : [],
        },
      });
    } catch (error) {
      const outcome = this.#failed(error);
      this.notify("error", `WIP limit not changed: ${outcome.message}`);
    }
  }

  /** A failed save: a conflict stores and returns the current entity and says who changed it. */
  #failed(error: unknown): { ok: false; conflict?: WorkItem; message: string } {
    if (error instanceof PmError && error.code === ErrorCode.CONFLICT && error.current) {
      this.#putEntity(error.current);
      this.changed();
      if (error.current.kind.case === "workItem") {
        const current = error.current.kind.value;
        return {
          ok: false,
          conflict: current,
          message:
            `${current.displayKey} was changed by ${current.updatedBy} meanwhile (now version ${current.version}). ` +
            "Your change was not applied, so nothing of theirs was overwritten; the card now shows its current state.",
        };
      }
    }
    return { ok: false, message: describe(error) };
  }

  // --- events ---

  #apply(event: Event): void {
    const change = event.change;
    if (change.case === undefined) return;
    this.#putEntity({ kind: change } as Entity);
    // Someone joined or left a project: the people to name may have changed.
    if (change.case === "projectMember") void this.loadUsers();
    if (this.loaded.has(event.projectId)) {
      this.#addActivity(event.projectId, [
        {
          seq: event.seq,
          at: event.at,
          actorId: event.actorId,
          actorName: "",
          action: event.action,
          entityType: event.entityType,
          label: labelOf(change as Entity["kind"], this),
          changes: event.changes,
        },
      ]);
    }
    this.changed();
  }

  #putEntity(entity: Entity): void {
    const kind = entity.kind;
    switch (kind.case) {
      case "project":
        this.projects.put(kind.value);
        break;
      case "workItem": {
        // `blocked` is set by queries only: a version without it keeps the last one known.
        const known = this.items.rows.get(kind.value.id);
        const item =
          kind.value.blocked === undefined && known?.blocked !== undefined
            ? { ...kind.value, blocked: known.blocked }
            : kind.value;
        this.items.put(item);
        break;
      }
      case "swimLane":
        this.lanes.put(kind.value);
        break;
      case "sprint":
        this.sprints.put(kind.value);
        break;
      case "comment":
        this.comments.put(kind.value);
        break;
      case "projectMember":
        this.#putMember(kind.value);
        break;
      default:
        break;
    }
  }

  #putMember(member: ProjectMember): void {
    const key = `${member.projectId}/${member.userId}`;
    const known = this.members.get(key);
    if (known && known.version > member.version) return;
    if (member.deletedAt !== undefined) this.members.delete(key);
    else this.members.set(key, member);
  }

  #addActivity(projectId: string, rows: ActivityRow[]): void {
    const known = this.activity.get(projectId) ?? [];
    const seen = new Set(known.map((r) => r.seq));
    const merged = [...known, ...rows.filter((r) => !seen.has(r.seq))];
    merged.sort((a, b) => (a.seq > b.seq ? -1 : a.seq < b.seq ? 1 : 0));
    this.activity.set(projectId, merged.slice(0, 100));
  }
}

/** What the editor holds for a work item. */
export interface ItemDraft {
  title: string;
  description: string;
  status: WorkItemStatus;
  priority: number;
  storyPoints: number | undefined;
  assigneeId: string | undefined;
  sprintId: string | undefined;
}

function rowOfEntry(entry: ActivityEntry, store: Store): ActivityRow {
  return {
    seq: entry.seq,
    at: entry.at,
    actorId: entry.actorId,
    actorName: entry.actorName,
    action: entry.action,
    entityType: entry.entityType,
    label: entry.entity ? labelOf(entry.entity.kind, store) : entry.entityId,
    changes: entry.changes,
  };
}

/** How an entity is named in the feed, e.g. `PM-3 “Login”`. */
function labelOf(kind: Entity["kind"], store: Store): string {
  switch (kind.case) {
    case "workItem":
      return `${kind.value.displayKey} “${kind.value.title}”`;
    case "comment": {
      const item = store.items.rows.get(kind.value.workItemId);
      return `on ${item ? item.displayKey : "a card"}: “${clip(kind.value.content)}”`;
    }
    case "project":
      return `${kind.value.key} “${kind.value.name}”`;
    case "sprint":
      return `“${kind.value.name}”`;
    case "swimLane":
      return `“${kind.value.name}”`;
    case "projectMember":
      return kind.value.userId;
    default:
      return "";
  }
}

function clip(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}…` : text;
}
