// Typed access to the `Entity` oneof of command results, conflicts and activity entries.

import type { Entity } from "./gen/pm/v1/entities_pb.js";
import { PmError } from "./errors.js";

/** The name of an entity kind, e.g. `workItem`. */
export type EntityCase = NonNullable<Entity["kind"]["case"]>;

/** The message of entity kind `K`, e.g. `WorkItem` for `workItem`. */
export type EntityFor<K extends EntityCase> = Extract<Entity["kind"], { case: K }>["value"];

/**
 * The entity of kind `kind` in `source` (a `CommandResult`, an `ActivityEntry`, a
 * {@link PmError}'s `current`, or an `Entity`); throws a `protocol` {@link PmError} if it holds
 * another kind or none. (For a conflict, pass `error.current`.)
 *
 * ```ts
 * const project = entityOf(await client.command({ case: "createProject", value }), "project");
 * ```
 */
export function entityOf<K extends EntityCase>(
  source: { entity?: Entity | undefined } | Entity | undefined,
  kind: K,
): EntityFor<K> {
  const entity = isEntity(source) ? source : source?.entity;
  if (entity?.kind.case !== kind) {
    throw new PmError(`expected a ${kind}, got ${entity?.kind.case ?? "no entity"}`, {
      kind: "protocol",
    });
  }
  return entity.kind.value as EntityFor<K>;
}

function isEntity(value: unknown): value is Entity {
  return (value as { $typeName?: unknown } | undefined)?.$typeName === "pm.v1.Entity";
}
