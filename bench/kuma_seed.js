// Seeds a fresh Uptime Kuma for bench/e2e.py's side-by-side run (bench/kuma.py), through
// the socket.io API its web UI uses: create the admin (`setup`), `login`, then `add` N HTTP
// monitors, a few in flight at a time, and disconnect so that no UI session is connected
// while the bench measures. Each `add` stores the monitor and starts it at once, which is
// much faster than rows inserted before the start (Kuma starts those one every 0.3-1 s).
//
// Our bench code, not Kuma's: socket.io-client is taken from the Kuma checkout's
// node_modules (KUMA_DIR). Arguments: URL N INTERVAL TARGET TIMEOUT_S. Exits 0 once every
// monitor is added, 1 with the reason on stderr otherwise.

"use strict";

const path = require("path");
const { createRequire } = require("module");

const [url, count, interval, target, timeout] = process.argv.slice(2);
const kuma = process.env.KUMA_DIR;
const { io } = createRequire(path.join(kuma, "package.json"))("socket.io-client");

const USER = "bench";
const PASSWORD = "bench-Kuma-2-side-by-side";
const IN_FLIGHT = 8;

function fail(message) {
    process.stderr.write(`kuma_seed: ${message}\n`);
    process.exit(1);
}

const waiting = setTimeout(() => fail("Kuma did not ask for its setup within 120 s"), 120_000);

const socket = io(url, { transports: ["websocket"], reconnectionDelay: 200 });

function call(event, ...args) {
    return new Promise((resolve) => socket.emit(event, ...args, resolve));
}

function monitor(i) {
    return {
        type: "http",
        name: `bench-${i}`,
        url: target,
        method: "GET",
        interval: Number(interval),
        retryInterval: Number(interval),
        resendInterval: 0,
        maxretries: 0,
        timeout: Number(timeout),
        notificationIDList: {},
        ignoreTls: false,
        upsideDown: false,
        expiryNotification: false,
        maxredirects: 10,
        accepted_statuscodes: ["200-299"],
        httpBodyEncoding: "json",
        kafkaProducerBrokers: [],
        kafkaProducerSaslOptions: { mechanism: "None" },
        rabbitmqNodes: [],
        conditions: [],
        active: true,
    };
}

// The server registers its event handlers after an await in its connection handler, right
// after it sends `setup` to a fresh instance: an event sent on `connect` can come too early.
socket.once("setup", async () => {
    clearTimeout(waiting);
    const setup = await call("setup", USER, PASSWORD);
    if (!setup.ok) {
        fail(`setup: ${setup.msg} (the data dir must be a fresh one)`);
    }
    const login = await call("login", { username: USER, password: PASSWORD, token: "" });
    if (!login.ok) {
        fail(`login: ${login.msg}`);
    }
    let next = 0;
    async function lane() {
        while (next < Number(count)) {
            const i = ++next;
            const res = await call("add", monitor(i));
            if (!res.ok) {
                fail(`add monitor ${i}: ${res.msg}`);
            }
        }
    }
    await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
    socket.disconnect();
    process.stdout.write(`${count}\n`);
    process.exit(0);
});
