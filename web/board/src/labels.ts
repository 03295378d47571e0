// Names shown for the protocol's enums, and the small helpers the views share.

import {
  ChangeAction,
  EntityType,
  Priority,
  ProjectRole,
  SprintStatus,
  WorkItemStatus,
  WorkItemType,
} from "@pm-server/client";
import type { WorkItem } from "@pm-server/client";

/** The board's statuses, left to right. */
export const STATUSES: readonly WorkItemStatus[] = [
  WorkItemStatus.BACKLOG,
  WorkItemStatus.TODO,
  WorkItemStatus.IN_PROGRESS,
  WorkItemStatus.REVIEW,
  WorkItemStatus.DONE,
  WorkItemStatus.CANCELLED,
];

export const STATUS_NAMES: Record<number, string> = {
  [WorkItemStatus.BACKLOG]: "Backlog",
  [WorkItemStatus.TODO]: "To do",
  [WorkItemStatus.IN_PROGRESS]: "In progress",
  [WorkItemStatus.REVIEW]: "Review",
  [WorkItemStatus.DONE]: "Done",
  [WorkItemStatus.CANCELLED]: "Cancelled",
};

export const TYPES: readonly WorkItemType[] = [
  WorkItemType.EPIC,
  WorkItemType.STORY,
  WorkItemType.TASK,
  WorkItemType.BUG,
];

export const TYPE_NAMES: Record<number, string> = {
  [WorkItemType.EPIC]: "Epic",
  [WorkItemType.STORY]: "Story",
  [WorkItemType.TASK]: "Task",
  [WorkItemType.BUG]: "Bug",
};

export const PRIORITIES: readonly Priority[] = [
  Priority.LOW,
  Priority.MEDIUM,
  Priority.HIGH,
  Priority.CRITICAL,
];

export const PRIORITY_NAMES: Record<number, string> = {
  [Priority.LOW]: "Low",
  [Priority.MEDIUM]: "Medium",
  [Priority.HIGH]: "High",
  [Priority.CRITICAL]: "Critical",
};

export const ROLE_NAMES: Record<number, string> = {
  [ProjectRole.VIEWER]: "viewer",
  [ProjectRole.EDITOR]: "editor",
  [ProjectRole.ADMIN]: "admin",
};

export const SPRINT_STATUS_NAMES: Record<number, string> = {
  [SprintStatus.PLANNED]: "planned",
  [SprintStatus.ACTIVE]: "active",
  [SprintStatus.COMPLETED]: "completed",
  [SprintStatus.CANCELLED]: "cancelled",
};

export const ACTION_NAMES: Record<number, string> = {
  [ChangeAction.CREATED]: "created",
  [ChangeAction.UPDATED]: "updated",
  [ChangeAction.DELETED]: "deleted",
  [ChangeAction.RESTORED]: "restored",
  [ChangeAction.MOVED]: "moved",
};

export const ENTITY_NAMES: Record<number, string> = {
  [EntityType.PROJECT]: "project",
  [EntityType.PROJECT_MEMBER]: "member",
  [EntityType.WORK_ITEM]: "work item",
  [EntityType.SPRINT]: "sprint",
  [EntityType.COMMENT]: "comment",
  [EntityType.TIME_ENTRY]: "time entry",
  [EntityType.DEPENDENCY]: "dependency",
  [EntityType.SWIM_LANE]: "lane",
  [EntityType.LLM_CONTEXT]: "LLM context",
};

/** Board order: by `rank` byte-wise (ranks are ASCII), then by id, as the server orders them. */
export function byRank(a: WorkItem, b: WorkItem): number {
  if (a.rank !== b.rank) return a.rank < b.rank ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** A Unix-millisecond time as a short local time. */
export function when(at: bigint): string {
  const date = new Date(Number(at));
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : date.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
}
