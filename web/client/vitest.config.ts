import { defineConfig } from "vitest/config";

// The tests start real pm-server processes (PM_SERVER_BIN); each file has its own servers.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
