// Entry: the token (from `#token=…`, then session storage, else a form), the connection, the app.

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { PmError, CloseReason } from "@pm-server/client";
import { App } from "./app.tsx";
import { Store, describe } from "./store.ts";
import "./style.css";

const TOKEN_KEY = "pm-board-token";

/**
 * The token handed over in the address (`#token=…`, as `serve --dev` prints it), moved to
 * session storage and removed from the address bar (and so from history and bookmarks); else
 * the one of this tab's session.
 */
function takeToken(): string | undefined {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const handed = fragment.get("token");
  if (handed) {
    sessionStorage.setItem(TOKEN_KEY, handed);
    fragment.delete("token");
    const rest = fragment.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
    return handed;
  }
  return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
}

function wsUrl(): string {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
}

function Root() {
  const [token, setToken] = useState(takeToken);
  const [store, setStore] = useState<Store>();
  const [error, setError] = useState<string>();
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    if (!token) return;
    let cancelled = false;
    setError(undefined);
    Store.open(wsUrl(), token).then(
      (opened) => {
        if (cancelled) opened.close();
        else setStore(opened);
      },
      (failure: unknown) => {
        if (cancelled) return;
        if (failure instanceof PmError && failure.kind === "rejected" && failure.closeCode === 4001) {
          sessionStorage.removeItem(TOKEN_KEY);
          setToken(undefined);
          setError(`The server refused this token: ${failure.goodbye?.message ?? failure.message}`);
        } else {
          setError(`Could not connect: ${describe(failure)}`);
        }
      },
    );
    return () => {
      cancelled = true;
    };
  }, [token, attempt]);

  useEffect(() => () => store?.close(), [store]);

  const signOut = (message?: string) => {
    sessionStorage.removeItem(TOKEN_KEY);
    store?.close();
    setStore(undefined);
    setToken(undefined);
    setError(message);
  };

  if (!token) {
    return (
      <SignIn
        error={error}
        onToken={(t) => {
          sessionStorage.setItem(TOKEN_KEY, t);
          setToken(t);
        }}
      />
    );
  }
  if (!store) {
    return (
      <main class="centered">
        {error ? (
          <div class="panel" role="alert">
            <p>{error}</p>
            <p>
              <button type="button" onClick={() => setAttempt((n) => n + 1)}>
                Try again
              </button>{" "}
              <button type="button" class="secondary" onClick={() => signOut()}>
                Use another token
              </button>
            </p>
          </div>
        ) : (
          <p role="status">Connecting…</p>
        )}
      </main>
    );
  }
  const offline = store.connection.status === "offline";
  const expired =
    offline &&
    (store.connection.goodbye?.reason === CloseReason.AUTH_EXPIRED || store.connection.closeCode === 4001);
  return (
    <App
      store={store}
      onSignOut={() => signOut()}
      banner={expired ? "Your session has expired: sign in again with a new token." : undefined}
    />
  );
}

function SignIn({ error, onToken }: { error?: string; onToken: (token: string) => void }) {
  const [value, setValue] = useState("");
  return (
    <main class="centered">
      <form
        class="panel sign-in"
        onSubmit={(e) => {
          e.preventDefault();
          if (value.trim()) onToken(value.trim());
        }}
      >
        <h1>pm-server board</h1>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        <label for="token">Access token</label>
        <textarea
          id="token"
          rows={4}
          value={value}
          onInput={(e) => setValue(e.currentTarget.value)}
          placeholder="eyJ…"
          autocomplete="off"
          spellcheck={false}
          required
        />
        <p class="hint">
          <code>pm-server serve --dev</code> prints a link that signs you in;{" "}
          <code>pm-server token --tenant T --user U</code> mints a token. It is kept for this tab only.
        </p>
        <button type="submit">Sign in</button>
      </form>
    </main>
  );
}

render(<Root />, document.getElementById("app")!);
