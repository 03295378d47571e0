// The signed-in page: header with the connection state, notices, projects or a project's board.

import { useEffect, useState } from "preact/hooks";
import type { ConnectionState } from "@pm-server/client";
import { ProjectView } from "./board.tsx";
import type { Store } from "./store.ts";
import { describe } from "./store.ts";

/** The project key in the address, `#p=KEY`. */
function useProjectKey(): string | undefined {
  const read = () => new URLSearchParams(location.hash.slice(1)).get("p") ?? undefined;
  const [key, setKey] = useState(read);
  useEffect(() => {
    const update = () => setKey(read());
    addEventListener("hashchange", update);
    return () => removeEventListener("hashchange", update);
  }, []);
  return key;
}

export function App({ store, onSignOut, banner }: { store: Store; onSignOut: () => void; banner?: string }) {
  const [, setTick] = useState(0);
  useEffect(() => store.onChange(() => setTick((n) => n + 1)), [store]);
  const key = useProjectKey();
  const project = key ? store.projectByKey(key) : undefined;

  return (
    <>
      <header class="top">
        <a class="brand" href="#">
          pm-server board
        </a>
        {project && (
          <span class="crumb">
            / {project.key} · {project.name}
          </span>
        )}
        <span class="spacer" />
        <Connection state={store.connection} />
        <span class="user" title="signed in as">
          {store.userId}
        </span>
        <button type="button" class="secondary small" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      {banner && (
        <p class="banner error" role="alert">
          {banner}{" "}
          <button type="button" class="small" onClick={onSignOut}>
            Sign in
          </button>
        </p>
      )}
      <div class="notices" aria-live="polite">
        {store.notices.map((n) => (
          <p key={n.id} class={`notice ${n.kind}`} role={n.kind === "error" ? "alert" : "status"}>
            {n.text}
            <button type="button" class="close" aria-label="Dismiss" onClick={() => store.dismiss(n.id)}>
              ×
            </button>
          </p>
        ))}
      </div>
      {key && !project ? (
        <main class="centered">
          <p>
            No project {key} here (or you are not a member). <a href="#">All projects</a>
          </p>
        </main>
      ) : project ? (
        <ProjectView key={project.id} store={store} project={project} />
      ) : (
        <Projects store={store} />
      )}
    </>
  );
}

/** The connection as the user should know it: live, reconnecting, resumed at seq N, offline. */
function Connection({ state }: { state: ConnectionState }) {
  let text: string;
  switch (state.status) {
    case "connecting":
      text = "connecting…";
      break;
    case "live":
      text = state.resumedFromSeq !== undefined ? `live · resumed at seq ${state.resumedFromSeq}` : "live";
      break;
    case "resuming":
      text = `reconnecting… (attempt ${state.attempt ?? 1})`;
      break;
    default:
      text = `offline${state.error ? `: ${state.error.message}` : ""}`;
  }
  return (
    <span
      class={`connection ${state.status}`}
      role="status"
      data-status={state.status}
      title={`last event seq ${state.lastSeq}`}
    >
      <span class="dot" aria-hidden="true" />
      {text}
    </span>
  );
}

function Projects({ store }: { store: Store }) {
  const projects = store.projectList();
  const [key, setKey] = useState("");
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);

  const create = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const project = await store.createProject(key.trim().toUpperCase(), name.trim(), description);
      setKey("");
      setName("");
      setDescription("");
      location.hash = `p=${project.key}`;
    } catch (failure) {
      setError(describe(failure));
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="projects">
      <section aria-labelledby="projects-title">
        <h1 id="projects-title">Projects</h1>
        {projects.length === 0 ? (
          <p class="empty">No projects yet: create one.</p>
        ) : (
          <ul class="project-list">
            {projects.map((p) => (
              <li key={p.id}>
                <a href={`#p=${p.key}`} class="project-link">
                  <span class="key">{p.key}</span> {p.name}
                </a>
                {p.description && <p>{p.description}</p>}
              </li>
            ))}
          </ul>
        )}
      </section>
      <form class="panel" onSubmit={create} aria-labelledby="new-project">
        <h2 id="new-project">New project</h2>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <label for="project-key">Key</label>
        <input
          id="project-key"
          value={key}
          onInput={(e) => setKey(e.currentTarget.value)}
          pattern="[A-Za-z][A-Za-z0-9]{1,9}"
          title="2 to 10 letters or digits, starting with a letter"
          placeholder="PM"
          required
        />
        <label for="project-name">Name</label>
        <input id="project-name" value={name} onInput={(e) => setName(e.currentTarget.value)} required />
        <label for="project-description">Description</label>
        <textarea
          id="project-description"
          rows={2}
          value={description}
          onInput={(e) => setDescription(e.currentTarget.value)}
        />
        <button type="submit" disabled={busy}>
          Create project
        </button>
      </form>
    </main>
  );
}
