// dtmx admin: a small single-page UI over the server's HTTP API (no framework, no build step).
// Every value from the server is put into the page as text (textContent), never as HTML.
"use strict";
(() => {
  const API = "/api/dtmsvr";
  const ADMIN_API = "/api/admin";
  const TOKEN_KEY = "dtmx-admin-token";
  const REFRESH_MS = 3000;
  const STATUSES = ["prepared", "submitted", "aborting", "succeed", "failed"];
  const TYPES = ["saga", "tcc", "msg", "xa", "workflow"];
  // Roles that may change things (force-stop, retry, topics); see the server's Auth.
  const WRITE_ROLES = new Set(["operator", "admin"]);
  const view = document.getElementById("view");
  let timer = null;
  let role = null; // null: the server did not say (Auth off): everything is allowed

  // ---- small helpers ------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const badge = (s) => h("span", { class: `badge s-${s}`, "data-status": s }, s || "?");
  const canWrite = () => role === null || WRITE_ROLES.has(role);

  function fmtTime(iso) {
    if (!iso) return "";
    return iso.replace("T", " ").replace(/\.\d+/, "").replace(/\+00:00$/, "Z");
  }
  function relTime(iso) {
    if (!iso) return "";
    const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
    const a = Math.abs(s);
    const txt = a < 90 ? `${a}s` : a < 5400 ? `${Math.round(a / 60)}m` : `${Math.round(a / 3600)}h`;
    return s >= 0 ? `in ${txt}` : `${txt} ago`;
  }
  function toast(msg, bad) {
    const t = document.getElementById("toast");
    t.textContent = msg;
    t.className = bad ? "bad" : "";
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
  }

  // ---- the API, with the token when there is one ----------------------------------------
  class HttpError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  let loginPending = null;

  function askToken() {
    if (loginPending) return loginPending;
    const dlg = document.getElementById("login");
    loginPending = new Promise((resolve) => {
      dlg.addEventListener("close", function done() {
        dlg.removeEventListener("close", done);
        sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
        loginPending = null;
        resolve();
      });
    });
    dlg.showModal();
    return loginPending;
  }

  async function api(method, path, query, body) {
    const url = new URL(path, location.origin);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== "" && v !== null && v !== undefined) url.searchParams.set(k, v);
    }
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (res.status === 401) {
      document.getElementById("login-error").textContent = token ? "That token was refused." : "";
      sessionStorage.removeItem(TOKEN_KEY);
      await askToken();
      await whoami();
      return api(method, path, query, body);
    }
    if (!res.ok) throw new HttpError(res.status, (data && data.message) || res.statusText);
    return data;
  }

  async function whoami() {
    try {
      const me = await api("GET", `${ADMIN_API}/me`);
      role = me.auth ? me.role : null;
    } catch (e) {
      role = null; // no such route or Auth off
    }
    document.getElementById("who").textContent = role ? `role: ${role}` : "";
    document.getElementById("logout").hidden = !sessionStorage.getItem(TOKEN_KEY);
  }

  function confirmAction(text) {
    const dlg = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = text;
    return new Promise((resolve) => {
      dlg.addEventListener("close", function done() {
        dlg.removeEventListener("close", done);
        resolve(dlg.returnValue === "ok");
      });
      dlg.showModal();
    });
  }

  async function act(text, fn, success) {
    if (!(await confirmAction(text))) return false;
    try {
      await fn();
      toast(success);
      return true;
    } catch (e) {
      toast(`${e.status || ""} ${e.message}`, true);
      return false;
    }
  }

  // Re-render every REFRESH_MS while "live refresh" is ticked and no dialog is open.
  function live(fn) {
    clearInterval(timer);
    timer = setInterval(() => {
      if (document.getElementById("live").checked && !document.querySelector("dialog[open]")) {
        fn().catch(() => {});
      }
    }, REFRESH_MS);
  }

  function failed(e) {
    view.replaceChildren(h("p", { class: "error" }, `${e.status || ""} ${e.message}`));
  }

  // ---- transactions list ----------------------------------------------------------------
  // The created-time filter is in UTC, as the list shows times (…Z): an operator types in
  // the time read off a row, wherever the browser is. The labels say so.
  function toMs(utc) { return utc ? String(Date.parse(`${utc}Z`)) : ""; }

  function showList(params) {
    const f = Object.fromEntries(params.entries());
    const limit = f.limit || "20";
    const positions = [""]; // the position of each page seen; the last is the current one
    const opt = (values, cur) => [h("option", { value: "" }, "any"),
      ...values.map((v) => h("option", { value: v, selected: v === cur }, v))];
    const form = h("form", { class: "filters", id: "filters" },
      h("label", {}, "Status", h("select", { name: "status" }, opt(STATUSES, f.status))),
      h("label", {}, "Type", h("select", { name: "type" }, opt(TYPES, f.type))),
      h("label", {}, "Gid prefix", h("input", { name: "prefix", value: f.prefix || "", size: 18 })),
      h("label", {}, "Created from (UTC)", h("input", { type: "datetime-local", name: "from", step: 1, value: f.from || "" })),
      h("label", {}, "to (UTC)", h("input", { type: "datetime-local", name: "to", step: 1, value: f.to || "" })),
      h("label", {}, "Per page", h("select", { name: "limit" },
        ["20", "50", "100"].map((v) => h("option", { value: v, selected: v === limit }, v)))),
      h("button", { class: "primary", type: "submit" }, "Apply"),
      h("button", { type: "button", onclick: () => { location.hash = "#/transactions"; } }, "Reset"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const q = new URLSearchParams();
      for (const [k, v] of new FormData(form).entries()) if (v) q.set(k, v);
      location.hash = `#/transactions?${q}`;
    });
    const tbody = h("tbody");
    const pageInfo = h("span");
    const prev = h("button", { id: "prev", onclick: () => { positions.pop(); load(); } }, "‹ Newer");
    const next = h("button", { id: "next" }, "Older ›");
    let nextPos = "";
    next.addEventListener("click", () => { positions.push(nextPos); load(); });
    view.replaceChildren(h("h1", {}, "Transactions"), form,
      h("table", { id: "transactions" }, h("thead", {}, h("tr", {},
        ["Gid", "Type", "Status", "Created", "Updated", "Next retry", "Retries", "Reason"]
          .map((c) => h("th", {}, c)))), tbody),
      h("div", { class: "pager" }, prev, next, pageInfo));

    async function load() {
      const data = await api("GET", `${API}/all`, {
        status: f.status, transType: f.type, gidPrefix: f.prefix, limit,
        createTimeStart: toMs(f.from), createTimeEnd: toMs(f.to),
        position: positions[positions.length - 1],
      });
      nextPos = data.next_position || "";
      prev.disabled = positions.length <= 1;
      next.disabled = !nextPos;
      pageInfo.textContent = `page ${positions.length}`;
      const rows = data.transactions.map((t) => h("tr", { "data-gid": t.gid },
        h("td", { class: "mono" }, h("a", { href: `#/tx/${encodeURIComponent(t.gid)}` }, t.gid)),
        h("td", {}, t.trans_type), h("td", {}, badge(t.status)),
        h("td", {}, fmtTime(t.create_time)), h("td", {}, fmtTime(t.update_time)),
        h("td", {}, STATUSES.slice(0, 3).includes(t.status) ? relTime(t.next_cron_time) : ""),
        h("td", {}, t.retry_count || 0), h("td", {}, t.rollback_reason || "")));
      tbody.replaceChildren(...(rows.length ? rows
        : [h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No transactions match."))]));
    }
    load().catch(failed);
    live(load);
  }

  // ---- one transaction ----------------------------------------------------------------
  function bytesOf(b64) {
    const bin = atob(b64 || "");
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  }
  function asJson(bytes) {
    try {
      const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch (e) { return null; }
  }
  function asHex(bytes) {
    const lines = [];
    for (let i = 0; i < bytes.length; i += 16) {
      const row = Array.from(bytes.slice(i, i + 16));
      const hex = row.map((b) => b.toString(16).padStart(2, "0")).join(" ");
      const ascii = row.map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
      lines.push(`${i.toString(16).padStart(6, "0")}  ${hex.padEnd(47)}  ${ascii}`);
    }
    return lines.join("\n") || "(empty)";
  }
  const payloadMode = new Map(); // what the user chose per branch, kept across refreshes
  function payload(b64, id) {
    const bytes = bytesOf(b64);
    const json = asJson(bytes);
    const pre = h("pre", { class: "payload" });
    const bJson = h("button", { type: "button", disabled: json === null }, "JSON");
    const bHex = h("button", { type: "button" }, "hex");
    const show = (mode) => {
      payloadMode.set(id, mode);
      pre.textContent = mode === "json" ? json : asHex(bytes);
      pre.dataset.mode = mode;
      bJson.classList.toggle("on", mode === "json");
      bHex.classList.toggle("on", mode === "hex");
    };
    bJson.addEventListener("click", () => show("json"));
    bHex.addEventListener("click", () => show("hex"));
    show(payloadMode.get(id) || (json !== null ? "json" : "hex"));
    return h("div", {}, h("span", { class: "seg" }, bJson, bHex,
      h("span", { class: "muted" }, ` ${bytes.length} bytes`)), pre);
  }

  // Calls made, by the time of their result; then those not made yet, in the order the
  // transaction would make them (forward ops before second-phase ones).
  const OP_RANK = { try: 0, action: 0, msg: 0, confirm: 1, commit: 1, cancel: 2, compensate: 2, rollback: 2 };
  function timelineOrder(branches) {
    const done = branches.filter((b) => b.status !== "prepared")
      .sort((a, b) => Date.parse(a.update_time) - Date.parse(b.update_time));
    const pending = branches.filter((b) => b.status === "prepared")
      .sort((a, b) => (OP_RANK[a.op] ?? 3) - (OP_RANK[b.op] ?? 3));
    return [...done, ...pending];
  }

  // The calls of one branch op (oldest first): when, what it answered and why, how long it
  // took, and when the transaction was to be tried again. The server keeps the first call
  // and the newest ones (Limits.MaxCallsPerBranch); a gap in the attempts says so.
  const RESULT_CLASS = { SUCCESS: "succeed", FAILURE: "failed", ERROR: "aborting", ONGOING: "prepared" };
  function callRows(calls) {
    if (!calls.length) return null;
    const rows = [];
    let last = 0;
    for (const c of calls) {
      if (c.attempt > last + 1) {
        const n = c.attempt - last - 1;
        rows.push(h("tr", { class: "gap" }, h("td", { colspan: 7, class: "muted" },
          `… ${n} call${n === 1 ? "" : "s"} not kept`)));
      }
      last = c.attempt;
      rows.push(h("tr", { "data-call": `${c.branch_id}/${c.op}/${c.attempt}`, "data-result": c.result },
        h("td", {}, `#${c.attempt}`),
        h("td", { class: "mono" }, fmtTime(c.start_time)),
        h("td", {}, h("span", { class: `badge s-${RESULT_CLASS[c.result] || "prepared"}` }, c.result)),
        h("td", {}, `${Math.round(c.duration_ms)} ms`),
        h("td", {}, c.retries ? `retry ${c.retries}` : "first call"),
        h("td", { class: "mono" }, c.next_retry_time ? `next ${fmtTime(c.next_retry_time)}` : ""),
        h("td", { class: "reason" }, c.reason || "", c.server ? h("div", { class: "muted" }, c.server) : null)));
    }
    return h("table", { class: "calls" },
      h("thead", {}, h("tr", {}, ["call", "time", "result", "duration", "retry", "next retry", "reason"]
        .map((x) => h("th", {}, x)))),
      h("tbody", {}, rows));
  }

  function facts(pairs) {
    return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== "" && v !== undefined)
      .flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  function showTx(gid) {
    const head = h("div");
    const timeline = h("ol", { class: "timeline", id: "timeline" });
    view.replaceChildren(h("p", {}, h("a", { href: "#/transactions" }, "‹ Transactions")),
      h("h1", { class: "mono" }, gid), head, h("h2", {}, "Branches"), timeline);

    async function load() {
      const data = await api("GET", `${API}/query`, { gid });
      const t = data.transaction;
      if (!t) {
        head.replaceChildren(h("p", { class: "empty" }, "No transaction with this gid (finished ones expire)."));
        timeline.replaceChildren();
        return;
      }
      const unfinished = STATUSES.slice(0, 3).includes(t.status);
      const retries = `${t.retry_count || 0}${t.retry_limit ? ` of ${t.retry_limit}` : ""}`;
      const actions = h("div", { class: "actions" });
      if (unfinished && canWrite()) {
        actions.append(
          h("button", { class: "danger", id: "force-stop", onclick: async () => {
            if (await act(`Force-stop ${gid}? It becomes failed; no further branch is called ` +
              "(no compensation runs).", () => api("POST", `${API}/forceStop`, null, { gid }),
            "Transaction force-stopped.")) load();
          } }, "Force stop"),
          h("button", { id: "retry-now", onclick: async () => {
            if (await act(`Retry ${gid} now instead of at its next retry time?`,
              () => api("POST", `${API}/resetNextCronTime`, null, { gid }),
              "Scheduled to run now.")) load();
          } }, "Retry now"));
      }
      head.replaceChildren(h("div", { class: "card" }, facts([
        ["status", badge(t.status)], ["type", t.trans_type],
        ["protocol", t.protocol || "http"], ["created", fmtTime(t.create_time)],
        ["updated", fmtTime(t.update_time)], ["finished", fmtTime(t.finish_time)],
        ["rolled back", fmtTime(t.rollback_time)],
        ["next retry", unfinished && t.next_cron_time
          ? `${fmtTime(t.next_cron_time)} (${relTime(t.next_cron_time)})` : ""],
        ["retries", retries], ["retry interval", t.next_cron_interval ? `${t.next_cron_interval}s` : ""],
        ["reason", t.rollback_reason || ""], ["result", t.result || ""],
        ["owner", t.owner || ""], ["custom data", t.custom_data || ""],
        [t.trans_type === "workflow" ? "callback" : "query prepared", t.query_prepared || ""],
      ])), actions);
      const calls = data.calls || [];
      const callsOf = (id, op) => calls.filter((c) => c.branch_id === id && c.op === op);
      const items = timelineOrder(data.branches).map((b) => h("li", { class: `s-${b.status}`, "data-branch": `${b.branch_id}/${b.op}` },
        h("div", { class: "branch-head" }, h("span", { class: "op" }, `${b.branch_id} · ${b.op}`),
          badge(b.status), h("span", { class: "mono" }, b.url || "")),
        h("div", { class: "muted" }, [
          `registered ${fmtTime(b.create_time)}`,
          b.update_time !== b.create_time ? ` · last result ${fmtTime(b.update_time)}` : "",
          // a workflow's recorded step carries its end time whether it succeeded or failed
          b.finish_time ? ` · ${b.status === "failed" ? "failed" : "succeeded"} ${fmtTime(b.finish_time)}` : "",
          b.rollback_time ? ` · failed ${fmtTime(b.rollback_time)}` : "",
          b.status === "prepared" && !callsOf(b.branch_id, b.op).length ? " · not called yet" : "",
        ].join("")),
        callRows(callsOf(b.branch_id, b.op)),
        payload(b.bin_data, `${gid}/${b.branch_id}/${b.op}`)));
      // a msg's query_prepared calls (branch 00) have no branch row of their own
      const asked = callsOf("00", "msg");
      if (asked.length) {
        items.unshift(h("li", { "data-branch": "00/msg" },
          h("div", { class: "branch-head" }, h("span", { class: "op" }, "00 · query prepared"),
            h("span", { class: "mono" }, t.query_prepared || "")),
          callRows(asked)));
      }
      timeline.replaceChildren(...(items.length ? items : [h("li", { class: "empty" }, "No branches.")]));
    }
    load().catch(failed);
    live(load);
  }

  // ---- topics -------------------------------------------------------------------------
  async function scanAll(cat) {
    const out = [];
    let position = "";
    for (let i = 0; i < 20; i++) {
      const data = await api("GET", `${API}/scanKV`, { cat, position, limit: 100 });
      out.push(...data.kv);
      position = data.next_position;
      if (!position) break;
    }
    return out;
  }

  function showTopics() {
    const list = h("div", { id: "topics" });
    const form = h("form", { class: "inline card", id: "subscribe" },
      h("label", {}, "Topic", h("input", { name: "topic", required: true })),
      h("label", {}, "Subscriber URL", h("input", { name: "url", required: true, size: 40 })),
      h("label", {}, "Remark", h("input", { name: "remark" })),
      h("button", { class: "primary", type: "submit" }, "Subscribe"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const q = Object.fromEntries(new FormData(form).entries());
      try {
        await api("GET", `${API}/subscribe`, q);
        toast(`${q.url} subscribes to ${q.topic}.`);
        form.reset();
        load();
      } catch (e) { toast(`${e.status || ""} ${e.message}`, true); }
    });
    view.replaceChildren(h("h1", {}, "Topics"), canWrite() ? form : "", list);

    async function load() {
      const kvs = await scanAll("topics");
      const cards = kvs.map((kv) => {
        let subs = [];
        try { subs = JSON.parse(kv.v); } catch (e) { subs = []; }
        const rows = subs.map((s) => h("tr", {}, h("td", { class: "mono" }, s.url), h("td", {}, s.remark || ""),
          h("td", {}, canWrite() ? h("button", { onclick: async () => {
            if (await act(`Unsubscribe ${s.url} from ${kv.k}?`,
              () => api("GET", `${API}/unsubscribe`, { topic: kv.k, url: s.url }), "Unsubscribed.")) load();
          } }, "Remove") : "")));
        return h("div", { class: "card", "data-topic": kv.k, style: "margin-top:.8rem" },
          h("div", { class: "branch-head" }, h("h2", { class: "mono" }, kv.k),
            h("span", { class: "muted" }, `${subs.length} subscriber(s), updated ${fmtTime(kv.update_time)}`),
            canWrite() ? h("button", { onclick: async () => {
              if (await act(`Delete topic ${kv.k} and all its subscriptions?`,
                () => api("DELETE", `${API}/topic/${encodeURIComponent(kv.k)}`), "Topic deleted.")) load();
            } }, "Delete topic") : ""),
          h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "URL"), h("th", {}, "Remark"), h("th", {}, ""))),
            h("tbody", {}, rows)));
      });
      list.replaceChildren(...(cards.length ? cards : [h("p", { class: "empty" }, "No topics yet.")]));
    }
    load().catch(failed);
    live(load);
  }

  // ---- servers ------------------------------------------------------------------------
  function showServers() {
    const tbody = h("tbody");
    view.replaceChildren(h("h1", {}, "Servers sharing this store"),
      h("table", { id: "servers" }, h("thead", {}, h("tr", {},
        ["Server", "Health", "Version", "HTTP", "gRPC", "Started", "Last heartbeat", "Runs in flight"]
          .map((c) => h("th", {}, c)))), tbody),
      h("p", { class: "muted" }, "Each server rewrites its record in the store every few seconds; " +
        "one that missed three beats is down."));

    async function load() {
      const data = await api("GET", `${ADMIN_API}/servers`);
      const rows = data.servers.map((s) => h("tr", { "data-server": s.id },
        h("td", { class: "mono" }, s.id), h("td", {}, badge(s.health)), h("td", {}, s.version),
        h("td", {}, s.http_port), h("td", {}, s.grpc_port || "off"),
        h("td", {}, fmtTime(s.started)), h("td", {}, `${fmtTime(s.beat)} (${s.age}s ago)`),
        h("td", {}, s.runs_in_flight)));
      tbody.replaceChildren(...(rows.length ? rows
        : [h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No server has announced itself."))]));
    }
    load().catch(failed);
    live(load);
  }

  // ---- routing ------------------------------------------------------------------------
  function route() {
    clearInterval(timer);
    const [path, qs] = (location.hash.slice(1) || "/transactions").split("?");
    const section = path.startsWith("/tx/") ? "transactions" : path.slice(1);
    for (const a of document.querySelectorAll("header a")) {
      a.classList.toggle("active", a.dataset.nav === section);
    }
    if (path.startsWith("/tx/")) showTx(decodeURIComponent(path.slice(4)));
    else if (path === "/topics") showTopics();
    else if (path === "/servers") showServers();
    else showList(new URLSearchParams(qs || ""));
  }

  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  window.addEventListener("hashchange", route);
  whoami().then(route);
})();
