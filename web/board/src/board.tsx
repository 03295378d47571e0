// A project's board: toolbar (sprint filter, search, new item), columns with cards (drag and
// drop, or the move buttons and Alt+arrow keys), the activity feed, and the item dialog.

import { useEffect, useRef, useState } from "preact/hooks";
import { ChangeAction, EntityType, ProjectRole } from "@pm-server/client";
import type { Project, SearchHit, SwimLane, WorkItem, WorkItemStatus } from "@pm-server/client";
import { ItemDialog } from "./dialog.tsx";
import {
  ACTION_NAMES,
  ENTITY_NAMES,
  PRIORITY_NAMES,
  ROLE_NAMES,
  SPRINT_STATUS_NAMES,
  STATUSES,
  STATUS_NAMES,
  TYPE_NAMES,
  when,
} from "./labels.ts";
import type { ActivityRow, Store } from "./store.ts";
import { describe } from "./store.ts";

/** One column: a swim lane, or a status that has none. */
interface Column {
  key: string;
  name: string;
  status: WorkItemStatus;
  lane?: SwimLane;
}

function columnsOf(store: Store, projectId: string): Column[] {
  const lanes = store.lanesOf(projectId);
  const columns: Column[] = lanes.map((lane) => ({ key: lane.id, name: lane.name, status: lane.status, lane }));
  // A status without a lane still gets a column: no card is ever out of sight.
  for (const status of STATUSES) {
    if (!lanes.some((l) => l.status === status)) {
      columns.push({ key: `status-${status}`, name: STATUS_NAMES[status] ?? "", status });
    }
  }
  return columns;
}

/**
 * The card whose button takes the focus once it is rendered where a move put it: at the
 * version the move's answer carries. The answer may come before the move's event; the card
 * still shown at its old place must not take the focus, since the event then renders it anew
 * in its new column and the focus would be lost.
 */
let focusAfterMove: { id: string; version: bigint } | undefined;
/** Cards with a move on the way: another press waits for the answer (it would be a conflict). */
const moving = new Set<string>();

type Editing = { mode: "create"; status: WorkItemStatus } | { mode: "edit"; id: string };

export function ProjectView({ store, project }: { store: Store; project: Project }) {
  const [loadError, setLoadError] = useState<string>();
  const [sprint, setSprint] = useState("all");
  const [query, setQuery] = useState("");
  const [hits, setHits] = useState<SearchHit[]>();
  const [editing, setEditing] = useState<Editing>();
  const [dragged, setDragged] = useState<string>();

  useEffect(() => {
    store.loadProject(project.id).catch((e: unknown) => setLoadError(describe(e)));
  }, [project.id]);

  // Full-text search on the server (`Search` in this project: work items, comments, sprints,
  // LLM context), words as prefixes.
  useEffect(() => {
    const text = query.trim();
    if (!text) {
      setHits(undefined);
      return;
    }
    const terms = /[*"]/.test(text) ? text : text.split(/\s+/).map((w) => `${w}*`).join(" ");
    let current = true;
    const timer = setTimeout(() => {
      store.search(project.id, terms).then(
        (found) => current && setHits(found),
        (e: unknown) => current && store.notify("error", `Search failed: ${describe(e)}`),
      );
    }, 200);
    return () => {
      current = false;
      clearTimeout(timer);
    };
  }, [query, project.id]);

  if (loadError) {
    return (
      <main class="centered">
        <p role="alert" class="error">
          Could not load the board: {loadError}
        </p>
      </main>
    );
  }
  if (!store.loaded.has(project.id)) {
    return (
      <main class="centered">
        <p role="status">Loading {project.key}…</p>
      </main>
    );
  }

  const role = store.role(project.id);
  const canEdit = role >= ProjectRole.EDITOR;
  const sprints = store.sprintsOf(project.id);
  const all = store.itemsOf(project.id);
  // While searching, the board shows the work items hit (themselves or by a comment on them).
  const matches = hits && new Set(hits.map((h) => h.workItemId).filter((id) => id));
  const visible = all.filter(
    (item) =>
      (sprint === "all" || (sprint === "none" ? item.sprintId === undefined : item.sprintId === sprint)) &&
      (!matches || matches.has(item.id)),
  );
  const columns = columnsOf(store, project.id);

  const newSprint = async () => {
    const name = prompt("Name of the new sprint");
    if (!name?.trim()) return;
    try {
      const created = await store.createSprint(project.id, name.trim());
      setSprint(created.id);
    } catch (e) {
      store.notify("error", `Sprint not created: ${describe(e)}`);
    }
  };

  return (
    <main class="project">
      <div class="toolbar" role="toolbar" aria-label="Board tools">
        <label>
          Sprint{" "}
          <select value={sprint} onChange={(e) => setSprint(e.currentTarget.value)} aria-label="Sprint filter">
            <option value="all">All items</option>
            <option value="none">No sprint</option>
            {sprints.map((s) => (
              <option key={s.id} value={s.id}>
                {s.name} ({SPRINT_STATUS_NAMES[s.status]})
              </option>
            ))}
          </select>
        </label>
        <button type="button" class="secondary small" onClick={newSprint} disabled={!canEdit}>
          New sprint
        </button>
        <input
          type="search"
          class="search"
          placeholder="Search cards, comments, sprints"
          aria-label="Search"
          value={query}
          onInput={(e) => setQuery(e.currentTarget.value)}
        />
        {matches && (
          <span class="hint" role="status">
            {visible.length} found
          </span>
        )}
        <span class="spacer" />
        <span class={`role ${canEdit ? "" : "read-only"}`} title="your role in this project">
          {ROLE_NAMES[role] ?? "no role"}
          {!canEdit && " · read only"}
        </span>
        <button
          type="button"
          onClick={() => setEditing({ mode: "create", status: columns[0]?.status ?? STATUSES[0]! })}
          disabled={!canEdit}
        >
          New item
        </button>
      </div>
      {hits && (
        <SearchHits
          hits={hits}
          onOpen={(hit) => {
            if (hit.workItemId) setEditing({ mode: "edit", id: hit.workItemId });
            else if (hit.entityType === EntityType.SPRINT) setSprint(hit.entityId);
          }}
        />
      )}
      <div class="layout">
        <div class="board" aria-label={`${project.key} board`}>
          {columns.map((column, index) => (
            <ColumnView
              key={column.key}
              store={store}
              column={column}
              cards={visible.filter((i) => i.status === column.status)}
              wip={all.filter((i) => i.status === column.status).length}
              canEdit={canEdit}
              prev={columns[index - 1]}
              next={columns[index + 1]}
              columns={columns}
              visible={visible}
              dragged={dragged}
              setDragged={setDragged}
              onOpen={(id) => setEditing({ mode: "edit", id })}
            />
          ))}
        </div>
        <Activity store={store} projectId={project.id} />
      </div>
      {editing && (
        <ItemDialog
          store={store}
          project={project}
          itemId={editing.mode === "edit" ? editing.id : undefined}
          initialStatus={editing.mode === "create" ? editing.status : undefined}
          initialSprint={sprint !== "all" && sprint !== "none" ? sprint : undefined}
          canEdit={canEdit}
          onClose={() => setEditing(undefined)}
        />
      )}
    </main>
  );
}

interface ColumnProps {
  store: Store;
  column: Column;
  cards: WorkItem[];
  wip: number;
  canEdit: boolean;
  prev: Column | undefined;
  next: Column | undefined;
  columns: Column[];
  visible: WorkItem[];
  dragged: string | undefined;
  setDragged: (id: string | undefined) => void;
  onOpen: (id: string) => void;
}

function ColumnView(props: ColumnProps) {
  const { store, column, cards, wip, canEdit, dragged } = props;
  const list = useRef<HTMLUListElement>(null);
  const [dropIndex, setDropIndex] = useState<number>();
  const limit = column.lane?.wipLimit;
  const over = limit !== undefined && wip > limit;
  const headingId = `col-${column.key}`;
  const others = cards.filter((c) => c.id !== dragged);

  /** Where among the cards (the dragged one left out) the pointer would drop. */
  const indexAt = (y: number): number => {
    const elements = [...(list.current?.querySelectorAll<HTMLElement>("li.card") ?? [])].filter(
      (el) => el.dataset.id !== dragged,
    );
    const index = elements.findIndex((el) => {
      const box = el.getBoundingClientRect();
      return y < box.top + box.height / 2;
    });
    return index === -1 ? elements.length : index;
  };

  const drop = (e: DragEvent) => {
    e.preventDefault();
    const id = e.dataTransfer?.getData("text/plain") || dragged;
    setDropIndex(undefined);
    props.setDragged(undefined);
    const item = id ? store.items.get(id) : undefined;
    if (!item) return;
    const index = indexAt(e.clientY);
    void store.move(item, column.status, others[index - 1]?.id, others[index]?.id);
  };

  const editWip = async () => {
    if (!column.lane) return;
    const answer = prompt(`WIP limit of “${column.name}” (empty: none)`, limit?.toString() ?? "");
    if (answer === null) return;
    const value = answer.trim() === "" ? undefined : Number(answer);
    if (value !== undefined && !(Number.isInteger(value) && value >= 1)) {
      store.notify("error", "A WIP limit is a whole number from 1 up.");
      return;
    }
    await store.setWipLimit(column.lane, value);
  };

  return (
    <section
      class={`column ${over ? "over-limit" : ""} ${dropIndex !== undefined ? "drop-target" : ""}`}
      aria-labelledby={headingId}
      data-status={STATUS_NAMES[column.status]}
    >
      <header>
        <h2 id={headingId}>{column.name}</h2>
        <span
          class={`wip ${over ? "over" : ""}`}
          title={limit !== undefined ? `work in progress ${wip}, limit ${limit}` : `${wip} items`}
          aria-label={limit !== undefined ? `${wip} of at most ${limit} items${over ? ", over the limit" : ""}` : `${wip} items`}
        >
          {wip}
          {limit !== undefined && `/${limit}`}
        </span>
        {column.lane && canEdit && (
          <button type="button" class="icon" onClick={editWip} aria-label={`Set the WIP limit of ${column.name}`}>
            ⚙
          </button>
        )}
      </header>
      <ul
        ref={list}
        class="cards"
        onDragOver={(e) => {
          if (!dragged) return;
          e.preventDefault();
          if (e.dataTransfer) e.dataTransfer.dropEffect = "move";
          setDropIndex(indexAt(e.clientY));
        }}
        onDragLeave={(e) => {
          if (!list.current?.contains(e.relatedTarget as Node)) setDropIndex(undefined);
        }}
        onDrop={drop}
      >
        {cards.map((item) => (
          <Card
            key={item.id}
            item={item}
            {...props}
            dropBefore={dropIndex !== undefined && others[dropIndex]?.id === item.id}
          />
        ))}
        {dropIndex !== undefined && dropIndex >= others.length && <li class="drop-marker" aria-hidden="true" />}
        {cards.length === 0 && <li class="empty">No items</li>}
      </ul>
    </section>
  );
}

function Card(props: ColumnProps & { item: WorkItem; dropBefore: boolean }) {
  const { store, item, column, cards, canEdit, prev, next, onOpen } = props;
  const index = cards.findIndex((c) => c.id === item.id);
  const button = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (focusAfterMove?.id === item.id && item.version >= focusAfterMove.version) {
      focusAfterMove = undefined;
      button.current?.focus();
    }
  });
  // A keyboard user keeps the card under focus wherever it goes.
  const move = async (status: WorkItemStatus, afterId: string | undefined, beforeId: string | undefined) => {
    if (moving.has(item.id)) return;
    moving.add(item.id);
    try {
      const outcome = await store.move(item, status, afterId, beforeId);
      if (outcome.ok) focusAfterMove = { id: item.id, version: outcome.item.version };
    } finally {
      moving.delete(item.id);
      store.changed();
    }
  };
  const moveTo = (target: Column) => {
    // Last in the target column, among what is shown there.
    const there = props.visible.filter((i) => i.status === target.status && i.id !== item.id);
    void move(target.status, there[there.length - 1]?.id, undefined);
  };
  const up = () => {
    if (index <= 0) return;
    void move(column.status, cards[index - 2]?.id, cards[index - 1]!.id);
  };
  const down = () => {
    if (index < 0 || index >= cards.length - 1) return;
    void move(column.status, cards[index + 1]!.id, cards[index + 2]?.id);
  };
  const onKey = (e: KeyboardEvent) => {
    if (!e.altKey || !canEdit) return;
    const action = {
      ArrowLeft: () => prev && moveTo(prev),
      ArrowRight: () => next && moveTo(next),
      ArrowUp: up,
      ArrowDown: down,
    }[e.key];
    if (action) {
      e.preventDefault();
      action();
    }
  };
  const title = `${item.displayKey}: ${item.title}`;

  return (
    <li
      class={`card priority-${item.priority} ${props.dragged === item.id ? "dragging" : ""} ${props.dropBefore ? "drop-before" : ""}`}
      data-id={item.id}
      data-key={item.displayKey}
      draggable={canEdit}
      onDragStart={(e) => {
        e.dataTransfer?.setData("text/plain", item.id);
        if (e.dataTransfer) e.dataTransfer.effectAllowed = "move";
        props.setDragged(item.id);
      }}
      onDragEnd={() => props.setDragged(undefined)}
    >
      <button
        ref={button}
        type="button"
        class="card-open"
        onClick={() => onOpen(item.id)}
        onKeyDown={onKey}
        aria-label={`${title}. ${TYPE_NAMES[item.itemType] ?? ""}, ${PRIORITY_NAMES[item.priority] ?? ""} priority${
          canEdit ? ". Alt+arrow keys move it" : ""
        }`}
        aria-keyshortcuts={canEdit ? "Alt+ArrowLeft Alt+ArrowRight Alt+ArrowUp Alt+ArrowDown" : undefined}
      >
        <span class="card-key">{item.displayKey}</span>
        <span class="card-title">{item.title}</span>
        <span class="badges">
          <span class={`badge type-${item.itemType}`}>{TYPE_NAMES[item.itemType]}</span>
          <span class="badge">{PRIORITY_NAMES[item.priority]}</span>
          {item.storyPoints !== undefined && <span class="badge">{item.storyPoints} pt</span>}
          {item.assigneeId && (
            <span class="badge assignee" title={item.assigneeId}>
              @{store.nameOf(item.assigneeId)}
            </span>
          )}
          {item.blocked && <span class="badge blocked">Blocked</span>}
        </span>
      </button>
      <span class="moves" role="group" aria-label={`Move ${item.displayKey}`}>
        <MoveButton
          label={`Move ${item.displayKey} to ${prev?.name ?? "the left"}`}
          disabled={!canEdit || !prev}
          onClick={() => prev && moveTo(prev)}
        >
          ←
        </MoveButton>
        <MoveButton label={`Move ${item.displayKey} up`} disabled={!canEdit || index <= 0} onClick={up}>
          ↑
        </MoveButton>
        <MoveButton
          label={`Move ${item.displayKey} down`}
          disabled={!canEdit || index >= cards.length - 1}
          onClick={down}
        >
          ↓
        </MoveButton>
        <MoveButton
          label={`Move ${item.displayKey} to ${next?.name ?? "the right"}`}
          disabled={!canEdit || !next}
          onClick={() => next && moveTo(next)}
        >
          →
        </MoveButton>
      </span>
    </li>
  );
}

/** The search's hits with their snippets (matched words marked); a hit opens what it found. */
function SearchHits({ hits, onOpen }: { hits: SearchHit[]; onOpen: (hit: SearchHit) => void }) {
  return (
    <section class="search-hits" aria-label="Results">
      {hits.length === 0 ? (
        <p class="empty">Nothing found.</p>
      ) : (
        <ol>
          {hits.map((hit) => {
            const opens = hit.workItemId !== "" || hit.entityType === EntityType.SPRINT;
            const body = (
              <>
                <span class="hit-head">
                  {hit.displayKey && <span class="card-key">{hit.displayKey}</span>}{" "}
                  <span class="hit-title">{hit.title}</span>{" "}
                  <span class="hint">{ENTITY_NAMES[hit.entityType] ?? "entity"}</span>
                </span>
                <span class="snippet">
                  {hit.snippet.map((part, i) => (part.matched ? <mark key={i}>{part.text}</mark> : part.text))}
                </span>
              </>
            );
            return (
              <li key={`${hit.entityType}/${hit.entityId}`} data-id={hit.entityId}>
                {opens ? (
                  <button type="button" class="hit" onClick={() => onOpen(hit)}>
                    {body}
                  </button>
                ) : (
                  <span class="hit">{body}</span>
                )}
              </li>
            );
          })}
        </ol>
      )}
    </section>
  );
}

function MoveButton(props: { label: string; disabled: boolean; onClick: () => void; children: string }) {
  return (
    <button type="button" class="icon" disabled={props.disabled} onClick={props.onClick} aria-label={props.label} title={props.label}>
      {props.children}
    </button>
  );
}

/** What an update changed, e.g. `status: todo → in_progress` (ranks are noise to people). */
function Changes({ row }: { row: ActivityRow }) {
  const shown = row.changes.filter((c) => c.field !== "rank" && c.field !== "description");
  if (shown.length === 0) return null;
  return (
    <span class="changes">
      {" "}
      ({shown.map((c) => `${c.field}: ${c.oldValue ?? "–"} → ${c.newValue ?? "–"}`).join(", ")})
    </span>
  );
}

function Activity({ store, projectId }: { store: Store; projectId: string }) {
  const rows = store.activity.get(projectId) ?? [];
  return (
    <aside class="activity" aria-labelledby="activity-title">
      <h2 id="activity-title">Activity</h2>
      {rows.length === 0 ? (
        <p class="empty">Nothing yet.</p>
      ) : (
        <ol>
          {rows.map((row) => (
            <li key={row.seq.toString()} data-seq={row.seq.toString()}>
              <span class="who" title={row.actorId}>
                {row.actorName || store.nameOf(row.actorId)}
              </span> {ACTION_NAMES[row.action] ?? "changed"}{" "}
              {ENTITY_NAMES[row.entityType] ?? "entity"} <span class="what">{row.label}</span>
              {row.action !== ChangeAction.CREATED && <Changes row={row} />}
              <span class="meta">
                #{row.seq.toString()} · <time>{when(row.at)}</time>
              </span>
            </li>
          ))}
        </ol>
      )}
    </aside>
  );
}
