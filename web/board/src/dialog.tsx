// Creating or editing a work item, and its comments, in a modal dialog.
//
// An edit is based on the version of the card when editing began. If someone changes the card
// meanwhile, the dialog says so at once (live), and a save is refused by the server
// (`CONFLICT`): the dialog then explains it, shows the current card, and lists the values the
// user had typed, so nothing of either side is lost or silently overwritten.

import { useEffect, useRef, useState } from "preact/hooks";
import { Priority, SprintStatus, WorkItemType } from "@pm-server/client";
import type { Project, WorkItem, WorkItemStatus } from "@pm-server/client";
import { PRIORITIES, PRIORITY_NAMES, STATUSES, STATUS_NAMES, TYPES, TYPE_NAMES, when } from "./labels.ts";
import type { ItemDraft, Store } from "./store.ts";
import { describe } from "./store.ts";

interface Props {
  store: Store;
  project: Project;
  /** The item to edit; none: a new item. */
  itemId?: string;
  initialStatus?: WorkItemStatus;
  initialSprint?: string;
  canEdit: boolean;
  onClose: () => void;
}

function draftOf(item: WorkItem | undefined, status?: WorkItemStatus, sprintId?: string): ItemDraft {
  return {
    title: item?.title ?? "",
    description: item?.description ?? "",
    status: item?.status ?? status ?? STATUSES[0]!,
    priority: item?.priority ?? Priority.MEDIUM,
    storyPoints: item?.storyPoints,
    assigneeId: item?.assigneeId,
    sprintId: item ? item.sprintId : sprintId,
  };
}

/** The fields of `draft` that differ from `base`, as “field: value” for people. */
function differences(base: WorkItem, draft: ItemDraft): string[] {
  const was = draftOf(base);
  const out: string[] = [];
  if (draft.title !== was.title) out.push(`title “${draft.title}”`);
  if (draft.description !== was.description) out.push(`description “${draft.description}”`);
  if (draft.status !== was.status) out.push(`status ${STATUS_NAMES[draft.status]}`);
  if (draft.priority !== was.priority) out.push(`priority ${PRIORITY_NAMES[draft.priority]}`);
  if (draft.storyPoints !== was.storyPoints) out.push(`points ${draft.storyPoints ?? "none"}`);
  if (draft.assigneeId !== was.assigneeId) out.push(`assignee ${draft.assigneeId ?? "none"}`);
  if (draft.sprintId !== was.sprintId) out.push("sprint");
  return out;
}

export function ItemDialog({ store, project, itemId, initialStatus, initialSprint, canEdit, onClose }: Props) {
  const dialog = useRef<HTMLDialogElement>(null);
  const live = itemId ? store.items.rows.get(itemId) : undefined;
  const [base, setBase] = useState(live);
  const [draft, setDraft] = useState(() => draftOf(live, initialStatus, initialSprint));
  const [itemType, setItemType] = useState(WorkItemType.TASK);
  const [conflict, setConflict] = useState<{ message: string; yours: string[] }>();
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const [comment, setComment] = useState("");

  useEffect(() => {
    dialog.current?.showModal();
  }, []);
  useEffect(() => {
    if (itemId) store.loadComments(itemId).catch((e: unknown) => setError(describe(e)));
  }, [itemId]);

  const editing = itemId !== undefined;
  const deleted = editing && (!live || live.deletedAt !== undefined);
  // Someone else's change arrived while this dialog is open.
  const stale = base && live && live.version > base.version;
  const set = <K extends keyof ItemDraft>(key: K, value: ItemDraft[K]) => setDraft({ ...draft, [key]: value });
  const sprints = store
    .sprintsOf(project.id)
    .filter((s) => s.id === draft.sprintId || (s.status !== SprintStatus.COMPLETED && s.status !== SprintStatus.CANCELLED));
  const members = store.memberIds(project.id);

  const reload = () => {
    if (!live) return;
    setBase(live);
    setDraft(draftOf(live));
    setConflict(undefined);
  };

  const save = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      if (!editing) {
        await store.createItem({
          projectId: project.id,
          itemType,
          title: draft.title.trim(),
          description: draft.description,
          status: draft.status,
          priority: draft.priority,
          storyPoints: draft.storyPoints,
          assigneeId: draft.assigneeId,
          sprintId: draft.sprintId,
        });
        onClose();
        return;
      }
      if (!base) return;
      const outcome = await store.saveItem(base, { ...draft, title: draft.title.trim() });
      if (outcome.ok) {
        onClose();
      } else if (outcome.conflict) {
        setConflict({ message: outcome.message, yours: differences(base, draft) });
        setBase(outcome.conflict);
        setDraft(draftOf(outcome.conflict));
      } else {
        setError(outcome.message);
      }
    } catch (failure) {
      setError(describe(failure));
    } finally {
      setBusy(false);
    }
  };

  const addComment = async (e: Event) => {
    e.preventDefault();
    if (!itemId || !comment.trim()) return;
    try {
      await store.comment(itemId, comment.trim());
      setComment("");
    } catch (failure) {
      setError(describe(failure));
    }
  };

  const title = editing ? `${base?.displayKey ?? ""} ${base?.title ?? ""}` : `New item in ${project.key}`;
  const readOnly = !canEdit || deleted;

  return (
    <dialog ref={dialog} class="item-dialog" aria-labelledby="dialog-title" onClose={onClose}>
      <form onSubmit={save}>
        <header>
          <h2 id="dialog-title">{title}</h2>
          <button type="button" class="icon close" aria-label="Close" onClick={onClose}>
            ×
          </button>
        </header>
        {conflict && (
          <div class="conflict" role="alert">
            <strong>Edit conflict.</strong> {conflict.message}
            {conflict.yours.length > 0 && <p>Your unsaved values were: {conflict.yours.join(", ")}.</p>}
          </div>
        )}
        {stale && !conflict && (
          <div class="stale" role="status">
            {live.updatedBy} changed this card while you were editing it (version {live.version.toString()}); saving
            now would be refused.{" "}
            <button type="button" class="small" onClick={reload}>
              Reload the card
            </button>
          </div>
        )}
        {deleted && <p class="error">This card was deleted.</p>}
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <fieldset disabled={readOnly || busy}>
          <label for="item-title">Title</label>
          <input
            id="item-title"
            value={draft.title}
            onInput={(e) => set("title", e.currentTarget.value)}
            maxLength={500}
            required
          />
          <label for="item-description">Description</label>
          <textarea
            id="item-description"
            rows={4}
            value={draft.description}
            onInput={(e) => set("description", e.currentTarget.value)}
          />
          <div class="grid">
            <div>
              <label for="item-type">Type</label>
              <select id="item-type"
                value={editing ? base?.itemType : itemType}
                disabled={editing}
                onChange={(e) => setItemType(Number(e.currentTarget.value))}
              >
                {TYPES.map((t) => (
                  <option key={t} value={t}>
                    {TYPE_NAMES[t]}
                  </option>
                ))}
              </select>
            </div>
            <div>
              <label for="item-status">Status</label>
              <select id="item-status" value={draft.status} onChange={(e) => set("status", Number(e.currentTarget.value))}>
                {STATUSES.map((s) => (
                  <option key={s} value={s}>
                    {STATUS_NAMES[s]}
                  </option>
                ))}
              </select>
            </div>
            <div>
              <label for="item-priority">Priority</label>
              <select id="item-priority" value={draft.priority} onChange={(e) => set("priority", Number(e.currentTarget.value))}>
                {PRIORITIES.map((p) => (
                  <option key={p} value={p}>
                    {PRIORITY_NAMES[p]}
                  </option>
                ))}
              </select>
            </div>
            <div>
              <label for="item-points">Points</label>
              <input id="item-points"
                type="number"
                min={0}
                max={1000}
                value={draft.storyPoints ?? ""}
                onInput={(e) => {
                  const v = e.currentTarget.value;
                  set("storyPoints", v === "" ? undefined : Number(v));
                }}
              />
            </div>
            <div>
              <label for="item-assignee">Assignee</label>
              <input id="item-assignee"
                list="members"
                value={draft.assigneeId ?? ""}
                onInput={(e) => set("assigneeId", e.currentTarget.value.trim() || undefined)}
                placeholder="user id"
              />
              <datalist id="members">
                {members.map((m) => (
                  <option key={m} value={m}>
                    {store.nameOf(m)}
                  </option>
                ))}
              </datalist>
              {draft.assigneeId && store.nameOf(draft.assigneeId) !== draft.assigneeId && (
                <span class="hint assignee-name">{store.nameOf(draft.assigneeId)}</span>
              )}
            </div>
            <div>
              <label for="item-sprint">Sprint</label>
              <select id="item-sprint" value={draft.sprintId ?? ""} onChange={(e) => set("sprintId", e.currentTarget.value || undefined)}>
                <option value="">No sprint</option>
                {sprints.map((s) => (
                  <option key={s.id} value={s.id}>
                    {s.name}
                  </option>
                ))}
              </select>
            </div>
          </div>
        </fieldset>
        <footer>
          {base && (
            <span class="hint">
              version {base.version.toString()} · updated by {store.nameOf(base.updatedBy)} {when(base.updatedAt)}
            </span>
          )}
          <span class="spacer" />
          <button type="button" class="secondary" onClick={onClose}>
            {readOnly ? "Close" : "Cancel"}
          </button>
          {!readOnly && (
            <button type="submit" disabled={busy}>
              {editing ? "Save" : "Create"}
            </button>
          )}
        </footer>
      </form>
      {editing && (
        <section class="comments" aria-labelledby="comments-title">
          <h3 id="comments-title">Comments</h3>
          <ol>
            {store.commentsOf(itemId).map((c) => (
              <li key={c.id}>
                <span class="who" title={c.createdBy}>
                  {store.nameOf(c.createdBy)}
                </span> <time>{when(c.createdAt)}</time>
                <p>{c.content}</p>
              </li>
            ))}
          </ol>
          <form onSubmit={addComment}>
            <label for="comment">Add a comment</label>
            <textarea
              id="comment"
              rows={2}
              value={comment}
              disabled={readOnly}
              onInput={(e) => setComment(e.currentTarget.value)}
            />
            <button type="submit" disabled={readOnly || !comment.trim()}>
              Comment
            </button>
          </form>
        </section>
      )}
    </dialog>
  );
}
